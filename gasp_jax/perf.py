"""Accelerator peaks and the FLOP / byte arithmetic behind MFU and the generation roofline.

    peak = perf.device_peak(jax.devices()[0].device_kind)      # None on CPU / an unknown chip
    flops = perf.update_flops(model_config, seq_lens)          # UpdateFlops(model, remat)
    perf.utilisation(flops.model, seconds, num_devices, peak.bf16_flops)   # MFU

One table of per-chip peaks (`PEAKS`) serves the trainer's `perf/...` scalars and the launch plan's
MFU upper bound. Everything here is host arithmetic on a `ModelConfig` and token counts.

FLOPs of one update (forward + backward, every sequence of length T = prompt + completion tokens):
  * matmuls: 6 x N x T, N = `matmul_params` (q/k/v/o and the SwiGLU MLP of every layer plus the LM head;
    the embedding lookup is a gather, norms and biases are negligible): 2 FLOPs per multiply-add,
    forward 2N T, backward (activation + weight gradients) 4N T.
  * attention: causal scores and the weighted sum, 2 matmuls of `heads x head_dim` per (query, key)
    pair with key <= query: forward 2 x 2 x L x H x D x T(T+1)/2, training 3x that. Only the causal
    half is counted (the useful work), whatever kernel computes it.
  * remat recompute (`UpdateFlops.remat`, hardware FLOPs only): the backward pass re-runs forward
    work it did not save. The LM head is always recomputed (rl/logprobs.py checkpoints each chunk);
    the layers depend on `remat_policy`: "full" / "save_attn_out" re-run the layer forward
    (matmuls + attention), "dots_with_no_batch_dims" re-runs attention only (its score matmuls have a
    batch dimension), "dots" and "none" re-run no matmul.
MFU (model FLOPs utilisation, PaLM's definition) divides `model` FLOPs by peak; `model + remat` gives
hardware FLOPs utilisation (HFU).

Generation is bound by HBM bandwidth, not FLOPs: each decode step reads every weight once (for all rows
decoding together) and each row's KV cache up to its position. `decode_bytes_per_device` is that lower bound on
bytes moved per device; bytes / seconds is the achieved bandwidth, compared with the chip's HBM peak.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

TERA = 1e12
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class DevicePeak:
    """Per-chip peaks: dense bf16 matmul FLOP/s, HBM bandwidth (bytes/s) and HBM capacity (bytes)."""

    name: str
    bf16_flops: float
    hbm_bytes_per_s: float
    hbm_bytes: float


# (lower-case substring of `jax.Device.device_kind`, peak); first match wins, so specific names first.
# Vendor datasheets: TPU per chip (cloud.google.com/tpu/docs/system-architecture-tpu-vm), NVIDIA SXM
# parts without sparsity.
PEAKS: tuple[tuple[str, DevicePeak], ...] = (
    ("tpu v6 lite", DevicePeak("TPU v6e", 918 * TERA, 1640e9, 32 * GIB)),
    ("tpu v6e", DevicePeak("TPU v6e", 918 * TERA, 1640e9, 32 * GIB)),
    ("tpu v5 lite", DevicePeak("TPU v5e", 197 * TERA, 819e9, 16 * GIB)),
    ("tpu v5e", DevicePeak("TPU v5e", 197 * TERA, 819e9, 16 * GIB)),
    ("tpu v5p", DevicePeak("TPU v5p", 459 * TERA, 2765e9, 95 * GIB)),
    ("tpu v5", DevicePeak("TPU v5p", 459 * TERA, 2765e9, 95 * GIB)),
    ("tpu v4", DevicePeak("TPU v4", 275 * TERA, 1228e9, 32 * GIB)),
    ("a100", DevicePeak("A100 SXM 80GB", 312 * TERA, 2039e9, 80e9)),
    ("h100", DevicePeak("H100 SXM", 989 * TERA, 3350e9, 80e9)),
    ("h200", DevicePeak("H200 SXM", 989 * TERA, 4800e9, 141e9)),
)


def device_peak(device_kind: str) -> DevicePeak | None:
    """The peak of a `jax.Device.device_kind` ("TPU v5 lite", "NVIDIA H100 80GB HBM3"); None for CPU
    and chips not in `PEAKS` (then no MFU is reported)."""
    kind = device_kind.lower()
    for pattern, peak in PEAKS:
        if pattern in kind:
            return peak
    return None


# ------------------------------------------------------------------------------------------- FLOPs


def layer_matmul_params(mc) -> int:
    """Weights one layer multiplies each token by: q, k, v, o projections and the gate/up/down MLP."""
    e, f, h, k, d = mc.hidden_size, mc.intermediate_size, mc.num_heads, mc.num_kv_heads, mc.head_dim
    return e * h * d + 2 * e * k * d + h * d * e + 3 * e * f


def matmul_params(mc) -> int:
    """N of `6 N T`: every layer's matmul weights plus the LM head (vocab x hidden, tied or not)."""
    return mc.num_layers * layer_matmul_params(mc) + mc.vocab_size * mc.hidden_size


