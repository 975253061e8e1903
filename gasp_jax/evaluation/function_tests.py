"""HumanEval and MBPP+ through the sandbox: EvalPlus prompts, program sanitising, oracles, a grader.

Both benchmarks test one function (``entry_point``), so samples run in the sandbox's function-call
mode (``Sandbox.run_function_async``: one fresh process per call, the return value's ``repr`` comes
back, comparison happens here in the trainer process):

* HumanEval: the program is the sample + the problem's ``check(candidate)`` + a harness function that
  calls ``check(<entry_point>)`` and returns ``True``; the sample passes iff that call returns ``True``
  (an assert fails -> ``RE``).
* MBPP+ (EvalPlus): one call of ``entry_point`` per input; expected values are the canonical
  solution's return values on the same inputs, computed once in the same sandbox
  (:func:`mbpp_expected_outputs`). A sample passes *base* when every base input matches and *plus*
  when base and every plus input match (EvalPlus's ``plus`` = base AND plus). Plus inputs run only
  for samples that passed base. Comparison follows EvalPlus's oracle (:func:`mbpp_outputs_match`):
  ``==`` on the parsed values, its set-equality / not-None / special-case tasks, and ``atol`` (1e-6 for
  float-valued outputs when the task has none) with ``rtol`` 1e-7.

Prompts follow EvalPlus's codegen: ``chat`` asks for a self-contained script in a markdown block and
pre-fills the assistant turn up to ```` ```python ````, so the completion is code up to the closing
fence; ``base`` is direct completion of the benchmark prompt (the program is prompt + completion, cut
at EvalPlus's stop strings). Programs are sanitised like EvalPlus's ``sanitize``: the longest prefix
that parses, imports kept, and only the top-level definitions the entry point reaches.

Deviations from EvalPlus (documented in docs/protocol.md): a fixed per-call CPU limit instead of
4x the canonical solution's time; each call runs in its own process (EvalPlus runs all inputs of a
sample in one), so a program that mutates module state between calls cannot pass by accident.
"""

from __future__ import annotations

import ast
import concurrent.futures
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gasp_jax import multihost
from gasp_jax.data.humaneval import HumanEvalProblem
from gasp_jax.data.livecodebench import DataError
from gasp_jax.data.mbpp import MbppPlusProblem, call_arguments
from gasp_jax.evaluation.grading import GradeItem, SampleGrade, lcb_code

log = logging.getLogger(__name__)

FunctionProblem = HumanEvalProblem | MbppPlusProblem
PROMPT_STYLES = ("chat", "base")

INSTRUCTION_PREFIX = (
    "Please provide a self-contained Python script that solves the following problem in a markdown code block:"
)
RESPONSE_PREFIX = (
    "Below is a Python script with a self-contained function that solves the problem and passes corresponding tests:"
)
# The chat prompt is the template rendered with the assistant turn pre-filled, cut at this marker.
_SPLIT_MARKER = "<<gasp-jax-response-starts-here>>"
# Direct-completion stop strings (EvalPlus): the next top-level statement ends the function.
BASE_STOP = ("\nif __name__", "\ndef main(", "\nprint(")
BASE_STOP_EXTRA = {
    "humaneval": ("\ndef ", "\nclass ", "\nimport ", "\nfrom ", "\nassert "),
    "mbpp_plus": ('\n"""', "\nassert"),
}
HARNESS_FN = "__gasp_check__"
BASE_PASS_TAG = "base passed"  # message prefix of an MBPP+ grade that passed base but failed plus


# ----------------------------------------------------------------------------------------------
# Prompts and extraction


def task_prompt(problem: FunctionProblem) -> str:
    """The benchmark prompt as EvalPlus feeds it (stripped, one trailing newline)."""
    return problem.prompt.strip() + "\n"


