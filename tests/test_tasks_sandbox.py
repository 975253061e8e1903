"""Tasks layer on the real sandbox: validation, judge semantics (AZR / CRUXEval `==` on plain data),
hostile answers and programs, determinism across processes and workers, the shipped seed files."""

from __future__ import annotations

import ast
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gasp_jax import tasks
from gasp_jax.data import paths
from gasp_jax.sandbox import Limits, Sandbox
from gasp_jax.tasks import JudgeConfig, ParsedProposal, ValidationConfig
from tests.test_sandbox_support import CAN_ISOLATE, HostSnapshot, assert_host_clean


FAST = Limits(cpu_s=1.0, wall_s=3.0, memory_bytes=1 << 30, stdout_bytes=1 << 20)
VCFG = ValidationConfig(limits=FAST)
JCFG = JudgeConfig(limits=FAST)
IDENTITY = "def f(x):\n    return x"


@pytest.fixture(scope="module")
def sb():
    with Sandbox(workers=2, limits=FAST, allow_unsafe=not CAN_ISOLATE) as box:
        yield box


def prop(kind, snippet, inputs, message="", imports=()):
    return ParsedProposal(kind, snippet, tuple(imports), tuple(inputs), message)


def validated(sb, kind, snippet, inputs, message="m", cfg=VCFG):
    v = tasks.validate_proposals(sb, [(kind, prop(kind, snippet, inputs, message))], config=cfg)[0]
    assert v.ok, v.reason
    return v.record


def judge(sb, items):
    return tasks.judge_many(sb, items, config=JCFG)


# ----------------------------------------------------------------------------------------------
# judge semantics
# ----------------------------------------------------------------------------------------------

EQ_ALL = "type('E', (), {'__eq__': lambda s, o: True, '__hash__': lambda s: 0})()"

DEDUCTION_CASES = [  # (input of the identity task = its gold value, answer, verdict)
    ("1", "1", True), ("1", "1.0", True), ("1", "True", True), ("1", "2", False), ("1", "'1'", False),
    ("(1, 2)", "(1, 2)", True), ("(1, 2)", "[1, 2]", False), ("[1, 2]", "[1, 2]", True), ("[1, 2]", "[2, 1]", False),
    ("[1, [2, (3,)], {'k': {4}}]", "[1.0, [2, (3,)], {'k': {4}}]", True), ("[1, [2, (3,)]]", "[1, [2, [3]]]", False),
    ("{1, 2, 3}", "{3, 2, 1}", True), ("{1, 2, 3}", "[1, 2, 3]", False), ("frozenset({1})", "{1}", True),
    ("{'a': 1, 'b': 2}", "{'b': 2, 'a': 1}", True), ("{'a': 1}", "{'a': 1.0}", True), ("{'a': 1}", "{'a': '1'}", False),
    ("'abc'", '"abc"', True), ("'abc'", "'ab' + 'c'", True), ("'abc'", "abc", False), ("None", "None", True),
    ("None", "'None'", False), ("0.1 + 0.2", "0.3", False), ("0.1 + 0.2", "0.30000000000000004", True),
    ("2 ** 100", "1267650600228229401496703205376", True), ("b'ab'", "b'a' + b'b'", True), ("1j", "1j", True),
    ("float('inf')", "1e999", True), ("-0.0", "0", True),
    # not plain data -> wrong, even where Python's == would say True
    ("1", EQ_ALL, False), ("[1]", f"[{EQ_ALL}]", False), ("{'a': 1, 'b': 1}", "__import__('collections').Counter('ab')", False),
    ("[1]", "__import__('collections').deque([1])", False), ("0", "float('nan')", False),
    # the program is not available to a deduction answer
    ("[3]", "f([3])", False), ("[3]", "x", False),
]


def test_judge_deduction_semantics(sb):
    records = {inp: validated(sb, "deduction", IDENTITY, [inp]) for inp in {c[0] for c in DEDUCTION_CASES}}
    items = [("deduction", records[inp], ans) for inp, ans, _ in DEDUCTION_CASES]
    got = judge(sb, items)
    assert got == [want for *_, want in DEDUCTION_CASES], [
        (c[0], c[1], g) for c, g in zip(DEDUCTION_CASES, got) if g != c[2]]


