"""Tasks layer without the sandbox: records, parsing (hand-written + fuzzed), prompts, the
plain-data encoding, reward tables."""

from __future__ import annotations

import ast
import json
import math
from collections import Counter, OrderedDict, defaultdict, namedtuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gasp_jax import tasks
from gasp_jax.data import paths
from gasp_jax.tasks import child
from gasp_jax.tasks.plain import parse_reply
from gasp_jax.tokenizer import build_byte_tokenizer


IO_REC = {"snippet": "def f(a, b):\n    return a * b", "input": "'ab', 2", "output": "'abab'", "imports": []}
IND_REC = {"snippet": "def f(x):\n    return x + 1", "inputs": [str(i) for i in range(6)],
           "outputs": [str(i + 1) for i in range(6)], "message": "add one", "imports": []}


# ----------------------------------------------------------------------------------------------
# records
# ----------------------------------------------------------------------------------------------

def test_every_shipped_seed_row_loads():
    files = paths.azr_seed_files()
    assert len(files) == 14
    n = 0
    for path in files:
        recs = tasks.load_seed_file(path)
        kinds = {tasks.record_kinds(r) for r in recs}
        name = paths.stem(path)  # ids and origins name the upstream file, not its compressed copy
        assert kinds == ({("induction",)} if "code_f" in name else {("deduction", "abduction")})
        assert all(r["id"].startswith(name + ":") and r["origin"] == f"seed:{name}" for r in recs)
        assert len({r["id"] for r in recs}) == len(recs)
        n += len(recs)
    assert n == 3200


def test_load_seed_file_names_row_and_reason(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(IO_REC) + "\n" + json.dumps(dict(IO_REC, input=3)) + "\n")
    with pytest.raises(tasks.TaskFormatError, match=r"bad.jsonl:2: field 'input' must be a string"):
        tasks.load_seed_file(p)
    p.write_text("{not json\n")
    with pytest.raises(tasks.TaskFormatError, match=r"bad.jsonl:1: not JSON"):
        tasks.load_seed_file(p)


@pytest.mark.parametrize("kind,rec,match", [
    ("deduction", [1], "must be a dict"),
    ("deduction", {"snippet": "def f(a): return a", "input": "1"}, "lacks \\['output'\\]"),
    ("induction", dict(IND_REC, outputs=["1"]), "6 inputs but 1 outputs"),
    ("induction", dict(IND_REC, inputs="1"), "must be a list of strings"),
    ("deduction", dict(IO_REC, snippet="  "), "empty snippet"),
    ("deduction", dict(IO_REC, imports=[3]), "'imports' must be a list of strings"),
    ("translation", IO_REC, "unknown task kind"),
])
def test_validate_record_errors_name_the_record(kind, rec, match):
    with pytest.raises(tasks.TaskFormatError, match=match):
        tasks.validate_record(kind, dict(rec, id="r7") if isinstance(rec, dict) else rec)
    if isinstance(rec, dict) and kind in tasks.KINDS:
        with pytest.raises(tasks.TaskFormatError, match="record 'r7'"):
            tasks.validate_record(kind, dict(rec, id="r7"))


def test_record_meta_defaults_key_and_conversion():
    rec = tasks.validate_record("deduction", IO_REC)
    assert rec["id"] == tasks.record_key("deduction", IO_REC) and rec["parent_ids"] == [] and rec["step"] is None
    assert tasks.record_key("deduction", dict(IO_REC, output="'x'")) == rec["id"]  # outputs do not define a task
    assert tasks.record_key("deduction", dict(IO_REC, input="'a', 3")) != rec["id"]
    ind = tasks.validate_record("induction", dict(IND_REC, id="t1", gold=list(range(1, 7))))
    io = tasks.io_record_from_induction(ind, 4, step=3)
    assert io["input"] == "4" and io["output"] == "5" and io["gold"] == 5
    assert io["id"] == "t1#4" and io["parent_ids"] == ["t1"] and io["step"] == 3
    with pytest.raises(tasks.TaskFormatError, match="out of range"):
        tasks.io_record_from_induction(ind, 6)
    vis, hid = tasks.split_pairs(ind)
    assert [i for i, _ in vis] == ["0", "1", "2"] and [i for i, _ in hid] == ["3", "4", "5"]
    assert tasks.n_visible_pairs(10) == 5 and tasks.n_visible_pairs(1) == 0 and tasks.n_visible_pairs(4, 9) == 3
    assert tasks.program_text(dict(IO_REC, imports=["import math"])) == "import math\n" + IO_REC["snippet"]


