"""Benchmark: a decode step's weight-matmul chain through XLA:CPU's dot vs the packed CPU GEMM (cpu_gemm).

    python -m gasp_jax.benchmarks.cpu_gemm                    # both shapes, M = 1 16 32 64 144
    python -m gasp_jax.benchmarks.cpu_gemm --shapes 8x512 --m 16 --repeats 50

The chain is every projection of a decoder at M rows, as the rollout engine's decode step runs them: per
layer the fused q/k/v projection, the attention output, the fused gate/up and the down projection (with
the cheap elementwise glue between them), then the tied LM head. Shapes: 8 layers x 512 (mlp 2048, 8 heads
/ 2 kv heads x 64, vocab 32,768; weights stream from DRAM) and 4 layers x 256 (mlp 1024, 4 / 1 x 64,
vocab 8,192; weights fit L3). Reported: median ms over `--repeats` calls, GFLOP/s (2 * M * weight params
per call), the cores the calls kept busy (process CPU time / wall time) and the load average, since the box
is shared.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gasp_jax.kernels import cpu_gemm

# name: (layers, embed, mlp, vocab, q width, kv width)
SHAPES = {"8x512": (8, 512, 2048, 32768, 512, 128), "4x256": (4, 256, 1024, 8192, 256, 64)}


def make_weights(shape: str, seed: int = 0) -> dict:
    layers, e, f, v, h, kv = SHAPES[shape]
    rng = np.random.default_rng(seed)
    w = lambda *s: jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 0.02)  # noqa: E731
    return {"layers": [{"qkv": w(e, h + 2 * kv), "o": w(h, e), "gu": w(e, 2 * f), "d": w(f, e)} for _ in range(layers)],
            "head": w(e, v)}


def chain(shape: str, dot):
    """The decode step's projections with `dot(x, weight)` for every matmul; weights as `dot` expects them."""
    _, e, f, v, h, kv = SHAPES[shape]

    def run(x, weights):
        for p in weights["layers"]:
            y = dot(x, p["qkv"], h + 2 * kv)
            attn = y[:, :h] + jnp.pad(y[:, h:h + kv] + y[:, h + kv:], ((0, 0), (0, h - kv)))
            x = x + dot(attn, p["o"], e) * 0.01
            gu = dot(x, p["gu"], 2 * f)
            x = x + dot(jax.nn.silu(gu[:, :f]) * gu[:, f:], p["d"], e) * 0.01
        return dot(x, weights["head"], v)

    return run


def time_ms(fn, args, repeats: int) -> tuple[float, float]:
    """Median ms per call, and the process's CPU seconds per wall second over the timed calls (how many of
    the cores the calls kept busy; less than the core count when another process takes a core)."""
    jax.block_until_ready(fn(*args))
    times = []
    cpu0, wall0 = sum(os.times()[:2]), time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    busy = (sum(os.times()[:2]) - cpu0) / (time.perf_counter() - wall0)
    return float(np.median(times)) * 1e3, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--m", nargs="+", type=int, default=[1, 16, 32, 64, 144])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if not cpu_gemm.available():
        raise SystemExit("cpu_gemm: the packed kernel is unavailable here (the logged line says why)")
    xla_dot = lambda x, w, n: x @ w  # noqa: E731
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs")
    for shape in args.shapes:
        weights = make_weights(shape)
        params = sum(w.size for w in jax.tree.leaves(weights))
        packed = jax.jit(lambda ws: jax.tree.map(cpu_gemm.pack, ws))(weights)  # once, as per rollout
        run_xla, run_packed = jax.jit(chain(shape, xla_dot)), jax.jit(chain(shape, cpu_gemm.matmul))
        print(f"\n{shape} ({params / 1e6:.1f}M weight params), load average {os.getloadavg()}")
        print(f"{'M':>5} {'XLA ms':>8} {'GFLOP/s':>8} {'cores':>6} {'packed ms':>10} {'GFLOP/s':>8} {'cores':>6} "
              f"{'speedup':>8}  load")
        for m in args.m:
            x = jnp.asarray(np.random.default_rng(1).standard_normal((m, SHAPES[shape][1]), np.float32))
            ms_xla, busy_xla = time_ms(run_xla, (x, weights), args.repeats)
            ms_packed, busy_packed = time_ms(run_packed, (x, packed), args.repeats)
            gflop = 2 * m * params / 1e9
            print(f"{m:>5} {ms_xla:>8.2f} {gflop / ms_xla * 1e3:>8.1f} {busy_xla:>6.2f} {ms_packed:>10.2f} "
                  f"{gflop / ms_packed * 1e3:>8.1f} {busy_packed:>6.2f} {ms_xla / ms_packed:>7.2f}x  "
                  f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