def test_judge_abduction_semantics(sb):
    rec = validated(sb, "abduction", "def f(a, b=0):\n    return sorted(a)[b]", ["[3, 1, 2], 1"])
    assert rec["output"] == "2"
    cases = [
        ("[3, 1, 2], 1", True), ("[2, 9, 1], 1", True), ("[2]", True), ("a=[5, 2], b=0", True), ("*[[2]]", True),
        ("(2,)", True), ("[1, 2, 3]", False), ("[1, 2, 3], 2", False), ("[2], 1", False),  # IndexError -> wrong
        ("", False), ("object()", False), ("[2], c=3", False),
        # side effects of the answer never reach f: it is evaluated in another process
        ("__import__('builtins').__dict__.__setitem__('sorted', lambda *a, **k: [2] * 9) or [0]", False),
        ("(__import__('builtins').__setattr__('sorted', lambda a: [2]), [7])[1]", False),
    ]
    got = judge(sb, [("abduction", rec, a) for a, _ in cases])
    assert got == [w for _, w in cases], [(a, g) for (a, w), g in zip(cases, got) if g != w]


def test_judge_induction_semantics(sb):
    inputs = [str(i) for i in range(10)]
    rec = validated(sb, "induction", "def f(n):\n    return n * n + 1", inputs, "square plus one")
    assert rec["outputs"][3] == "10" and len(rec["gold"]) == 10
    table = "def f(n):\n    return {0: 1, 1: 2, 2: 5, 3: 10, 4: 17}.get(n, 0)"  # the visible pairs only
    cases = [
        ("def f(n):\n    return n ** 2 + 1", True),
        ("import math\ndef f(n):\n    return math.prod([n, n]) + 1.0", True),
        ("def g(n):\n    return n * n + 1", False),  # no f
        (table, False),
        ("def f(n):\n    return n * n + 1 if n < 9 else 0", False),  # one hidden pair wrong is enough
        ("def f(n):\n    while True:\n        pass", False),
        ("import random\ndef f(n):\n    return n * n + 1", False),  # banned import: verdicts could vary
        ("def f(n):\n    return " + EQ_ALL, False),
        ("def f(n:\n", False),
        ("def f(n):\n    return (n * n + 1,)", False),
    ]
    got = judge(sb, [("induction", rec, a) for a, _ in cases])
    assert got == [w for _, w in cases], [(a, g) for (a, w), g in zip(cases, got) if g != w]
    # the split is configurable: with 9 pairs shown only the last one is judged
    assert tasks.judge_many(sb, [("induction", rec, "def f(n):\n    return 82")],
                            config=JudgeConfig(limits=FAST, n_visible=9)) == [True]


def test_hostile_answers_are_wrong_and_host_untouched(sb, tmp_path):
    probe = "/tmp/gasp_tasks_probe_file"
    if os.path.exists(probe):
        os.remove(probe)
    rec = validated(sb, "deduction", IDENTITY, ["[1, 2]"])
    hostile = [
        "[0 for _ in iter(int, 1)]",                          # infinite loop -> TLE
        "'x' * (10 ** 10)",                                   # memory
        "'x' * (10 ** 7)",                                    # a value over the size cap
        "__import__('os')._exit(0)", "exit(0)", "__import__('os').kill(__import__('os').getpid(), 9)",
        "__import__('os').kill(__import__('os').getppid(), 9)",
        f"open({probe!r}, 'w').write('x') and [1, 2]",
        "__import__('socket').create_connection(('1.1.1.1', 80), timeout=1) and [1, 2]",
        "[1, 2] if print('x' * 10 ** 7) else [1, 2]",         # floods stdout
        "(" * 5000 + ")" * 5000, "\x00", "'\ud800'", "[1, 2]\n)\n(", "lambda: [1, 2]",
    ]
    before = HostSnapshot.take()
    got = judge(sb, [("deduction", rec, a) for a in hostile])
    assert got == [False] * len(hostile), list(zip(hostile, got))
    assert not os.path.exists(probe)
    assert_host_clean(sb, before)
    assert judge(sb, [("deduction", rec, "[1, 2]")]) == [True]  # the pool still works


