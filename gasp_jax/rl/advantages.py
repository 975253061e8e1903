"""Outcome-reward advantages on the host, in NumPy (one scalar reward per sampled sequence).

Estimators (each returns an `AdvantageResult` with per-sequence advantages `[N]` float32 and stats):
- `trr_plus_plus`: Task-Relative REINFORCE++ (AZR, GASP). Rewards are whitened separately inside each
  `(task type, role)` group, *token-weighted*: verl's REINFORCE++ puts the outcome on every completion
  token (gamma = 1) and whitens over all valid tokens of the group, so a sequence counts once per token.
- `grpo`: per-prompt-group `(r - mean) / (std + eps)`, std with ddof = 1.
- `rloo`: leave-one-out baseline, `r_i - mean_{j != i} r_j`.
- `dr_grpo`: per-group mean subtraction only.

A group whose rewards are all equal carries no learning signal: its advantages are exactly 0 (not
`0 / sqrt(eps)` round-off noise). So is a singleton group (no baseline). `stats["zero_adv_frac"]` is the
fraction of sequences with zero advantage, `stats["constant_group_frac"]` the fraction of such groups;
log both: they measure wasted rollouts.
"""

from __future__ import annotations

import logging
from typing import Any, Hashable, NamedTuple, Sequence

import numpy as np

log = logging.getLogger(__name__)


class AdvantageResult(NamedTuple):
    advantages: np.ndarray  # float32 [N], one per sequence
    stats: dict[str, float]


def _check_rewards(rewards, groups) -> tuple[np.ndarray, np.ndarray]:
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D (one per sequence), got shape {rewards.shape}")
    if rewards.size == 0:
        raise ValueError("empty batch: no rewards")
    bad = ~np.isfinite(rewards)
    if bad.any():
        raise ValueError(f"non-finite rewards at indices {np.flatnonzero(bad)[:10].tolist()} "
                         f"(values {rewards[bad][:10].tolist()})")
    if len(groups) != rewards.size:
        raise ValueError(f"got {len(groups)} group ids for {rewards.size} rewards")
    # Map arbitrary hashable group keys (e.g. ("deduction", "solve")) to dense ints.
    index: dict[Hashable, int] = {}
    ids = np.fromiter((index.setdefault(_key(g), len(index)) for g in groups), dtype=np.int64, count=rewards.size)
    return rewards, ids


def _key(g: Any) -> Hashable:
    return tuple(g) if isinstance(g, (list, np.ndarray)) else g


def _result(adv: np.ndarray, ids: np.ndarray, constant: np.ndarray, name: str) -> AdvantageResult:
    adv = adv.astype(np.float32)
    stats = {
        "zero_adv_frac": float(np.mean(adv == 0.0)),
        "constant_group_frac": float(np.mean(constant)),
        "num_groups": float(constant.size),
        "mean_abs_adv": float(np.mean(np.abs(adv))),
    }
    log.debug("%s advantages: %s", name, stats)
    return AdvantageResult(adv, stats)


def trr_plus_plus(rewards, groups: Sequence[Hashable], lengths, *, eps: float = 1e-8) -> AdvantageResult:
    """Task-Relative REINFORCE++: token-weighted whitening per `(task, role)` group.

    For group g with sequences i of `lengths[i]` completion tokens (M = sum of lengths):
        mu  = sum_i n_i r_i / M
        var = sum_i n_i (r_i - mu)^2 / M * M / (M - 1)        (verl masked_var, unbiased over tokens)
        A_i = (r_i - mu) / sqrt(var + eps)
    Sequences with 0 tokens get 0. Groups with constant reward, or fewer than 2 tokens, get 0.
    """
    rewards, ids = _check_rewards(rewards, groups)
    lengths = np.asarray(lengths)
    if lengths.shape != rewards.shape or not np.issubdtype(lengths.dtype, np.integer) or (lengths < 0).any():
        raise ValueError(f"lengths must be non-negative integers of shape {rewards.shape}, got {lengths.dtype} {lengths.shape}")
    adv = np.zeros_like(rewards)
    num_groups = ids.max() + 1
    constant = np.zeros(num_groups, bool)
    for g in range(num_groups):
        sel = (ids == g) & (lengths > 0)
        r, n = rewards[sel], lengths[sel].astype(np.float64)
        tokens = n.sum()
        if tokens < 2 or r.max() == r.min():
            constant[g] = True
            continue
        mu = (n * r).sum() / tokens
        var = (n * (r - mu) ** 2).sum() / tokens * tokens / (tokens - 1)
        adv[sel] = (r - mu) / np.sqrt(var + eps)
    return _result(adv, ids, constant, "trr++")


def _group_loop(rewards, ids, fn):
    adv = np.zeros_like(rewards)
    num_groups = ids.max() + 1
    constant = np.zeros(num_groups, bool)
    for g in range(num_groups):
        sel = ids == g
        r = rewards[sel]
        if r.size < 2 or r.max() == r.min():
            constant[g] = True
            continue
        adv[sel] = fn(r)
    return adv, constant


def grpo(rewards, groups: Sequence[Hashable], *, eps: float = 1e-6) -> AdvantageResult:
    """GRPO: `(r - mean_g) / (std_g + eps)` per prompt group, std with ddof = 1."""
    rewards, ids = _check_rewards(rewards, groups)
    adv, constant = _group_loop(rewards, ids, lambda r: (r - r.mean()) / (r.std(ddof=1) + eps))
    return _result(adv, ids, constant, "grpo")


def rloo(rewards, groups: Sequence[Hashable]) -> AdvantageResult:
    """RLOO: `r_i - mean of the other rewards in the group` (= n/(n-1) * (r_i - mean_g))."""
    rewards, ids = _check_rewards(rewards, groups)
    adv, constant = _group_loop(rewards, ids, lambda r: (r - r.mean()) * r.size / (r.size - 1))
    return _result(adv, ids, constant, "rloo")


def dr_grpo(rewards, groups: Sequence[Hashable]) -> AdvantageResult:
    """Dr.GRPO: `r - mean_g` (no std normalisation; pair with `seq-mean-token-sum-norm`)."""
    rewards, ids = _check_rewards(rewards, groups)
    adv, constant = _group_loop(rewards, ids, lambda r: r - r.mean())
    return _result(adv, ids, constant, "dr_grpo")


def compute_advantages(advantage_config, rewards, groups, lengths=None) -> AdvantageResult:
    """Dispatches on `rl.advantage.estimator` ("trr++" needs `lengths`)."""
    est = advantage_config["estimator"]
    if est == "trr++":
        if lengths is None:
            raise ValueError("trr++ advantages need per-sequence completion lengths (token weighting)")
        return trr_plus_plus(rewards, groups, lengths, eps=advantage_config["whiten_eps"])
    if est == "grpo":
        return grpo(rewards, groups, eps=advantage_config["grpo_eps"])
    if est == "rloo":
        return rloo(rewards, groups)
    if est == "dr_grpo":
        return dr_grpo(rewards, groups)
    raise ValueError(f"unknown advantage estimator {est!r}")
