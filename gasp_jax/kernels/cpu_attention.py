"""Attention over only the KV slots each query's mask keeps, for XLA:CPU (attention.cc, via the XLA FFI).

XLA's masked attention reads and multiplies every cache slot of the window, padding and not-yet-written
slots included, as a dozen small ops per layer: at decode (one query per row) that is most of a step's
time outside the weight matmuls. `attention` reads each query's valid slots once per kv head, for every
query head of its group, in one call:

    if cpu_attention.available():
        out = cpu_attention.attention(q, k, v, mask)   # == models.transformer.attend(q, k, v, mask)

q `[B, T, H, D]`, k and v `[B, K, S, D]` (the cache layout), mask `[B, T, S]` bool (which slots each query
attends to); returns `[B, T, H, D]`. Query head h reads kv head h // (H / K) (HF's repeat_kv). Scores are
scaled by 1 / sqrt(D); a query with no valid slot gets the mean of v (what the masked softmax gives then).
A query's sum runs over its valid slots in slot order, so its result does not depend on the cache length
or on other rows. fp32 only; forward only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gasp_jax.kernels.library import available  # noqa: F401 - part of this module's API

TARGET = "gasp_attention"


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Grouped-query attention of `q [B, T, H, D]` over `k, v [B, K, S, D]` where `mask [B, T, S]`."""
    if not available():
        raise RuntimeError("cpu_attention.attention: the kernels are unavailable here (see the logged reason)")
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3] \
            or q.shape[2] % k.shape[1]:
        raise ValueError(f"cpu_attention.attention: q {q.shape} with k {k.shape}, v {v.shape}: want q [B, T, H, D] "
                         "and k, v [B, K, S, D] with K dividing H")
    b, t, h, d = q.shape
    if mask.shape != (b, t, k.shape[2]):
        raise ValueError(f"cpu_attention.attention: mask {mask.shape}, want [B, T, S] = {(b, t, k.shape[2])}")
    if not all(x.dtype == jnp.float32 for x in (q, k, v)):
        raise ValueError(f"cpu_attention.attention: float32 only, got {q.dtype}, {k.dtype}, {v.dtype}")
    return jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(q.shape, jnp.float32), vmap_method="sequential")(
        q, k, v, mask.astype(bool))