def test_format_errors_and_bad_items(sb):
    rec = validated(sb, "deduction", IDENTITY, ["3"])
    assert judge(sb, [("deduction", rec, None), ("deduction", rec, 3), ("deduction", rec, "   "),
                      ("deduction", rec, "3" + " " * (70 * 1024))]) == [False] * 4
    with pytest.raises(tasks.TaskFormatError, match="unknown task kind"):
        judge(sb, [("sorting", rec, "3")])
    with pytest.raises(tasks.TaskFormatError, match="lacks"):
        judge(sb, [("deduction", {"snippet": IDENTITY}, "3")])
    with pytest.raises(tasks.TaskFormatError, match="'gold'"):
        judge(sb, [("deduction", dict(rec, gold={"zz": 1}), "3")])


def test_gold_is_stored_or_computed_once(sb):
    raw = {"snippet": "def f(s):\n    return s[::-1]", "input": "'abc'", "output": "'cba'", "imports": []}
    tasks.gold_cache_clear()
    assert judge(sb, [("deduction", raw, "'cba'"), ("abduction", raw, "'abc'"), ("deduction", raw, "'abc'"),
                      ("abduction", raw, "'cba'[::-1]")]) == [True, True, False, False]  # answers are literals
    # a validated record's stored gold is what counts later, whatever the program does now
    rec = validated(sb, "deduction", raw["snippet"], ["'abc'"])
    assert rec["gold"] == "cba"
    assert judge(sb, [("deduction", dict(rec, gold="zzz"), "'zzz'")]) == [True]
    # a record whose program fails cannot be judged: None, not a wrong answer
    broken = dict(raw, snippet="def f(s):\n    return 1 / 0")
    assert judge(sb, [("deduction", broken, "1")]) == [None]


def test_async_forms_match_sync(sb):
    rec = validated(sb, "deduction", IDENTITY, ["[1]"])
    items = [("deduction", rec, a) for a in ("[1]", "[2]", "[1.0]")]
    futures = tasks.judge_many_async(sb, items, config=JCFG)
    assert [f.result(timeout=60) for f in futures] == judge(sb, items) == [True, False, True]
    vf = tasks.validate_proposals_async(sb, [("deduction", prop("deduction", IDENTITY, ["5"]))], config=VCFG)
    assert vf[0].result(timeout=60).record["output"] == "5"


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------

ORDER_DEPENDENT = ("def f(x):\n    import sys\n    m = sys.modules['builtins']\n"
                   "    m.calls = getattr(m, 'calls', 0) + 1\n    return m.calls")

VALIDATION_CASES = [  # (snippet, inputs, imports, reason substring or None for valid)
    ("def f(x):\n    return 1 // x", ["0"], (), "input 0: ZeroDivisionError"),
    ("def f(x):\n    return random.random()", ["1"], ("import random",), "banned import: random"),
    ("def f(x):\n    while True:\n        x += 1", ["1"], (), "TLE"),
    ("def f(x):\n    return object()", ["1"], (), "output is not plain data"),
    ("def f(x):\n    return [x, {x}]", ["[1]"], (), "TypeError"),
    ("def f(x):\n    return x", ["object()"], (), "input is not a literal"),
    ("def f(x):\n    return x", ["f(1)"], (), "input is not a literal"),  # inputs are data, never evaluated here
    ("def f(x):\n    return id(object()) % 100003", ["1"], (), "not deterministic"),  # heap layout
    (ORDER_DEPENDENT, ["1", "2"], (), "not deterministic"),  # reversed order in the second run
    ("def f(x):\n    return 'y' * x", ["5000"], (), "output too large"),
    ("def f(x):\n    return float('nan')", ["1"], (), "not plain data"),
    ("def g(x):\n    return x", ["1"], (), "defines no function f"),
    ("def f(x:\n", ["1"], (), "SyntaxError"),
    ("def f(x):\n    return x", ["1" * 1001], (), "input longer than"),
    ("def f(*a, **k):\n    return (sorted(set('hello')), a, k)", ["1, y=2"], (), None),
    ("def f():\n    return []", [""], (), None),
]


