"""fp32 matmul against a weight packed once, for XLA:CPU decode and prefill (packed_gemm.cc, via the XLA FFI).

XLA:CPU lowers `x @ w` to Eigen, which re-packs the weight operand on every call; at decode shapes (x of a
few rows against a large weight) that costs ~1.7x against a GEMM over a weight packed once. Here the
weights are packed once (e.g. once per rollout) and every step runs `matmul` over the packed copy.

Layout. `pack(w)` turns a `[K, N]` fp32 weight into `[P, K, PANEL]` with `P = ceil(N / PANEL)` column panels
of `PANEL = 16` columns (one 64-byte cache line, one AVX-512 register per panel row); panel `p` holds
columns `p*16 .. p*16+15` as `packed[p, k, j] = w[k, p*16 + j]`, the columns past N zero. Leading dims of
`w` (stacked layers) are kept: `[..., K, N] -> [..., P, K, PANEL]`. `matmul(x, packed, n)` takes x
`[..., K]` fp32 (leading dims flattened into M rows, any M >= 1) and returns `[..., n]`.

    if cpu_gemm.available():
        wp = jax.jit(cpu_gemm.pack)(w)                 # once
        y = jax.jit(cpu_gemm.matmul, static_argnums=2)(x, wp, w.shape[1])   # == x @ w

`available()` (`kernels.library`) compiles the kernels on first use and says whether they run here; any
failure is one logged line and False. Forward only (no gradient rule); fp32 only; CPU backend only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gasp_jax.kernels.library import DISABLE_ENV, available  # noqa: F401 - part of this module's API

PANEL = 16  # columns per packed panel; packed_gemm.cc's kNB
TARGET = "gasp_packed_gemm"


def packed_shape(k: int, n: int) -> tuple[int, int, int]:
    """The shape of `pack(w)` for one `[k, n]` weight."""
    return (-(-n // PANEL), k, PANEL)


def pack(w: jax.Array) -> jax.Array:
    """`[..., K, N]` fp32 -> `[..., ceil(N / PANEL), K, PANEL]` column panels, zero past column N."""
    *lead, k, n = w.shape
    panels = -(-n // PANEL)
    w = jnp.pad(w.astype(jnp.float32), [(0, 0)] * len(lead) + [(0, 0), (0, panels * PANEL - n)])
    return jnp.swapaxes(w.reshape(*lead, k, panels, PANEL), -3, -2)


def matmul(x: jax.Array, packed: jax.Array, n: int) -> jax.Array:
    """`x @ w` for `packed = pack(w)` of one `[K, n]` weight: x `[..., K]` fp32 -> `[..., n]` fp32."""
    if not available():
        raise RuntimeError("cpu_gemm.matmul: the kernel is unavailable here (see the logged reason); use x @ w")
    k = x.shape[-1]
    if packed.shape != packed_shape(k, n) or packed.dtype != jnp.float32:
        raise ValueError(f"cpu_gemm.matmul: packed {packed.shape} {packed.dtype} is not pack(w) of a float32 "
                         f"[{k}, {n}] weight (want {packed_shape(k, n)})")
    if x.dtype != jnp.float32:
        raise ValueError(f"cpu_gemm.matmul: x is {x.dtype}; the kernel is float32 only")
    lead = x.shape[:-1]
    m = math.prod(lead)
    if m == 0:
        return jnp.zeros((*lead, n), jnp.float32)
    y = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((m, n), jnp.float32), vmap_method="sequential")(
        x.reshape(m, k), packed)
    return y.reshape(*lead, n)
