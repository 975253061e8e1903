"""HumanEval problems (OpenAI's ``HumanEval.jsonl.gz``) from a local file.

Each row holds ``task_id, prompt, entry_point, canonical_solution, test``: ``prompt`` is a function
signature with its docstring, ``test`` defines ``check(candidate)`` whose asserts are the tests. A
sample passes when ``check(<entry_point>)`` returns on the program built from the sample (see
``gasp_jax.evaluation.function_tests``). Rows are validated like the LCB loader's: a bad row is
reported in a :class:`~gasp_jax.data.livecodebench.LoadReport` and skipped, never raised.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

from gasp_jax.data.livecodebench import DataError, LoadReport
from gasp_jax.data.paths import open_text

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


@dataclasses.dataclass(frozen=True)
class HumanEvalProblem:
    id: str
    prompt: str
    entry_point: str
    canonical_solution: str
    test: str

    benchmark = "humaneval"

    @property
    def tests(self) -> tuple[str, ...]:
        """The test code (one ``check(candidate)`` definition): what the grader runs."""
        return (self.test,)

    @property
    def reference_program(self) -> str:
        return self.prompt + self.canonical_solution


def problem_from_row(row: Any) -> HumanEvalProblem:
    if not isinstance(row, dict):
        raise DataError(f"row is a {type(row).__name__}, expected an object")
    missing = [f for f in FIELDS if not isinstance(row.get(f), str)]
    if missing:
        raise DataError(f"missing or non-string field(s) {missing}")
    if not row["entry_point"].isidentifier():
        raise DataError(f"entry_point {row['entry_point']!r} is not an identifier")
    if "def check(" not in row["test"]:
        raise DataError("test defines no check(candidate)")
    return HumanEvalProblem(row["task_id"], row["prompt"], row["entry_point"], row["canonical_solution"], row["test"])


def load_humaneval(path: str | os.PathLike, *, report: LoadReport | None = None) -> list[HumanEvalProblem]:
    """All valid problems of ``path`` in file order (duplicated task ids: the first is kept)."""
    return load_problems(path, problem_from_row, report)


def load_problems(path: str | os.PathLike, from_row: Callable[[Any], Any], report: LoadReport | None = None) -> list:
    """Problems (objects with an ``id``) parsed by ``from_row`` from each line of a JSONL file, in file
    order; a bad row (``DataError`` or bad JSON) is reported and skipped, a repeated id keeps the first."""
    report = report if report is not None else LoadReport()
    problems: dict[str, Any] = {}
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            report.rows_read += 1
            try:
                problem = from_row(json.loads(line))
            except (json.JSONDecodeError, DataError) as e:
                report.skip(f"<{Path(path).name}:{line_no}>", str(path), str(e))
                continue
            if problem.id in problems:
                report.duplicates += 1
                continue
            problems[problem.id] = problem
            report.loaded += 1
    return list(problems.values())