def test_validation_outcomes(sb):
    kinds = ["induction" if len(inp) > 1 else "deduction" for _, inp, _, _ in VALIDATION_CASES]
    items = [(k, ParsedProposal(k, s, imp, tuple(inp), "m")) for k, (s, inp, imp, _) in zip(kinds, VALIDATION_CASES)]
    results = tasks.validate_proposals(sb, items, config=VCFG)
    for (snippet, _, _, want), v in zip(VALIDATION_CASES, results):
        if want is None:
            assert v.ok is True and v.record is not None, (snippet, v.reason)
        else:
            assert v.ok is False and want in v.reason and v.record is None, (snippet, v.reason)
    ok = results[-2].record
    assert ok["output"] == "(['e', 'h', 'l', 'o'], (1,), {'y': 2})"
    assert tasks.decode(ok["gold"]) == (["e", "h", "l", "o"], (1,), {"y": 2})


def test_validation_fills_records_and_meta(sb):
    fmt = tasks.parse_proposal("deduction", "no answer")
    items = [
        ("induction", prop("induction", "def f(s):\n    return set(s)", ["'cab'", "'b'", "''"], "letters"),
         {"id": "t9", "step": 4, "parent_ids": ["p1"], "origin": "gasp", "other": 1}),
        ("abduction", prop("abduction", "def f(x):\n    return math.sqrt(x)", ["16"], imports=("import math",))),
        ("deduction", fmt),
    ]
    ind, abd, bad = tasks.validate_proposals(sb, items, config=VCFG)
    assert ind.record["outputs"] == ["{'a', 'b', 'c'}", "{'b'}", "set()"]  # canonical, sorted sets
    assert ind.record["message"] == "letters" and ind.record["id"] == "t9" and ind.record["step"] == 4
    assert ind.record["parent_ids"] == ["p1"] and ind.record["origin"] == "gasp" and "other" not in ind.record
    assert abd.record["output"] == "4.0" and abd.record["imports"] == ["import math"]
    assert abd.record["id"] == tasks.record_key("abduction", abd.record) and abd.record["origin"] == "propose"
    assert bad.ok is False and bad.reason.startswith("format: no <answer>")
    # the validated record solves itself, in every kind it can be used as
    assert judge(sb, [("deduction", abd.record, abd.record["output"]), ("abduction", abd.record, abd.record["input"]),
                      ("induction", ind.record, tasks.program_text(ind.record))]) == [True, True, True]


def test_determinism_across_workers(sb):
    """The same items get the same verdicts every time, whichever worker runs them; validated gold
    answers pass on every worker."""
    progs = [("def f(s):\n    return sorted(set(s))", "'mississippi'"), ("def f(n):\n    return [i * i for i in range(n)]", "6"),
             ("def f(d):\n    return {k: len(v) for k, v in d.items()}", "{'a': 'xy', 'b': ''}")]
    recs = [validated(sb, "deduction", s, [i]) for s, i in progs]
    items = []
    for rec in recs:
        items += [("deduction", rec, rec["output"]), ("abduction", rec, rec["input"]), ("deduction", rec, "0"),
                  ("abduction", rec, "0")]
    first = judge(sb, items)
    assert first == [True, True, False, False] * len(recs)
    for _ in range(3):
        assert judge(sb, items) == first


# ----------------------------------------------------------------------------------------------
# the shipped AZR seed files
# ----------------------------------------------------------------------------------------------

