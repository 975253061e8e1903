"""Benchmark: throughput and model FLOP utilisation (MFU) of the jitted RL update step.

    python -m gasp_jax.benchmarks.train_step                 # CPU: tiny model, fp32
    python -m gasp_jax.benchmarks.train_step --gpu           # GPU: Qwen2.5-1.5B shape, bf16, seq 4096, remat
    python -m gasp_jax.benchmarks.train_step --preset tiny --batch 16 --seq 512 --micro-batches 2 --json out.json
    python -m gasp_jax.benchmarks.train_step --gpu --memory-only   # compile only: memory estimate, any backend

What is timed: `rl.make_update_step(...)(state, batch)` end to end (chunked log-probs, PPO-clip loss,
backward, `k`-micro-batch accumulation, AdamW update), with the batch already on the devices, after
two warm-up (compile) steps, blocking on the metrics of every step.

FLOP formula (model FLOPs, PaLM appendix B convention), per step over B x T tokens:
    model_flops = 6 * N_matmul * B*T  +  12 * L * H * D_head * T * B*T
  N_matmul = L * (E*H*D + 2*E*K*D + H*D*E + 3*E*F) + V*E   (every weight matmul incl. the LM head; the
  embedding lookup is not a matmul). The attention term counts the full T x T score matrix (QK^T and
  AV, forward 4*T*H*D per token per layer, x3 for forward + backward), which is what this model's dense
  masked attention computes. Recomputation is NOT counted in MFU: with remat "full" the hardware also
  redoes the layer forward (+2*N_layers*B*T + 4*L*H*D*T*B*T) and the log-prob chunk's LM head
  (+2*V*E*B*T); that is reported separately as HFU (hardware FLOP utilisation).
MFU = model_flops / step_time / peak. Peak: on CPU, measured in this process as the best fp32 matmul
rate (n = 2048, XLA:CPU); on GPU the datasheet dense bf16 peak (`--peak-tflops`, default 989 for an
H200), with a measured large bf16 matmul printed alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from gasp_jax import models, rl, sharding


def matmul_flops(config: models.ModelConfig) -> int:
    """N_matmul: parameters that take part in a matmul per token (see module docstring)."""
    e, f, h, k, d = config.hidden_size, config.intermediate_size, config.num_heads, config.num_kv_heads, config.head_dim
    per_layer = e * h * d + 2 * e * k * d + h * d * e + 3 * e * f
    return config.num_layers * per_layer + config.vocab_size * e


def step_flops(config: models.ModelConfig, batch: int, seq: int, remat: str) -> tuple[float, float]:
    """(model FLOPs, hardware FLOPs) of one update over `batch` rows of `seq` tokens."""
    tokens = batch * seq
    n = matmul_flops(config)
    attn_fwd = 4 * config.num_layers * config.num_heads * config.head_dim * seq * tokens
    model = 6 * n * tokens + 3 * attn_fwd
    hw = model + 2 * config.vocab_size * config.hidden_size * tokens  # log-prob chunk remat: LM head again
    if remat != "none":  # upper bound: "full" recomputes the whole layer forward
        hw += 2 * (n - config.vocab_size * config.hidden_size) * tokens + attn_fwd
    return float(model), float(hw)


def measure_matmul_peak(dtype, n: int, repeats: int = 10) -> float:
    """Best achieved FLOP/s of an n x n x n matmul on the default device."""
    a = jnp.ones((n, n), dtype)
    b = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def make_batch(config, batch: int, seq: int, prompt_len: int, seed: int = 0) -> rl.Batch:
    """A random batch: prompt of `prompt_len` tokens, completion filling the rest of the row."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, config.vocab_size, (batch, seq)).astype(np.int32)
    completion = np.zeros((batch, seq), bool)
    completion[:, prompt_len:] = True
    return rl.Batch(
        tokens=tokens,
        positions=np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
        attention_mask=np.ones((batch, seq), bool),
        completion_mask=completion,
        # Near the uniform-policy log-prob, so ratios are O(1) and the update is applied, not skipped.
        old_logprobs=np.where(completion, -np.log(config.vocab_size), 0).astype(np.float32),
        advantages=rng.normal(size=(batch,)).astype(np.float32),
        temperature=np.ones((batch,), np.float32),  # rollouts at T = 1 (the update divides logits by T)
    )


def compiled_memory(update, model, rl_config, batch: int, seq: int) -> dict[str, float]:
    """Compiles the update for abstract inputs (nothing allocated) and returns XLA's memory analysis, GiB."""
    tx = rl.make_optimizer(rl_config.optimizer)
    params = nn.meta.unbox(models.abstract_params(model))
    state = jax.eval_shape(
        lambda p: rl.TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p)), params
    )
    if update.state_shardings is not None:
        state = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), state,
                             update.state_shardings)
    spec = lambda dtype: jax.ShapeDtypeStruct((batch, seq), dtype, sharding=update.batch_sharding)
    abstract_batch = rl.Batch(tokens=spec(jnp.int32), positions=spec(jnp.int32), attention_mask=spec(bool),
                              completion_mask=spec(bool), old_logprobs=spec(jnp.float32), advantages=spec(jnp.float32),
                              temperature=jax.ShapeDtypeStruct((batch,), jnp.float32, sharding=update.batch_sharding))
    stats = update.jitted.lower(state, abstract_batch).compile().memory_analysis()
    gib = lambda x: x / 2**30
    return {
        "state_gib (donated, aliased)": gib(stats.alias_size_in_bytes),
        "arguments_gib": gib(stats.argument_size_in_bytes),
        "temporaries_gib": gib(stats.temp_size_in_bytes),
        "peak_estimate_gib": gib(stats.argument_size_in_bytes + stats.output_size_in_bytes
                                 - stats.alias_size_in_bytes + stats.temp_size_in_bytes),
    }


