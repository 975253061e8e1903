"""Official LCB grader outputs (``*_eval_all.json``) and the differential check of our grader.

An ``eval_all`` file (written by ``lcb_runner --evaluate``) holds, per problem, the model outputs,
the extracted ``code_list``, the official ``graded_list`` and per-sample ``metadata`` JSON strings
(``{"error_code": -2|-3|-4|-5, "inputs", "expected", ...}`` on failure). It has no tests. Grading the
same code with our sandbox on the tests we have (public ones for the shipped sample) and comparing
to the official verdicts finds grader bugs: an officially passing sample must pass ours (the
official run used public + private tests, a superset), while an official failure may pass ours
when it failed on a private test we do not have, or on one of the official harness's false
negatives (``for line in sys.stdin``, ``open(0)``, top-level ``global``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from gasp_jax.data import paths
from gasp_jax.data.livecodebench import Problem
from gasp_jax.evaluation.grading import SampleGrade


@dataclasses.dataclass(frozen=True)
class OfficialSample:
    """One officially graded sample."""

    question_id: str
    index: int
    code: str
    passed: bool
    error_code: int | None  # None on pass
    failing_input: str | None  # the official failing test's input (may be truncated by lcb_runner)


def load_official(path: str | os.PathLike) -> list[OfficialSample]:
    """All samples of an ``eval_all`` file, in file order."""
    rows = paths.read_json(path)
    out = []
    for row in rows:
        metas = row.get("metadata") or [None] * len(row["code_list"])
        for i, (code, graded, meta) in enumerate(zip(row["code_list"], row["graded_list"], metas)):
            info = json.loads(meta) if isinstance(meta, str) and meta else {}
            passed = bool(graded)
            out.append(
                OfficialSample(
                    question_id=row["question_id"],
                    index=i,
                    code=code,
                    passed=passed,
                    error_code=None if passed else info.get("error_code", -2),
                    failing_input=info.get("inputs"),
                )
            )
    return out


_TRUNCATION = "...(truncated) ..."  # lcb_runner keeps the first and last 150 characters around it


def _official_repr(test_input: str, functional: bool) -> str | None:
    """A public test's input as lcb_runner prints it in failure metadata."""
    if not functional:
        return test_input
    try:
        return repr([json.loads(line) for line in test_input.split("\n")])
    except json.JSONDecodeError:
        return None


def _same_input(reported: str, candidate: str) -> bool:
    if _TRUNCATION in reported:
        head, _, tail = reported.partition(_TRUNCATION)
        return candidate.startswith(head) and candidate.endswith(tail)
    return reported == candidate or reported.strip() == candidate.strip()


def failed_on_public(sample: OfficialSample, problem: Problem) -> bool | None:
    """Whether the official failure happened on one of the public tests (None: not reported)."""
    if not sample.failing_input:
        return None
    for t in problem.public_tests:
        candidate = _official_repr(t.input, problem.fn_name is not None)
        if candidate is not None and _same_input(sample.failing_input, candidate):
            return True
    return False


# Programs that are correct but fail under the official in-process harness (research note, "Behaviour
# matrix"): the harness patches sys.stdin / captures sys.stdout in-process and wraps stdin programs in
# a function, while our sandbox runs them as real processes.
_HARNESS_FALSE_NEGATIVES = (
    (re.compile(r"open\(\s*0\b"), "open(0) reads /dev/null under the official harness (builtins bound before its patch)"),
    (re.compile(r"\bin\s+sys\.stdin\s*:"), "iterating sys.stdin: the official mock stdin is not iterable"),
    (re.compile(r"\bthreading\b"), "output written from a thread escapes the official stdout capture"),
    (re.compile(r"os\.write\(\s*1\b"), "os.write(1, ...) bypasses the official stdout capture"),
    (re.compile(r"^\s+global\s", re.M), "'global' of a top-level name breaks when the official harness wraps the code in a function"),
)


def harness_false_negative(sample: OfficialSample) -> str | None:
    """Why an official failure is likely the official harness's fault rather than the program's.

    Known in-process-harness false negatives are recognised from the code; an official TLE is
    attributed to its wall-clock timing under 12-16 parallel workers (ours judges CPU time).
    None when nothing explains the failure.
    """
    for pattern, reason in _HARNESS_FALSE_NEGATIVES:
        if pattern.search(sample.code):
            return reason
    if sample.error_code == -3:
        return "official wall-clock timeout under parallel load (ours limits CPU time)"
    return None


def compare(
    samples: Sequence[OfficialSample],
    problems: Mapping[str, Problem],
    grades: Mapping[tuple[str, int], SampleGrade],
) -> dict[str, Any]:
    """Agreement between official verdicts and ours (on the tests ``problems`` carry).

    ``must_fix`` lists officially passing samples that we fail: each is a grader bug (or a sandbox
    limit too tight) unless explained. ``official_fail_we_pass`` is split by whether the official
    failure was on a public test (then it is a real disagreement to inspect; each entry says whether
    it is a known official-harness false negative) or not (expected: private tests are not in the
    sample).
    """
    confusion: Counter[str] = Counter()
    must_fix, public_disagree, private_only, not_graded = [], [], [], []
    for s in samples:
        key = (s.question_id, s.index)
        problem = problems.get(s.question_id)
        grade = grades.get(key)
        if problem is None or grade is None:
            not_graded.append(s.question_id)
            continue
        ours = "DROPPED" if grade.passed is None else ("PASS" if grade.passed else "FAIL")
        theirs = "PASS" if s.passed else "FAIL"
        confusion[f"official_{theirs}/ours_{ours}"] += 1
        entry = {"question_id": s.question_id, "index": s.index, "ours": grade.status, "official_code": s.error_code, "message": grade.message}
        if s.passed and ours != "PASS":
            must_fix.append(entry)
        elif not s.passed and ours == "PASS":
            on_public = failed_on_public(s, problem)
            entry["official_failed_on_public_test"] = on_public
            entry["likely_harness_false_negative"] = harness_false_negative(s)
            (public_disagree if on_public else private_only).append(entry)
    graded = sum(confusion.values())
    agree = confusion["official_PASS/ours_PASS"] + confusion["official_FAIL/ours_FAIL"]
    # Decidable on the tests we have: official passes, and official failures located on a public
    # test. (Official failures on private tests cannot be reproduced without those tests.)
    undecidable = len(private_only) + sum(
        1
        for s in samples
        if not s.passed
        and (s.question_id, s.index) in grades
        and grades[s.question_id, s.index].passed is False
        and s.question_id in problems
        and not failed_on_public(s, problems[s.question_id])
    )
    decidable = graded - undecidable - confusion["official_PASS/ours_DROPPED"] - confusion["official_FAIL/ours_DROPPED"]
    decidable_agree = decidable - len(must_fix) - len(public_disagree)
    return {
        "samples": len(samples),
        "graded": graded,
        "not_graded": sorted(set(not_graded)),
        "confusion": dict(sorted(confusion.items())),
        "agreement": agree / graded if graded else None,
        "decidable_on_public_tests": decidable,
        "agreement_decidable": decidable_agree / decidable if decidable else None,
        "agreement_decidable_after_harness_false_negatives": (
            (decidable_agree + sum(1 for e in public_disagree if e["likely_harness_false_negative"])) / decidable
            if decidable
            else None
        ),
        "official_pass_we_fail": must_fix,
        "official_fail_we_pass_on_public_test": public_disagree,
        "official_fail_we_pass_private_or_unknown": private_only,
    }
