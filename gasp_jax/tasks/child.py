"""The program every task job runs inside the sandbox, and the plain-data encoding.

This file's *source text* is the sandboxed program of every task job (``execution.py`` sends it
as the program and calls ``__gasp_run__(<payload>)`` once per sandbox test, i.e. once per fresh
process). The model-written program and inputs travel in the payload, never in the wrapper, so
one job can carry many unrelated checks and the parent never builds program text by
concatenation. It is also imported by the parent (for ``encode``/``decode``), so it must stay
standard-library only and do nothing at import time.

Plain data, and its encoding (JSON-able, type-exact, canonical):
    None, bool, str          -> themselves
    int                      -> itself if it fits 60 bits, else {"i": hex}
    float (finite)           -> itself; +-inf -> {"f": "inf" | "-inf"}; NaN is not plain data
    complex (finite parts)   -> {"c": [real, imag]}
    bytes                    -> {"b": hex}
    list                     -> [items]
    tuple                    -> {"t": [items]}
    dict                     -> {"d": [[key, value], ...]} in insertion order (keys plain + hashable)
    set / frozenset          -> {"s": [...]} / {"fs": [...]}, elements sorted by their JSON text
Only exact builtin types count (``type(x) is int``): subclasses (bool-like enums, namedtuples,
``defaultdict``, ``Counter``) and any object with its own ``__eq__`` are not plain data. Equal
encodings mean equal values of equal types; the parent decodes an encoding back into builtin
values and compares those with ``==`` (so ``1 == 1.0`` and ``{1, 2} == {2, 1}`` hold as in Python).
"""

import json as _json

MAX_DEPTH = 100
_INT_BITS = 60


class NotPlain(Exception):
    """The value is not plain data (or is too deep to encode)."""


class TooLarge(NotPlain):
    """The value's encoding would exceed the size cap."""


def _enc(x, depth, budget):
    budget[0] -= 1
    if budget[0] < 0:
        raise TooLarge("value too large")
    t = type(x)
    if x is None or t is bool or t is str:
        if t is str:
            budget[0] -= len(x)
            if budget[0] < 0:
                raise TooLarge("value too large")
        return x
    if t is int:
        if x.bit_length() <= _INT_BITS:
            return x
        budget[0] -= x.bit_length() // 4
        if budget[0] < 0:
            raise TooLarge("value too large")
        return {"i": format(x, "x")}
    if t is float:
        if x != x:
            raise NotPlain("NaN is not plain data")
        if x in (float("inf"), float("-inf")):
            return {"f": "inf" if x > 0 else "-inf"}
        return x
    if t is complex:
        return {"c": [_enc(x.real, depth, budget), _enc(x.imag, depth, budget)]}
    if t is bytes:
        budget[0] -= 2 * len(x)
        if budget[0] < 0:
            raise TooLarge("value too large")
        return {"b": x.hex()}
    if depth >= MAX_DEPTH:
        raise NotPlain("value nested too deeply")
    if t is list:
        return [_enc(v, depth + 1, budget) for v in x]
    if t is tuple:
        return {"t": [_enc(v, depth + 1, budget) for v in x]}
    if t is dict:
        return {"d": [[_enc(k, depth + 1, budget), _enc(v, depth + 1, budget)] for k, v in x.items()]}
    if t is set or t is frozenset:
        items = [_enc(v, depth + 1, budget) for v in x]
        items.sort(key=lambda e: _json.dumps(e, separators=(",", ":")))
        return {"s" if t is set else "fs": items}
    raise NotPlain(f"a value of type {t.__name__} is not plain data")


def encode(value, max_bytes=1 << 20):
    """The canonical encoding of a plain-data value; raises ``NotPlain``."""
    budget = [max_bytes]
    try:
        return _enc(value, 0, budget)
    except RecursionError:
        raise NotPlain("value nested too deeply") from None


def _dec(e, depth):
    if depth > MAX_DEPTH:
        raise NotPlain("value nested too deeply")
    t = type(e)
    if e is None or t is bool or t is str or t is int:
        return e
    if t is float:
        if e != e or e in (float("inf"), float("-inf")):
            raise NotPlain("non-finite float outside a tag")
        return e
    if t is list:
        return [_dec(v, depth + 1) for v in e]
    if t is not dict or len(e) != 1:
        raise NotPlain("malformed encoding")
    (tag, body), = e.items()
    if tag == "t" and type(body) is list:
        return tuple(_dec(v, depth + 1) for v in body)
    if tag == "d" and type(body) is list:
        out = {}
        for pair in body:
            if type(pair) is not list or len(pair) != 2:
                raise NotPlain("malformed dict encoding")
            out[_dec(pair[0], depth + 1)] = _dec(pair[1], depth + 1)
        return out
    if tag == "s" and type(body) is list:
        return {_dec(v, depth + 1) for v in body}
    if tag == "fs" and type(body) is list:
        return frozenset(_dec(v, depth + 1) for v in body)
    if tag == "i" and type(body) is str and 0 < len(body) <= 1 << 16:
        return int(body, 16)
    if tag == "f" and body in ("inf", "-inf"):
        return float(body)
    if tag == "c" and type(body) is list and len(body) == 2:
        re_, im = _dec(body[0], depth + 1), _dec(body[1], depth + 1)
        if type(re_) is not float or type(im) is not float:
            raise NotPlain("malformed complex encoding")
        return complex(re_, im)
    if tag == "b" and type(body) is str:
        return bytes.fromhex(body)
    raise NotPlain("malformed encoding")


