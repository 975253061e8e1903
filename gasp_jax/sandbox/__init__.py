"""Host-side subprocess sandbox for executing model-written Python.

Public API::

    from gasp_jax.sandbox import Sandbox, TestCase, Limits
    with Sandbox(workers=2, limits=Limits(cpu_s=2)) as sb:
        verdict = sb.grade(code, [TestCase("1 2\\n", "3\\n")])            # stdin mode
        verdict = sb.grade(code, tests, fn_name="twoSum")                  # functional mode
        verdicts = sb.grade_many([(code, tests), (code2, tests2, "f")])    # parallel
        futures = sb.grade_many_async(jobs)                                # concurrent.futures
        results = sb.run_function(code, ["'abc', 3"], fn_name="f")         # AZR: repr(f(...))
        report = sb.check_deterministic(code, ["'abc', 3"])

See ``docs/sandbox.md`` for the design, isolation levels and verdict semantics.
"""

from gasp_jax.sandbox.compare import compare_json, compare_stdout
from gasp_jax.sandbox.limits import Limits
from gasp_jax.sandbox.policy import DEFAULT_BANNED_MODULES, find_banned_imports, validate_program
from gasp_jax.sandbox.sandbox import GradeJob, IsolationReport, Sandbox, SandboxUnavailable
from gasp_jax.sandbox.verdict import LCB_CODES, DeterminismReport, Result, Status, TestCase, TestResult, Verdict

__all__ = [
    "Sandbox", "TestCase", "Limits", "Verdict", "TestResult", "Result", "Status", "GradeJob",
    "DeterminismReport", "IsolationReport", "SandboxUnavailable", "LCB_CODES", "compare_stdout",
    "compare_json", "find_banned_imports", "validate_program", "DEFAULT_BANNED_MODULES",
]
