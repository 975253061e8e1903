"""One decoder layer in one call, for the packed CPU decode model (decoder_layer.cc, via the XLA FFI).

`decoder_layer` is `models.transformer.DecoderLayer` with a per-layer KV cache (pre-norm attention with
RoPE, optional q/k bias and Qwen3 q/k norm, the cache write, then the pre-norm SwiGLU MLP, both residuals)
over weights packed for `kernels.cpu_gemm`. Run as separate calls, a decode step's layer is four GEMMs, an
attention call and ~15 small XLA ops, each its own pass over memory and pool wake-up; here it is one call
whose threads run the layer's ten phases back to back (decoder_layer.cc lists them).

    if cpu_layer.available():
        out, k_cache, v_cache = cpu_layer.decoder_layer(x, weights, cos, sin, index, mask, k_cache, v_cache,
                                                        num_heads=h, eps=cfg.rms_norm_eps, qk_norm=False)

- x `[B, T, E]` fp32: the residual stream in; returns the residual stream out, same shape.
- weights: `LayerWeights` (`pack_layer` builds one from a layer's unpacked weights).
- cos, sin `[B, T, D / 2]`: the RoPE tables of each token's position (`models.transformer.rope_tables`).
- index `[B]` int32: row b writes its T keys/values at cache slots `clamp(index[b], 0, S - T) + t` (the
  slots `jax.lax.dynamic_update_slice` writes); mask `[B, T, S]` bool: the slots each query attends to,
  after this call's writes.
- k_cache, v_cache `[B, K, S, D]` fp32: updated in place when donated (the call aliases them to its
  outputs), else copied first by XLA.

A query whose mask keeps no slot (a prompt's left padding, an idle decode slot) is skipped: its output row
is its input row and it writes no cache slot (nothing can read it: its own slot is masked out too), so
padding costs no compute. XLA's layer would give such a row the mean of v and write its slot.

Equal to the XLA layer up to float rounding: sums run in another order, SiLU's exp is vec16.h's. fp32 only,
forward only, CPU only; `available()` is `kernels.library`'s.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gasp_jax.kernels import cpu_gemm
from gasp_jax.kernels.library import available  # noqa: F401 - part of this module's API

TARGET = "gasp_decoder_layer"


class LayerWeights(NamedTuple):
    """One layer's weights as the kernel reads them (fp32)."""

    input_norm: jax.Array  # [E]
    qkv: jax.Array  # cpu_gemm.pack(q|k|v [E, (H + 2K) D])
    qkv_bias: jax.Array  # [(H + 2K) D]: zeros for a model without q/k/v bias
    qk_norm: jax.Array  # [2, D]: the q and k norm scales (Qwen3); ones (unused) otherwise
    o: jax.Array  # cpu_gemm.pack(o [H D, E])
    post_attn_norm: jax.Array  # [E]
    gate_up: jax.Array  # pack_gate_up(gate, up)
    down: jax.Array  # cpu_gemm.pack(down [F, E])


def pack_gate_up(gate: jax.Array, up: jax.Array) -> jax.Array:
    """`gate, up [E, F]` -> `[2 P, E, 16]`: their `cpu_gemm.pack` panels interleaved (2j: gate, 2j + 1: up)."""
    g, u = cpu_gemm.pack(gate), cpu_gemm.pack(up)
    return jnp.stack([g, u], axis=1).reshape(2 * g.shape[0], *g.shape[1:])


def decoder_layer(x, weights: LayerWeights, cos, sin, index, mask, k_cache, v_cache, *, num_heads: int,
                  eps: float, qk_norm: bool):
    """(out `[B, T, E]`, k_cache, v_cache): the layer applied to `x`, its keys and values written."""
    if not available():
        raise RuntimeError("cpu_layer.decoder_layer: the kernels are unavailable here (see the logged reason)")
    b, t, e = x.shape
    if k_cache.ndim != 4 or k_cache.shape != v_cache.shape or k_cache.shape[0] != b or num_heads % k_cache.shape[1]:
        raise ValueError(f"cpu_layer.decoder_layer: caches {k_cache.shape}, {v_cache.shape} for x {x.shape} and "
                         f"{num_heads} heads: want [B, K, S, D] with K dividing the heads")
    d, s = k_cache.shape[3], k_cache.shape[2]
    if t > s or mask.shape != (b, t, s) or cos.shape != (b, t, d // 2) or sin.shape != cos.shape \
            or index.shape != (b,):
        raise ValueError(f"cpu_layer.decoder_layer: x {x.shape}, cache slots {s}, mask {mask.shape}, rope "
                         f"{cos.shape}, index {index.shape}: want mask [B, T, S], rope [B, T, D/2], index [B], T <= S")
    arrays = (x, *weights, cos, sin, k_cache, v_cache)
    if not all(a.dtype == jnp.float32 for a in arrays):
        raise ValueError(f"cpu_layer.decoder_layer: float32 only, got {sorted({str(a.dtype) for a in arrays})}")
    call = jax.ffi.ffi_call(
        TARGET,
        (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct(k_cache.shape, jnp.float32),
         jax.ShapeDtypeStruct(v_cache.shape, jnp.float32)),
        input_output_aliases={13: 1, 14: 2},
    )
    w = weights
    return call(x, w.input_norm, w.qkv, w.qkv_bias, w.qk_norm, w.o, w.post_attn_norm, w.gate_up, w.down, cos, sin,
                index.astype(jnp.int32), mask.astype(bool), k_cache, v_cache, num_heads=np.int64(num_heads),
                eps=np.float32(eps), qk_norm=bool(qk_norm))