# ----------------------------------------------------------------------------------------------
# extracting answers
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,text,want", [
    ("deduction", "reason</think>\n<answer>\n```output\n'abc'\n```\n</answer>", "'abc'"),
    ("deduction", "<think>r</think><answer>[1, 2]</answer>", "[1, 2]"),
    ("deduction", "</think><answer>  42 \n</answer> trailing words", "42"),
    ("deduction", "</think><answer>1</answer> more <answer>2</answer>", "2"),  # the last block
    ("deduction", "</think><answer>```python\nx\n```\n```output\n7\n```</answer>", "7"),  # the kind's fence
    ("deduction", "</think><answer>```python\nx\n```</answer>", "```python\nx\n```"),  # no output fence
    ("deduction", "</think><answer>```output\n{'a': 1}</answer>", "{'a': 1}"),  # unclosed fence
    ("abduction", "</think><answer>```input\n'a', 3\n```</answer>", "'a', 3"),
    ("induction", "</think><answer>```python\ndef f(x):\n    return x\n```</answer>", "def f(x):\n    return x"),
    ("induction", "</think><answer>```py\ndef f(x): return x\n```</answer>", "def f(x): return x"),
    ("deduction", "<answer>1</answer>", None),  # no </think>
    ("deduction", "<answer>1</answer></think>", None),  # </think> after the answer
    ("deduction", "</think> 1", None),
    ("deduction", "</think><answer>   </answer>", None),  # empty
    ("deduction", "</think><answer>```output\n\n```</answer>", None),
    ("deduction", "</think></answer><answer>", None),
    ("deduction", "", None),
])
def test_extract_answer_cases(kind, text, want):
    assert tasks.extract_answer(kind, text) == want


def test_extract_answer_without_tags_and_bad_input():
    assert tasks.extract_answer("deduction", "```output\n3\n```", tags=False) == "3"
    assert tasks.extract_answer("deduction", " 3 ", tags=False) == "3"
    for bad in (None, 3, b"</think><answer>1</answer>", ["x"]):
        assert tasks.extract_answer("deduction", bad) is None
    with pytest.raises(tasks.TaskFormatError):
        tasks.extract_answer("sorting", "x")


_TOKENS = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "```", "```output", "```input",
                           "```python", "```message", "\n", " ", "def f(x):", "return", "'", '"', "(", ")",
                           "\x00", "\ud800", "é"])
