"""The curriculum record (``WORKDIR/curriculum.jsonl``) and the buffer of accepted questions.

One JSON line per lemma and per lift the teacher wrote, with exactly :data:`FIELDS`:

  step         iteration (0-based)            goalpost_id  the LCB question_id it descends from
  axis         "io" | "algorithm"             stage        "lemma" | "lift"
  prompt       exactly what the teacher saw   proposal     the teacher's raw completion text
  valid        parsed + passed validation     duplicate    rejected by the near-duplicate filter
  n            student samples judged         p            student pass rate (null when not measured)
  reward       the teacher's reward           accepted     p inside the stage's window (enters the buffer)
  id           this question's id             parent_id    the lemma's id for a lift, null for a lemma

Following a lineage is a join on ``parent_id``; the goalpost is ``goalpost_id`` on both lines.
The file is appended and flushed once per iteration. Its byte length is part of the source's
checkpointed state: on resume the file is cut back to that length, so lines written after the last
checkpoint (by a run that then died) are not duplicated by the resumed run.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FIELDS = ("step", "goalpost_id", "axis", "stage", "prompt", "proposal", "valid", "duplicate", "n", "p",
          "reward", "accepted", "id", "parent_id")


def make_row(**fields: Any) -> dict[str, Any]:
    """A curriculum row with exactly FIELDS (missing or extra keys are a bug, raised here)."""
    missing = [f for f in FIELDS if f not in fields]
    extra = [f for f in fields if f not in FIELDS]
    if missing or extra:
        raise ValueError(f"curriculum row: missing {missing}, unexpected {extra}")
    return {f: fields[f] for f in FIELDS}


class CurriculumLog:
    """Append-only ``curriculum.jsonl`` with a resumable length (``size`` / ``truncate``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        lines = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows)
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes (the length at the checkpoint being resumed)."""
        if self.size > size:
            with open(self.path, "r+b") as f:
                f.truncate(size)
        elif self.size < size:
            raise ValueError(f"{self.path} has {self.size} bytes but the checkpoint recorded {size}: "
                             "the curriculum file was lost or replaced")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


class QuestionBuffer:
    """Accepted lemmas and lifts, oldest first; ``max_size`` > 0 evicts the oldest (0: unbounded).

    Each entry: ``{"id", "stage", "goalpost_id", "axis", "parent_id", "step", "p", "record"}`` where
    ``record`` is the validated induction record. The dedup index is rebuilt from these entries on
    resume, so the buffer is the single source of truth for "accepted".
    """

    def __init__(self, max_size: int = 0):
        self.max_size = int(max_size)
        self._entries: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, qid: str) -> bool:
        return qid in self._entries

    def get(self, qid: str) -> dict[str, Any] | None:
        return self._entries.get(qid)

    def entries(self) -> list[dict[str, Any]]:
        return list(self._entries.values())

    def add(self, entry: Mapping[str, Any]) -> list[str]:
        """Add an entry; returns the ids evicted to respect ``max_size``."""
        self._entries[entry["id"]] = dict(entry)
        evicted = []
        while self.max_size and len(self._entries) > self.max_size:
            evicted.append(self._entries.popitem(last=False)[0])
        return evicted

    def lineage(self, qid: str) -> list[dict[str, Any]]:
        """The chain from the root lemma down to ``qid`` (entries evicted meanwhile are skipped)."""
        chain = []
        while qid is not None and qid in self._entries:
            entry = self._entries[qid]
            chain.append(entry)
            qid = entry.get("parent_id")
        return chain[::-1]

    def state_dict(self) -> list[dict[str, Any]]:
        return self.entries()

    def load_state_dict(self, entries: Iterable[Mapping[str, Any]]) -> None:
        self._entries.clear()
        for e in entries:
            self._entries[e["id"]] = dict(e)
