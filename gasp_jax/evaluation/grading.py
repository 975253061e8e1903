"""Grading LCB samples through the gasp_jax sandbox, with verdicts mapped to LCB's result codes.

Our sandbox runs each program as a real process (stdin mode: a real ``__main__`` script; functional
mode: JSON-per-line arguments, a fresh ``Solution()`` per test) and compares in the parent, so it
avoids the official harness's false negatives (``for line in sys.stdin``, ``open(0)``, top-level
``global``) and its reward hacks. Scores can therefore sit slightly above the official ones; the
differential test against the O1-Mini verdicts tracks the difference.

LCB result codes (``lcb_runner/evaluation/testing_util.py``): ``True`` pass, ``-1`` global timeout,
``-2`` wrong answer, ``-3`` time limit, ``-4`` runtime/compile error, ``-5`` harness error.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from gasp_jax.data.livecodebench import DataError, Problem, Test
from gasp_jax.sandbox import TestCase

log = logging.getLogger(__name__)

# Sandbox status -> LCB error code (``None``: pass), the same table as ``gasp_jax.sandbox``. LCB
# has no memory or output limit of its own: a MemoryError or a flood that kills its harness
# surfaces there as a runtime error (-4).
LCB_CODES: dict[str, int | None] = {
    "PASS": None,
    "WA": -2,
    "OLE": -4,
    "TLE": -3,
    "RE": -4,
    "CE": -4,
    "MLE": -4,
    "INFRA_ERROR": -5,
}
STATUSES = tuple(LCB_CODES)


def lcb_code(status: str) -> int | None:
    """LCB's error code for a sandbox status (``None`` for a pass); unknown statuses are -5."""
    return LCB_CODES.get(status, -5)


@dataclasses.dataclass(frozen=True)
class SampleGrade:
    """The outcome of one sample, as stored in sample files and reports.

    ``passed`` is None when the sample could not be judged (an infrastructure or data error): such a
    sample is dropped from pass@k, never scored as a pass or a fail.
    """

    status: str
    passed: bool | None
    lcb_code: int | None
    message: str = ""
    cpu_s: float = 0.0  # CPU time the program used over the tests it ran

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SampleGrade:
        return cls(d["status"], d["passed"], d["lcb_code"], d.get("message", ""), float(d.get("cpu_s", 0.0)))


class Grader(Protocol):
    """Grades the extracted programs of one problem against its (already decoded) tests.

    Returns one :class:`SampleGrade` per program.
    """

    def __call__(self, problem: Problem, tests: Sequence[Test], codes: Sequence[str]) -> list[SampleGrade]: ...


def _message(verdict: Any) -> str:
    """A short reason for a non-pass: the verdict's message, else its failing test's message/stderr."""
    message = str(getattr(verdict, "message", "") or "")
    failing = [t for t in getattr(verdict, "tests", ()) if str(getattr(t.status, "value", t.status)) != "PASS"]
    if failing:
        t = failing[0]
        test_msg = str(getattr(t, "message", "") or "")
        if test_msg and test_msg not in message:
            message = f"{message} | test {getattr(t, 'index', '?')}: {test_msg}" if message else test_msg
        tail = (getattr(t, "stderr_tail", "") or "").strip().splitlines()
        if tail and tail[-1] not in message:
            message = f"{message} | {tail[-1]}" if message else tail[-1]
    return message[:500]


def grade_from_verdict(verdict: Any) -> SampleGrade:
    """Turn a sandbox ``Verdict`` into a :class:`SampleGrade` (reward None -> not judged).

    A verdict flagged as a *data* error (e.g. malformed functional JSON in the tests) raises
    :class:`DataError`: the problem, not the sample, is broken, and it is reported and skipped.
    """
    status = str(getattr(verdict.status, "value", verdict.status))
    if getattr(verdict, "data_error", False):
        raise DataError(f"sandbox rejected the tests: {_message(verdict) or status}")
    if getattr(verdict, "reward", 0.0) is None:
        return SampleGrade(status, None, lcb_code(status) if status in LCB_CODES else -5, _message(verdict))
    passed = bool(verdict.passed)
    if passed != (status == "PASS"):
        # Never let an inconsistent verdict become a silent pass.
        log.error("sandbox verdict inconsistent: status=%s passed=%s; treating as not judged", status, passed)
        return SampleGrade(status, None, -5, "inconsistent verdict")
    cpu = float(getattr(verdict, "cpu_s", 0.0) or 0.0)
    return SampleGrade(status, passed, lcb_code(status), _message(verdict), round(cpu, 4))


