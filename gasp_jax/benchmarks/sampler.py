"""Sampler throughput: gasp_jax `sampling.generate` vs `transformers` `generate`, and an HBM roofline.

CPU comparison (default): one random Qwen2-family model is created in JAX, exported with `save_hf` and
loaded by `transformers`, so both run the same weights, batch, prompt length and number of new tokens
(no stop tokens: every row generates exactly `--new-tokens`). Our compile time is excluded from the
throughput (one warm-up call) and reported separately; both sides report the best of `--repeats`.

    python -m gasp_jax.benchmarks.sampler                        # 4 layers, width 256, batch 16, 128 new
    python -m gasp_jax.benchmarks.sampler --mode sample --top-p 0.95

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
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from gasp_jax import models, sampling

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
    import torch
    import transformers

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
    from gasp_jax import sharding
    from gasp_jax.sampling import sampler as sampler_lib

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