def attention_forward_flops(mc, seq_lens: Sequence[int]) -> float:
    """Causal attention forward FLOPs (scores + weighted sum) over sequences of these lengths."""
    t = np.asarray(seq_lens, np.float64)
    return float(2 * 2 * mc.num_layers * mc.num_heads * mc.head_dim * np.sum(t * (t + 1) / 2))


# Which forward work the backward pass recomputes, per `ModelConfig.remat_policy`: (layer matmuls, attention).
_REMAT_RECOMPUTE = {"none": (False, False), "dots": (False, False), "dots_with_no_batch_dims": (False, True),
                    "save_attn_out": (True, True), "full": (True, True)}


@dataclasses.dataclass(frozen=True)
class UpdateFlops:
    """FLOPs of one update: `model` (6NT + attention, what MFU counts) and `remat` (forward work the
    backward pass recomputes; `model + remat` = hardware FLOPs)."""

    model: float
    remat: float

    @property
    def hardware(self) -> float:
        return self.model + self.remat


def update_flops(mc, seq_lens: Sequence[int]) -> UpdateFlops:
    """FLOPs of a forward + backward pass over sequences of these (unpadded) lengths."""
    tokens = float(np.sum(np.asarray(seq_lens, np.float64)))
    attention = attention_forward_flops(mc, seq_lens)
    model = 6 * matmul_params(mc) * tokens + 3 * attention
    redo_layers, redo_attention = _REMAT_RECOMPUTE[mc.remat_policy]
    remat = 2 * mc.vocab_size * mc.hidden_size * tokens  # the LM head chunks (always checkpointed)
    if redo_layers:
        remat += 2 * mc.num_layers * layer_matmul_params(mc) * tokens
    if redo_attention:
        remat += attention
    return UpdateFlops(model=model, remat=remat)


def utilisation(flops: float, seconds: float, num_devices: int, peak_flops: float) -> float:
    """Achieved FLOP/s per device over the peak: MFU for model FLOPs, HFU for hardware FLOPs."""
    if seconds <= 0 or num_devices <= 0 or peak_flops <= 0:
        return 0.0
    return flops / seconds / num_devices / peak_flops


# -------------------------------------------------------------------------------------------- bytes


def kv_bytes_per_position(mc) -> int:
    """KV-cache bytes one cached token occupies (keys and values, every layer, compute dtype)."""
    return 2 * mc.num_layers * mc.num_kv_heads * mc.head_dim * {"float32": 4, "bfloat16": 2, "float16": 2}[mc.dtype]


def decode_bytes_per_device(mc, *, weight_bytes: float, decode_steps: int, kv_positions_read: int,
                            num_devices: int, weight_shards: int) -> float:
    """Lower bound on the HBM bytes one device moved in a generation: its shard of the sampler's weights
    (`weight_bytes` in all, split `weight_shards` ways and replicated over the rest) once per decode step,
    plus its share of every KV-cache position each generated token attended to (rows split over devices)."""
    weights = float(decode_steps) * float(weight_bytes) / max(1, weight_shards)
    cache = float(kv_positions_read) * kv_bytes_per_position(mc) / max(1, num_devices)
    return weights + cache