def render_prompt(problem: FunctionProblem, style: str, *, tokenizer: Any = None) -> str:
    """The text the model is conditioned on (``chat`` needs a tokenizer with a chat template)."""
    if style == "base":
        return task_prompt(problem)
    if style != "chat":
        raise ValueError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("prompt style 'chat' needs a tokenizer with a chat template")
    user = f"{INSTRUCTION_PREFIX}\n```\n{task_prompt(problem).strip()}\n```\n"
    assistant = f"{RESPONSE_PREFIX}\n```python\n{_SPLIT_MARKER}\n```\n"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], tokenize=False
    )
    if not isinstance(text, str) or _SPLIT_MARKER not in text:
        raise ValueError("the chat template dropped the pre-filled assistant turn")
    return text.split(_SPLIT_MARKER)[0]


def extract_completion(completion: str, style: str, benchmark: str) -> str:
    """The code part of a completion: up to the closing fence (chat) or the first stop string (base)."""
    if style == "chat":
        lines = completion.split("\n")
        for i, line in enumerate(lines):
            if line.lstrip().startswith("```"):
                return "\n".join(lines[:i])
        return completion
    cut = len(completion)
    for stop in BASE_STOP + BASE_STOP_EXTRA.get(benchmark, ()):
        at = completion.find(stop)
        if at != -1:
            cut = min(cut, at)
    return completion[:cut]


def extractor(style: str, benchmark: str) -> Callable[[str], str]:
    """``completion -> code`` for the eval runner's ``extraction`` argument."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")
    return lambda completion: extract_completion(completion, style, benchmark)


def _parse_prefix(code: str) -> tuple[ast.Module, list[str]] | None:
    """The longest line prefix of ``code`` that parses, and its lines (generations are often cut
    mid-statement)."""
    lines = code.split("\n")
    for end in range(len(lines), 0, -1):
        try:
            return ast.parse("\n".join(lines[:end])), lines[:end]
        except (SyntaxError, ValueError):
            continue
    return None


def _defined_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def sanitize(code: str, entry_point: str) -> str:
    """The program to grade: imports, functions, classes and the assignments they use.

    Like EvalPlus's ``sanitize``, other top-level statements (prints, asserts, ``if __name__ ==
    "__main__"``, a sample's own test calls) are dropped, so a sample's own tests or I/O never run.
    When the entry point is not defined, every assignment is kept too (the call then fails anyway).
    """
    parsed = _parse_prefix(code)
    if parsed is None:
        return code  # nothing parses: grade as is (a CE)
    module, lines = parsed
    defs: dict[str, ast.stmt] = {}
    for node in module.body:
        for name in _defined_names(node):
            defs[name] = node
    keep = {id(n) for n in module.body if isinstance(n, (ast.Import, ast.ImportFrom))}
    if entry_point in defs:
        # Definitions only bind names, so all are kept (a test may call a helper the entry point does not,
        # e.g. HumanEval/50's encode_shift); top-level assignments run code, so only those reached from a
        # kept definition are.
        todo = [n for n in module.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        reached: set[int] = set()
        while todo:
            node = todo.pop()
            if id(node) in reached:
                continue
            reached.add(id(node))
            todo.extend(defs[n.id] for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in defs)
        keep |= reached
    else:
        keep |= {id(n) for n in defs.values()}
    kept_lines: set[int] = set()
    for node in module.body:
        if id(node) in keep:
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
            kept_lines.update(range(first - 1, node.end_lineno or node.lineno))
    return "\n".join(lines[i] for i in sorted(kept_lines)) + "\n"


def program_for(problem: FunctionProblem, code: str, style: str) -> str:
    """The sanitised program for one sample (``base``: the prompt + the completion)."""
    full = task_prompt(problem) + code if style == "base" else code
    return sanitize(full, problem.entry_point)


def humaneval_program(problem: HumanEvalProblem, program: str) -> str:
    """The program + the problem's tests + a harness that runs them and returns True."""
    return (
        f"{program}\n\n{problem.test}\n\n"
        f"def {HARNESS_FN}():\n    check({problem.entry_point})\n    return True\n"
    )


# ----------------------------------------------------------------------------------------------
# Values and the MBPP+ oracle


class _Unparseable(ValueError):
    pass


