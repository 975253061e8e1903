"""The training batch: a pytree of `[B, T]` arrays, built on the host with static padding buckets.

Layout (one row per sampled sequence, right-padded): `[prompt tokens, completion tokens, pad ...]`.
All per-token arrays are aligned with `tokens`; the log-prob at position t is that of `tokens[t]` given
the tokens before it, so the completion mask is 1 exactly on the completion tokens (EOS included, nothing
after it) and the sampler's log-probs sit at the same positions.

Shapes are padded to fixed buckets (sequence length to the smallest of `length_buckets`, rows to a
multiple of `batch_multiple` or the smallest of `batch_buckets`) so that the update step compiles once
per bucket, not once per batch. Padding rows have all-zero masks and contribute nothing.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax
import jax
import numpy as np

from gasp_jax.rl.advantages import compute_advantages

DEFAULT_LENGTH_BUCKETS = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)


@flax.struct.dataclass
class Batch:
    tokens: jax.Array  # int32 [B, T]
    positions: jax.Array  # int32 [B, T] RoPE positions
    attention_mask: jax.Array  # bool [B, T]: real tokens (prompt + completion), False on padding
    completion_mask: jax.Array  # bool [B, T]: trained tokens (completion incl. EOS)
    old_logprobs: jax.Array  # float32 [B, T]: sampler log-probs at completion positions (0 elsewhere)
    advantages: jax.Array  # float32 [B] (per sequence) or [B, T] (per token)
    ref_logprobs: Optional[jax.Array] = None  # float32 [B, T]; only read when loss.kl_coef > 0
    # float32 [B]: the sampling temperature of each row. The trainer's log-probs are
    # log_softmax(logits / T), the quantity the sampler reported, so the PPO ratio is exact at any T.
    # None means 1.0 (the update step fills it in, so every batch has one compiled signature).
    temperature: Optional[jax.Array] = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.tokens.shape)


_EXPECTED = {
    "tokens": ("int32", 2),
    "positions": ("int32", 2),
    "attention_mask": ("bool", 2),
    "completion_mask": ("bool", 2),
    "old_logprobs": ("float32", 2),
    "advantages": ("float32", (1, 2)),
    "ref_logprobs": ("float32", 2),
    "temperature": ("float32", 1),
}


def validate_batch(batch: Batch, *, micro_batches: int = 1, batch_divisor: int = 1, vocab_size: int | None = None,
                   need_ref: bool = False) -> None:
    """Raises ValueError for a batch the update step cannot take, before anything reaches a device.

    Shapes and dtypes are always checked. Values (finite log-probs and advantages, masks consistent,
    token ids in the vocab, at least one trained token) are checked when the arrays are on the host
    (NumPy), where it costs no device sync.
    """
    if not isinstance(batch, Batch):
        raise ValueError(f"expected a gasp_jax.rl.Batch, got {type(batch).__name__}")
    if batch.tokens.ndim != 2:
        raise ValueError(f"Batch.tokens must be [B, T], got shape {batch.tokens.shape}")
    b, t = batch.tokens.shape
    if b == 0 or t == 0:
        raise ValueError(f"empty batch: tokens shape {batch.tokens.shape}")
    if t < 2:
        raise ValueError("sequences need at least 2 tokens (a prompt token and a completion token)")
    if need_ref and batch.ref_logprobs is None:
        raise ValueError("loss.kl_coef > 0 needs Batch.ref_logprobs")
    for name, (dtype, ndim) in _EXPECTED.items():
        x = getattr(batch, name)
        if x is None:
            continue
        if str(x.dtype) != dtype:
            raise ValueError(f"Batch.{name} must be {dtype}, got {x.dtype}")
        shapes = [(b,), (b, t)] if ndim == (1, 2) else [(b,)] if ndim == 1 else [(b, t)]
        if tuple(x.shape) not in shapes:
            raise ValueError(f"Batch.{name} must have shape {' or '.join(map(str, shapes))}, got {tuple(x.shape)}")
    if b % micro_batches:
        raise ValueError(f"batch size {b} is not divisible by micro_batches={micro_batches}")
    if (b // micro_batches) % batch_divisor:
        raise ValueError(f"micro-batch size {b // micro_batches} is not divisible by the {batch_divisor} "
                         f"data-parallel devices of the mesh")
    if not all(isinstance(getattr(batch, f), np.ndarray) for f in ("tokens", "completion_mask", "old_logprobs", "advantages")):
        return
    mask = batch.completion_mask
    if not mask.any():
        raise ValueError("empty batch: no completion token is marked in completion_mask")
    if mask[:, 0].any():
        raise ValueError("completion_mask[:, 0] must be False: the first token has no predicted log-prob")
    if isinstance(batch.attention_mask, np.ndarray) and (mask & ~batch.attention_mask).any():
        raise ValueError("completion_mask marks tokens that attention_mask says are padding")
    if vocab_size is not None and ((batch.tokens < 0) | (batch.tokens >= vocab_size)).any():
        raise ValueError(f"token ids outside [0, {vocab_size}) (tokenizer / model vocab mismatch?)")
    if not np.isfinite(batch.advantages).all():
        raise ValueError("non-finite advantages (NaN or inf rewards?)")
    if isinstance(batch.temperature, np.ndarray) and not (np.isfinite(batch.temperature) & (batch.temperature > 0)).all():
        raise ValueError("Batch.temperature must be finite and > 0 (greedy samples were scored at T = 1)")
    if not np.isfinite(np.where(mask, batch.old_logprobs, 0.0)).all():
        raise ValueError("non-finite old_logprobs on completion tokens")
    if need_ref and batch.ref_logprobs is not None and not np.isfinite(np.where(mask, batch.ref_logprobs, 0.0)).all():
        raise ValueError("non-finite ref_logprobs on completion tokens")


def _bucket(n: int, buckets: Sequence[int] | None, multiple: int, what: str) -> int:
    if buckets:
        for size in sorted(buckets):
            if size >= n and size % multiple == 0:
                return size
        raise ValueError(f"{what} {n} exceeds the largest bucket {max(buckets)} (or no bucket is a multiple of {multiple})")
    return -(-n // multiple) * multiple


def make_batch(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    sampler_logprobs: Sequence[Sequence[float]],
    advantages,
    *,
    ref_logprobs: Sequence[Sequence[float]] | None = None,
    temperature: float | Sequence[float] = 1.0,
    length_buckets: Sequence[int] | None = DEFAULT_LENGTH_BUCKETS,
    batch_multiple: int = 1,
    batch_buckets: Sequence[int] | None = None,
    pad_id: int = 0,
) -> Batch:
    """Packs sampled sequences into a host (NumPy) `Batch`.

    Args:
      prompts: token ids of each prompt (unpadded).
      completions: the sampled completion ids of each row, up to and including EOS (a sampler's
        `tokens[i, :lengths[i]]`).
      sampler_logprobs: the sampler's log-prob of each completion token (same lengths as completions).
      advantages: `[N]` per-sequence advantages (see `gasp_jax.rl.advantages`).
      ref_logprobs: optional reference-policy log-probs per completion token (for a KL term).
      temperature: the sampling temperature, one for all rows or one per row (the sampler's log-probs
        are under softmax(logits / T); the update evaluates the policy at the same T).
      length_buckets: padded sequence length = smallest bucket >= longest prompt + completion
        (None: exact longest length).
      batch_multiple: rows are padded to a multiple of this (micro_batches x data-parallel devices).
      batch_buckets: optional fixed row counts (each a multiple of batch_multiple) to pad rows to.
      pad_id: token id written in padding (never attended, never trained).
    """
    n = len(prompts)
    if n == 0:
        raise ValueError("empty batch: no sequences")
    if not (len(completions) == len(sampler_logprobs) == n):
        raise ValueError(f"got {n} prompts, {len(completions)} completions, {len(sampler_logprobs)} logprob rows")
    advantages = np.asarray(advantages, np.float32)
    if advantages.shape != (n,):
        raise ValueError(f"advantages must have shape ({n},), got {advantages.shape}")
    if not np.isfinite(advantages).all():
        raise ValueError("non-finite advantages (NaN or inf rewards?)")
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    for i, (p, c, lp) in enumerate(zip(prompts, completions, sampler_logprobs)):
        if len(p) == 0:
            raise ValueError(f"row {i}: empty prompt (the first completion token needs a context)")
        if len(lp) != len(c):
            raise ValueError(f"row {i}: {len(c)} completion tokens but {len(lp)} sampler log-probs")
        if ref_logprobs is not None and len(ref_logprobs[i]) != len(c):
            raise ValueError(f"row {i}: {len(c)} completion tokens but {len(ref_logprobs[i])} reference log-probs")
    t = _bucket(max(lengths), length_buckets, 1, "sequence length")
    b = _bucket(n, batch_buckets, batch_multiple, "batch size")

    tokens = np.full((b, t), pad_id, np.int32)
    attention = np.zeros((b, t), bool)
    completion = np.zeros((b, t), bool)
    old = np.zeros((b, t), np.float32)
    ref = np.zeros((b, t), np.float32) if ref_logprobs is not None else None
    for i, (p, c) in enumerate(zip(prompts, completions)):
        lp, lc = len(p), len(c)
        tokens[i, :lp] = p
        tokens[i, lp : lp + lc] = c
        attention[i, : lp + lc] = True
        completion[i, lp : lp + lc] = True
        old[i, lp : lp + lc] = sampler_logprobs[i]
        if ref is not None:
            ref[i, lp : lp + lc] = ref_logprobs[i]
    adv = np.zeros((b,), np.float32)
    adv[:n] = advantages
    temps = np.ones((b,), np.float32)
    temps[:n] = np.broadcast_to(np.asarray(temperature, np.float32), (n,))
    positions = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy()
    return Batch(tokens=tokens, positions=positions, attention_mask=attention, completion_mask=completion,
                 old_logprobs=old, advantages=adv, ref_logprobs=ref, temperature=temps)


def batch_from_rollouts(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    sampler_logprobs: Sequence[Sequence[float]],
    rewards,
    groups: Sequence,
    advantage_config,
    **bucket_kwargs,
):
    """Rewards -> advantages (`rl.advantage` config section) -> `Batch`, in one call.

    `groups` are the advantage groups: `(task type, role)` keys for TRR++, prompt ids for GRPO / RLOO /
    Dr.GRPO. TRR++ weights by completion length, taken from `completions`. `bucket_kwargs` go to
    `make_batch`. Returns `(batch, advantage_stats)`; log the stats (zero-advantage fraction).
    """
    lengths = np.array([len(c) for c in completions], np.int64)
    result = compute_advantages(advantage_config, rewards, groups, lengths)
    batch = make_batch(prompts, completions, sampler_logprobs, result.advantages, **bucket_kwargs)
    return batch, result.stats


def unpad_samples(tokens: np.ndarray, logprobs: np.ndarray, lengths: np.ndarray) -> tuple[list, list]:
    """A sampler's padded `[N, max_new]` tokens / log-probs and `[N]` lengths -> per-row lists (each
    row cut at its length, the stop token included), as `make_batch` takes them."""
    tokens, logprobs, lengths = np.asarray(tokens), np.asarray(logprobs), np.asarray(lengths)
    if not (tokens.shape == logprobs.shape and lengths.shape == tokens.shape[:1]):
        raise ValueError(f"tokens {tokens.shape}, logprobs {logprobs.shape}, lengths {lengths.shape} do not match")
    return [tokens[i, :n] for i, n in enumerate(lengths)], [logprobs[i, :n] for i, n in enumerate(lengths)]
