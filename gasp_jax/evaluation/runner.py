"""Sample -> extract -> grade over a list of problems, resumable from an append-only JSONL file.

Both jobs (evaluation and goalpost selection) are this loop with different reports. Each finished
problem is appended to ``samples.jsonl`` as one line (completions, extracted code, verdicts) and
flushed, so a killed job loses at most the batch in flight; on restart, problems already in the file
are reused and only the rest is sampled. A torn last line (killed mid-write) is ignored and redone.
The run's settings are fingerprinted in ``run_meta.json`` so that a resumed run never mixes samples
drawn under different settings.

Grading of batch ``i`` runs in a background thread while batch ``i+1`` is generated: the sandbox
works in its own processes, so the model and the graders overlap.

Multi-host: every process runs the same loop and generates the same (global) batches; each grades
only its own share of a batch's problems in its own sandbox, and the graded records are gathered on
the main thread (collectives never run in the grading thread, so their order is the same everywhere).
Only process 0 touches ``samples.jsonl`` / ``run_meta.json``; what it reads on resume is broadcast.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from gasp_jax import multihost
from gasp_jax.data.livecodebench import DataError, Problem, Test
from gasp_jax.evaluation.extraction import ExtractionMode, extract_code
from gasp_jax.evaluation.grading import Grader, SampleGrade, grade_items

log = logging.getLogger(__name__)

GenerateFn = Callable[[list[str], int], list[list[str]]]
"""``generate_fn(prompts, n)`` -> ``n`` completions (strings) for each prompt, in prompt order."""


def policy_generate_fn(policy: Any, *, temperature: float, max_new_tokens: int, next_key: Callable[[], Any]) -> GenerateFn:
    """``generate_fn(prompts, n)`` for the LCB runner on top of a trainer ``Policy`` (prompt-major rows)."""
    def generate(prompts: list[str], n: int) -> list[list[str]]:
        completions = policy.generate(prompts, num_samples=n, temperature=temperature,
                                      max_new_tokens=max_new_tokens, rng=next_key())
        texts = [c.text for c in completions]
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]

    return generate


@dataclasses.dataclass
class ProblemRecord:
    """Everything sampled and judged for one problem (one line of ``samples.jsonl``)."""

    question_id: str
    completions: list[str]
    codes: list[str]
    grades: list[SampleGrade]
    error: str | None = None  # set when the problem was skipped (bad tests, prompt refused, ...)

    @property
    def n(self) -> int:
        """Samples with a definite verdict (infrastructure errors excluded)."""
        return sum(g.passed is not None for g in self.grades)

    @property
    def correct(self) -> int:
        return sum(g.passed is True for g in self.grades)

    @property
    def dropped(self) -> int:
        return sum(g.passed is None for g in self.grades)

    def trimmed(self, keep: int | None) -> ProblemRecord:
        """A copy holding only the first ``keep`` completions/codes (grades are kept: they are small).

        Jobs keep trimmed records in memory (100 samples x 600 problems x several checkpoints of
        completions is GBs); ``samples.jsonl`` always has everything.
        """
        if keep is None:
            return self
        return dataclasses.replace(self, completions=self.completions[:keep], codes=self.codes[:keep])

    def status_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(g.status for g in self.grades).items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "question_id": self.question_id,
            "error": self.error,
            "n": self.n,
            "correct": self.correct,
            "completions": self.completions,
            "codes": self.codes,
            "grades": [g.to_json() for g in self.grades],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProblemRecord:
        return cls(
            question_id=d["question_id"],
            completions=list(d["completions"]),
            codes=list(d["codes"]),
            grades=[SampleGrade.from_json(g) for g in d["grades"]],
            error=d.get("error"),
        )


class SampleStore:
    """Append-only per-problem records with a settings fingerprint, for resumable jobs."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.samples_path = self.dir / "samples.jsonl"
        self.meta_path = self.dir / "run_meta.json"

    def open(
        self, fingerprint: Mapping[str, Any], *, overwrite: bool = False, keep_samples: int | None = None
    ) -> dict[str, ProblemRecord]:
        """Check/record the fingerprint and return the records already on disk (id -> record).

        Collective under multi-host: process 0 reads and writes, every process gets its result (or error).
        """
        outcome: tuple[str, Any] = ("ok", None)
        if multihost.is_main():
            try:
                outcome = ("ok", self._open(fingerprint, overwrite=overwrite, keep_samples=keep_samples))
            except ValueError as e:
                outcome = ("error", str(e))
        outcome = multihost.broadcast_object(outcome)
        if outcome[0] == "error":
            raise ValueError(outcome[1])
        return outcome[1]

    def _open(
        self, fingerprint: Mapping[str, Any], *, overwrite: bool, keep_samples: int | None
    ) -> dict[str, ProblemRecord]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        if overwrite:
            self.samples_path.unlink(missing_ok=True)
        elif self.meta_path.exists():
            old = json.loads(self.meta_path.read_text())
            if old != fingerprint:
                diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
                raise ValueError(
                    f"{self.dir} holds samples drawn with different settings ({diff}); use a new workdir "
                    "or set overwrite=True"
                )
        self.meta_path.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
        return self.load(keep_samples=keep_samples)

    def iter_records(self) -> Iterator[tuple[int, ProblemRecord]]:
        """Stream ``(end_byte, record)`` over the complete records on disk, stopping at a torn one."""
        if not self.samples_path.exists():
            return
        good_bytes = 0
        with open(self.samples_path, "rb") as f:
            for line in f:
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("record not terminated")
                    rec = ProblemRecord.from_json(json.loads(line))
                except (ValueError, KeyError, TypeError):  # JSON/Unicode errors are ValueErrors
                    log.warning("%s: ignoring a torn/corrupt record after byte %d", self.samples_path, good_bytes)
                    return
                good_bytes += len(line)
                yield good_bytes, rec

    def load(self, *, keep_samples: int | None = None) -> dict[str, ProblemRecord]:
        """All complete records (id -> record); a torn tail is cut off so later appends stay parseable."""
        records: dict[str, ProblemRecord] = {}
        good_bytes = 0
        for good_bytes, rec in self.iter_records():
            records[rec.question_id] = rec.trimmed(keep_samples)
        if self.samples_path.exists() and good_bytes != self.samples_path.stat().st_size:
            with open(self.samples_path, "r+b") as f:
                f.truncate(good_bytes)
        return records

    def append(self, record: ProblemRecord) -> None:
        """Appends on process 0 (every process holds the same gathered records)."""
        if not multihost.is_main():
            return
        with open(self.samples_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _generate_checked(generate_fn: GenerateFn, prompts: list[str], n: int) -> list[list[str]]:
    out = generate_fn(prompts, n)
    if len(out) != len(prompts) or any(len(c) != n for c in out):
        raise RuntimeError(f"generate_fn returned {[len(c) for c in out]} completions for {len(prompts)} x {n}")
    return [[str(c) for c in row] for row in out]


def _generate_batch(
    generate_fn: GenerateFn, problems: Sequence[Problem], prompts: list[str], n: int
) -> list[list[str] | str]:
    """Completions per problem, or an error string for problems whose generation was refused.

    A refusal (e.g. a prompt longer than the model's context) of the whole batch is retried one
    problem at a time, so that one bad prompt only skips its own problem.
    """
    try:
        return list(_generate_checked(generate_fn, prompts, n))
    except ValueError as e:
        if len(prompts) == 1:
            return [f"generation refused: {e}"]
        log.warning("batch generation refused (%s); retrying problem by problem", e)
    out: list[list[str] | str] = []
    for p, prompt in zip(problems, prompts):
        try:
            out.append(_generate_checked(generate_fn, [prompt], n)[0])
        except ValueError as e:
            log.warning("%s: generation refused: %s", p.id, e)
            out.append(f"generation refused: {e}")
    return out


def _decode_tests(problem: Problem) -> tuple[Test, ...] | str:
    """The problem's tests, or the reason they cannot be used (checked before any sampling)."""
    try:
        tests = problem.tests
    except DataError as e:  # e.g. an undecodable or oversized private-test blob
        log.warning("%s: skipped: bad tests: %s", problem.id, e)
        return f"bad tests: {e}"
    return tests if tests else "bad tests: none"


def _records_for_batch(
    grader: Grader,
    batch: Sequence[Problem],
    tests: Sequence[tuple[Test, ...]],
    completions: Sequence[list[str] | str],
    mode: ExtractionMode | Callable[[str], str],
) -> list[ProblemRecord]:
    """Extract and grade a batch; problems that failed earlier (a str) keep their reason."""
    records: list[ProblemRecord | None] = [None] * len(batch)
    items, where = [], []
    for i, (p, t, comp) in enumerate(zip(batch, tests, completions)):
        if isinstance(comp, str):
            records[i] = ProblemRecord(p.id, [], [], [], error=comp)
        else:
            items.append((p, t, [mode(c) if callable(mode) else extract_code(c, mode) for c in comp]))
            where.append(i)
    for i, (p, _, codes), result in zip(where, items, grade_items(grader, items)):
        comp = completions[i]
        assert not isinstance(comp, str)
        if isinstance(result, DataError):  # malformed tests only the grader can detect
            log.warning("%s: skipped: bad tests: %s", p.id, result)
            records[i] = ProblemRecord(p.id, comp, codes, [], error=f"bad tests: {result}")
        elif len(result) != len(codes):
            raise RuntimeError(f"grader returned {len(result)} grades for {len(codes)} programs")
        else:
            records[i] = ProblemRecord(p.id, comp, codes, list(result))
    return [r for r in records if r is not None]


def sample_and_grade(
    problems: Sequence[Problem],
    *,
    prompt_fn: Callable[[Problem], str],
    generate_fn: GenerateFn,
    grader: Grader,
    store: SampleStore,
    done: Mapping[str, ProblemRecord],
    num_samples: int,
    batch_problems: int = 8,
    extraction: ExtractionMode | Callable[[str], str] = "lcb",  # or completion -> code (HumanEval/MBPP+)
    label: str = "lcb",
    keep_samples: int | None = None,
) -> dict[str, ProblemRecord]:
    """Sample ``num_samples`` completions for every problem not in ``done``, grade, append to ``store``.

    Returns all records (reused + new), keyed by problem id; with ``keep_samples`` the returned
    records hold only that many completions/codes each (the store has them all).
    """
    records = {p.id: done[p.id] for p in problems if p.id in done}
    todo = [p for p in problems if p.id not in done]
    log.info("%s: %d problems (%d reused from disk, %d to sample), n=%d", label, len(problems), len(records), len(todo), num_samples)
    start = time.monotonic()
    finished = 0

    def grade_shard(batch: Sequence[Problem], tests: list[tuple[Test, ...]], completions: list[list[str] | str]) -> list[ProblemRecord]:
        # This process's contiguous share of the batch (all of it with one process); no collectives here.
        lo, hi = multihost.process_bounds(len(batch))
        return _records_for_batch(grader, batch[lo:hi], tests[lo:hi], completions[lo:hi], extraction)

    def finish_batch(local: list[ProblemRecord]) -> None:
        nonlocal finished
        for rec in multihost.all_gather_objects(local):
            store.append(rec)
            records[rec.question_id] = rec.trimmed(keep_samples)
            finished += 1
        elapsed = time.monotonic() - start
        rate = finished / elapsed if elapsed > 0 else 0.0
        eta = (len(todo) - finished) / rate if rate > 0 else float("nan")
        solved = sum(r.correct > 0 for r in records.values())
        log.info(
            "%s: %d/%d problems done (%d with a correct sample), %.2f problems/s, ETA %.0f s",
            label, len(records), len(problems), solved, rate, eta,
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lcb-grade") as pool:
        pending: concurrent.futures.Future | None = None
        for batch in _chunks(todo, max(1, batch_problems)):
            decoded = [_decode_tests(p) for p in batch]
            bad = {p.id: d for p, d in zip(batch, decoded) if isinstance(d, str)}
            usable = [p for p in batch if p.id not in bad]
            generated = iter(_generate_batch(generate_fn, usable, [prompt_fn(p) for p in usable], num_samples) if usable else [])
            completions = [bad[p.id] if p.id in bad else next(generated) for p in batch]
            tests = [() if isinstance(d, str) else d for d in decoded]
            if pending is not None:
                finish_batch(pending.result())
            pending = pool.submit(grade_shard, batch, tests, completions)
        if pending is not None:
            finish_batch(pending.result())
    return records
