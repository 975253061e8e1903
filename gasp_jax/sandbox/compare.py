"""Output comparison in the trusted parent, on plain data only.

Nothing here ever calls a method of an object built by untrusted code: stdout arrives as
``bytes`` and functional return values as strict JSON text, both decoded here.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, InvalidOperation
from typing import Any

COMPARE_MODES = ("lcb", "tolerance", "exact")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimal_tokens(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(tok) for tok in line.split()]
    except (InvalidOperation, ValueError):
        return None


def _close(a: str, b: str, rel_tol: float) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    if math.isnan(x) or math.isnan(y):
        return False
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= rel_tol * max(1.0, abs(y))


def compare_stdout(actual: bytes | str, expected: str, mode: str = "lcb", rel_tol: float = 1e-6) -> tuple[bool, str]:
    """Compare program stdout with the expected text. Returns (ok, reason-if-not-ok).

    ``lcb`` (default, LiveCodeBench parity): strip the whole text, split on ``\\n``, strip each
    line; equal line counts; each line equal, or all its whitespace tokens parse as ``Decimal``
    and are equal (``3.0`` == ``3``, ``1e3`` == ``1000``; no tolerance; case-sensitive).
    ``tolerance``: like ``lcb`` but numeric tokens may differ by ``rel_tol * max(1, |expected|)``
    (AtCoder/Codeforces float problems). ``exact``: byte-for-byte equal text (debugging).
    Output that is not valid UTF-8 is a wrong answer.
    """
    if mode not in COMPARE_MODES:
        raise ValueError(f"unknown compare mode {mode!r}; expected one of {COMPARE_MODES}")
    if isinstance(actual, (bytes, bytearray, memoryview)):
        try:
            actual = bytes(actual).decode("utf-8")
        except UnicodeDecodeError:
            return False, "output is not valid UTF-8"
    if mode == "exact":
        return (actual == expected), ("" if actual == expected else "output differs")
    got, want = _lines(actual), _lines(expected)
    if len(got) != len(want):
        return False, f"expected {len(want)} lines, got {len(got)}"
    for n, (g, w) in enumerate(zip(got, want), 1):
        if g == w:
            continue
        if mode == "lcb":
            gd, wd = _decimal_tokens(g), _decimal_tokens(w)
            if gd is not None and wd is not None and gd == wd:
                continue
            return False, f"line {n} differs"
        gt, wt = g.split(), w.split()
        if len(gt) != len(wt) or not all(a == b or _close(a, b, rel_tol) for a, b in zip(gt, wt)):
            return False, f"line {n} differs"
    return True, ""


def _parse_int(text: str) -> Any:
    # Integers beyond the interpreter's int_max_str_digits: compare as exact Decimals instead of
    # changing the process-wide setting of the trainer.
    try:
        return int(text)
    except ValueError:
        return Decimal(text)


def loads_json(text: str) -> Any:
    """``json.loads`` that accepts integers of any length."""
    return json.loads(text, parse_int=_parse_int)


def compare_json(actual_json: str, expected: Any) -> tuple[bool, str]:
    """Compare a functional-mode return value (strict JSON text from the child) with the expected
    value (already parsed from the test's JSON). Python ``==`` on plain data, as LiveCodeBench
    (so ``1 == 1.0`` and a returned tuple equals a list)."""
    try:
        got = loads_json(actual_json)
    except (ValueError, RecursionError) as exc:
        return False, f"return value is not valid JSON: {exc}"
    try:
        ok = bool(got == expected)
    except RecursionError:
        return False, "return value nested too deeply to compare"
    return ok, "" if ok else "return value differs"
