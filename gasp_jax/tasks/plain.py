"""Parent-side plain data: decoding the sandbox's replies, literal answers, comparing values,
canonical repr.

Nothing here evaluates text: a reply is hex -> ASCII JSON (no NaN/Infinity constants) -> the
tagged encoding of ``child.py`` -> builtin values built by this code; an answer that is a
Python literal is parsed (``ast``) into builtin values without executing anything. Values are
then compared with ``==`` (Python semantics on builtins only, so no object written by a model
ever runs here).
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from gasp_jax.tasks.child import NotPlain, decode, encode

__all__ = ["NotPlain", "decode", "encode", "parse_reply", "plain_repr", "values_equal"]

_HEX_REPR = re.compile(r"'([0-9a-f]*)'")


def _no_constants(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def parse_reply(output: str | None, max_chars: int) -> dict:
    """The reply dict from a sandbox ``Result.output`` (``repr`` of the hex string returned by
    ``__gasp_run__``); ``{"ok": False, "error": ...}`` for anything malformed or over
    ``max_chars`` (a hostile program controls its process, so its reply is untrusted bytes)."""
    if not isinstance(output, str) or len(output) > 2 * max_chars + 2:
        return {"ok": False, "error": "reply missing or too large"}
    m = _HEX_REPR.fullmatch(output)
    if m is None or len(m.group(1)) % 2:
        return {"ok": False, "error": "malformed reply"}
    try:
        reply = json.loads(bytes.fromhex(m.group(1)).decode("ascii"), parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {"ok": False, "error": "malformed reply"}
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        return {"ok": False, "error": "malformed reply"}
    if reply["ok"] and not isinstance(reply.get("values"), list):
        return {"ok": False, "error": "malformed reply"}
    if not reply["ok"] and not isinstance(reply.get("error"), str):
        reply["error"] = "error"
    return reply


def values_equal(a: Any, b: Any) -> bool:
    """``a == b`` on decoded plain values (never raises)."""
    try:
        return bool(a == b)
    except (RecursionError, TypeError, ValueError, OverflowError):
        return False


_MAX_REPR_INT_BITS = 12000  # repr of a larger int exceeds the interpreter's int -> str digit limit


def plain_repr(value: Any) -> str:
    """``repr`` of a plain value, except that set elements are sorted (by their repr), so the
    text does not depend on the process's string-hash seed (prompts must be identical on every
    host and every run). ``eval`` of the text gives an equal value."""
    t = type(value)
    if t is list:
        return "[" + ", ".join(plain_repr(v) for v in value) + "]"
    if t is tuple:
        inner = ", ".join(plain_repr(v) for v in value)
        return "(" + inner + ("," if len(value) == 1 else "") + ")"
    if t is dict:
        return "{" + ", ".join(f"{plain_repr(k)}: {plain_repr(v)}" for k, v in value.items()) + "}"
    if t is set or t is frozenset:
        items = sorted(plain_repr(v) for v in value)
        body = "{" + ", ".join(items) + "}" if items else ""
        if t is set:
            return body or "set()"
        return f"frozenset({body})"
    if t is int and value.bit_length() > _MAX_REPR_INT_BITS:
        return hex(value)
    if t is float and math.isinf(value):
        return "float('inf')" if value > 0 else "-float('inf')"
    if t is complex and not (math.isfinite(value.real) and math.isfinite(value.imag)):
        return f"complex({plain_repr(value.real)}, {plain_repr(value.imag)})"
    return repr(value)


def encoded_json(encoding: Any) -> str:
    """Compact JSON text of an encoding (its size is what the caps count)."""
    return json.dumps(encoding, separators=(",", ":"))



_LITERAL_NODES = (ast.Expression, ast.Constant, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.UnaryOp, ast.BinOp,
                  ast.USub, ast.UAdd, ast.Add, ast.Sub, ast.Load)


def _is_literal(node: ast.AST) -> bool:
    return all(isinstance(n, _LITERAL_NODES) for n in ast.walk(node))


def _parse(text: str, wrapper: str) -> ast.AST | None:
    try:
        return ast.parse(wrapper.format(text), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


def _literal(node: ast.AST) -> Any:
    return ast.literal_eval(node)  # builds builtin values from literal syntax; runs no code


def literal_value(text: str, max_bytes: int) -> tuple[bool, Any]:
    """``(True, value)`` when ``text`` (as the sandbox would evaluate it, parenthesized) is a
    Python literal of plain data within ``max_bytes``; else ``(False, None)`` and the caller
    evaluates it in the sandbox. Parsing only: ``ast.literal_eval`` executes nothing."""
    tree = _parse(text, "(\n{}\n)")
    if tree is None or not _is_literal(tree):
        return False, None
    try:
        value = _literal(tree)
        encode(value, max_bytes)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError, OverflowError, NotPlain):
        return False, None
    return True, value


def literal_args(text: str, max_bytes: int) -> tuple[bool, Any]:
    """Like ``literal_value`` for call arguments (``"'abc', 3"``, ``"x=1"``): ``(True, (args,
    kwargs))`` when every argument is a plain literal."""
    tree = _parse(text, "f(\n{}\n)")
    call = getattr(tree, "body", None)
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f"):
        return False, None
    if any(k.arg is None for k in call.keywords) or len({k.arg for k in call.keywords}) != len(call.keywords):
        return False, None
    nodes = list(call.args) + [k.value for k in call.keywords]
    if not all(_is_literal(n) for n in nodes):
        return False, None
    try:
        value = (tuple(_literal(n) for n in call.args), {k.arg: _literal(k.value) for k in call.keywords})
        encode(value, max_bytes)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError, OverflowError, NotPlain):
        return False, None
    return True, value
