"""Task records: AZR's seed-file format plus our metadata. Plain JSON-able dicts throughout.

deduction / abduction ("io" records, one shape for both kinds)::
    {"snippet": str, "input": str, "output": str, "imports": [str], ...meta}
induction::
    {"snippet": str, "inputs": [str], "outputs": [str], "message": str, "imports": [str], ...meta}
meta: ``id`` (str), ``origin`` (str), ``step`` (int | None), ``parent_ids`` ([str]); validated
records also hold ``gold``: the plain-data encoding (``child.encode``) of the output (io) or of
every output (induction), which the judge compares against.

``input`` texts are call arguments as written inside ``f(...)`` (``"'abc', 3"``); ``output``
texts are Python expressions of the value (``repr``).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable, Sequence

from gasp_jax.data import paths as data_paths

KINDS = ("deduction", "abduction", "induction")
IO_KINDS = ("deduction", "abduction")
META_FIELDS = ("id", "origin", "step", "parent_ids")
IO_FIELDS = ("snippet", "input", "output", "imports")
INDUCTION_FIELDS = ("snippet", "inputs", "outputs", "message", "imports")


class TaskFormatError(ValueError):
    """A malformed record or an unknown kind (a caller or data bug, never a model's output)."""


def check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise TaskFormatError(f"unknown task kind {kind!r}; expected one of {KINDS}")
    return kind


def _name(rec: Any) -> str:
    if isinstance(rec, dict) and isinstance(rec.get("id"), str):
        return f"record {rec['id']!r}"
    return "record"


def _str_list(rec: dict, field: str, where: str) -> list[str]:
    value = rec.get(field)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TaskFormatError(f"{where}: field {field!r} must be a list of strings, got {type(value).__name__}")
    return list(value)


def record_kinds(rec: dict) -> tuple[str, ...]:
    """The kinds a record can be used as: io records serve deduction and abduction."""
    return ("induction",) if isinstance(rec, dict) and "inputs" in rec else IO_KINDS


def validate_record(kind: str, rec: Any, *, where: str | None = None) -> dict:
    """A normalized copy of ``rec`` (known fields + meta defaults) or ``TaskFormatError`` naming
    the record and the reason."""
    check_kind(kind)
    where = where or _name(rec)
    if not isinstance(rec, dict):
        raise TaskFormatError(f"{where}: a task record must be a dict, got {type(rec).__name__}")
    fields = INDUCTION_FIELDS if kind == "induction" else IO_FIELDS
    missing = [f for f in fields if f not in rec and f != "imports"]
    if missing:
        raise TaskFormatError(f"{where}: {kind} record lacks {missing}")
    out: dict[str, Any] = {}
    for f in fields:
        if f == "imports":
            out[f] = _str_list(rec, f, where) if rec.get(f) is not None else []
        elif f in ("inputs", "outputs"):
            out[f] = _str_list(rec, f, where)
        elif not isinstance(rec[f], str):
            raise TaskFormatError(f"{where}: field {f!r} must be a string, got {type(rec[f]).__name__}")
        else:
            out[f] = rec[f]
    if not out["snippet"].strip():
        raise TaskFormatError(f"{where}: empty snippet")
    if kind == "induction":
        if not out["inputs"]:
            raise TaskFormatError(f"{where}: induction record has no inputs")
        if len(out["inputs"]) != len(out["outputs"]):
            raise TaskFormatError(f"{where}: {len(out['inputs'])} inputs but {len(out['outputs'])} outputs")
    out["id"] = rec.get("id") if isinstance(rec.get("id"), str) else record_key(kind, out)
    out["origin"] = rec.get("origin") if isinstance(rec.get("origin"), str) else "unknown"
    step = rec.get("step")
    out["step"] = step if isinstance(step, int) and not isinstance(step, bool) else None
    out["parent_ids"] = _str_list(rec, "parent_ids", where) if rec.get("parent_ids") is not None else []
    if "gold" in rec:
        gold = rec["gold"]
        if kind == "induction" and (not isinstance(gold, list) or len(gold) != len(out["outputs"])):
            raise TaskFormatError(f"{where}: 'gold' must hold one encoding per output")
        out["gold"] = gold
    return out


def record_key(kind: str, rec: dict) -> str:
    """Content hash of what defines a task (program, imports, inputs): equal keys = same task."""
    inputs = rec.get("inputs") if kind == "induction" else [rec.get("input")]
    blob = json.dumps([("induction" if kind == "induction" else "io"), rec.get("imports") or [],
                       rec.get("snippet"), inputs], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def program_text(rec: dict) -> str:
    """What runs: the record's imports followed by its snippet."""
    imports = [i for i in rec.get("imports") or [] if i.strip()]
    return ("\n".join(imports) + "\n" + rec["snippet"]) if imports else rec["snippet"]


def n_visible_pairs(n_inputs: int, n_visible: int | None = None) -> int:
    """Induction pairs shown to the solver: ``n_visible`` (clipped) or, by default, the first half
    (AZR: 10 inputs, 5 shown, 5 hidden). At least one pair is always hidden."""
    if n_visible is None:
        n_visible = n_inputs // 2
    return max(0, min(int(n_visible), n_inputs - 1))


def split_pairs(rec: dict, n_visible: int | None = None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(visible, hidden)`` (input, output) pairs of an induction record."""
    pairs = list(zip(rec["inputs"], rec["outputs"]))
    k = n_visible_pairs(len(pairs), n_visible)
    return pairs[:k], pairs[k:]


def io_record_from_induction(rec: dict, index: int, **meta: Any) -> dict:
    """A deduction/abduction record from pair ``index`` of an induction record (GASP's solver
    phase turns accepted induction tasks into the other kinds)."""
    rec = validate_record("induction", rec)
    if not -len(rec["inputs"]) <= index < len(rec["inputs"]):
        raise TaskFormatError(f"{_name(rec)}: pair index {index} out of range")
    out = {"snippet": rec["snippet"], "input": rec["inputs"][index], "output": rec["outputs"][index],
           "imports": list(rec["imports"])}
    if "gold" in rec:
        out["gold"] = rec["gold"][index]
    out.update(id=f"{rec['id']}#{index % len(rec['inputs'])}", origin=rec["origin"], step=rec["step"],
               parent_ids=[rec["id"]])
    out.update(meta)
    return out


def load_seed_file(path: str | os.PathLike, *, origin: str | None = None) -> list[dict]:
    """Every row of an AZR seed file (``*_seed_io.jsonl``: io rows, ``*_code_f_seed_io.jsonl``:
    induction rows) as normalized records with ids ``<file>:<line>``; ``TaskFormatError`` naming
    ``path:line`` and the reason for the first row that is not a valid record."""
    path = os.fspath(path)
    base = data_paths.stem(path)  # ids name the file as upstream does, compressed or not
    origin = origin or f"seed:{base}"
    out = []
    with data_paths.open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskFormatError(f"{where}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise TaskFormatError(f"{where}: a row must be a JSON object")
            kind = record_kinds(row)[0]
            row = dict(row, id=row.get("id") or f"{base}:{lineno}", origin=row.get("origin") or origin)
            out.append(validate_record(kind, row, where=where))
    return out


def load_seed_files(paths: Iterable[str | os.PathLike]) -> list[dict]:
    return [r for p in paths for r in load_seed_file(p)]


def select(records: Sequence[dict], kind: str) -> list[dict]:
    """The records usable as ``kind``."""
    check_kind(kind)
    return [r for r in records if kind in record_kinds(r)]
