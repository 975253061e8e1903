"""Parent-side plain data: decoding the sandbox's replies, comparing values, canonical repr.

Nothing here evaluates text: a reply is hex -> ASCII JSON (no NaN/Infinity constants) -> the
tagged encoding of ``child.py`` -> builtin values built by this code. Values are then compared
with ``==`` (Python semantics on builtins only, so no object written by a model ever runs).
"""

from __future__ import annotations

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