# Rows whose stored output cannot be reproduced by anyone: the program's output depends on the
# iteration order of a set of strings, i.e. on the str-hash seed of the process AZR ran it in.
# Such a row is either rejected as not deterministic (its two runs saw different hash seeds)
# or validates with an output that differs from the stored one.
HASH_ORDER_ROWS = {
    "14b_code_f_seed_io.jsonl:91", "14b_code_f_seed_io.jsonl:99", "14b_coder_code_f_seed_io.jsonl:131",
    "14b_coder_code_f_seed_io.jsonl:212", "14b_coder_seed_io.jsonl:124", "14b_coder_seed_io.jsonl:180",
    "14b_coder_seed_io.jsonl:222", "14b_coder_seed_io.jsonl:231", "14b_coder_seed_io.jsonl:232",
    "14b_seed_io.jsonl:129", "14b_seed_io.jsonl:253", "7b_code_f_seed_io.jsonl:98", "7b_coder_code_f_seed_io.jsonl:220",
    "7b_coder_seed_io.jsonl:152", "7b_coder_seed_io.jsonl:229",
}
# Reasons a seed row is rejected (docs/tasks.md, "Seed files"): values that are not plain data
# (generators, Counter, defaultdict, Ellipsis, numpy scalars, classes), inputs that call f or
# name the program's classes (inputs are data, evaluated without the program), banned imports,
# outputs that vary between runs, missing modules, oversized outputs, programs that raise.
REJECT_REASONS = ("not plain data", "NameError", "banned import", "not deterministic", "ModuleNotFoundError",
                  "output too large", "StopIteration", tasks.NON_LITERAL_INPUT)


def _azr_truncated(text: str) -> str:
    return text[:200] + "..." + text[-200:] if len(text) > 400 else text


def _check_seed_rows(sb, records):
    cfg = ValidationConfig(limits=Limits(cpu_s=4.0, memory_bytes=1 << 30, stdout_bytes=8 << 20),
                           max_output_chars=1_000_000)
    results = tasks.validate_records(sb, [(tasks.record_kinds(r)[0], r) for r in records], config=cfg)
    items, where = [], []
    for rec, v in zip(records, results):
        if not v.ok:
            assert v.ok is False and any(r in v.reason for r in REJECT_REASONS), (rec["id"], v.reason)
            continue
        if "inputs" in rec:
            for i, stored in enumerate(rec["outputs"]):
                items.append(("deduction", tasks.io_record_from_induction(v.record, i), stored))
                where.append((rec["id"], v.record["outputs"][i], stored))
        else:
            items.append(("deduction", v.record, rec["output"]))
            where.append((rec["id"], v.record["output"], rec["output"]))
    verdicts = tasks.judge_many(sb, items, config=JudgeConfig(limits=cfg.limits, max_value_bytes=8 << 20))
    for (rid, ours, stored), ok in zip(where, verdicts):
        if ok or rid in HASH_ORDER_ROWS:
            continue
        # AZR kept 200 + "..." + 200 characters of long outputs and wrote infinities as Python's repr
        # does (`inf`, not an expression); a few rows store an empty output
        python_repr = ours.replace("float('inf')", "inf")
        assert _azr_truncated(python_repr) == stored or stored == "", (rid, stored[:100], ours[:100])
    return results


def test_sampled_seed_rows_validate_and_reproduce(sb):
    files = paths.azr_seed_files()
    sample = []
    for k, path in enumerate(files):
        recs = tasks.load_seed_file(path)
        sample += [r for r in recs[k % 7::37] if r["id"] not in HASH_ORDER_ROWS][:4]
    results = _check_seed_rows(sb, sample)
    assert sum(v.ok for v in results) >= len(sample) - 3


@pytest.mark.slow
def test_every_seed_row_validates_or_is_rejected_for_a_documented_reason(sb):
    records = tasks.load_seed_files(paths.azr_seed_files())
    results = _check_seed_rows(sb, records)
    assert sum(v.ok for v in results) >= 0.96 * len(records)


_ANSWER_TEXT = st.one_of(st.text(max_size=40), st.lists(st.sampled_from(
    ["(", ")", "[", "]", "{", "}", "'", '"', ",", "1", "x", "f", "lambda", ":", "*", "=", "\n", "def f(x):", "return",
     "__import__('os')", "\\", "#", "\x00", "\ud800"]), max_size=12).map("".join))


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answers=st.lists(st.tuples(st.sampled_from(tasks.KINDS), _ANSWER_TEXT), min_size=12, max_size=12))
def test_fuzzed_answers_get_verdicts(sb, answers):
    io = validated(sb, "deduction", "def f(a, b=1):\n    return [a, b]", ["1, 2"])
    ind = validated(sb, "induction", IDENTITY, ["1", "2"])
    items = [(k, ind if k == "induction" else io, a) for k, a in answers]
    assert all(v in (True, False) for v in judge(sb, items))


