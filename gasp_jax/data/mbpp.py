"""MBPP+ problems (EvalPlus ``MbppPlus.jsonl``) from a local file, with their base and plus inputs.

Each row holds ``task_id, prompt, entry_point, canonical_solution, base_input, plus_input, atol``:
``prompt`` is MBPP's docstring (the task text and one example assert), the inputs are lists of
positional-argument lists. The file has no expected outputs: as in EvalPlus, they are the canonical
solution's return values on the inputs, computed by running it (``gasp_jax.evaluation.function_tests``).

JSON has no tuples, sets or complex numbers, so some tasks' inputs must be rebuilt before the call
(EvalPlus keys this on the task number); :data:`INPUT_TYPES` is that table. A wrong type changes the
canonical outputs (e.g. a tuple-concatenating solution handed lists), so the table is data, not a
detail. Bad rows are reported in a :class:`~gasp_jax.data.livecodebench.LoadReport` and skipped.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from gasp_jax.data.humaneval import load_problems
from gasp_jax.data.livecodebench import DataError, LoadReport

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input", "atol")


def _tuples(x: Any) -> Any:
    """Every list in ``x``, at any depth, as a tuple."""
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


# How one input (a list of positional arguments) is rebuilt, per MBPP task number (EvalPlus's
# deserialisation table; tasks absent here take their JSON values as they are).
_REBUILD: dict[str, Callable[[list], Sequence[Any]]] = {
    "each_arg_tuple": lambda a: [tuple(x) for x in a],
    "each_arg_tuple_of_tuples": lambda a: [[tuple(y) for y in x] for x in a],
    "first_arg_tuples": lambda a: [[tuple(y) for y in a[0]], *a[1:]],
    "second_arg_tuple": lambda a: [a[0], tuple(a[1]), *a[2:]],
    "first_arg_sets": lambda a: [[set(y) if isinstance(y, list) and y else {} for y in a[0]]],
    "float_and_complex": lambda a: (float(a[0]), complex(a[1])),
    "first_arg_tuple": lambda a: [tuple(a[0]), *a[1:]],
    "nested_tuples": lambda a: [tuple(tuple(y) for y in x) for x in a],
    "first_arg_tuple_of_items": lambda a: [tuple(tuple(y) if isinstance(y, list) else y for y in a[0]), *a[1:]],
    "dict_values_tuples": lambda a: [{k: tuple(v) for k, v in a[0].items()}, *a[1:]],
    "complex": lambda a: [complex(a[0])],
    "all_tuples": _tuples,
}
INPUT_TYPES: dict[int, str] = {
    **dict.fromkeys((2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630,
                     726, 740, 744, 809), "each_arg_tuple"),
    **dict.fromkeys((63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780), "each_arg_tuple_of_tuples"),
    **dict.fromkeys((75, 413, 444, 753), "first_arg_tuples"),
    **dict.fromkeys((106, 750), "second_arg_tuple"),
    115: "first_arg_sets",
    124: "float_and_complex",
    **dict.fromkeys((250, 405, 446, 617, 720, 763, 808), "first_arg_tuple"),
    **dict.fromkeys((259, 401, 445), "nested_tuples"),
    278: "first_arg_tuple_of_items",
    307: "first_arg_tuple",
    722: "dict_values_tuples",
    252: "complex",
    **dict.fromkeys((580, 615, 791), "all_tuples"),
}


def task_number(task_id: str) -> int:
    try:
        return int(task_id.rsplit("/", 1)[-1])
    except ValueError:
        raise DataError(f"task_id {task_id!r} is not of the form Mbpp/<number>") from None


def rebuild_inputs(task_id: str, inputs: Sequence[Any]) -> tuple[tuple[Any, ...], ...]:
    """JSON inputs of one task -> tuples of Python call arguments, with the task's types."""
    rebuild = _REBUILD.get(INPUT_TYPES.get(task_number(task_id), ""))
    out = []
    for i, args in enumerate(inputs):
        if not isinstance(args, list):
            raise DataError(f"input {i} is a {type(args).__name__}, expected a list of arguments")
        try:
            out.append(tuple(rebuild(args) if rebuild else args))
        except (TypeError, ValueError, IndexError, AttributeError) as e:
            raise DataError(f"input {i} does not fit the task's argument types: {e}") from None
    return tuple(out)


def python_literal(value: Any) -> str:
    """Python source that evaluates to ``value`` (``repr`` except non-finite floats and empty sets)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({repr(value)!r})"
    if isinstance(value, complex):
        return f"complex({python_literal(value.real)}, {python_literal(value.imag)})"
    if isinstance(value, (bool, int, float, str, bytes)) or value is None:
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(python_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, (set, frozenset)):
        body = "{" + ", ".join(python_literal(v) for v in value) + "}" if value else ""
        return body if value and isinstance(value, set) else f"{type(value).__name__}({body})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no literal for {type(value).__name__}")


def call_arguments(args: Sequence[Any]) -> str:
    """The argument list text of one call (``"(1, 2), 'x'"``): what the sandbox evaluates as ``f(<text>)``."""
    return ", ".join(python_literal(a) for a in args)


@dataclasses.dataclass(frozen=True)
class MbppPlusProblem:
    id: str
    prompt: str
    entry_point: str
    canonical_solution: str
    atol: float
    base_inputs: tuple[tuple[Any, ...], ...]
    plus_inputs: tuple[tuple[Any, ...], ...]

    benchmark = "mbpp_plus"

    @property
    def tests(self) -> tuple[tuple[Any, ...], ...]:
        """Every call's arguments, base inputs first (what the grader runs)."""
        return self.base_inputs + self.plus_inputs

    @property
    def reference_program(self) -> str:
        return self.canonical_solution


def problem_from_row(row: Any) -> MbppPlusProblem:
    if not isinstance(row, dict):
        raise DataError(f"row is a {type(row).__name__}, expected an object")
    missing = [f for f in FIELDS if f not in row]
    if missing:
        raise DataError(f"missing field(s) {missing}")
    for name in ("task_id", "prompt", "entry_point", "canonical_solution"):
        if not isinstance(row[name], str):
            raise DataError(f"field {name!r} must be a string")
    if not row["entry_point"].isidentifier():
        raise DataError(f"entry_point {row['entry_point']!r} is not an identifier")
    if not isinstance(row["atol"], (int, float)) or row["atol"] < 0:
        raise DataError(f"atol {row['atol']!r} must be a non-negative number")
    base = rebuild_inputs(row["task_id"], row["base_input"] or [])
    plus = rebuild_inputs(row["task_id"], row["plus_input"] or [])
    if not base:
        raise DataError("no base inputs")
    return MbppPlusProblem(row["task_id"], row["prompt"], row["entry_point"], row["canonical_solution"],
                           float(row["atol"]), base, plus)


def load_mbpp_plus(path: str | os.PathLike, *, report: LoadReport | None = None) -> list[MbppPlusProblem]:
    """All valid problems of ``path`` in file order (duplicated task ids: the first is kept)."""
    return load_problems(path, problem_from_row, report)
