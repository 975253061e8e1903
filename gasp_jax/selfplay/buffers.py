"""Per-task-type buffers of validated tasks (AZR's D_ded, D_abd, D_ind), host side, JSON-serialisable.

A record is a tasks-layer dict (deduction/abduction `{"snippet", "input", "output", "imports", ...}`,
induction `{"snippet", "inputs", "outputs", "message", "imports", ...}` plus metadata `id`, `origin`,
`step`, `parent_ids`). Buffers serve three purposes: K references in proposer prompts, the back-fill of
the student batch, and the duplicate check of new proposals.

Size cap: once a buffer holds `max_size` records, `drop="newest"` (AZR's code: the buffer is truncated
to its first `max_size` entries, so the oldest are kept and new tasks are not stored) or
`drop="oldest"` (FIFO: the newest `max_size` are kept). AZR's default is `newest`, kept here so the
baseline reproduces AZR; `oldest` tracks the current policy more closely.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import jax
import numpy as np

from gasp_jax.tasks import record_key

KINDS = ("deduction", "abduction", "induction")
DROP_POLICIES = ("newest", "oldest")

# The zero triplet AZR starts from when no seed file is given: the identity program.
IDENTITY_SNIPPET = "def f(a):\n    return a"
_IDENTITY_INPUTS = ['"Hello world"', "1", "{'a': 1, 'b': 2}", "(1.1, 1.2, 1.3)", '"[[1, 0, 0], [0, 0, 0]]"', "[3, 1, 2]"]


def identity_records(kind: str) -> list[dict]:
    """The single identity task of `kind` (AZR's zero triplet) as a buffer seed."""
    base = {"snippet": IDENTITY_SNIPPET, "imports": [], "id": f"seed-identity-{kind}", "origin": "seed",
            "step": -1, "parent_ids": []}
    if kind == "induction":
        return [dict(base, inputs=list(_IDENTITY_INPUTS), outputs=list(_IDENTITY_INPUTS),
                     message="Write a function that returns whatever you input")]
    if kind in ("deduction", "abduction"):
        return [dict(base, input='"Hello world"', output='"Hello world"')]
    raise ValueError(f"unknown task kind {kind!r}; expected one of {KINDS}")


def task_key(kind: str, record: Mapping) -> str:
    """Identity of a task for the duplicate check: the tasks layer's content hash (program, imports,
    inputs)."""
    return record_key(kind, dict(record))


class TaskBuffer:
    """Validated tasks of one type, in insertion order, with a size cap and a duplicate index."""

    def __init__(self, kind: str, *, max_size: int, drop: str = "newest"):
        if kind not in KINDS:
            raise ValueError(f"unknown task kind {kind!r}; expected one of {KINDS}")
        if drop not in DROP_POLICIES:
            raise ValueError(f"buffer drop policy {drop!r} not in {DROP_POLICIES}")
        if int(max_size) < 1:
            raise ValueError(f"buffer max_size must be >= 1, got {max_size}")
        self.kind, self.max_size, self.drop = kind, int(max_size), drop
        self.records: list[dict] = []
        self._keys: set[str] = set()

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, record: Mapping) -> bool:
        return task_key(self.kind, record) in self._keys

    @jax.profiler.annotate_function  # buffer work: a named row in a profile
    def add(self, records: Iterable[Mapping]) -> int:
        """Appends records not already present; applies the cap. Returns how many were stored."""
        stored = 0
        for r in records:
            key = task_key(self.kind, r)
            if key in self._keys:
                continue
            if len(self.records) >= self.max_size:
                if self.drop == "newest":
                    continue
                old = self.records.pop(0)
                self._keys.discard(task_key(self.kind, old))
            self.records.append(dict(r))
            self._keys.add(key)
            stored += 1
        return stored

    def sample(self, k: int, rng: np.random.Generator, *, replace: bool = False) -> list[dict]:
        """`k` records uniformly (without replacement unless `replace`; fewer if the buffer is smaller)."""
        if not self.records or k <= 0:
            return []
        if not replace:
            k = min(k, len(self.records))
        idx = rng.choice(len(self.records), size=k, replace=replace)
        return [self.records[int(i)] for i in idx]

    def state_dict(self) -> dict:
        return {"kind": self.kind, "records": [dict(r) for r in self.records]}

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"buffer state is for {state.get('kind')!r}, not {self.kind!r}")
        self.records, self._keys = [], set()
        self.add(state["records"])


class TaskBuffers(dict):
    """`{kind: TaskBuffer}` for the three AZR task types, with one state dict for checkpoints."""

    def __init__(self, *, max_size: int, drop: str = "newest", kinds: Iterable[str] = KINDS):
        super().__init__({k: TaskBuffer(k, max_size=max_size, drop=drop) for k in kinds})

    def sizes(self) -> dict[str, int]:
        return {k: len(b) for k, b in self.items()}

    def state_dict(self) -> dict:
        return {k: b.state_dict() for k, b in self.items()}

    def load_state_dict(self, state: Mapping) -> None:
        if set(state) != set(self):
            raise ValueError(f"checkpointed buffers {sorted(state)} do not match this run's task types {sorted(self)}")
        for k, b in self.items():
            b.load_state_dict(state[k])