def test_closed_sandbox_raises_and_leaves_no_stale_gold(sb):
    raw = {"snippet": "def f(s):\n    return s * 2", "input": "'q'", "output": "'qq'", "imports": []}
    tasks.gold_cache_clear()
    box = Sandbox(workers=1, limits=FAST, allow_unsafe=not CAN_ISOLATE)
    box.close()
    with pytest.raises(RuntimeError, match="closed"):
        judge(box, [("deduction", raw, "'qq'")])
    assert judge(sb, [("deduction", raw, "'qq'")]) == [True]


def test_dict_order_is_not_nondeterminism_but_list_order_is(sb):
    # the two runs see different str-hash secrets only if they land on different workers, so the
    # programs make the difference explicit: the second run (reversed order) builds in another order
    dict_prog = ("def f(x):\n    import sys\n    m = sys.modules['builtins']\n    m.n = getattr(m, 'n', 0) + 1\n"
                 "    keys = ['a', 'b'] if m.n == 1 else ['b', 'a']\n    return {k: 1 for k in keys}")
    list_prog = dict_prog.replace("return {k: 1 for k in keys}", "return keys")
    ok, bad = tasks.validate_proposals(sb, [("induction", prop("induction", dict_prog, ["1", "2"], "m")),
                                            ("induction", prop("induction", list_prog, ["1", "2"], "m"))], config=VCFG)
    assert ok.ok is True and ok.record["outputs"] == ["{'a': 1, 'b': 1}", "{'b': 1, 'a': 1}"]
    assert bad.ok is False and "not deterministic" in bad.reason


def test_hash_secret_dependence_is_caught_or_harmless(sb):
    """A program whose output depends on the str-hash secret is valid iff every sandbox process
    shares one secret; while workers have their own, determinism runs that landed on the first
    run's worker are run again until they compare two workers."""
    probe = tasks.validate_proposals(sb, [("deduction", prop("deduction", "def f(x):\n    import sys\n"
                                                             "    return sys.flags.hash_randomization", ["0"]))],
                                     config=VCFG)[0]
    randomized = probe.record["output"] == "1"
    progs = [f"def f(x):\n    return hash('{c}') % 1000003" for c in "abcd"]
    cfg = ValidationConfig(limits=FAST, worker_retries=8)
    results = tasks.validate_proposals(sb, [("deduction", prop("deduction", p, ["0"])) for p in progs], config=cfg)
    assert [v.ok for v in results] == [not randomized] * len(progs), [v.reason for v in results]


# ----------------------------------------------------------------------------------------------
# judge hardening: answers are values, judging looks like validation, replies are untrusted
# ----------------------------------------------------------------------------------------------

def test_answers_that_run_code_are_wrong(sb):
    """A deduction or abduction answer is a literal: one that defines and runs the program
    (``exec``), brute-forces inputs or calls anything is wrong, even when its value is right."""
    rec = validated(sb, "abduction", "def f(a):\n    return a * 3 + 1", ["4"])
    assert rec["output"] == "13"
    runs_program = "exec('def f(a):\\n    return a * 3 + 1', g := {}) or g['f'](4)"
    brute_force = "next(x for x in range(100) if x * 3 + 1 == 13)"
    items = [("deduction", rec, runs_program), ("deduction", rec, "(lambda: 13)()"), ("deduction", rec, "int('13')"),
             ("abduction", rec, brute_force), ("abduction", rec, "eval('4')"), ("abduction", rec, "__import__('math').floor(4.2)"),
             ("deduction", rec, "13"), ("abduction", rec, "4"), ("abduction", rec, "a=4")]
    assert judge(sb, items) == [False] * 6 + [True] * 3


