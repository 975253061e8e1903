"""Static shape buckets for the sampler: prompt lengths and batch sizes.

Every distinct (batch, prompt length, new tokens) triple is a separate XLA program, so the sampler pads
both the prompt length and the batch to a small fixed set of sizes. A training run then compiles a
handful of programs, and every later call with any prompt lengths inside the same buckets reuses them.

- Prompt buckets: powers of two from `MIN_PROMPT_BUCKET` (or a configured list), each capped so that
  bucket + max_new_tokens fits the cache limit (the model's `max_position_embeddings` by default). The
  continuous engine, which prefills one bucket per admitted batch, also uses 1.5x each power of two
  (`fine_prompt_buckets`).
- Batch buckets: 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (powers of two and 1.5x powers of two, so padding
  wastes at most a third of a batch), rounded up to a multiple of the number of batch shards so that
  the batch divides evenly over the mesh's `data` x `fsdp` axes.
"""

from __future__ import annotations

import math
from typing import Sequence

MIN_PROMPT_BUCKET = 16


def default_prompt_buckets(max_length: int, min_bucket: int = MIN_PROMPT_BUCKET) -> tuple[int, ...]:
    """Powers of two from `min_bucket` up to the first one >= `max_length`, the last capped at it."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    out, b = [], min_bucket
    while b < max_length:
        out.append(b)
        b *= 2
    out.append(max_length)
    return tuple(sorted(set(out)))


def fine_prompt_buckets(max_length: int, min_bucket: int = MIN_PROMPT_BUCKET) -> tuple[int, ...]:
    """Powers of two from `min_bucket` and 1.5x each (16, 24, 32, 48, 64, 96, ...) up to the first one >=
    `max_length`, the last capped at it: a prompt is padded by at most a third of its bucket rather than
    a half, for twice the buckets (the continuous engine's default: one admit program per bucket)."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    out, b = [], min_bucket
    while b < max_length:
        out.append(b)
        if b * 3 // 2 < max_length:
            out.append(b * 3 // 2)
        b *= 2
    out.append(max_length)
    return tuple(sorted(set(out)))


def effective_prompt_buckets(buckets: Sequence[int], limit: int) -> tuple[int, ...]:
    """`buckets` with every size above `limit` replaced by `limit` (the longest prompt that still fits).

    The cap keeps the set of shapes finite and static while letting a prompt use the whole cache: with a
    cache of 2048 and 512 new tokens, a 1500-token prompt gets a 1536-slot bucket rather than failing
    because the next power of two (2048) plus 512 would overflow.
    """
    if limit < 1:
        return ()
    return tuple(sorted({min(int(b), limit) for b in buckets}))


def pick_bucket(length: int, buckets: Sequence[int]) -> int:
    """Smallest bucket >= `length`; `buckets` must be sorted and contain one (checked by the caller)."""
    for b in buckets:
        if b >= length:
            return b
    raise ValueError(f"length {length} exceeds the largest bucket {max(buckets) if buckets else None}")


def batch_bucket(n: int, multiple: int = 1) -> int:
    """Padded batch size for `n` rows: the next size in 1, 2, 3, 4, 6, 8, 12, ... that is >= `n`, then
    rounded up to a multiple of `multiple` (the number of batch shards on the mesh)."""
    if n < 1:
        raise ValueError(f"batch size must be >= 1, got {n}")
    if n <= 2:
        size = n
    else:
        p = 2 ** math.floor(math.log2(n))
        size = p if n == p else (p * 3 // 2 if n <= p * 3 // 2 else 2 * p)
    return -(-size // multiple) * multiple
