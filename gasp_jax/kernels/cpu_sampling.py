"""Greedy token choice for XLA:CPU (greedy.cc, via the XLA FFI).

`greedy(logits)` is `sampling.core.greedy_tokens` in one call: per row of fp32 logits `[B, V]`, the first
index of the maximum (int32 `[B]`) and its log-probability under softmax(logits) (fp32 `[B]`); a row with
a NaN logit (or only -inf) gives the last index and a NaN log-probability (XLA's reductions may skip NaNs).
XLA:CPU runs it as three separate reductions over the logits (a decode step's 16 x 32,768 logits: ~0.5 ms);
here it is one pass per row for the max and one for the sum of exponentials, rows split over both cores.

    if cpu_sampling.available():
        tokens, logprobs = cpu_sampling.greedy(logits)

fp32 only; forward only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gasp_jax.kernels.library import available  # noqa: F401 - part of this module's API

TARGET = "gasp_greedy"


def greedy(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(first argmax [B] int32, its fp32 log-softmax [B]) of fp32 `logits [B, V]`."""
    if not available():
        raise RuntimeError("cpu_sampling.greedy: the kernels are unavailable here (see the logged reason)")
    if logits.ndim != 2 or logits.shape[1] == 0 or logits.dtype != jnp.float32:
        raise ValueError(f"cpu_sampling.greedy: want float32 logits [B, V > 0], got {logits.dtype} {logits.shape}")
    b = logits.shape[0]
    out = (jax.ShapeDtypeStruct((b,), jnp.int32), jax.ShapeDtypeStruct((b,), jnp.float32))
    return jax.ffi.ffi_call(TARGET, out, vmap_method="sequential")(logits)
