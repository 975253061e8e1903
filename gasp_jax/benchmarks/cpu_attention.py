"""Benchmark: a decode step's attention and greedy pick through XLA:CPU vs the CPU kernels (cpu_attention,
cpu_sampling).

    python -m gasp_jax.benchmarks.cpu_attention                 # 8x512 decode shapes, valid slots 64-384
    python -m gasp_jax.benchmarks.cpu_attention --valid 100 --repeats 200

Attention: one decode step of the 8 layers x 512 peer model (16 rows, 8 query / 2 kv heads x 64, a 384-slot
cache per layer, each layer's cache its own array as in the engine), every row attending to its first
`valid` slots: `models.transformer.attend` (XLA's masked attention over all 384 slots) vs
`cpu_attention.attention` (only the valid slots). Greedy: the step's 16 x 32,768 logits,
`sampling.core.greedy_tokens` vs `cpu_sampling.greedy`. Median ms over `--repeats` calls, the cores the
calls kept busy and the load average (the box is shared).
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from gasp_jax.benchmarks.cpu_gemm import time_ms
from gasp_jax.kernels import cpu_attention, cpu_sampling
from gasp_jax.models.transformer import attend
from gasp_jax.sampling.core import greedy_tokens

ROWS, HEADS, KV_HEADS, HEAD_DIM, SLOTS, LAYERS, VOCAB = 16, 8, 2, 64, 384, 8, 32768


def layers_of(fn):
    """`fn(q, k, v, mask)` over every layer's own cache, each layer's output the next layer's query."""
    def run(q, keys, values, mask):
        for k, v in zip(keys, values):
            q = fn(q, k, v, mask)
        return q
    return jax.jit(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--valid", nargs="+", type=int, default=[64, 128, 256, 384])
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    if not cpu_attention.available():
        raise SystemExit("cpu_attention: the kernels are unavailable here (the logged line says why)")
    rng = np.random.default_rng(0)
    normal = lambda *s: jnp.asarray(rng.standard_normal(s, dtype=np.float32))  # noqa: E731
    q = normal(ROWS, 1, HEADS, HEAD_DIM)
    keys = [normal(ROWS, KV_HEADS, SLOTS, HEAD_DIM) for _ in range(LAYERS)]
    values = [normal(ROWS, KV_HEADS, SLOTS, HEAD_DIM) for _ in range(LAYERS)]
    xla, kernel = layers_of(attend), layers_of(cpu_attention.attention)
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs; attention over {LAYERS} layers, {ROWS} rows, "
          f"{HEADS}/{KV_HEADS} heads x {HEAD_DIM}, {SLOTS} slots; load average {os.getloadavg()}")
    print(f"{'valid':>6} {'XLA ms':>8} {'cores':>6} {'kernel ms':>10} {'cores':>6} {'speedup':>8}  load")
    for valid in args.valid:
        mask = jnp.asarray(np.broadcast_to(np.arange(SLOTS) < valid, (ROWS, 1, SLOTS)))
        ms_xla, busy_xla = time_ms(xla, (q, keys, values, mask), args.repeats)
        ms_kernel, busy_kernel = time_ms(kernel, (q, keys, values, mask), args.repeats)
        print(f"{valid:>6} {ms_xla:>8.3f} {busy_xla:>6.2f} {ms_kernel:>10.3f} {busy_kernel:>6.2f} "
              f"{ms_xla / ms_kernel:>7.2f}x  {os.getloadavg()[0]:.2f}")
    logits = normal(ROWS, VOCAB)
    ms_xla, _ = time_ms(jax.jit(greedy_tokens), (logits,), args.repeats)
    ms_kernel, _ = time_ms(jax.jit(cpu_sampling.greedy), (logits,), args.repeats)
    print(f"greedy over {ROWS} x {VOCAB} logits: XLA {ms_xla:.3f} ms, kernel {ms_kernel:.3f} ms "
          f"({ms_xla / ms_kernel:.2f}x)  load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