def sandbox_tests(tests: Sequence[Test]) -> list[Any]:
    """LCB tests as sandbox ``TestCase`` objects (raises DataError when there are none)."""
    if not tests:
        raise DataError("problem has no tests")
    return [TestCase(input=t.input, output=t.output) for t in tests]


GradeItem = tuple[Problem, Sequence[Test], Sequence[str]]
"""One problem's work: the problem, its decoded tests and the extracted programs."""


def grade_items(grader: Grader, items: Sequence[GradeItem]) -> list[list[SampleGrade] | DataError]:
    """Grade several problems; a grader with ``grade_batch`` gets them in one call (parallelism).

    Each entry is the problem's grades, or the :class:`DataError` that made it ungradeable.
    """
    batch = getattr(grader, "grade_batch", None)
    if batch is not None:
        return batch(items)
    out: list[list[SampleGrade] | DataError] = []
    for problem, tests, codes in items:
        try:
            out.append(grader(problem, tests, codes))
        except DataError as e:
            out.append(e)
    return out


class SandboxGrader:
    """Grades through a running ``gasp_jax.sandbox.Sandbox`` (the caller owns its lifetime).

    All programs of a batch of problems go to the sandbox in one ``grade_many`` call, so its worker
    pool stays busy even with one sample per problem. Samples that come back as infrastructure
    errors are regraded up to ``infra_retries`` times; what still fails is returned as not judged
    (``passed=None``).
    """

    def __init__(self, sandbox: Any, *, infra_retries: int = 1) -> None:
        self.sandbox = sandbox
        self.infra_retries = infra_retries

    def __call__(self, problem: Problem, tests: Sequence[Test], codes: Sequence[str]) -> list[SampleGrade]:
        (result,) = self.grade_batch([(problem, tests, codes)])
        if isinstance(result, DataError):
            raise result
        return result

    def grade_batch(self, items: Sequence[GradeItem]) -> list[list[SampleGrade] | DataError]:
        errors: dict[int, DataError] = {}
        cases: list[list[Any]] = []
        for p_idx, (_, tests, _) in enumerate(items):
            try:
                cases.append(sandbox_tests(tests))
            except DataError as e:
                errors[p_idx] = e
                cases.append([])
        grades: dict[tuple[int, int], SampleGrade] = {}
        todo = [(p, s) for p, (_, _, codes) in enumerate(items) if p not in errors for s in range(len(codes))]
        for attempt in range(self.infra_retries + 1):
            jobs = [(items[p][2][s], cases[p], items[p][0].fn_name) for p, s in todo]
            verdicts = self.sandbox.grade_many(jobs) if jobs else []
            if len(verdicts) != len(jobs):
                raise RuntimeError(f"sandbox returned {len(verdicts)} verdicts for {len(jobs)} jobs")
            retry = []
            for (p, s), verdict in zip(todo, verdicts):
                if p in errors:
                    continue
                try:
                    grades[p, s] = grade_from_verdict(verdict)
                except DataError as e:
                    log.warning("%s: %s", items[p][0].id, e)
                    errors[p] = e
                    continue
                if grades[p, s].status == "INFRA_ERROR" and attempt < self.infra_retries:
                    retry.append((p, s))
            todo = [(p, s) for p, s in retry if p not in errors]
            if not todo:
                break
            log.warning("regrading %d sample(s) after infrastructure errors", len(todo))
        return [
            errors[p] if p in errors else [grades[p, s] for s in range(len(codes))]
            for p, (_, _, codes) in enumerate(items)
        ]
