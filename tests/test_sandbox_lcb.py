"""Sandbox on real LiveCodeBench data: every officially passing O1-Mini sample must pass our
grader on the public tests (a deterministic subset by default, all 880 problems when slow)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from gasp_jax.data import paths
from gasp_jax.sandbox import Limits, Sandbox, Status, TestCase
from tests.test_sandbox_support import CAN_ISOLATE

OFFICIAL = paths.data_file(paths.LCB_O1_SUBMISSION)
PROBLEMS = paths.data_file(paths.LCB_PUBLIC_V5)
PRIVATE_1873A = paths.data_file(paths.LCB_DECODED_PRIVATE)

# LCB's default timeout, judged on CPU time; a generous wall-clock backstop so that a heavily
# loaded test machine cannot turn a slow official pass into a wall-clock TLE.
LCB_LIMITS = Limits(cpu_s=6.0, wall_s=60.0)


def _samples() -> list[dict]:
    problems = {}
    with paths.open_text(PROBLEMS) as fh:
        for line in fh:
            row = json.loads(line)
            problems[row["question_id"]] = row
    out = []
    for row in paths.read_json(OFFICIAL):
        p = problems[row["question_id"]]
        if not p["public_test_cases"]:
            continue  # abc350_c: no public tests in the shipped data
        tests = [TestCase(t["input"], t["output"]) for t in json.loads(p["public_test_cases"])]
        out.append({"id": row["question_id"], "code": row["code_list"][0], "tests": tests,
                    "fn_name": json.loads(p["metadata"]).get("func_name"),
                    "official_pass": bool(row["graded_list"][0])})
    return out


@pytest.fixture(scope="module")
def sb():
    # Official LCB samples are benign: without root (no namespaces) run them unisolated.
    with Sandbox(workers=2, limits=LCB_LIMITS, allow_unsafe=not CAN_ISOLATE) as box:
        yield box


def _check(sb, samples: list[dict]) -> Counter:
    verdicts = sb.grade_many([(s["code"], s["tests"], s["fn_name"]) for s in samples])
    wrong = [(s["id"], v.status, v.message) for s, v in zip(samples, verdicts) if s["official_pass"] and not v.passed]
    assert not wrong, f"officially passing samples that fail our grader: {wrong}"
    assert not [v for v in verdicts if v.status is Status.INFRA_ERROR]
    return Counter((s["official_pass"], v.status.value) for s, v in zip(samples, verdicts))


def test_official_passes_subset(sb):
    samples = _samples()
    passing = [s for s in samples if s["official_pass"]]
    stdin = [s for s in passing if s["fn_name"] is None][::12]
    functional = [s for s in passing if s["fn_name"] is not None][::12]
    assert len(stdin) >= 20 and len(functional) >= 15
    counts = _check(sb, stdin + functional)
    assert counts[(True, "PASS")] == len(stdin) + len(functional)


def test_official_failures_are_not_all_passing(sb):
    """Officially failing samples: many fail public tests too (never as an infra error)."""
    failing = [s for s in _samples() if not s["official_pass"]][::8]
    counts = _check(sb, failing)
    assert sum(n for (ok, st), n in counts.items() if st != "PASS") >= len(failing) // 2


def test_private_tests_of_1873A_match_official_verdict(sb):
    sample = next(s for s in _samples() if s["id"] == "1873_A")
    with open(PRIVATE_1873A) as fh:
        private = [TestCase(t["input"], t["output"]) for t in json.load(fh)["private_test_cases_decoded"]]
    v = sb.grade(sample["code"], sample["tests"] + private)
    assert v.passed == sample["official_pass"] and len(v.tests) == len(sample["tests"]) + len(private)
    broken = sb.grade(sample["code"], private[:-1] + [TestCase(private[-1].input, "NO\n" * 6)])
    assert broken.status == Status.WA and broken.tests[-1].index == len(private) - 1


@pytest.mark.slow
def test_all_official_passes_pass(sb):
    counts = _check(sb, _samples())
    assert counts[(True, "PASS")] == 602  # O1-Mini: 602/880 officially correct
