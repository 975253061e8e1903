"""GASP teacher rewards: functions of the student pass rate p on a proposed lemma or lift.

    lemma_reward(p) = [4 p (1 - p)]^5           if 0.3 <= p <= 0.7 else -0.5   (peak 1.0 at p = 0.5)
    lift_reward(p)  = 10 p ((1 - p) / 0.9)^9    if 0.1 <= p <= 0.5 else -0.5   (peak 1.0 at p = 0.1)

The lemma reward is centred (an easier variant the student solves about half the time); the lift reward
is skewed towards hard (1-2 successes out of 8). Both accept a scalar (returning a Python float) or an
array (returning a float64 array of the same shape). The window edges are inclusive and are compared
with a 1e-9 tolerance, so pass rates computed as k/n (e.g. 3/10 = 0.30000000000000004) land inside.

Invalid and duplicate proposals never reach these functions: they get the format penalty
(`teacher_reward`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

LEMMA_WINDOW = (0.3, 0.7)
LIFT_WINDOW = (0.1, 0.5)
OUT_OF_WINDOW = -0.5
FORMAT_PENALTY = -1.0  # AZR's reward for a proposal that does not parse or fails validation
_EDGE_TOL = 1e-9
STAGES = ("lemma", "lift")


def _as_rate(p: Any) -> tuple[np.ndarray, bool]:
    arr = np.asarray(p, dtype=np.float64)
    if np.any(~np.isfinite(arr)) or np.any((arr < 0.0) | (arr > 1.0)):
        raise ValueError(f"pass rates must lie in [0, 1], got {p!r}")
    return arr, arr.ndim == 0


def _in_window(p: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    return (p >= lo - _EDGE_TOL) & (p <= hi + _EDGE_TOL)


def _finish(out: np.ndarray, scalar: bool) -> Any:
    return float(out) if scalar else out


def lemma_reward(p: Any) -> Any:
    """``[4p(1-p)]^5`` inside ``0.3 <= p <= 0.7``, else -0.5; scalar -> float, array -> array."""
    arr, scalar = _as_rate(p)
    out = np.where(_in_window(arr, LEMMA_WINDOW), (4.0 * arr * (1.0 - arr)) ** 5, OUT_OF_WINDOW)
    return _finish(out, scalar)


def lift_reward(p: Any) -> Any:
    """``10p((1-p)/0.9)^9`` inside ``0.1 <= p <= 0.5``, else -0.5; scalar -> float, array -> array."""
    arr, scalar = _as_rate(p)
    out = np.where(_in_window(arr, LIFT_WINDOW), 10.0 * arr * ((1.0 - arr) / 0.9) ** 9, OUT_OF_WINDOW)
    return _finish(out, scalar)


def accepted_rate(stage: str, p: Any) -> Any:
    """Whether pass rate p falls in the stage's acceptance window (the window where the reward is not -0.5)."""
    arr, scalar = _as_rate(p)
    out = _in_window(arr, _window(stage))
    return bool(out) if scalar else out


def _window(stage: str) -> tuple[float, float]:
    if stage == "lemma":
        return LEMMA_WINDOW
    if stage == "lift":
        return LIFT_WINDOW
    raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")


def teacher_reward(stage: str, *, valid: bool, duplicate: bool, p: float | None,
                   format_penalty: float = FORMAT_PENALTY) -> float:
    """The teacher's reward for one proposal: the format penalty if invalid or a duplicate, else r_stage(p).

    A valid, new proposal must come with a pass rate; the caller drops proposals whose pass rate could
    not be measured (every student sample lost to sandbox infrastructure errors) instead of scoring them.
    """
    _window(stage)
    if not valid or duplicate:
        return float(format_penalty)
    if p is None:
        raise ValueError("a valid, non-duplicate proposal needs a pass rate p")
    return lemma_reward(p) if stage == "lemma" else lift_reward(p)