SPY = """
import json, os, resource, sys
def f(x):
    def plain(v):
        try:
            text = json.dumps(v, sort_keys=True)
        except (TypeError, ValueError):
            return None
        return None if isinstance(v, float) else text
    seen, fr = [], sys._getframe(1)
    while fr is not None:  # every caller: its code, its local names, its plain-data locals
        # not compared: what differs between the two determinism runs on purpose (padding and
        # order, also inside the request texts) and between workers (the per-worker uid)
        local = {k: v for k, v in fr.f_locals.items()
                 if k not in ('keep', 'where', 'payload', 'arg_text', 'call', 'size', 'direct')}
        if isinstance(local.get('req'), dict):
            local['req'] = {k: v for k, v in local['req'].items() if k not in ('pad', 'order')}
        seen.append((fr.f_code.co_name, sorted(local), sorted((k, plain(v)) for k, v in local.items())))
        fr = fr.f_back
    seen.append([resource.getrlimit(r) for r in (resource.RLIMIT_CPU, resource.RLIMIT_AS, resource.RLIMIT_NPROC)])
    seen.append((os.getppid(), os.getcwd(), sorted(os.environ)))
    return repr(seen)
"""


def test_judging_is_indistinguishable_from_validation(sb):
    """What a task's program can see of its callers' frames, its limits and its process tree is
    the same when its abduction answer is judged as when it was validated (the determinism runs
    excepted, which differ on purpose in input order and heap padding): it cannot pass
    validation and then answer differently."""
    rec = validated(sb, "abduction", SPY, ["5"], cfg=ValidationConfig(limits=FAST, max_output_chars=60_000))
    seen = ast.literal_eval(rec["output"])  # test side: the str the program returned
    assert "('_spawn_forker', [], [])" in seen and "('main', [], [])" in seen, seen[-3000:]  # nothing below the forker
    assert "'usage'" not in seen and "'status'" not in seen  # nor what an earlier test left
    assert '"hide"' not in seen and "/work" not in seen  # no worker configuration
    assert judge(sb, [("abduction", rec, "5")] * 6) == [True] * 6
    # other judge limits for answer programs: a task's own program still runs under validation's
    jcfg = JudgeConfig(limits=Limits(cpu_s=3.0, wall_s=7.0, memory_bytes=1 << 30), program_limits=FAST)
    assert tasks.judge_many(sb, [("abduction", rec, "5"), ("abduction", rec, " 5 ")], config=jcfg) == [True] * 2
    # a call with other arguments (a keyword) is another call, and the program may see that
    assert tasks.judge_many(sb, [("abduction", rec, "x=5")], config=jcfg) == [False]


def test_forged_reply_encodings_are_not_accepted(sb):
    """An induction answer that replaces the wrapper's encoder and returns a forged encoding (a
    set with duplicate elements, equal to the gold only if the host built it as a set) is wrong;
    so is one returning 40,000 hash-colliding elements, decoded without any hash table."""
    rec = validated(sb, "induction", "def f(n):\n    return {n}", [str(i) for i in range(4)], "a set")
    forge = ("import sys\n"
             "def f(n):\n"
             "    mod = sys._getframe(1).f_globals\n"
             "    real = mod['encode']\n"
             "    mod['encode'] = lambda v, cap=0: {'s': [n, n]} if type(v) is set else real(v, cap)\n"
             "    return {n}\n")
    colliding = ("import sys\n"
                 "def f(n):\n"
                 "    mod = sys._getframe(1).f_globals\n"
                 "    real = mod['encode']\n"
                 "    mod['encode'] = lambda v, cap=0: {'s': [k * (2 ** 61 - 1) for k in range(40000)]} if type(v) is set else real(v, cap)\n"
                 "    return {n}\n")
    honest = "def f(n):\n    return {n}"
    assert judge(sb, [("induction", rec, forge), ("induction", rec, colliding), ("induction", rec, honest)]) == [
        False, False, True]


def test_zero_argument_programs(sb):
    """``def f():`` tasks: the gold input is ``''`` and the empty answer is the empty argument
    list (CRUXEval's grader accepts ``f()``); a program that needs arguments gets it wrong."""
    rec = validated(sb, "abduction", "def f():\n    return [1, 2]", [""])
    assert rec["input"] == "" and rec["output"] == "[1, 2]"
    needs_one = validated(sb, "abduction", "def f(x):\n    return [1, 2]", ["0"])
    assert judge(sb, [("abduction", rec, ""), ("abduction", rec, "  "), ("abduction", rec, "1"),
                      ("abduction", needs_one, ""), ("deduction", rec, "[1, 2]"), ("deduction", rec, "")]) == [
        True, True, False, False, True, False]