_RESPONSES = st.one_of(st.text(max_size=200), st.lists(st.one_of(_TOKENS, st.text(max_size=8)), max_size=40).map("".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(tasks.KINDS), text=_RESPONSES, tags=st.booleans())
def test_fuzz_parsers_never_raise(kind, text, tags):
    ans = tasks.extract_answer(kind, text, tags=tags)
    assert ans is None or (isinstance(ans, str) and ans == ans.strip() and ans)
    prop = tasks.parse_proposal(kind, text, tags=tags, num_inputs=2)
    assert isinstance(prop, (tasks.ParsedProposal, tasks.ProposalError))
    if prop:
        assert "def f" in prop.snippet or "async def f" in prop.snippet
        assert len(prop.inputs) == (2 if kind == "induction" else 1)


# ----------------------------------------------------------------------------------------------
# parsing proposals
# ----------------------------------------------------------------------------------------------

def _resp(*blocks):
    return "plan</think>\n<answer>\n" + "\n".join(f"```{lang}\n{body}\n```" for lang, body in blocks) + "\n</answer>"


def test_parse_proposal_renames_entry_and_splits_imports():
    prog = "import math\nfrom collections import Counter\n\ndef helper(v):\n    return v * 2\n\ndef solve(xs):\n    return solve_count(xs)\n\ndef solve_count(xs):\n    return obj.solve + len(xs)"
    p = tasks.parse_proposal("deduction", _resp(("python", prog), ("input", "[1, 2]")))
    assert p, p
    assert p.imports == ("import math", "from collections import Counter")
    # the last def is the entry; calls are renamed, attributes of the same name are not
    assert p.snippet.endswith("def solve(xs):\n    return f(xs)\n\ndef f(xs):\n    return obj.solve + len(xs)")
    p = tasks.parse_proposal("deduction", _resp(("python", "def g(n):\n    return g(n - 1) if n else obj.g\n"),
                                                ("input", "3")))
    assert p.snippet == "def f(n):\n    return f(n - 1) if n else obj.g" and p.inputs == ("3",)
    # an explicit f is the entry even when it is not last
    p = tasks.parse_proposal("abduction", _resp(("python", "def f(x):\n    return h(x)\ndef h(x):\n    return x"),
                                                ("input", "1")))
    assert p.snippet.startswith("def f(x):")
    assert not tasks.parse_proposal("deduction", _resp(("python", "def f(x):\n    return h(x)\ndef h(x):\n    return x"),
                                                       ("input", "1")), allow_helpers=False)


@pytest.mark.parametrize("text,reason", [
    ("no tags at all", "no <answer> block"),
    (_resp(("input", "1")), "no ```python block"),
    (_resp(("python", "def f(:"), ("input", "1")), "syntax error"),
    (_resp(("python", "x = 1"), ("input", "1")), "defines no function"),
    (_resp(("python", "def g(f):\n    return f"), ("input", "1")), "the name f is taken"),
    (_resp(("python", "def f(x):\n    return x")), "no ```input block"),
    (_resp(("python", "def f(x):\n    return x"), ("input", "1)); (2")), "not valid call arguments"),
    (_resp(("python", "def f(x):\n    return x"), ("input", "")), "no ```input block"),
])
def test_parse_proposal_errors(text, reason):
    p = tasks.parse_proposal("deduction", text)
    assert isinstance(p, tasks.ProposalError) and reason in p.reason


def test_parse_induction_proposals_with_and_without_program():
    given = tasks.validate_record("induction", IND_REC)
    blocks = [("input", str(i)) for i in (1, 2, 2, 3)] + [("message", "adds one")]
    p = tasks.parse_proposal("induction", _resp(*blocks), program=given, num_inputs=3)
    assert p and p.inputs == ("1", "2", "3") and p.message == "adds one" and p.snippet == given["snippet"]
    assert "distinct" in tasks.parse_proposal("induction", _resp(*blocks), program=given, num_inputs=4).reason
    assert "message" in tasks.parse_proposal("induction", _resp(*blocks[:-1]), program=given, num_inputs=3).reason
    assert "python" in tasks.parse_proposal("induction", _resp(*blocks), num_inputs=3).reason
    p = tasks.parse_proposal("induction", _resp(("python", "def f(x):\n    return -x"), *blocks), num_inputs=3)
    assert p and p.snippet == "def f(x):\n    return -x"


def _statements(src: str) -> list[str]:
    return sorted(ast.dump(node) for node in ast.parse(src).body)


@pytest.mark.parametrize("template", tasks.TEMPLATES)
def test_gold_responses_parse_back(template):
    tok = build_byte_tokenizer()
    io = tasks.load_seed_file(paths.azr_seed_file("7b_coder_seed_io.jsonl"))[:40]
    ind = tasks.load_seed_file(paths.azr_seed_file("7b_coder_code_f_seed_io.jsonl"))[:20]
    for chat in (False, True):
        for rec in io:
            for kind in ("deduction", "abduction"):
                resp = tasks.format_answer(kind, rec, template=template, chat=chat, reasoning="r")
                want = rec["output"] if kind == "deduction" else rec["input"]
                assert tasks.extract_answer(kind, resp) == want.strip()
                # the prompt and the response together: chat responses open <think> themselves
                prompt = tasks.solve_prompt(kind, rec, template=template, chat=chat, tokenizer=tok).text
                assert prompt.endswith("<think>") != chat
            p = tasks.parse_proposal("deduction", tasks.format_proposal("deduction", rec, template=template, chat=chat))
            assert p and p.inputs == (rec["input"].strip(),)
            assert _statements(p.program) == _statements(tasks.program_text(rec))  # imports may move up
        for rec in ind:
            resp = tasks.format_answer("induction", rec, template=template, chat=chat)
            assert tasks.extract_answer("induction", resp) == tasks.program_text(rec).strip()
            if not rec["message"].strip():
                continue  # a few seed rows have no message; a proposal must have one
            n = len(set(x.strip() for x in rec["inputs"]))
            p = tasks.parse_proposal("induction", tasks.format_proposal("induction", rec, template=template,
                                                                        with_program=False),
                                     program=rec, num_inputs=n)
            assert p and p.message == rec["message"].strip(), p


# ----------------------------------------------------------------------------------------------
# prompts
# ----------------------------------------------------------------------------------------------

def test_compact_prompt_shapes():
    assert tasks.solve_prompt("deduction", IO_REC, template="compact").text == (
        "#deduction\ndef f(a, b):\n    return a * b\n>>> f('ab', 2)\n<think>")
    assert tasks.solve_prompt("abduction", IO_REC, template="compact").text == (
        "#abduction\ndef f(a, b):\n    return a * b\n>>> f(?)\n'abab'\n<think>")
    assert tasks.solve_prompt("induction", IND_REC, template="compact").text == (
        "#induction\nadd one\n>>> f(0)\n1\n>>> f(1)\n2\n>>> f(2)\n3\n<think>")
    assert tasks.format_answer("deduction", IO_REC, template="compact") == "</think><answer>'abab'</answer>"
    p = tasks.propose_prompt("deduction", [IO_REC], template="compact").text
    assert p == "#propose deduction\ndef f(a, b):\n    return a * b\n>>> f('ab', 2)\n'abab'\n<think>"


def test_full_prompts_hold_the_task_and_hide_hidden_pairs():
    text = tasks.solve_prompt("deduction", IO_REC).text
    assert IO_REC["snippet"] in text and "'ab', 2" in text and "'abab'" not in text
    assert text.endswith("Assistant: <think>")
    text = tasks.solve_prompt("abduction", IO_REC).text
    assert "'abab'" in text and "'ab', 2" not in text
    text = tasks.solve_prompt("induction", IND_REC).text
    assert "add one" in text and IND_REC["snippet"] not in text
    assert "```input\n2\n```" in text and "```input\n3\n```" not in text and "3 more inputs" in text
    prop = tasks.propose_prompt("deduction", [IO_REC], banned_modules=["random", "time"]).text
    assert "random, time" in prop and "<reference 1>" in prop
    ind = tasks.propose_prompt("induction", [], program=IO_REC, num_inputs=10).text
    assert "Write 10 different inputs" in ind and IO_REC["snippet"] in ind
    with pytest.raises(ValueError, match="chat template"):
        tasks.solve_prompt("deduction", IO_REC, chat=True)
    with pytest.raises(ValueError, match="template"):
        tasks.solve_prompt("deduction", IO_REC, template="tiny")


def test_prompt_budget_drops_references_and_reports():
    refs = [dict(IO_REC, input=f"'ab', {k}") for k in range(6)]
    tok = build_byte_tokenizer()
    full = tasks.propose_prompt("abduction", refs, tokenizer=tok)
    assert full.dropped == 0 and full.n_tokens == len(tok.encode(full.text))
    none = tasks.propose_prompt("abduction", [], tokenizer=tok)
    budget = (full.n_tokens + none.n_tokens) // 2
    cut = tasks.propose_prompt("abduction", refs, tokenizer=tok, token_budget=budget)
    assert 0 < cut.dropped < 6 and cut.n_tokens <= budget
    assert f"<reference {6 - cut.dropped}>" in cut.text and f"<reference {7 - cut.dropped}>" not in cut.text
    with pytest.raises(tasks.PromptTooLong):
        tasks.propose_prompt("abduction", refs, tokenizer=tok, token_budget=none.n_tokens - 1)
    with pytest.raises(tasks.PromptTooLong):
        tasks.solve_prompt("deduction", IO_REC, token_budget=10)
    chat = tasks.solve_prompt("deduction", IO_REC, tokenizer=tok, chat=True)
    assert chat.text.startswith("<|im_start|>user\n") and chat.text.endswith("<|im_start|>assistant\n")


# ----------------------------------------------------------------------------------------------
# plain-data encoding
# ----------------------------------------------------------------------------------------------

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6),
                     st.binary(max_size=4), st.complex_numbers(allow_nan=False, allow_infinity=False, max_magnitude=1e6))
