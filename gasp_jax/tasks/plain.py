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

from gasp_jax.tasks.child import MAX_DEPTH, NotPlain, TooLarge, decode, encode
from gasp_jax.tasks.child import _enc as _enc_child

__all__ = ["NotPlain", "decode", "encode", "canonical", "parse_reply", "plain_repr", "encoding_repr",
           "literal_encoding", "literal_args_encoding", "args_text"]

_HEX_REPR = re.compile(r"'([0-9a-f]*)'")


def _no_constants(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _small_object(pairs: list) -> dict:
    """JSON objects of a reply: the reply itself and one-key tags; a bigger one is malformed
    (no dict is ever built from many untrusted keys)."""
    if len(pairs) > 8:
        raise ValueError("JSON object with too many keys")
    return dict(pairs)


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
        reply = json.loads(bytes.fromhex(m.group(1)).decode("ascii"), parse_constant=_no_constants,
                           object_pairs_hook=_small_object)
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
    return encoding_repr(encode(value, 1 << 40))


def encoding_repr(enc: Any, max_items: int = 1 << 20) -> str:
    """``plain_repr`` of the value an encoding stands for, built from the encoding alone (no
    container is built, so an untrusted encoding costs time linear in its size plus sorting)."""
    canonical(enc, max_items)  # well formed, no duplicate set elements or dict keys
    return _enc_repr(enc)


def _num_repr(e: Any) -> str:
    if type(e) is dict:
        if "i" in e:
            value = int(e["i"], 16)
            return hex(value) if value.bit_length() > _MAX_REPR_INT_BITS else repr(value)
        return "float('inf')" if e["f"] == "inf" else "-float('inf')"
    return repr(e)


def _enc_repr(e: Any) -> str:
    t = type(e)
    if t is list:
        return "[" + ", ".join(_enc_repr(v) for v in e) + "]"
    if t is not dict:
        return repr(e)
    (tag, body), = e.items()
    if tag == "t":
        return "(" + ", ".join(_enc_repr(v) for v in body) + ("," if len(body) == 1 else "") + ")"
    if tag == "d":
        return "{" + ", ".join(f"{_enc_repr(k)}: {_enc_repr(v)}" for k, v in body) + "}"
    if tag in ("s", "fs"):
        items = sorted(_enc_repr(v) for v in body)
        inner = "{" + ", ".join(items) + "}" if items else ""
        return (inner or "set()") if tag == "s" else f"frozenset({inner})"
    if tag == "c":
        re_, im = body
        if type(re_) is float and type(im) is float:
            return repr(complex(re_, im))
        return f"complex({_num_repr(re_)}, {_num_repr(im)})"
    if tag == "b":
        return repr(bytes.fromhex(body))
    return _num_repr(e)


def args_text(enc: Any) -> str:
    """Call-argument text (``"'abc', 3, k=[1]"``) of the encoding of an ``(args, kwargs)`` pair:
    the one canonical form in which the sandbox receives call arguments."""
    args, kwargs = enc["t"]
    parts = [_enc_repr(v) for v in args["t"]]
    parts += [f"{_enc_repr(k)[1:-1]}={_enc_repr(v)}" for k, v in kwargs["d"]]
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Canonical keys: equality of plain values without building them (untrusted encodings)
# ---------------------------------------------------------------------------------------------
# A key is a nested tuple of numbers, str and bytes whose ``==`` is Python's ``==`` on the values
# (1 == 1.0 == True, {1, 2} == frozenset({2, 1}), dict order ignored) and whose ``<`` is a total
# order. Sets and dicts become sorted tuples: no hash table is ever built from untrusted data
# (a set of 40,000 colliding elements would otherwise cost quadratic time on the host).

_NUM, _STR, _BYTES, _LIST, _TUPLE, _SET, _DICT, _NONE = range(8)


def _real(x: Any) -> Any:
    """A number normalised so that equal numbers of different types compare equal in a key."""
    if type(x) is float and x.is_integer():
        return int(x)
    return int(x) if type(x) is bool else x


def _num(e: Any, budget: list) -> Any:
    t = type(e)
    if t is int or t is bool:
        return int(e)
    if t is float:
        if e != e or e in (math.inf, -math.inf):
            raise NotPlain("non-finite float outside a tag")
        return _real(e)
    if t is dict and len(e) == 1:
        (tag, body), = e.items()
        if tag == "i" and type(body) is str and 0 < len(body) <= 1 << 16:
            budget[0] -= len(body)
            try:
                return int(body, 16)
            except ValueError:
                raise NotPlain("malformed int encoding") from None
        if tag == "f" and body in ("inf", "-inf"):
            return float(body)
    raise NotPlain("malformed number in an encoding")


def _key(e: Any, depth: int, budget: list) -> tuple:
    """(key, hashable) of an encoding; raises ``NotPlain``."""
    budget[0] -= 1
    if budget[0] < 0:
        raise TooLarge("value has too many elements")
    if depth > MAX_DEPTH:
        raise NotPlain("value nested too deeply")
    t = type(e)
    if e is None:
        return (_NONE,), True
    if t is str:
        budget[0] -= len(e) // 64
        return (_STR, e), True
    if t is list:
        return (_LIST, tuple(_key(v, depth + 1, budget)[0] for v in e)), False
    if t is not dict or len(e) != 1:
        return (_NUM, _num(e, budget), 0), True
    (tag, body), = e.items()
    if tag in ("i", "f"):
        return (_NUM, _num(e, budget), 0), True
    if tag == "c" and type(body) is list and len(body) == 2 and all(type(p) in (float, dict) for p in body):
        return (_NUM, _real(_num(body[0], budget)), _real(_num(body[1], budget))), True
    if tag == "b" and type(body) is str:
        budget[0] -= len(body) // 128
        try:
            return (_BYTES, bytes.fromhex(body)), True
        except ValueError:
            raise NotPlain("malformed bytes encoding") from None
    if type(body) is not list:
        raise NotPlain("malformed encoding")
    if tag == "t":
        pairs = [_key(v, depth + 1, budget) for v in body]
        return (_TUPLE, tuple(k for k, _ in pairs)), all(h for _, h in pairs)
    if tag in ("s", "fs"):
        pairs = [_key(v, depth + 1, budget) for v in body]
        if not all(h for _, h in pairs):
            raise NotPlain("unhashable set element")
        keys = sorted(k for k, _ in pairs)
        if any(a == b for a, b in zip(keys, keys[1:])):
            raise NotPlain("duplicate set element")
        return (_SET, tuple(keys)), tag == "fs"
    if tag == "d":
        items = []
        for pair in body:
            if type(pair) is not list or len(pair) != 2:
                raise NotPlain("malformed dict encoding")
            k, hashable = _key(pair[0], depth + 1, budget)
            if not hashable:
                raise NotPlain("unhashable dict key")
            items.append((k, _key(pair[1], depth + 1, budget)[0]))
        items.sort(key=lambda kv: kv[0])
        if any(a[0] == b[0] for a, b in zip(items, items[1:])):
            raise NotPlain("duplicate dict key")
        return (_DICT, tuple(items)), False
    raise NotPlain("malformed encoding")


def canonical(enc: Any, max_items: int = 1 << 20) -> tuple:
    """The canonical key of an (untrusted) encoding: equal keys iff the values are ``==`` in
    Python. Raises ``NotPlain`` for anything that is not exactly an encoding of plain data,
    including duplicate set elements or dict keys (an honest encoder never writes them), or for
    more than about ``max_items`` elements. Costs O(n log n); builds no set or dict."""
    try:
        return _key(enc, 0, [max_items])[0]
    except NotPlain:
        raise
    except (TypeError, ValueError, RecursionError, OverflowError) as exc:
        raise NotPlain(f"malformed encoding: {type(exc).__name__}") from None


def encoded_json(encoding: Any) -> str:
    """Compact JSON text of an encoding (its size is what the caps count)."""
    return json.dumps(encoding, separators=(",", ":"))



# ---------------------------------------------------------------------------------------------
# Literal answers: parsed into encodings, never evaluated
# ---------------------------------------------------------------------------------------------

class NotLiteral(Exception):
    """The text is not a literal of plain data (see ``literal_encoding``)."""


#: The calls a literal may contain (the forms ``plain_repr`` writes, plus empty containers).
_LITERAL_CALLS = ("set", "frozenset", "float", "complex", "tuple", "list", "dict")


def _number(enc: Any) -> Any:
    """The Python number of a scalar numeric encoding (a bounded int, float, complex), else None."""
    t = type(enc)
    if t is int or t is float:
        return enc
    if t is dict and len(enc) == 1:
        (tag, body), = enc.items()
        if tag == "i":
            return int(body, 16)
        if tag == "f":
            return float(body)
        if tag == "c":
            return complex(_number(body[0]), _number(body[1]))
    return None


def _scalar(value: Any, budget: list) -> Any:
    try:
        return _enc_child(value, 0, budget)
    except NotPlain as exc:
        raise NotLiteral(str(exc)) from None


def _unique(items: list, keep_last_value: bool, budget: list) -> list:
    """Set-display / dict-display semantics without hashing: of elements (keys) that are ``==``,
    the first stays, in its place; a dict keeps the last value for it."""
    keyed = []
    for pos, item in enumerate(items):
        key, hashable = _key(item[0] if keep_last_value else item, 0, budget)
        if not hashable:
            raise NotLiteral("unhashable set element or dict key")
        keyed.append((key, pos))
    keyed.sort()
    first: dict = {}  # position -> position whose value wins (ints only: no untrusted hashing)
    run_start = 0
    for j in range(1, len(keyed) + 1):
        if j == len(keyed) or keyed[j][0] != keyed[run_start][0]:
            run = [p for _, p in keyed[run_start:j]]
            first[run[0]] = run[-1]
            run_start = j
    if not keep_last_value:
        return [items[p] for p in sorted(first)]
    return [[items[p][0], items[last][1]] for p, last in sorted(first.items())]


def _lit(node: ast.AST, depth: int, budget: list) -> Any:
    """The encoding of a literal expression node; raises ``NotLiteral``."""
    budget[0] -= 1
    if budget[0] < 0:
        raise NotLiteral("too large")
    if depth > MAX_DEPTH:
        raise NotLiteral("nested too deeply")
    if isinstance(node, ast.Constant):
        if node.value is Ellipsis:
            raise NotLiteral("Ellipsis is not plain data")
        return _scalar(node.value, budget)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        x = _number(_lit(node.operand, depth + 1, budget))
        if x is None or type(x) is bool:
            raise NotLiteral("unary minus of a non-number")
        return _scalar(-x if isinstance(node.op, ast.USub) else x, budget)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Pow)):
        a, b = _lit(node.left, depth + 1, budget), _lit(node.right, depth + 1, budget)
        x, y = _number(a), _number(b)
        if x is not None and y is not None:
            return _scalar(_arith(node.op, x, y, budget), budget)
        if isinstance(node.op, ast.Add) and type(a) is str and type(b) is str:
            return _scalar(a + b, budget)
        if isinstance(node.op, ast.Add) and type(a) is dict and type(b) is dict and "b" in a and "b" in b:
            return {"b": a["b"] + b["b"]}
        raise NotLiteral("+ joins two numbers, two str or two bytes; -, * and ** two numbers")
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        if any(isinstance(e, ast.Starred) for e in node.elts):
            raise NotLiteral("starred element")
        items = [_lit(e, depth + 1, budget) for e in node.elts]
        if isinstance(node, ast.List):
            return items
        if isinstance(node, ast.Tuple):
            return {"t": items}
        return {"s": _sorted_set(_unique(items, False, budget))}
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise NotLiteral("** in a dict display")
        pairs = [[_lit(k, depth + 1, budget), _lit(v, depth + 1, budget)] for k, v in zip(node.keys, node.values)]
        return {"d": _unique(pairs, True, budget)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args \
            and node.keywords and all(k.arg is not None for k in node.keywords):  # dict(a=1, b=2)
        pairs = [[k.arg, _lit(k.value, depth + 1, budget)] for k in node.keywords]
        return {"d": _unique(pairs, True, budget)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _LITERAL_CALLS \
            and not node.keywords and not any(isinstance(a, ast.Starred) for a in node.args):
        return _literal_call(node.func.id, node.args, depth, budget)
    raise NotLiteral(f"{type(node).__name__} is not allowed in a literal")


def _bits(x: Any) -> int:
    return x.bit_length() if type(x) is int else 64


def _arith(op: ast.operator, x: Any, y: Any, budget: list) -> Any:
    """``x op y`` on two numbers, refused before it is computed when an int result could exceed
    the budget (``2 ** 100`` is a literal, ``9 ** 9 ** 9`` is not)."""
    if isinstance(op, ast.Add):
        return x + y
    if isinstance(op, ast.Sub):
        return x - y
    if isinstance(op, ast.Mult):
        if _bits(x) + _bits(y) > 4 * max(budget[0], 0):
            raise NotLiteral("too large")
        return x * y
    if type(y) is int and type(x) is int and y > 0 and _bits(x) * y > 4 * max(budget[0], 0) and abs(x) > 1:
        raise NotLiteral("too large")
    try:
        return x ** y
    except (OverflowError, ZeroDivisionError) as exc:
        raise NotLiteral(f"{type(exc).__name__} in a literal") from None


def _sorted_set(items: list) -> list:
    return sorted(items, key=encoded_json)


def _literal_call(name: str, args: list, depth: int, budget: list) -> Any:
    if not args and name in ("set", "frozenset", "tuple", "list", "dict"):
        return {"set": {"s": []}, "frozenset": {"fs": []}, "tuple": {"t": []}, "list": [], "dict": {"d": []}}[name]
    if name in ("set", "frozenset") and len(args) == 1 and isinstance(args[0], (ast.Set, ast.List, ast.Tuple)):
        inner = _lit(args[0], depth + 1, budget)
        items = inner["s"] if type(inner) is dict and "s" in inner else (inner["t"] if type(inner) is dict else inner)
        items = _sorted_set(_unique(list(items), False, budget))
        return {"s" if name == "set" else "fs": items}
    if name == "float" and len(args) == 1 and isinstance(args[0], ast.Constant) and type(args[0].value) is str \
            and args[0].value.strip().lower() in ("inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"):
        return _scalar(float(args[0].value), budget)
    if name == "complex" and len(args) == 2:
        parts = [_number(_lit(a, depth + 1, budget)) for a in args]
        if all(type(p) in (int, float) for p in parts):
            return _scalar(complex(*parts), budget)
    raise NotLiteral(f"{name}(...) is not a literal form")


def _parse(text: str, wrapper: str) -> ast.AST | None:
    try:
        return ast.parse(wrapper.format(text), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


def literal_encoding(text: str, max_bytes: int) -> tuple[bool, Any]:
    """``(True, encoding)`` when ``text`` (parenthesized) is a literal of plain data within
    ``max_bytes``, else ``(False, reason)``. Nothing is evaluated and no set or dict is built:
    the literal becomes the canonical encoding of ``child.py`` directly (see docs/tasks.md,
    "What a literal is")."""
    tree = _parse(text, "(\n{}\n)")
    if tree is None:
        return False, "not a Python expression"
    try:
        return True, _lit(tree.body, 0, [max_bytes])
    except NotLiteral as exc:
        return False, str(exc)
    except (NotPlain, RecursionError, MemoryError, OverflowError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def literal_args_encoding(text: str, max_bytes: int) -> tuple[bool, Any]:
    """Like ``literal_encoding`` for call arguments (``"'abc', 3"``, ``"x=1"``, ``"*[1, 2]"``,
    ``""``): ``(True, encoding of (args, kwargs))`` when every argument is a literal."""
    tree = _parse(text, "f(\n{}\n)")
    call = getattr(tree, "body", None)
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f"):
        return False, "not call arguments"
    if any(k.arg is None for k in call.keywords):
        return False, "** in call arguments"
    if len({k.arg for k in call.keywords}) != len(call.keywords):
        return False, "repeated keyword argument"
    budget = [max_bytes]
    try:
        args: list = []
        for a in call.args:
            if isinstance(a, ast.Starred):  # *[1, 2] / *(1, 2) of a literal list or tuple
                inner = _lit(a.value, 1, budget)
                if type(inner) is list:
                    args += inner
                elif type(inner) is dict and "t" in inner:
                    args += inner["t"]
                else:
                    raise NotLiteral("* of something other than a list or tuple")
            else:
                args.append(_lit(a, 1, budget))
        kwargs = [[k.arg, _lit(k.value, 1, budget)] for k in call.keywords]
    except NotLiteral as exc:
        return False, str(exc)
    except (NotPlain, RecursionError, MemoryError, OverflowError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, {"t": [{"t": args}, {"d": kwargs}]}