_NUMPY_SCALARS = frozenset({
    "float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16",
    "uint8", "bool_", "complex128", "str_",
})


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_value(e) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _Unparseable("dict unpacking")
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand)
        if not isinstance(v, (int, float, complex)) or isinstance(v, bool):
            raise _Unparseable("sign of a non-number")
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        a, b = _value(node.left), _value(node.right)
        if isinstance(b, complex) and isinstance(a, (int, float)) and not isinstance(a, bool):
            return a + b if isinstance(node.op, ast.Add) else a - b
        raise _Unparseable("arithmetic")
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return float(node.id)
    if isinstance(node, ast.Call) and not node.keywords:
        fn = node.func
        name = fn.attr if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) and fn.value.id in ("np", "numpy") else (
            fn.id if isinstance(fn, ast.Name) else None)
        args = [_value(a) for a in node.args]
        if name in ("set", "frozenset", "tuple", "list") and len(args) <= 1 and isinstance(fn, ast.Name):
            return {"set": set, "frozenset": frozenset, "tuple": tuple, "list": list}[name](*args)
        if name in ("Counter", "OrderedDict") and len(args) <= 1 and isinstance(fn, ast.Name):
            return dict(*args)  # both compare equal to the plain dict of their items
        if name == "float" and len(args) == 1 and isinstance(args[0], str):
            return float(args[0])
        if name in _NUMPY_SCALARS and len(args) == 1 and isinstance(fn, ast.Attribute):
            return args[0]  # numpy scalars compare equal to their Python values
    raise _Unparseable(type(node).__name__)


def parse_repr(text: str) -> tuple[bool, Any]:
    """``(True, value)`` for the ``repr`` of a plain value (incl. inf/nan, numpy scalars), else ``(False, None)``."""
    try:
        return True, _value(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        return False, None


class Opaque:
    """A returned object whose ``repr`` is no literal (e.g. a ``re.Match``): not None, equal to nothing."""

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return self.text


def _is_floats(x: Any) -> bool:
    if isinstance(x, float):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(v, float) for v in x)


def _allclose(out: Any, exp: Any, atol: float) -> bool:
    """``np.allclose(out, exp, rtol=1e-7, atol)`` for numbers and flat sequences of numbers."""
    def flat(x: Any) -> list[float] | None:
        if isinstance(x, bool):
            return [float(x)]
        if isinstance(x, (int, float)):
            return [float(x)]
        if isinstance(x, (list, tuple)) and all(isinstance(v, (int, float)) for v in x):
            return [float(v) for v in x]
        return None

    a, b = flat(out), flat(exp)
    if a is None or b is None or (len(a) != len(b) and len(a) != 1 and len(b) != 1):
        return False
    if len(a) != len(b):
        a, b = (a * len(b), b) if len(a) == 1 else (a, b * len(a))
    for x, y in zip(a, b):
        if math.isnan(x) or math.isnan(y):
            return False
        if abs(x - y) > atol + 1e-7 * abs(y):
            return False
    return True


# EvalPlus's special-case tasks (by entry point).
MBPP_SET_EQUAL = frozenset({
    "similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
    "intersection_array", "find_dissimilar", "Diff",
})
MBPP_NOT_NONE = frozenset({"check_str", "text_match_three", "text_starta_endb"})


def _surface_area(base_edge: float, height: float) -> int:
    slant = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 2 * base_edge * slant)


def _digit_distance(a: int, b: int) -> int:
    x, y = str(a), str(b)
    width = max(len(x), len(y))
    return sum(abs(int(p) - int(q)) for p, q in zip(x.zfill(width), y.zfill(width)))


def _equal(out: Any, exp: Any) -> bool:
    try:
        return bool(out == exp)
    except Exception:  # noqa: BLE001 - e.g. comparing unorderable containers
        return False