_HASHABLE = st.recursive(_SCALARS, lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=3)),
                         max_leaves=6)
_PLAIN = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner), st.tuples(inner, inner),
    st.dictionaries(_HASHABLE, inner, max_size=3), st.sets(_HASHABLE, max_size=3), st.frozensets(_HASHABLE, max_size=3)),
    max_leaves=12)


def _same_types(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(_same_types(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return list(map(type, a)) == list(map(type, b)) and all(_same_types(a[k], b[k]) for k in a)
    return True


@settings(max_examples=300, deadline=None)
@given(value=_PLAIN)
def test_encoding_roundtrips_type_exactly(value):
    enc = child.encode(value)
    wire = json.loads(json.dumps(enc, allow_nan=False))
    back = child.decode(wire)
    assert back == value and _same_types(back, value)
    assert json.dumps(child.encode(back)) == json.dumps(enc)  # canonical
    text = tasks.plain_repr(value)
    names = {"__builtins__": {}, "set": set, "frozenset": frozenset, "float": float, "complex": complex}
    assert eval(text, names) == value  # test-side only: the canonical repr is Python for an equal value


class _EqAll:
    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


@pytest.mark.parametrize("value", [
    _EqAll(), [1, _EqAll()], float("nan"), [float("nan")], OrderedDict(a=1), defaultdict(int), Counter("ab"),
    namedtuple("P", "x")(1), type("S", (str,), {})("x"), range(3), bytearray(b"x"), object, print, ...,
])
def test_non_plain_values_are_rejected(value):
    with pytest.raises(child.NotPlain):
        child.encode(value)


def test_encoding_limits_and_special_values():
    assert child.decode(child.encode(float("inf"))) == math.inf
    big = 3 ** 5000
    assert child.decode(json.loads(json.dumps(child.encode(big)))) == big
    deep = []
    for _ in range(child.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(child.NotPlain, match="deeply"):
        child.encode(deep)
    with pytest.raises(child.NotPlain, match="too large"):
        child.encode("x" * 2000, max_bytes=1000)
    with pytest.raises(child.NotPlain, match="too large"):
        child.encode(list(range(2000)), max_bytes=1000)
    # equality is Python's on the decoded values
    assert tasks.plain_repr({"b", "a", "c"}) == "{'a', 'b', 'c'}" and tasks.plain_repr(frozenset()) == "frozenset()"
    assert tasks.plain_repr((1,)) == "(1,)" and tasks.plain_repr(set()) == "set()"


@settings(max_examples=300, deadline=None)
@given(blob=st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4)),
                         lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                 st.dictionaries(st.sampled_from(["t", "d", "s", "fs", "i", "f", "c", "b", "x"]),
                                                                 inner, max_size=2)), max_leaves=10))