def run(args) -> dict[str, Any]:
    overrides = dict(dtype=args.dtype, param_dtype=args.param_dtype, remat_policy=args.remat)
    config = models.get_preset(args.preset, **overrides)
    mesh = sharding.make_mesh(json.loads(args.mesh)) if args.mesh else None
    model = models.build_model(config, mesh=mesh)
    rl_config = rl.default_config()
    rl_config.micro_batches = args.micro_batches
    rl_config.logprob_chunk_size = args.chunk
    rl_config.optimizer.learning_rate = 1e-6

    if args.memory_only:
        update = rl.make_update_step(model, rl_config, mesh)
        return {"preset": args.preset, "batch": args.batch, "seq": args.seq, "micro_batches": args.micro_batches,
                "remat": args.remat, "device": jax.devices()[0].device_kind,
                **compiled_memory(update, model, rl_config, args.batch, args.seq)}

    peak_measured = measure_matmul_peak(jnp.bfloat16 if args.gpu else jnp.float32, args.matmul_n)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_measured

    state = rl.create_train_state(model, rl_config, rng=jax.random.key(0))
    update = rl.make_update_step(model, rl_config, mesh)
    host_batch = make_batch(config, args.batch, args.seq, args.prompt_len)
    rl.validate_batch(host_batch, micro_batches=update.micro_batches, batch_divisor=update.batch_divisor,
                      vocab_size=config.vocab_size)
    # Device-resident batch in the update's input layout (per-token advantages), so the timing is the step.
    batch = host_batch.replace(advantages=np.broadcast_to(host_batch.advantages[:, None], host_batch.tokens.shape).copy())
    batch = jax.device_put(batch, update.batch_sharding) if update.batch_sharding is not None else jax.device_put(batch)

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        state, metrics = update.jitted(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        state, metrics = update.jitted(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    # Measure the matmul peak again after the timed steps and keep the best: on a shared machine a
    # single measurement taken while another process runs understates the peak (and inflates MFU).
    peak_measured = max(peak_measured, measure_matmul_peak(jnp.bfloat16 if args.gpu else jnp.float32, args.matmul_n))
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_measured
    model_flops, hw_flops = step_flops(config, args.batch, args.seq, args.remat)
    tokens = args.batch * args.seq
    result = {
        "machine": f"{platform.node() or 'host'}: {platform.platform()}, {os.cpu_count()} CPUs, "
                   f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "load_average_1m": os.getloadavg()[0],
        "preset": args.preset, "dtype": args.dtype, "param_dtype": args.param_dtype, "remat": args.remat,
        "batch": args.batch, "seq": args.seq, "micro_batches": args.micro_batches, "chunk": args.chunk,
        "mesh": args.mesh or "single device",
        "params": config.num_params, "matmul_params": matmul_flops(config),
        "warmup_plus_compile_s": round(compile_s, 2),
        "step_s_median": step_s, "step_s_min": float(np.min(times)),
        "tokens_per_s": tokens / step_s,
        "trained_tokens_per_s": float(host_batch.completion_mask.sum()) / step_s,
        "model_tflops_per_step": model_flops / 1e12,
        "model_tflop_per_s": model_flops / step_s / 1e12,
        "peak_tflop_per_s": peak / 1e12,
        "peak_source": "datasheet (--peak-tflops)" if args.peak_tflops else f"measured {args.matmul_n}^3 matmul",
        "measured_matmul_tflop_per_s": peak_measured / 1e12,
        "mfu": model_flops / step_s / peak,
        "hfu": hw_flops / step_s / peak,
        "mfu_best_step": model_flops / float(np.min(times)) / peak,
        "skipped": float(metrics["skipped"]),
        "loss": float(metrics["loss"]),
    }
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", action="store_true",
                   help="Qwen2.5-1.5B shape, bf16 compute / fp32 master weights, seq 4096, remat full, "
                        "datasheet peak 989 TFLOP/s (flags given explicitly still win)")
    p.add_argument("--preset", default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq", type=int, default=None)
    p.add_argument("--prompt-len", type=int, default=None, help="untrained prefix per row (default seq // 4)")
    p.add_argument("--micro-batches", type=int, default=None)
    p.add_argument("--chunk", type=int, default=None, help="log-prob sequence chunk")
    p.add_argument("--dtype", default=None)
    p.add_argument("--param-dtype", default=None)
    p.add_argument("--remat", default=None, help="none | full | dots | dots_with_no_batch_dims | save_attn_out")
    p.add_argument("--mesh", default=None, help='JSON mesh shape, e.g. \'{"fsdp": -1}\' (default: none, 1 device)')
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--matmul-n", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the result here")
    p.add_argument("--memory-only", action="store_true",
                   help="compile for abstract inputs and print XLA's memory analysis (per device); run nothing")
    args = p.parse_args(argv)
    defaults = (
        dict(preset="qwen2.5-coder-1.5b", batch=16, seq=4096, micro_batches=4, chunk=512, dtype="bfloat16",
             param_dtype="float32", remat="full", peak_tflops=989.0, matmul_n=8192)
        if args.gpu else
        dict(preset="tiny", batch=8, seq=256, micro_batches=1, chunk=128, dtype="float32", param_dtype="float32",
             remat="none", peak_tflops=None, matmul_n=2048)
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.prompt_len is None:
        args.prompt_len = args.seq // 4
    result = run(args)
    for k, v in result.items():
        print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