def mbpp_outputs_match(entry_point: str, args: Sequence[Any], out: Any, exp: Any, atol: float) -> bool:
    """EvalPlus's MBPP+ oracle for one call: ``out`` (the sample's value) vs ``exp`` (the canonical one)."""
    exact = _equal(out, exp)
    if entry_point == "are_equivalent":  # Mbpp/164: ill-posed task, every answer accepted
        exact = True
    elif entry_point == "sum_div":  # Mbpp/295
        exact = exact or _equal(out, 0)
    elif entry_point == "surface_Area":  # Mbpp/581: either reading of "height"
        try:
            exact = exact or _equal(out, _surface_area(*args))
        except (TypeError, ValueError):
            pass
    elif entry_point == "digit_distance_nums":  # Mbpp/558: numbers of different lengths
        try:
            exact = exact or _equal(out, _digit_distance(*args))
        except (TypeError, ValueError):
            pass
    elif entry_point in MBPP_SET_EQUAL:
        try:
            exact = set(out) == set(exp)
        except TypeError:
            exact = False
    elif entry_point in MBPP_NOT_NONE:
        exact = _equal(out, exp) if isinstance(out, bool) else exp == (out is not None)
    if atol == 0 and _is_floats(exp):
        atol = 1e-6
    if not exact and atol != 0:
        return type(out) is type(exp) and _allclose(out, exp, atol)
    return exact


# ----------------------------------------------------------------------------------------------
# Expected outputs (MBPP+)


def _limits(sandbox: Any, limits: Any) -> Any:
    return limits if limits is not None else getattr(sandbox, "limits", None)


def mbpp_expected_outputs(
    sandbox: Any, problems: Sequence[MbppPlusProblem], *, limits: Any = None
) -> dict[str, list[str] | str]:
    """The canonical solution's ``repr`` per input (base then plus), or the reason it failed.

    For the not-None tasks the expected value is ``out is not None`` (as EvalPlus records it).
    """
    limits = _limits(sandbox, limits)
    if limits is not None:  # the reference must not fail on a loaded machine: 5x the CPU, a long wall
        # clock, 2x the memory (Mbpp/255's largest plus input needs ~3 GiB; EvalPlus allows 4 GiB)
        limits = limits.replace(cpu_s=5 * limits.cpu_s, wall_s=max(60.0, 10 * limits.cpu_s),
                                memory_bytes=2 * limits.memory_bytes)
    futures = {
        p.id: sandbox.run_function_async(
            p.reference_program, [call_arguments(a) for a in p.tests], fn_name=p.entry_point, limits=limits
        )
        for p in problems
    }
    out: dict[str, list[str] | str] = {}
    for p in problems:
        results = futures[p.id].result()
        bad = [(i, r) for i, r in enumerate(results) if str(r.status) != "PASS"]
        if bad:
            i, r = bad[0]
            out[p.id] = f"canonical solution failed on input {i}: {r.status} {r.error}"[:300]
            log.warning("%s: %s", p.id, out[p.id])
            continue
        values = [r.output for r in results]
        if p.entry_point in MBPP_NOT_NONE:  # EvalPlus records `out is not None` (outputs are re.Match / None)
            values = [repr(v.strip() != "None") for v in values]
        unparseable = [i for i, v in enumerate(values) if not parse_repr(v)[0]]
        if unparseable:
            out[p.id] = f"canonical output of input {unparseable[0]} is not a plain value: {values[unparseable[0]][:100]}"
            log.warning("%s: %s", p.id, out[p.id])
            continue
        out[p.id] = values
    return out


def expected_outputs_cached(
    path: str | os.PathLike, sandbox: Any, problems: Sequence[MbppPlusProblem], *, limits: Any = None
) -> dict[str, list[str] | str]:
    """:func:`mbpp_expected_outputs`, cached in ``path`` (keyed on the inputs and programs)."""
    path = Path(path)
    key = hashlib.sha256(
        json.dumps([[p.id, p.entry_point, p.canonical_solution, [call_arguments(a) for a in p.tests]] for p in problems]).encode()
    ).hexdigest()
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["expected"]
    expected = mbpp_expected_outputs(sandbox, problems, limits=limits)

    if multihost.is_main():  # every process computes the same outputs; one writes the cache
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "expected": expected}))
        os.replace(tmp, path)
    return expected


