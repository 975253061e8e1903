"""Which goalposts guide the teacher now: fixed (the paper) or dynamic (its stated open problem).

The paper keeps one fixed goalpost set for the whole run and leaves "what should happen once a goalpost
is reached" to future work. With ``goalposts.dynamic = True``, a goalpost that the periodic evaluation
finds solved is *retired* and the next unsolved problem of the reserve is *promoted* in its place, so
the number of active goalposts stays constant. Promotion policies:

  ``hardest``  the reserve problem with the lowest base-model pass rate (from the ``lcb_goalposts``
               report; unknown rates rank after known ones, then LCB difficulty hard > medium > easy,
               then newest first): keeps guidance at the edge of what the base model could not do.
  ``nearest``  the reserve problem whose statement is closest (cosine of the dedup embedder) to the
               retired goalpost's: keeps the curriculum's theme and builds on what was just learnt.

Every change is a dict ``{"step", "retired", "promoted", "reason", "policy"}`` kept in the state (and
so in checkpoints) and returned to the caller, which logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gasp_jax.gasp.goalposts import Goalpost, GoalpostPool

log = logging.getLogger(__name__)

POLICIES = ("hardest", "nearest")
_DIFFICULTY_RANK = {"hard": 0, "medium": 1, "easy": 2}


def hardest_order(candidates: Sequence[Goalpost]) -> list[Goalpost]:
    """Reserve problems, hardest first (see the module docstring for the tie-breaks)."""
    def key(g: Goalpost):
        rate = g.base_pass_rate
        return (rate is None, rate if rate is not None else 0.0,
                _DIFFICULTY_RANK.get(g.problem.difficulty, 3), -g.problem.date.timestamp(), g.id)

    return sorted(candidates, key=key)


class GoalpostSchedule:
    """The active goalposts, the retired ones and the history of changes (JSON state)."""

    def __init__(self, pool: GoalpostPool, *, dynamic: bool = False, policy: str = "hardest",
                 embed: Callable[[Sequence[str]], np.ndarray] | None = None):
        if policy not in POLICIES:
            raise ValueError(f"unknown goalposts.promote policy {policy!r}; expected one of {POLICIES}")
        if policy == "nearest" and dynamic and embed is None:
            raise ValueError("goalposts.promote='nearest' needs an embedder")
        self.pool = pool
        self.by_id = pool.by_id()
        self.dynamic = bool(dynamic)
        self.policy = policy
        self._embed = embed
        self.active: list[str] = [g.id for g in pool.goalposts]
        self.retired: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []

    def active_goalposts(self) -> list[Goalpost]:
        return [self.by_id[i] for i in self.active]

    def _candidates(self) -> list[Goalpost]:
        taken = set(self.active) | set(self.retired)
        return [g for g in self.pool.reserve if g.id not in taken]

    def _pick(self, retired: Goalpost) -> Goalpost | None:
        candidates = self._candidates()
        if not candidates:
            return None
        if self.policy == "hardest":
            return hardest_order(candidates)[0]
        assert self._embed is not None
        vecs = np.asarray(self._embed([retired.statement] + [g.statement for g in candidates]), np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return candidates[int(np.argmax(vecs[1:] @ vecs[0]))]

    def update(self, step: int, solved: Mapping[str, str]) -> list[dict[str, Any]]:
        """Retire the solved active goalposts (id -> reason) and promote replacements; returns the changes.

        With ``dynamic=False`` nothing changes (the paper's fixed set); solved goalposts keep guiding.
        """
        if not self.dynamic:
            return []
        changes = []
        for gid, reason in solved.items():
            if gid not in self.active:
                continue
            retired = self.by_id[gid]
            new = self._pick(retired)
            slot = self.active.index(gid)
            if new is None:
                del self.active[slot]
            else:
                self.active[slot] = new.id
            self.retired[gid] = {"step": step, "reason": reason}
            change = {"step": step, "retired": gid, "promoted": new.id if new else None, "reason": reason,
                      "policy": self.policy}
            if new is not None:
                change["promoted_base_pass_rate"] = new.base_pass_rate
            self.history.append(change)
            changes.append(change)
            log.info("goalposts: step %d retired %s (%s); promoted %s by policy %s", step, gid, reason,
                     new.id if new else "nothing (reserve empty)", self.policy)
        return changes

    def state_dict(self) -> dict[str, Any]:
        return {"active": list(self.active), "retired": dict(self.retired), "history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = [i for i in [*state["active"], *state["retired"]] if i not in self.by_id]
        if unknown:
            raise ValueError(f"checkpointed goalposts {unknown[:5]} are not in the configured goalpost pool "
                             f"({self.pool.source}); resume with the same goalposts config")
        self.active = list(state["active"])
        self.retired = dict(state["retired"])
        self.history = list(state["history"])
