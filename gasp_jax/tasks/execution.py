"""Proposal validation and the judge, on the sandbox.

Every check is one sandbox *test* (a fresh process) running ``child.py``'s ``__gasp_run__`` on a
JSON request; many tests share one sandbox job (the program text is the same wrapper for all, the
model-written text travels in the request). What runs where:

- judge, deduction: the answer must be a literal (``plain.literal_encoding``: parsed here,
  nothing is executed anywhere) and is compared with the gold value;
- judge, abduction: the answer must be literal call arguments; ``f`` runs on them in one process,
  through the very request validation sends (``_call_request``: same wrapper code path, same
  locals, same limits, same canonical argument text), so nothing in ``f``'s reach tells judging
  from validation;
- judge, induction: the answer program runs on the hidden inputs in one process (a fresh program
  namespace per call);
- validation: every input must be literal call arguments; the program runs on every input in one
  process (fresh namespace per call); a second run of the same request code, in a separate job
  (so normally on another worker; rerun while it saw the first run's hash secret), takes the
  inputs in reverse order on a perturbed heap; the outputs must be identical up to dict order.

Gold values never enter a process that runs model-written code: they stay in this process, as
canonical keys (``plain.canonical``: no set or dict is ever built from untrusted data), and are
compared with ``==`` against the keys of the children's plain-data replies. No text written by a
model is passed to ``eval``/``exec`` here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import marshal
import math
import sys
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Callable, Sequence

from gasp_jax.sandbox import Limits, Status
from gasp_jax.sandbox.policy import DEFAULT_BANNED_MODULES, find_banned_imports, validate_program
from gasp_jax.tasks import child
from gasp_jax.tasks.parsing import ParsedProposal, ProposalError, proposal_from_record
from gasp_jax.tasks.plain import (NotPlain, args_text, canonical, encoded_json, encoding_repr, literal_args_encoding,
                                  literal_encoding, parse_reply)
from gasp_jax.tasks.records import (IO_KINDS, TaskFormatError, check_kind, n_visible_pairs, program_text,
                                    record_key, validate_record)

log = logging.getLogger("gasp_jax.tasks")

def _wrapper_program() -> str:
    """The sandboxed program of every task job: ``child.py`` as a marshalled code object (so a
    test child does not spend ~1 ms compiling 250 lines per job or per test), with the source as
    the fallback for an interpreter whose bytecode differs from ours."""
    src = open(child.__file__, encoding="utf-8").read()
    blob = marshal.dumps(compile(src, "<gasp-tasks-child>", "exec", dont_inherit=True))
    return ("import marshal as _marshal, sys as _sys\n"
            f"if _sys.implementation.cache_tag == {sys.implementation.cache_tag!r}:\n"
            f"    exec(_marshal.loads(bytes.fromhex({blob.hex()!r})))\n"
            "else:\n"
            f"    exec(compile({src!r}, '<gasp-tasks-child>', 'exec', dont_inherit=True))\n")


WRAPPER = _wrapper_program()
ENTRY = "__gasp_run__"

MiB = 1 << 20
DEFAULT_LIMITS = Limits(cpu_s=4.0, memory_bytes=1 << 30, stdout_bytes=4 * MiB)


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """``limits`` apply to one run of the program on all of a proposal's inputs.
    Outputs whose canonical repr is longer than ``max_output_chars`` make the proposal invalid
    ("output too large"): a gold output is never truncated (AZR truncates at 400 characters,
    which makes such tasks unsolvable). Input texts over ``max_input_chars`` are invalid too.
    While sandbox processes have randomized str hashes (each worker its own secret), a
    determinism run that saw the same secret as the first (same worker) is run again, up to
    ``worker_retries`` times, so that set-order-dependent programs are caught."""

    limits: Limits = DEFAULT_LIMITS
    banned_modules: frozenset = DEFAULT_BANNED_MODULES
    max_output_chars: int = 1000
    max_input_chars: int = 1000
    runs: int = 2
    heap_pad: int = 257
    max_tests_per_job: int = 16
    worker_retries: int = 2


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """``n_visible``: induction pairs shown to the solver (None: half, AZR); the rest are judged.
    ``banned_modules`` apply to induction answers (a solver program importing ``random`` or
    ``time`` would get verdicts that change between runs). Answers longer than
    ``max_answer_chars`` and values whose encoding exceeds ``max_value_bytes`` are wrong.
    ``limits`` apply to induction answers; ``program_limits`` (None: ``limits``) to running a
    task's own program on an abduction answer, and must equal the validation limits: a program
    can read its rlimits, so different ones would tell it that it is being judged."""

    limits: Limits = DEFAULT_LIMITS
    program_limits: Limits | None = None
    n_visible: int | None = None
    banned_modules: frozenset = DEFAULT_BANNED_MODULES
    max_answer_chars: int = 64 * 1024
    max_value_bytes: int = 64 * 1024
    max_tests_per_job: int = 16


@dataclasses.dataclass(frozen=True)
class Validation:
    """``ok``: True (valid; ``record`` is the validated record with gold outputs), False (invalid;
    ``reason`` says why) or None (infrastructure error: drop, never score)."""

    ok: bool | None
    record: dict | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok is True


# ----------------------------------------------------------------------------------------------
# futures plumbing (callbacks run on the sandbox's dispatcher threads; they must never raise)
# ----------------------------------------------------------------------------------------------

def _resolved(value: Any) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


def _forward(src: Future, dst: Future) -> None:
    if dst.done():
        return
    exc = src.exception()
    if exc is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(src.result())


def _then(src: Future, fn: Callable[[Any], Any]) -> Future:
    """A future of ``fn(src.result())``; ``fn`` may return a Future, which is followed."""
    out: Future = Future()

    def done(f: Future) -> None:
        try:
            exc = f.exception()
            if exc is not None:
                out.set_exception(exc)
                return
            value = fn(f.result())
        except BaseException as e:  # noqa: BLE001
            out.set_exception(e)
            return
        if isinstance(value, Future):
            value.add_done_callback(lambda g: _forward(g, out))
        else:
            out.set_result(value)

    src.add_done_callback(done)
    return out


def _gather(futures: Sequence[Future]) -> Future:
    out: Future = Future()
    if not futures:
        out.set_result([])
        return out
    remaining = [len(futures)]
    lock = threading.Lock()

    def done(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            try:
                out.set_result([f.result() for f in futures])
            except BaseException as e:  # noqa: BLE001
                out.set_exception(e)

    for f in futures:
        f.add_done_callback(done)
    return out


# ----------------------------------------------------------------------------------------------
# running requests in the sandbox
# ----------------------------------------------------------------------------------------------

def _reply_of(result: Any, max_chars: int) -> dict | None:
    """Reply dict of one sandbox test, or None for an infrastructure error."""
    status = getattr(result, "status", None)
    if status is Status.INFRA_ERROR or status is None:
        return None
    if status is not Status.PASS:
        return {"ok": False, "error": f"{status.value}: {str(result.error)[:300]}"}
    return parse_reply(result.output, max_chars)


_deferred = threading.local()


def _submit(sandbox: Any, requests: Sequence[dict], limits: Limits, max_per_job: int) -> list[Future]:
    """One future per request (resolving to its reply dict, or None on an infrastructure error);
    requests are packed into jobs so every worker gets work. Requests made while a finished job's
    results are being handed out (abduction's second stage, gold values) are collected and sent
    together when that is done, so they share jobs too."""
    if not requests:
        return []
    out: list[Future] = [Future() for _ in requests]
    batch = getattr(_deferred, "batch", None)
    if batch is not None:
        batch.append((sandbox, list(requests), limits, max_per_job, out))
        return out
    _send(sandbox, list(requests), limits, max_per_job, out)
    return out


def _per_job(sandbox: Any, n: int, max_per_job: int) -> int:
    workers = max(1, int(getattr(sandbox, "workers", 1)))
    return max(1, min(max_per_job, math.ceil(n / (2 * workers))))


def _send(sandbox: Any, requests: list[dict], limits: Limits, max_per_job: int, out: list[Future]) -> None:
    per_job = _per_job(sandbox, len(requests), max_per_job)
    for start in range(0, len(requests), per_job):
        _send_job(sandbox, requests[start:start + per_job], limits, out[start:start + per_job])


def _send_job(sandbox: Any, chunk: list[dict], limits: Limits, targets: list[Future]) -> None:
    """One sandbox job running ``chunk`` (one test, i.e. one fresh process, per request). Every
    task job takes the sandbox's direct path (each test forked by the worker's persistent zygote,
    whatever the job's size), so a program sees the same process tree in every kind of job."""
    max_chars = limits.stdout_bytes
    inputs = [repr(json.dumps(r, separators=(",", ":"))) for r in chunk]
    try:
        job = sandbox.run_function_async(WRAPPER, inputs, fn_name=ENTRY, limits=limits, direct=True)
    except BaseException as e:  # noqa: BLE001 - e.g. the sandbox was closed
        for t in targets:
            t.set_exception(e)
        return

    def done(f: Future) -> None:
        _deferred.batch = []
        try:
            results = f.result()
            for i, t in enumerate(targets):
                t.set_result(_reply_of(results[i], max_chars) if i < len(results) else None)
        except BaseException as e:  # noqa: BLE001
            for t in targets:
                if not t.done():
                    t.set_exception(e)
        finally:
            batch, _deferred.batch = _deferred.batch, None
            _flush(batch)

    job.add_done_callback(done)


def _submit_runs(sandbox: Any, runs: list[list[dict]], limits: Limits, max_per_job: int) -> list[list[Future]]:
    """Like ``_submit`` for several equally long request lists (determinism runs): each list gets
    its own jobs, submitted alternately, so the k-th jobs of two runs go to the pool back to back
    and, with idle workers, to different workers."""
    out = [[Future() for _ in reqs] for reqs in runs]
    if not runs or not runs[0]:
        return out
    per_job = _per_job(sandbox, sum(len(r) for r in runs), max_per_job)
    for start in range(0, len(runs[0]), per_job):
        for reqs, futs in zip(runs, out):
            _send_job(sandbox, reqs[start:start + per_job], limits, futs[start:start + per_job])
    return out


def _flush(batch: list) -> None:
    groups: dict[tuple, list] = {}
    for sandbox, requests, limits, max_per_job, out in batch:
        g = groups.setdefault((id(sandbox), limits, max_per_job), [sandbox, [], []])
        g[1] += requests
        g[2] += out
    for (_, limits, max_per_job), (sandbox, requests, out) in groups.items():
        _send(sandbox, requests, limits, max_per_job, out)


def _canonical(reply: dict, k: int) -> tuple[Any, str]:
    """(canonical key, "") of reply value ``k``, or (None, reason) when it is not plain data."""
    try:
        return canonical(reply["values"][k], MAX_VALUE_ITEMS), ""
    except (NotPlain, IndexError, KeyError, TypeError) as exc:
        return None, f"not plain data: {exc}"


#: Elements of one decoded value at most (the reply's size cap bounds it too).
MAX_VALUE_ITEMS = 1 << 18
#: Proposal inputs must be literal call arguments; the reason of an invalid proposal starts so.
NON_LITERAL_INPUT = "input is not a literal"


def _call_request(src: str, inputs: Sequence[str], order: Sequence[int] | None = None, pad: int = 0) -> dict:
    """The one request that runs a program on call arguments, for validation (every run) and the
    judge alike: from inside ``f`` a judged call is indistinguishable from validation's first run
    of a one-input task (same keys, same wrapper path)."""
    return {"op": "call", "src": src, "inputs": list(inputs),
            "order": list(order) if order is not None else list(range(len(inputs))), "pad": int(pad)}


def canonical_inputs(texts: Sequence[str], max_bytes: int = 1 << 16) -> list[str] | str:
    """Each input as its canonical literal text (``plain.args_text``), or the reason (starting
    with ``NON_LITERAL_INPUT``) the first one that is not literal call arguments is refused."""
    out = []
    for i, text in enumerate(texts):
        ok, enc = literal_args_encoding(text, max_bytes)
        if not ok:
            return f"{NON_LITERAL_INPUT} (input {i}: {enc})"
        out.append(args_text(enc))
    return out


# ----------------------------------------------------------------------------------------------
# gold values of records
# ----------------------------------------------------------------------------------------------

_GOLD_CACHE: "OrderedDict[str, list]" = OrderedDict()
_GOLD_PENDING: dict[str, Future] = {}
_GOLD_LOCK = threading.RLock()  # a finished job can resolve (and store) while its submitter holds it
_GOLD_CACHE_SIZE = 8192


def _record_inputs(kind: str, rec: dict) -> list[str]:
    return list(rec["inputs"]) if kind == "induction" else [rec["input"]]


def _gold_values(sandbox: Any, kind: str, rec: dict, limits: Limits, max_per_job: int) -> Future:
    """Future of the record's gold output values (list, one per input), or None if they cannot
    be had (the record's program fails, or an infrastructure error)."""
    if "gold" in rec:
        encodings = rec["gold"] if kind == "induction" else [rec["gold"]]
        try:
            return _resolved([canonical(e, MAX_VALUE_ITEMS) for e in encodings])
        except NotPlain as exc:
            raise TaskFormatError(f"record {rec.get('id')!r}: malformed 'gold' ({exc})") from None
    key = record_key(kind, rec)
    with _GOLD_LOCK:
        if key in _GOLD_CACHE:
            _GOLD_CACHE.move_to_end(key)
            return _resolved(_GOLD_CACHE[key])
        if key in _GOLD_PENDING:
            return _GOLD_PENDING[key]
        texts = canonical_inputs(_record_inputs(kind, rec))
        if isinstance(texts, str):  # a record from before inputs had to be literal
            log.warning("task record %r: %s; not judged", rec.get("id"), texts)
            return _resolved(None)
        fut = _submit(sandbox, [_call_request(program_text(rec), texts)], limits, max_per_job)[0]
        _GOLD_PENDING[key] = pending = _then(fut, lambda reply: _store_gold(key, rec, reply))
    pending.add_done_callback(lambda _: _forget_pending(key))  # also when it failed (sandbox closed)
    return pending


def _forget_pending(key: str) -> None:
    with _GOLD_LOCK:
        _GOLD_PENDING.pop(key, None)


def _store_gold(key: str, rec: dict, reply: dict | None) -> list | None:
    values = None
    if reply is not None and reply.get("ok"):
        try:
            values = [canonical(e, MAX_VALUE_ITEMS) for e in reply["values"]]
        except NotPlain:
            values = None
    if reply is not None and values is None:
        log.warning("task record %r: its program does not give plain-data outputs (%s); not judged",
                    rec.get("id"), reply.get("error", "not plain data"))
    with _GOLD_LOCK:
        if values is not None:
            _GOLD_CACHE[key] = values
            while len(_GOLD_CACHE) > _GOLD_CACHE_SIZE:
                _GOLD_CACHE.popitem(last=False)
    return values


# ----------------------------------------------------------------------------------------------
# the judge
# ----------------------------------------------------------------------------------------------

def _compare(reply: dict | None, golds: list | None) -> bool | None:
    if reply is None or golds is None:
        return None
    if not reply.get("ok") or len(reply["values"]) != len(golds):
        return False
    for k, gold in enumerate(golds):
        value, why = _canonical(reply, k)
        if why or value != gold:
            return False
    return True


def judge_many_async(sandbox: Any, items: Sequence[tuple[str, dict, Any]], *,
                     config: JudgeConfig | None = None) -> list[Future]:
    """Futures of the verdicts of ``judge_many`` (submitted now; resolve as the sandbox works).

    Deduction and abduction answers must be literals (``plain.literal_encoding``): they are
    parsed here, never evaluated, and anything else is wrong."""
    cfg = config or JudgeConfig()
    cap = cfg.max_value_bytes
    lim, program_lim = cfg.limits, cfg.program_limits or cfg.limits
    calls: dict[Limits, list[dict]] = {lim: [], program_lim: []}  # requests, by the limits they run under
    plan: list[Any] = []     # per item: a verdict, or (route, kind, record, payload)
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise TaskFormatError(f"a judge item is (kind, record, answer), got {type(item).__name__}")
        kind, rec, answer = item
        check_kind(kind)
        rec = validate_record(kind, rec)
        # An empty abduction answer is the empty argument list (``f()``, as CRUXEval's grader).
        if not isinstance(answer, str) or len(answer) > cfg.max_answer_chars or (
                not answer.strip() and kind != "abduction"):
            plan.append(False)
            continue
        if kind == "deduction":
            ok, enc = literal_encoding(answer, cap)
            try:
                plan.append(("value", kind, rec, canonical(enc, MAX_VALUE_ITEMS)) if ok else False)
            except NotPlain:
                plan.append(False)
        elif kind == "abduction":
            ok, enc = literal_args_encoding(answer, cap)
            if not ok:
                plan.append(False)
                continue
            calls[program_lim].append(_call_request(program_text(rec), [args_text(enc)]))
            plan.append(("reply", kind, rec, (program_lim, len(calls[program_lim]) - 1)))
        else:
            text, _ = validate_program(answer)
            if text is None or find_banned_imports(text, cfg.banned_modules):
                plan.append(False)
                continue
            k = n_visible_pairs(len(rec["inputs"]), cfg.n_visible)
            hidden = canonical_inputs(rec["inputs"][k:])
            calls[lim].append(_call_request(text, rec["inputs"][k:] if isinstance(hidden, str) else hidden))
            plan.append(("reply", kind, rec, (lim, len(calls[lim]) - 1)))
    replies = {limits: _submit(sandbox, reqs, limits, cfg.max_tests_per_job) for limits, reqs in calls.items()}
    out: list[Future] = []
    for p in plan:
        if not isinstance(p, tuple):
            out.append(_resolved(p))
            continue
        route, kind, rec, payload = p
        golds = _gold_values(sandbox, kind, rec, program_lim, cfg.max_tests_per_job)
        if kind == "induction":
            k = n_visible_pairs(len(rec["inputs"]), cfg.n_visible)
            golds = _then(golds, lambda g, k=k: None if g is None else g[k:])
        if route == "value":
            out.append(_then(golds, lambda g, v=payload: None if g is None else v == g[0]))
            continue
        limits, index = payload
        out.append(_then(_gather([replies[limits][index], golds]), lambda rg: _compare(*rg)))
    return out


def judge_many(sandbox: Any, items: Sequence[tuple[str, dict, Any]], *,
               config: JudgeConfig | None = None) -> list[bool | None]:
    """Verdicts for ``(kind, record, answer)`` items (public contract).

    ``answer`` is the extracted answer text (``extract_answer``): deduction, a literal of the
    output; abduction, literal call arguments in the form of ``record["input"]`` (``"'abc', 3"``;
    ``""`` for no arguments); induction, a program defining ``f``. Literals are what
    docs/tasks.md ("What a literal is") lists. ``True``: the answer's value is plain data and equals the
    gold with Python ``==`` (induction: on every hidden input); ``False``: anything else, a
    missing answer (``None``) included; ``None``: infrastructure error only (drop the sample)."""
    return [f.result() for f in judge_many_async(sandbox, items, config=config)]


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------

def _precheck(kind: str, prop: Any, cfg: ValidationConfig) -> str | None:
    if isinstance(prop, ProposalError):
        return f"format: {prop.reason}"
    if not isinstance(prop, ParsedProposal):
        return f"not a parsed proposal: {type(prop).__name__}"
    if prop.kind != kind and not (kind in IO_KINDS and prop.kind in IO_KINDS):
        return f"proposal of kind {prop.kind} validated as {kind}"
    text, reason = validate_program(prop.program)
    if text is None:
        return reason
    banned = find_banned_imports(text, cfg.banned_modules)
    if banned:
        return f"banned import: {', '.join(banned)}"
    if kind in IO_KINDS and len(prop.inputs) != 1:
        return f"{kind} needs exactly one input, got {len(prop.inputs)}"
    if not prop.inputs:
        return "no inputs"
    for x in prop.inputs:
        if not isinstance(x, str):
            return "input is not a string"
        if len(x) > cfg.max_input_chars:
            return f"input longer than {cfg.max_input_chars} characters"
    texts = canonical_inputs(prop.inputs)
    return texts if isinstance(texts, str) else None


def dict_order_free(enc: Any) -> Any:
    """An encoding with every dict's pairs sorted: two runs may build a dict in different orders
    (e.g. iterating a set of strings) and still give equal values, which is all the judge uses."""
    if type(enc) is list:
        return [dict_order_free(e) for e in enc]
    if type(enc) is dict and len(enc) == 1:
        (tag, body), = enc.items()
        if tag == "d" and type(body) is list:
            pairs = [[dict_order_free(k), dict_order_free(v)] for k, v in (p for p in body if type(p) is list and len(p) == 2)]
            return {"d": sorted(pairs, key=lambda p: encoded_json(p[0]))}
        if tag in ("t", "s", "fs", "c") and type(body) is list:
            return {tag: [dict_order_free(e) for e in body]}
    return enc


def _runs_verdict(kind: str, prop: ParsedProposal, meta: dict, orders: list[list[int]],
                  replies: list[dict | None], cfg: ValidationConfig) -> Validation:
    if any(r is None for r in replies):
        return Validation(None, None, "infrastructure error")
    for r in replies:
        if not r.get("ok"):
            at = r.get("at")
            where = f"input {at}: " if isinstance(at, int) else ""
            return Validation(False, None, f"{where}{r.get('error', 'error')}")
    n = len(prop.inputs)
    per_run: list[list[Any]] = []
    for order, r in zip(orders, replies):
        vals = r["values"]
        if len(vals) != n or sorted(order) != list(range(n)):
            return Validation(False, None, "malformed reply")
        by_input: list[Any] = [None] * n
        for pos, i in enumerate(order):
            by_input[i] = vals[pos]
        per_run.append(by_input)
    for i in range(n):
        texts = {encoded_json(dict_order_free(run[i])) for run in per_run}
        if len(texts) > 1:
            return Validation(False, None, f"not deterministic: input {i} gives different outputs")
    golds, shown = [], []
    for i in range(n):
        try:
            text = encoding_repr(per_run[0][i], MAX_VALUE_ITEMS)
        except NotPlain as exc:
            return Validation(False, None, f"input {i}: output is not plain data ({exc})")
        if len(text) > cfg.max_output_chars:
            return Validation(False, None, f"input {i}: output too large ({len(text)} > {cfg.max_output_chars} characters)")
        golds.append(per_run[0][i])
        shown.append(text)
    if kind == "induction":
        rec: dict[str, Any] = {"snippet": prop.snippet, "inputs": list(prop.inputs), "outputs": shown,
                               "message": prop.message, "imports": list(prop.imports), "gold": golds}
    else:
        rec = {"snippet": prop.snippet, "input": prop.inputs[0], "output": shown[0],
               "imports": list(prop.imports), "gold": golds[0]}
    rec.update({"id": record_key(kind, rec), "origin": "propose", "step": None, "parent_ids": []})
    rec.update({k: v for k, v in meta.items() if k in ("id", "origin", "step", "parent_ids")})
    return Validation(True, validate_record(kind, rec), "")


def validate_proposals_async(sandbox: Any, items: Sequence[tuple], *,
                             config: ValidationConfig | None = None) -> list[Future]:
    """Futures of ``validate_proposals`` (submitted now)."""
    cfg = config or ValidationConfig()
    runs = max(2, int(cfg.runs))
    by_run: list[list[dict]] = [[] for _ in range(runs)]
    plan: list[Any] = []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise TaskFormatError(f"a validation item is (kind, proposal[, meta]), got {item!r:.80}")
        kind, prop = item[0], item[1]
        meta = dict(item[2]) if len(item) == 3 and item[2] else {}
        check_kind(kind)
        reason = _precheck(kind, prop, cfg)
        if reason:
            plan.append(Validation(False, None, reason))
            continue
        n = len(prop.inputs)
        texts = canonical_inputs(prop.inputs)
        orders = [list(range(n)) if r % 2 == 0 else list(range(n))[::-1] for r in range(runs)]
        idx = []
        for r in range(runs):
            by_run[r].append(_call_request(prop.program, texts, orders[r], cfg.heap_pad * r))
            idx.append(len(by_run[r]) - 1)
        plan.append((kind, prop, meta, orders, idx))
    # Each run is its own set of jobs, so the runs of one proposal are separate jobs (and, with
    # more than one worker, normally on different workers: different uid, hash secret, heap).
    futures_by_run = _submit_runs(sandbox, by_run, cfg.limits, cfg.max_tests_per_job)
    out: list[Future] = []
    for p in plan:
        if isinstance(p, Validation):
            out.append(_resolved(p))
            continue
        kind, prop, meta, orders, idx = p
        fs = [futures_by_run[r][idx[r]] for r in range(runs)]
        requests = [by_run[r][idx[r]] for r in range(runs)]
        out.append(_then(_gather(fs), lambda replies, kind=kind, prop=prop, meta=meta, orders=orders, requests=requests:
                         _other_worker(sandbox, kind, prop, meta, orders, requests, replies, cfg, cfg.worker_retries)))
    return out


def _other_worker(sandbox: Any, kind: str, prop: ParsedProposal, meta: dict, orders: list, requests: list,
                  replies: list, cfg: ValidationConfig, retries: int) -> Any:
    """The verdict, after running again the determinism runs that landed on run 0's worker."""
    first = replies[0]
    same = [r for r in range(1, len(replies))
            if replies[r] is not None and first is not None and replies[r].get("ok") and first.get("ok")
            and first.get("where") is not None and replies[r].get("where") == first.get("where")]
    if not same or retries <= 0 or int(getattr(sandbox, "workers", 1)) < 2:
        return _runs_verdict(kind, prop, meta, orders, replies, cfg)
    again = _submit(sandbox, [requests[r] for r in same], cfg.limits, cfg.max_tests_per_job)

    def merge(new: list) -> Any:
        merged = list(replies)
        for r, reply in zip(same, new):
            merged[r] = reply
        return _other_worker(sandbox, kind, prop, meta, orders, requests, merged, cfg, retries - 1)

    return _then(_gather(again), merge)


def validate_proposals(sandbox: Any, items: Sequence[tuple], *,
                       config: ValidationConfig | None = None) -> list[Validation]:
    """Validate ``(kind, ParsedProposal | ProposalError[, meta])`` items. A proposal is valid iff
    its program passes the import policy, runs on every input within the limits without error,
    every input's arguments and every output are plain data, outputs fit ``max_output_chars``, and
    a second run in another job (reverse input order, perturbed heap) gives identical outputs.
    Valid results carry the record with ``output(s)`` (canonical repr) and ``gold`` (encodings);
    ``meta`` (id, origin, step, parent_ids) is copied into it."""
    return [f.result() for f in validate_proposals_async(sandbox, items, config=config)]


def validate_records(sandbox: Any, kind_records: Sequence[tuple[str, dict]], *,
                     config: ValidationConfig | None = None) -> list[Validation]:
    """Re-validate stored records (seed files, buffers): their meta is kept, outputs recomputed."""
    items = []
    for kind, rec in kind_records:
        rec = validate_record(kind, rec)
        items.append((kind, proposal_from_record(kind, rec), {k: rec[k] for k in ("id", "origin", "step", "parent_ids")}))
    return validate_proposals(sandbox, items, config=config)


def gold_cache_clear() -> None:
    with _GOLD_LOCK:
        _GOLD_CACHE.clear()