# ----------------------------------------------------------------------------------------------
# The grader


def _grade(status: str, passed: bool | None, message: str = "", cpu_s: float = 0.0) -> SampleGrade:
    return SampleGrade(status, passed, lcb_code(status) if passed is not None else -5, message[:500], round(cpu_s, 4))


def base_passed(grade: SampleGrade) -> bool | None:
    """Whether an MBPP+ sample passed its base inputs (None: not judged)."""
    if grade.passed is None:
        return None
    return bool(grade.passed) or grade.message.startswith(BASE_PASS_TAG)


class FunctionTestGrader:
    """Grades HumanEval / MBPP+ samples through a running ``gasp_jax.sandbox.Sandbox``.

    Implements the eval runner's ``Grader`` (``grade_batch(items)``, items ``(problem, tests,
    codes)`` with ``codes`` from :func:`extractor`). ``expected`` maps an MBPP+ problem id to its
    canonical outputs (:func:`expected_outputs_cached`) or the reason they are missing (the problem
    is then skipped as a data error). Infrastructure errors are retried ``infra_retries`` times and
    then returned as not judged.
    """

    def __init__(
        self,
        sandbox: Any,
        style: str,
        *,
        expected: Mapping[str, list[str] | str] | None = None,
        limits: Any = None,
        infra_retries: int = 1,
    ) -> None:
        if style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt style {style!r}")
        self.sandbox = sandbox
        self.style = style
        self.expected = dict(expected or {})
        self.limits = _limits(sandbox, limits)
        self.infra_retries = infra_retries

    def __call__(self, problem: FunctionProblem, tests: Sequence[Any], codes: Sequence[str]) -> list[SampleGrade]:
        (result,) = self.grade_batch([(problem, tests, codes)])
        if isinstance(result, DataError):
            raise result
        return result

    def _run(self, program: str, inputs: list[str], fn_name: str) -> concurrent.futures.Future:
        return self.sandbox.run_function_async(program, inputs, fn_name=fn_name, limits=self.limits)

    def _run_retrying(self, calls: list[tuple[str, list[str], str]]) -> list[list[Any]]:
        """Results per call; calls with an infrastructure error are re-run up to ``infra_retries`` times."""
        results: list[list[Any] | None] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(self.infra_retries + 1):
            futures = {i: self._run(*calls[i]) for i in todo}
            retry = []
            for i in todo:
                results[i] = futures[i].result()
                if any(str(r.status) == "INFRA_ERROR" for r in results[i]) and attempt < self.infra_retries:
                    retry.append(i)
            if not retry:
                break
            log.warning("re-running %d call batch(es) after infrastructure errors", len(retry))
            todo = retry
        return results  # type: ignore[return-value]

    def grade_batch(self, items: Sequence[GradeItem]) -> list[list[SampleGrade] | DataError]:
        out: list[list[SampleGrade] | DataError] = []
        humaneval = [(k, it) for k, it in enumerate(items) if isinstance(it[0], HumanEvalProblem)]
        mbpp = [(k, it) for k, it in enumerate(items) if isinstance(it[0], MbppPlusProblem)]
        other = [it[0] for it in items if not isinstance(it[0], (HumanEvalProblem, MbppPlusProblem))]
        if other:
            raise TypeError(f"FunctionTestGrader grades HumanEval / MBPP+ problems, got {type(other[0]).__name__}")
        results: dict[int, list[SampleGrade] | DataError] = {}
        results.update(self._grade_humaneval(humaneval))
        results.update(self._grade_mbpp(mbpp))
        out = [results[k] for k in range(len(items))]
        return out

    def _grade_humaneval(self, items: list[tuple[int, GradeItem]]) -> dict[int, list[SampleGrade]]:
        calls, where = [], []
        for k, (problem, _, codes) in items:
            for s, code in enumerate(codes):
                calls.append((humaneval_program(problem, program_for(problem, code, self.style)), [""], HARNESS_FN))
                where.append((k, s))
        grades: dict[int, list[SampleGrade]] = {k: [None] * len(codes) for k, (_, _, codes) in items}  # type: ignore[misc]
        for (k, s), (result,) in zip(where, self._run_retrying(calls)):
            status = str(result.status)
            if status == "PASS":
                grades[k][s] = _grade("PASS", True, cpu_s=result.cpu_s) if result.output == "True" else _grade(
                    "WA", False, f"check returned {result.output!r}", result.cpu_s)
            elif status == "INFRA_ERROR":
                grades[k][s] = _grade(status, None, result.error)
            else:
                grades[k][s] = _grade(status, False, result.error, result.cpu_s)
        return grades

    def _compare(self, problem: MbppPlusProblem, results: Sequence[Any], expected: Sequence[str], offset: int) -> SampleGrade | None:
        """The first failing call's grade (None when every call matches)."""
        for i, (result, exp_text) in enumerate(zip(results, expected)):
            status = str(result.status)
            idx = offset + i
            if status == "INFRA_ERROR":
                return _grade(status, None, f"input {idx}: {result.error}")
            if status != "PASS":
                return _grade(status, False, f"input {idx}: {result.error}", sum(r.cpu_s for r in results))
            ok, out = parse_repr(result.output)
            _, exp = parse_repr(exp_text)
            if not ok:
                out = Opaque(result.output)  # an object without a literal repr: equals no expected value
            if not mbpp_outputs_match(problem.entry_point, problem.tests[idx], out, exp, problem.atol):
                return _grade("WA", False, f"input {idx}: got {result.output[:80]}, expected {exp_text[:80]}",
                              sum(r.cpu_s for r in results))
        return None

    def _grade_mbpp(self, items: list[tuple[int, GradeItem]]) -> dict[int, list[SampleGrade] | DataError]:
        out: dict[int, list[SampleGrade] | DataError] = {}
        jobs = []  # (k, s, problem, program)
        for k, (problem, _, codes) in items:
            exp = self.expected.get(problem.id)
            if exp is None or isinstance(exp, str):
                out[k] = DataError(exp or "no expected outputs (mbpp_expected_outputs was not run for it)")
                continue
            if len(exp) != len(problem.tests):
                out[k] = DataError(f"{len(exp)} expected outputs for {len(problem.tests)} inputs")
                continue
            out[k] = [None] * len(codes)  # type: ignore[list-item]
            jobs.extend((k, s, problem, program_for(problem, code, self.style)) for s, code in enumerate(codes))
        n_base = {id(p): len(p.base_inputs) for _, _, p, _ in jobs}
        base_calls = [(prog, [call_arguments(a) for a in p.base_inputs], p.entry_point) for _, _, p, prog in jobs]
        plus_jobs = []
        for job, results in zip(jobs, self._run_retrying(base_calls)):
            k, s, problem, program = job
            failed = self._compare(problem, results, self.expected[problem.id][: n_base[id(problem)]], 0)
            if failed is not None:
                out[k][s] = failed  # type: ignore[index]
            elif not problem.plus_inputs:
                out[k][s] = _grade("PASS", True, cpu_s=sum(r.cpu_s for r in results))  # type: ignore[index]
            else:
                plus_jobs.append(job)
        plus_calls = [(prog, [call_arguments(a) for a in p.plus_inputs], p.entry_point) for _, _, p, prog in plus_jobs]
        for (k, s, problem, _), results in zip(plus_jobs, self._run_retrying(plus_calls)):
            nb = n_base[id(problem)]
            failed = self._compare(problem, results, self.expected[problem.id][nb:], nb)
            if failed is None:
                out[k][s] = _grade("PASS", True, cpu_s=sum(r.cpu_s for r in results))  # type: ignore[index]
            elif failed.passed is None:
                out[k][s] = failed  # type: ignore[index]
            else:
                out[k][s] = SampleGrade(failed.status, False, failed.lcb_code,  # type: ignore[index]
                                        f"{BASE_PASS_TAG}; plus {failed.message}"[:500], failed.cpu_s)
        return out