def test_decode_of_arbitrary_json_only_raises_not_plain(blob):
    try:
        value = child.decode(blob)
    except child.NotPlain:
        return
    child.encode(value)  # whatever decodes is plain data


@pytest.mark.parametrize("output", [None, 3, "", "'zz'", "'0'", "'" + "7b22" + "'", "'" + b'{"ok": true}'.hex() + "'",
                                    "'" + b'{"ok": true, "values": [NaN]}'.hex() + "'", "x" * 100])
def test_parse_reply_rejects_malformed(output):
    assert parse_reply(output, 1 << 20)["ok"] is False


def test_parse_reply_reads_the_wrapper_reply():
    request = {"op": "call", "src": "def f(x):\n    return [x, (2,)]", "inputs": ["1"], "order": [0], "pad": 0}
    hexed = child.__gasp_run__(json.dumps(request))
    reply = parse_reply(repr(hexed), 1 << 20)
    assert reply["ok"] and child.decode(reply["values"][0]) == [1, (2,)]
    assert parse_reply(repr(hexed), 8)["ok"] is False  # over the size cap
    many_keys = "{" + ",".join(f'"k{i}": 0' for i in range(9)) + "}"
    assert parse_reply(repr(many_keys.encode().hex()), 1 << 20)["ok"] is False  # no big dict from a reply