def decode(encoding):
    """Builtin values from an encoding (which may come from an untrusted process); ``NotPlain``
    for anything that is not exactly an encoding of plain data (unhashable set elements too)."""
    try:
        return _dec(encoding, 0)
    except NotPlain:
        raise
    except (TypeError, ValueError, RecursionError, OverflowError) as exc:
        raise NotPlain(f"malformed encoding: {type(exc).__name__}") from None


# ---------------------------------------------------------------------------------------------
# Inside the sandbox: one call of __gasp_run__ per fresh process.
# ---------------------------------------------------------------------------------------------

def _error_text(exc):
    try:
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    except BaseException:  # noqa: BLE001 - a hostile __str__
        return type(exc).__name__


def _why(exc):
    if isinstance(exc, TooLarge):
        return "too large (its encoding is over the cap)"
    return f"is not plain data: {exc}"


def _args_of(text):
    """Evaluate call-argument text (``"'abc', 3"``, ``"x=1"``: a canonical literal, checked by the
    parent) in a namespace that holds nothing but the builtins, as the arguments of a call:
    returns ``(args_tuple, kwargs_dict)``."""
    import builtins
    ns = {"__builtins__": builtins, "__gasp_args__": lambda *a, **k: (a, k)}
    return eval(compile("__gasp_args__(\n" + text + "\n)", "<input>", "eval", dont_inherit=True), ns)


def _where():
    """The process's str-hash secret, taken before the program runs, if hashes are randomized
    (then every sandbox worker has its own and a determinism run that saw the same one as the
    first ran on the same worker); None when the hash seed is fixed (nothing to tell apart)."""
    import sys
    return hash("gasp-tasks-worker") if sys.flags.hash_randomization else None


def _perturb(n):
    """Make a determinism run differ from the first in where later objects land (ids, default
    hashes, address-bearing reprs)."""
    if n <= 0:
        return None
    return [(object(), [0] * (i % 7), "x" * (i % 13), bytearray(i % 97)) for i in range(n)]


#: Cap on one value's encoding (bytes, about). A constant, not a request field: a request must
#: look the same whether it validates a program or judges an answer.
VALUE_CAP = 1 << 16


def _run(req):
    if req.get("op") != "call":
        return {"ok": False, "error": f"unknown op {req.get('op')!r}"}
    keep = _perturb(int(req.get("pad", 0)))
    where = _where()
    import builtins
    try:
        code = compile(req["src"], "<program>", "exec", dont_inherit=True)
    except BaseException as exc:  # noqa: BLE001
        return {"ok": False, "at": None, "error": _error_text(exc)}
    inputs = req["inputs"]
    values = []
    for i in req.get("order") or range(len(inputs)):
        ns = {"__name__": "__main__", "__builtins__": builtins}  # a fresh program per call
        try:
            exec(code, ns)
            fn = ns.get("f")
            if not callable(fn):
                return {"ok": False, "at": i, "error": "the program defines no function f"}
        except BaseException as exc:  # noqa: BLE001
            return {"ok": False, "at": i, "error": _error_text(exc)}
        try:
            args, kwargs = _args_of(inputs[i])
            try:
                encode((args, kwargs), VALUE_CAP)
            except NotPlain as exc:
                return {"ok": False, "at": i, "error": "input " + _why(exc)}
            value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001
            return {"ok": False, "at": i, "error": _error_text(exc)}
        try:
            values.append(encode(value, VALUE_CAP))
        except NotPlain as exc:
            return {"ok": False, "at": i, "error": "output " + _why(exc)}
    del keep
    return {"ok": True, "values": values, "where": where}


def __gasp_run__(payload):
    """Entry point called by the sandbox: ``payload`` is the JSON request. Returns the JSON reply
    as hex (the sandbox sends back ``repr`` of the return value; hex needs no escaping)."""
    try:
        reply = _run(_json.loads(payload))
    except BaseException as exc:  # noqa: BLE001
        reply = {"ok": False, "error": f"wrapper: {_error_text(exc)}"}
    try:
        text = _json.dumps(reply, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError, RecursionError) as exc:
        text = _json.dumps({"ok": False, "error": f"reply not encodable: {type(exc).__name__}"})
    return text.encode("ascii").hex()
