"""Verdicts: pure data returned by the sandbox (no objects created by untrusted code)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple


class Status(str, enum.Enum):
    """Outcome of one test or of a whole program. A ``str`` enum: ``Status.PASS == "PASS"``."""

    PASS = "PASS"
    WA = "WA"  # wrong answer
    TLE = "TLE"  # CPU or wall-clock limit
    MLE = "MLE"  # memory limit (MemoryError, OOM kill)
    OLE = "OLE"  # output limit
    RE = "RE"  # runtime error: exception, nonzero exit, signal, unserializable return value
    CE = "CE"  # rejected before running: empty, NUL bytes, bad UTF-8, too large, syntax error, policy
    INFRA_ERROR = "INFRA_ERROR"  # sandbox fault or bad data: reward is None, the sample is dropped

    def __str__(self) -> str:
        return self.value


#: LiveCodeBench result codes for report parity (True = pass, -2 WA, -3 TLE, -4 RE/CE).
LCB_CODES: dict[Status, int | bool] = {
    Status.PASS: True, Status.WA: -2, Status.TLE: -3, Status.MLE: -4, Status.OLE: -4,
    Status.RE: -4, Status.CE: -4, Status.INFRA_ERROR: -5,
}


class TestCase(NamedTuple):
    """One test. ``input``: stdin text (stdin mode) or one JSON value per line (functional mode).
    ``output``: expected stdout text, or the JSON of the expected return value."""

    input: str
    output: str

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class TestResult:
    """What happened to one test. ``output`` is a short prefix of the program's output/JSON value."""

    __test__ = False  # not a pytest test class

    index: int
    status: Status
    cpu_s: float = 0.0
    wall_s: float = 0.0
    exit_code: int | None = None
    signal: int | None = None
    stdout_truncated: bool = False
    stderr_tail: str = ""
    output: str = ""
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS


@dataclass(frozen=True)
class Verdict:
    """Aggregate result of grading one program on a list of tests.

    ``reward`` is 1.0 iff every test passed, 0.0 for any program failure, and ``None`` for an
    infrastructure or data error (the sample must be masked, never scored 0 or 1).
    ``tests`` holds the tests that ran; with early exit (the default, LCB semantics) grading
    stops at the first failing test, so it can be shorter than the number of tests.
    """

    status: Status
    tests: tuple[TestResult, ...] = ()
    message: str = ""
    data_error: bool = False
    n_tests: int = 0

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    @property
    def reward(self) -> float | None:
        if self.status is Status.INFRA_ERROR:
            return None
        return 1.0 if self.status is Status.PASS else 0.0

    @property
    def pass_fraction(self) -> float | None:
        """Passed tests / all tests (a logged metric only; not the reward)."""
        if self.status is Status.INFRA_ERROR or not self.n_tests:
            return None
        return sum(t.passed for t in self.tests) / self.n_tests

    @property
    def lcb_codes(self) -> list[int | bool]:
        return [LCB_CODES[t.status] for t in self.tests]

    @property
    def cpu_s(self) -> float:
        return sum(t.cpu_s for t in self.tests)


@dataclass(frozen=True)
class Result:
    """One AZR-style call ``f(input)``. ``status`` is PASS when the call returned normally;
    then ``output`` is ``repr`` of the returned value. Otherwise ``error`` says what happened."""

    status: Status
    output: str | None = None
    error: str = ""
    cpu_s: float = 0.0
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is Status.PASS


@dataclass(frozen=True)
class DeterminismReport:
    """Outcome of running the same calls in separate sandboxes. Truthy iff deterministic.

    ``deterministic`` is None when an infrastructure error prevented the check."""

    deterministic: bool | None
    runs: tuple[tuple[Result, ...], ...] = field(default_factory=tuple)
    message: str = ""

    def __bool__(self) -> bool:
        return self.deterministic is True