# ----------------------------------------------------------------------------------------------
# rewards
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("correct,formatted,want", [
    (True, True, 1.0), (False, True, -0.5), (None, True, None), (True, False, -1.0), (None, False, -1.0)])
def test_solver_reward_table(correct, formatted, want):
    assert tasks.solver_reward(correct, formatted=formatted) == want


@pytest.mark.parametrize("valid,p,want", [
    (False, None, -1.0), (False, 0.5, -1.0), (True, 0.0, -0.5), (True, 1.0, -0.5), (True, 0.25, 0.75),
    (True, 0.875, 0.125), (True, None, None), (True, float("nan"), None)])
def test_proposer_reward_table(valid, p, want):
    assert tasks.proposer_reward(valid, p) == want


def test_reward_config_and_outcomes():
    cfg = tasks.RewardConfig(correct=2.0, wrong=0.0, format_error=-3.0, valid_extreme=0.0, invalid=-2.0)
    assert [tasks.solver_reward(c, formatted=f, config=cfg) for c, f in ((True, True), (False, True), (True, False))] == [2.0, 0.0, -3.0]
    assert [tasks.proposer_reward(v, p, config=cfg) for v, p in ((False, 0.5), (True, 1.0), (True, 0.5))] == [-2.0, 0.0, 0.5]
    with pytest.raises(ValueError):
        tasks.proposer_reward(True, 1.5)
    assert [tasks.solver_outcome(a, v) for a, v in ((None, True), ("1", None), ("1", True), ("1", False))] == [
        "format_error", "infra_error", "correct", "wrong"]


