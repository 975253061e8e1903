"""Rewards (AZR's defaults, eq. 4-6 and the released code's mapping), configurable."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """Solver: ``correct`` / ``wrong`` (well-formed) / ``format_error``. Proposer: learnability
    ``1 - p`` for ``0 < p < 1``; ``valid_extreme`` for a valid task every or no sample solves;
    ``invalid`` for a proposal that did not parse or did not validate."""

    correct: float = 1.0
    wrong: float = -0.5
    format_error: float = -1.0
    valid_extreme: float = -0.5
    invalid: float = -1.0


DEFAULT_REWARDS = RewardConfig()


def solver_reward(correct: bool | None, *, formatted: bool = True, config: RewardConfig | None = None) -> float | None:
    """``format_error`` if the response had no answer (``formatted=False``), else ``correct`` /
    ``wrong`` by the verdict; None (drop the sample) when the verdict is None (infrastructure).
    Induction counts as correct only if every hidden pair passed (the judge's verdict)."""
    cfg = config or DEFAULT_REWARDS
    if not formatted:
        return cfg.format_error
    if correct is None:
        return None
    return cfg.correct if correct else cfg.wrong


def proposer_reward(valid: bool, p: float | None, *, config: RewardConfig | None = None) -> float | None:
    """``invalid`` for an invalid proposal; for a valid one, ``1 - p`` if ``0 < p < 1`` else
    ``valid_extreme``; None when ``p`` is unknown (None or NaN: every learnability sample hit an
    infrastructure error), so the proposal is dropped rather than scored."""
    cfg = config or DEFAULT_REWARDS
    if not valid:
        return cfg.invalid
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return None
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"pass rate must be in [0, 1], got {p}")
    return 1.0 - p if 0.0 < p < 1.0 else cfg.valid_extreme


def solver_outcome(answer: str | None, verdict: bool | None) -> str:
    """Metric label: ``format_error`` (no answer), ``infra_error``, ``correct`` or ``wrong``."""
    if answer is None:
        return "format_error"
    if verdict is None:
        return "infra_error"
    return "correct" if verdict else "wrong"