@pytest.mark.parametrize("text,want", [
    ("[1, (2,), {'a': {3}}]", (True, [1, (2,), {"a": {3}}])), ("-1.5", (True, -1.5)), ("1+2j", (True, 1 + 2j)),
    ("'a' 'b'", (True, "ab")), ("1, 2", (True, (1, 2))), ("b'x'", (True, b"x")), ("None", (True, None)),
    ("1 + 2", (True, 3)), ("2 ** 100", (True, 2 ** 100)), ("'ab' + 'c'", (True, "abc")), ("b'a' + b'b'", (True, b"ab")),
    ("set()", (True, set())), ("frozenset({1, 2})", (True, frozenset({1, 2}))), ("float('inf')", (True, math.inf)),
    ("-float('inf')", (True, -math.inf)), ("complex(1.0, float('inf'))", (True, complex(1.0, math.inf))),
    ("{1, 1.0, True}", (True, {1})), ("{1: 'a', 1.0: 'b'}", (True, {1: "b"})), ("dict()", (True, {})),
    ("[x]", (False, None)), ("f(1)", (False, None)), ("{[1]}", (False, None)), ("'x' * 3", (False, None)),
    ("(", (False, None)), ("9" * 5000, (False, None)), ("9 ** 9 ** 9", (False, None)), ("float('nan')", (False, None)),
    ("[" * 150 + "]" * 150, (False, None)), ("'" + "y" * 2000 + "'", (False, None)),  # too deep / over the cap
    ("exec('def f(): return 1', g := {})", (False, None)), ("__import__('os')", (False, None)), ("...", (False, None)),
    ("(lambda: 1)()", (False, None)), ("set([1], 2)", (False, None)), ("{**{}}", (False, None)), ("[*[1]]", (False, None)),
])
def test_literal_answers_are_parsed_not_run(text, want):
    from gasp_jax.tasks.plain import literal_encoding
    ok, enc = literal_encoding(text, 1000)
    assert (ok, child.decode(enc) if ok else None) == want
    if ok:  # the canonical encoding: what the encoder writes for the value
        assert enc == child.encode(want[1])


@pytest.mark.parametrize("text,want", [
    ("'abc', 3", (True, (("abc", 3), {}))), ("x=[1], y=None", (True, ((), {"x": [1], "y": None}))), ("", (True, ((), {}))),
    ("*[1]", (True, ((1,), {}))), ("**{'x': 1}", (False, None)), ("x=1, x=2", (False, None)), ("1), (2", (False, None)),
    ("1)(2", (False, None)), ("len('a')", (False, None)), ("*'ab'", (False, None)),
])
def test_literal_call_arguments(text, want):
    from gasp_jax.tasks.plain import args_text, literal_args_encoding
    ok, enc = literal_args_encoding(text, 1000)
    assert (ok, child.decode(enc) if ok else None) == want
    if ok:  # the canonical text the sandbox gets parses back to the same arguments
        assert literal_args_encoding(args_text(enc), 1000) == (True, enc)


def test_canonical_keys_are_python_equality_without_hash_tables():
    from gasp_jax.tasks.plain import canonical
    same = [(1, 1.0), (True, 1), ({1, 2}, frozenset({2, 1})), ({"a": 1, "b": 2}, {"b": 2, "a": 1.0}),
            (1 + 0j, 1), ([{(1, 2): {3}}], [{(1.0, 2): {3}}]), (2 ** 70, float(2 ** 70))]
    for a, b in same:
        assert canonical(child.encode(a)) == canonical(child.encode(b)), (a, b)
    differ = [((1, 2), [1, 2]), ("1", 1), (b"a", "a"), (2 ** 53 + 1, float(2 ** 53)), ([1, 2], [2, 1]), (None, 0)]
    for a, b in differ:
        assert canonical(child.encode(a)) != canonical(child.encode(b)), (a, b)
    for bad in ({"s": [1, 1.0]}, {"d": [["a", 1], ["a", 2]]}, {"s": [[1]]}, {"d": [[[1], 2]]}, {"fs": [{"s": []}]},
                {"x": 1}, [float("nan")], {"i": "zz"}):
        with pytest.raises(child.NotPlain):
            canonical(bad)
    with pytest.raises(child.NotPlain, match="too many"):
        canonical(list(range(100)), max_items=50)
    # 40,000 elements whose hashes all collide (hash(k * (2**61 - 1)) == 0) decode in linear-log time
    colliding = {"s": sorted((k * (2 ** 61 - 1) for k in range(40_000)), key=lambda v: json.dumps(child.encode(v)))}
    colliding["s"] = [child.encode(v) for v in colliding["s"]]
    assert canonical(colliding)[0] == canonical(child.encode(frozenset()))[0]
