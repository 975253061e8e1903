"""GaspSource end to end through the real sandbox, driven by a scripted policy double.

The scripted teacher writes chosen lemmas and lifts (one valid and learnable, one too easy, one that
copies the goalpost, one that crashes, one near-copy of another); the scripted student answers each
task correctly on exactly k of its n samples, so every pass rate, reward and acceptance is known.
"""

import json

import jax
import ml_collections
import numpy as np
import pytest

from gasp_jax import gasp
from gasp_jax.data import paths
from gasp_jax.sandbox import Limits, Sandbox
from tests.test_sandbox_support import CAN_ISOLATE

tasks = pytest.importorskip("gasp_jax.tasks")
selfplay = pytest.importorskip("gasp_jax.selfplay")

LCB_FILE = paths.data_file(paths.LCB_PUBLIC_V5)
GOALPOSTS = ("abc361_f", "3466")
N = 8

# Programs the scripted teacher writes; the student's correct-sample count k for each (p = k / 8).
EVENS = "def f(xs):\n    return sum(x for x in xs if x % 2 == 0)"
EVENS_RESPACED = "def f(xs):\n\n    return sum(x for x in xs if x % 2 == 0)\n"
EASY = "def f(s):\n    return s[::-1]"
LIFT = "def f(rows):\n    return [sum(x for x in r if x % 2 == 0) for r in rows]"
CRASH = "def f(x):\n    return x // 0"
COPY = "def f(n):\n    return n + 1"
K_CORRECT = {EVENS: 4, EASY: 8, LIFT: 1, COPY: 4}
INPUTS = {EVENS: ["[1, 2, 3, 4]", "[]", "[6]", "[5, 7]", "[2, 2, 9]", "[10, -2]"],
          EASY: ['"abc"', '"xy"', '""', '"a"', '"racecar"', '"ab c"'],
          LIFT: ["[[1, 2], [4]]", "[]", "[[3]]", "[[2, 2], [6, 1]]", "[[8], [], [5]]", "[[0, 1, 2]]"],
          CRASH: ["1", "2", "3", "4", "5", "6"],
          COPY: ["1", "2", "3", "4", "5", "6"]}
INPUTS[EVENS_RESPACED] = INPUTS[EVENS]


def _proposal(snippet: str, message: str) -> str:
    inputs = "".join(f"```input\n{x}\n```\n" for x in INPUTS[snippet])
    return f"reasoning</think><answer>```python\n{snippet}\n```\n{inputs}```message\n{message}\n```</answer>"


class Script:
    """Teacher: the i-th lemma prompt gets LEMMAS[i]; lift prompts get LIFT. Student: k of n correct."""

    LEMMAS = ["evens", "easy", "copy", "crash", "evens_respaced"]

    def __init__(self):
        self.lemma_calls = 0
        self.student_prompts = []

    def __call__(self, prompt: str, j: int) -> str:
        if "harder" in prompt:  # a lift prompt
            return _proposal(LIFT, "Sum the even numbers of each row.")
        if "easier" in prompt:  # a lemma prompt
            which = self.LEMMAS[self.lemma_calls % len(self.LEMMAS)]
            self.lemma_calls += 1
            statement = prompt.split("Hard problem")[1][:2000]
            return {"evens": _proposal(EVENS, "Add up the even numbers."),
                    "easy": _proposal(EASY, "Reverse the string."),
                    "copy": _proposal(COPY, statement),
                    "crash": _proposal(CRASH, "Divide."),
                    "evens_respaced": _proposal(EVENS_RESPACED, "Add up the even numbers.")}[which]
        self.student_prompts.append(prompt)
        return self.student_answer(prompt, j)

    @staticmethod
    def student_answer(prompt: str, j: int) -> str:
        # Induction prompts show the message and pairs; pick the program by its message.
        for snippet, message in ((LIFT, "each row"), (EVENS, "Add up the even"), (EASY, "Reverse"), (COPY, "")):
            if message and message in prompt:
                k = K_CORRECT[snippet]
                answer = snippet if j < k else "def f(*a):\n    return None"
                return f"</think><answer>```python\n{answer}\n```</answer>"
        return "</think><answer>'never'</answer>"  # deduction / abduction: a well-formed wrong answer


def _block(tmp_path, **overrides):
    from gasp_jax.gasp.source import default_config

    c = default_config()
    c.goalposts.sources = (str(LCB_FILE),)
    c.goalposts.ids = GOALPOSTS
    c.lemmas_per_step = 5
    c.num_inputs = 6
    c.learnability_samples = N
    c.solve_batch = 6
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2, limits=Limits(cpu_s=4.0, wall_s=30.0), allow_unsafe=not CAN_ISOLATE) as box:
        yield box


def _ctx(source, policy, sandbox, step, run_config):
    from gasp_jax.selfplay.types import RolloutContext, Timers

    return RolloutContext(step=step, rng=np.random.default_rng(step), key=jax.random.key(step),
                          policies={"teacher": policy, "student": policy}, sandbox=sandbox, timers=Timers(),
                          config=run_config, source_config=ml_collections.ConfigDict())


def _run_config():
    from configs import common

    c = common.base(steps=1)
    c.prompts.template = "full"
    return c


def test_one_gasp_iteration_through_the_sandbox(tmp_path, sandbox):
    from gasp_jax.gasp.source import GaspSource
    from gasp_jax.selfplay.policy import ScriptedPolicy
    from gasp_jax.tokenizer import build_byte_tokenizer

    script = Script()
    policy = ScriptedPolicy(build_byte_tokenizer(), script, max_new_tokens=4096)
    source = GaspSource("gasp", _block(tmp_path), _run_config(), workdir=str(tmp_path))
    result = source.collect(_ctx(source, policy, sandbox, 0, _run_config()))

    rows = [json.loads(line) for line in (tmp_path / "curriculum.jsonl").read_text().splitlines()]
    assert all(list(r) == list(gasp.CURRICULUM_FIELDS) for r in rows)
    lemmas = [r for r in rows if r["stage"] == "lemma"]
    lifts = [r for r in rows if r["stage"] == "lift"]
    assert len(lemmas) == 5 and len(lifts) == 1
    by = {script_name: r for script_name, r in zip(Script.LEMMAS, lemmas)}
    # evens: p = 4/8 -> accepted with the lemma reward's peak.
    assert by["evens"]["valid"] and not by["evens"]["duplicate"] and by["evens"]["p"] == 0.5
    assert by["evens"]["accepted"] and by["evens"]["reward"] == pytest.approx(1.0) and by["evens"]["n"] == N
    # easy: p = 1 -> valid, outside the window.
    assert by["easy"]["p"] == 1.0 and not by["easy"]["accepted"] and by["easy"]["reward"] == -0.5
    # copy of the goalpost statement: counted and rejected as a duplicate, format penalty, never estimated.
    assert by["copy"]["valid"] and by["copy"]["duplicate"] and by["copy"]["reward"] == -1.0 and by["copy"]["p"] is None
    # crash: invalid.
    assert not by["crash"]["valid"] and by["crash"]["reward"] == -1.0
    # re-spaced copy of evens in the same batch: a near-duplicate.
    assert by["evens_respaced"]["duplicate"] and by["evens_respaced"]["reward"] == -1.0
    # Every lemma prompt shows its goalpost; the lift prompt shows only the lemma.
    for r in lemmas:
        statement = source.pool.by_id()[r["goalpost_id"]].statement
        assert statement.strip()[:200] in r["prompt"]
    (lift,) = lifts
    assert lift["parent_id"] == by["evens"]["id"] and lift["goalpost_id"] == by["evens"]["goalpost_id"]
    assert lift["axis"] == by["evens"]["axis"]
    assert EVENS in lift["prompt"]
    for gid in GOALPOSTS:
        assert source.pool.by_id()[gid].statement.strip()[:80] not in lift["prompt"]
    # lift: p = 1/8 -> accepted with r_lift(0.125).
    assert lift["p"] == 0.125 and lift["accepted"] and lift["reward"] == pytest.approx(gasp.lift_reward(0.125))

    # Buffer and lineage.
    assert [e["id"] for e in source.buffer.lineage(lift["id"])] == [by["evens"]["id"], lift["id"]]
    assert len(source.buffer) == 2 and len(source._index) == 2

    # Episodes: 6 teacher episodes in per-stage groups with the curriculum's rewards, then the student.
    propose = [e for e in result.episodes if e.role == "propose"]
    solve = [e for e in result.episodes if e.role == "solve"]
    assert [e.group for e in propose] == [("lemma", "propose")] * 5 + [("lift", "propose")]
    assert [e.reward for e in propose] == [r["reward"] for r in rows]
    assert len(solve) == 6
    assert {e.group for e in solve} <= {(k, "solve") for k in ("induction", "deduction", "abduction")}
    # Student-phase conversion: every presented task is one of the two accepted questions, in some type.
    assert {e.tags["kind"] for e in solve} <= set(tasks.KINDS)
    for e, prompt in zip(solve, script.student_prompts[-6:]):  # the solve phase's prompts, in order
        if e.tags["kind"] == "induction":
            assert "Add up the even numbers." in prompt or "Sum the even numbers of each row." in prompt
        else:
            assert EVENS in prompt or LIFT in prompt
            assert e.tags["outcome"] == "wrong" and e.reward == -0.5
    assert result.scalars["gasp/lemma/accept_rate"] == pytest.approx(0.2)
    assert result.scalars["gasp/lift/accept_rate"] == 1.0
    assert result.scalars["gasp/lemma/duplicate_rejections"] == 2.0
    assert result.scalars["gasp/dedup/goalpost_copies_total"] == 1.0
    assert "goalpost" in result.texts["gasp/lineages"] and "lift" in result.texts["gasp/lineages"]


def test_student_phase_presents_each_type_uniformly(tmp_path):
    from gasp_jax.gasp.source import GaspSource

    source = GaspSource("gasp", _block(tmp_path, solve_batch=3000), _run_config(), workdir=str(tmp_path))
    rec = {"snippet": EVENS, "imports": [], "inputs": INPUTS[EVENS], "outputs": ["6", "0", "6", "0", "4", "8"],
           "message": "m", "id": "q"}
    entry = {"id": "q", "stage": "lemma", "goalpost_id": "3466", "axis": "io", "parent_id": None, "step": 0,
             "p": 0.5, "record": rec}
    assert len(source.student_tasks([entry], np.random.default_rng(0))) == 1  # empty buffer: only the new one
    source.buffer.add(entry)
    batch = source.student_tasks([entry], np.random.default_rng(0))
    kinds = [k for k, _ in batch]
    counts = np.array([kinds.count(k) for k in ("induction", "deduction", "abduction")])
    assert counts.sum() == 3000 and (abs(counts - 1000) < 100).all()
    for kind, r in batch[:30]:
        if kind == "deduction":
            assert r["snippet"] == EVENS and r["input"] in INPUTS[EVENS]


def test_resume_keeps_curriculum_buffer_and_dedup_index(tmp_path, sandbox):
    from gasp_jax.gasp.source import GaspSource
    from gasp_jax.selfplay.policy import ScriptedPolicy
    from gasp_jax.tokenizer import build_byte_tokenizer

    policy = ScriptedPolicy(build_byte_tokenizer(), Script(), max_new_tokens=4096)
    source = GaspSource("gasp", _block(tmp_path), _run_config(), workdir=str(tmp_path))
    source.collect(_ctx(source, policy, sandbox, 0, _run_config()))
    state = json.loads(json.dumps(source.state_dict()))
    lines = (tmp_path / "curriculum.jsonl").read_text()
    source.collect(_ctx(source, policy, sandbox, 1, _run_config()))  # after the checkpoint: lost on resume
    assert len((tmp_path / "curriculum.jsonl").read_text()) > len(lines)

    resumed = GaspSource("gasp", _block(tmp_path), _run_config(), workdir=str(tmp_path))
    resumed.load_state_dict(state)
    assert (tmp_path / "curriculum.jsonl").read_text() == lines
    assert [e["id"] for e in resumed.buffer.entries()] == [e["id"] for e in source.buffer.entries()][:2]
    assert resumed._index.ids == [e["id"] for e in resumed.buffer.entries()]
    # The rebuilt index still rejects a copy of an accepted question.
    text = gasp.dedup.question_text(resumed.buffer.entries()[0]["record"])
    assert resumed._index.check(resumed._embedder.embed([text])).duplicate[0]


def test_goalposts_eval_and_dynamic_swap(tmp_path, sandbox):
    """The student solves goalpost abc333_a at evaluation: it is retired and the hardest reserve problem
    takes its place; the report, the change log and the TensorBoard scalars say so."""
    from gasp_jax.gasp.source import GaspSource
    from gasp_jax.selfplay.policy import ScriptedPolicy
    from gasp_jax.tokenizer import build_byte_tokenizer

    def respond(prompt, j):
        if "Concatenate N copies of the digit N" in prompt:
            return "```python\nN = int(input())\nprint(str(N) * N)\n```"
        if "A^B+B^A" in prompt:
            return "```python\nprint(0)\n```"
        return "no idea"  # lemmas: format errors

    policy = ScriptedPolicy(build_byte_tokenizer(), respond, max_new_tokens=4096)
    block = _block(tmp_path, lemmas_per_step=1)
    block.goalposts.ids = ("abc333_a", "abc320_a")
    block.goalposts.dynamic = True
    block.eval.every = 1
    block.eval.num_samples = 2
    block.eval.ks = "1,2"
    run_config = _run_config()
    run_config.steps = 3
    source = GaspSource("gasp", block, run_config, workdir=str(tmp_path))
    ctx = _ctx(source, policy, sandbox, 0, run_config)
    source.collect(ctx)
    # The one periodic evaluation runs after the update, counted in completed iterations (trainer hooks too).
    scalars = source.after_step(1, ctx)

    report = json.loads((tmp_path / "goalposts_eval" / "step_000001.json").read_text())
    assert report["solved"] == ["abc333_a"] and report["per_goalpost"]["abc320_a"]["correct"] == 0
    assert report["solved_union"] == ["abc333_a"] and report["solved_union_count"] == 1
    assert scalars["gasp/goalposts/solved_count"] == 1.0 and scalars["gasp/goalposts/solved_union"] == 1.0
    assert scalars["gasp/goalpost/abc333_a/pass_at_2"] == 1.0
    assert scalars["gasp/goalposts/pass_at_1"] == 0.5
    (change,) = [json.loads(line) for line in (tmp_path / "goalpost_changes.jsonl").read_text().splitlines()]
    assert change["retired"] == "abc333_a" and change["reason"].startswith("2/2 samples correct")
    promoted = source.pool.by_id()[change["promoted"]]
    assert promoted.problem.difficulty == "hard" and promoted.id not in block.goalposts.ids
    assert source.schedule.active == [promoted.id, "abc320_a"]
    # The next lemmas are written for the new goalpost set only; that iteration logs the change.
    result = source.collect(_ctx(source, policy, sandbox, 1, run_config))
    assert "retired `abc333_a`" in result.texts["gasp/goalpost_changes"]
    rows = [json.loads(line) for line in (tmp_path / "curriculum.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1 and rows[-1]["goalpost_id"] in (promoted.id, "abc320_a")
    # abc333_a is retired, so the next evaluation solves nothing; the union still counts it, across a resume.
    state = json.loads(json.dumps(source.state_dict()))
    resumed = GaspSource("gasp", block, run_config, workdir=str(tmp_path))
    resumed.load_state_dict(state)
    scalars = resumed.after_step(2, _ctx(resumed, policy, sandbox, 1, run_config))
    assert scalars["gasp/goalposts/solved_count"] == 0.0 and scalars["gasp/goalposts/solved_union"] == 1.0
    report = json.loads((tmp_path / "goalposts_eval" / "step_000002.json").read_text())
    assert report["solved"] == [] and report["solved_union"] == ["abc333_a"]


def test_sandbox_failures_never_score_the_teacher_and_n_is_the_judged_count(tmp_path, sandbox, monkeypatch):
    """A proposal whose validation hit a sandbox infrastructure error is dropped (no episode, counted), not
    scored -1; a pass rate averages the judged samples only, and `n` says how many those were."""
    from gasp_jax.gasp.source import GaspSource
    from gasp_jax.selfplay import phases
    from gasp_jax.selfplay.policy import ScriptedPolicy
    from gasp_jax.selfplay.types import Pending
    from gasp_jax.tokenizer import build_byte_tokenizer

    validate, judge = phases.validate, phases.judge

    def validate_with_infra_error(ctx, proposals, **kw):
        pending = validate(ctx, proposals, **kw)

        def finish():
            out = pending.result()
            for p in out:
                if "x // 0" in p.completion.text:
                    p.status, p.reason = "infra_error", "worker lost"
            return out
        return Pending(finish)

    def judge_losing_every_fourth(ctx, items):
        pending = judge(ctx, items)
        return Pending(lambda: [None if i % 4 == 0 else v for i, v in enumerate(pending.result())])

    monkeypatch.setattr(phases, "validate", validate_with_infra_error)
    monkeypatch.setattr(phases, "judge", judge_losing_every_fourth)
    policy = ScriptedPolicy(build_byte_tokenizer(), Script(), max_new_tokens=4096)
    source = GaspSource("gasp", _block(tmp_path), _run_config(), workdir=str(tmp_path))
    result = source.collect(_ctx(source, policy, sandbox, 0, _run_config()))
    rows = [json.loads(line) for line in (tmp_path / "curriculum.jsonl").read_text().splitlines()]
    by = dict(zip(Script.LEMMAS, rows))
    assert by["crash"]["reward"] is None and not by["crash"]["valid"]
    # evens: samples j = 0 and 4 of 8 lost; correct ones j = 1, 2, 3 of the 6 judged.
    assert by["evens"]["n"] == 6 and by["evens"]["p"] == 0.5 and by["evens"]["accepted"]
    propose = [e for e in result.episodes if e.role == "propose"]
    assert len(propose) == len(rows) - 1 and -1.0 in [e.reward for e in propose]  # copy: still penalised
    assert result.scalars["gasp/lemma/infra_errors"] == 1.0 and result.scalars["gasp/infra_errors_total"] == 1.0


def test_a_task_over_the_prompt_budget_is_invalid(tmp_path, sandbox):
    from gasp_jax.gasp.source import GaspSource
    from gasp_jax.selfplay.policy import ScriptedPolicy
    from gasp_jax.tokenizer import build_byte_tokenizer

    run_config = _run_config()
    run_config.prompts.token_budget = 300  # no induction prompt fits in 300 byte tokens
    policy = ScriptedPolicy(build_byte_tokenizer(), Script(), max_new_tokens=4096)
    source = GaspSource("gasp", _block(tmp_path, lemmas_per_step=2), run_config, workdir=str(tmp_path))
    result = source.collect(_ctx(source, policy, sandbox, 0, run_config))
    rows = [json.loads(line) for line in (tmp_path / "curriculum.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["lemma", "lemma"]  # nothing accepted, so no lift
    for r in rows:  # evens and easy validate in the sandbox, but their student prompt does not fit
        assert not r["valid"] and r["reward"] == -1.0 and r["p"] is None and r["n"] == 0 and not r["accepted"]
    assert result.scalars["gasp/lemma/too_long"] == 2.0 and len(source.buffer) == 0


def test_evicted_questions_leave_the_dedup_index_so_resume_equals_straight(tmp_path, sandbox):
    """With a one-question buffer the lift evicts its lemma at step 0. At step 1 the teacher writes the same
    lemma again: it is new again (straight and resumed alike), not a duplicate of an evicted question."""
    import shutil

    from gasp_jax.gasp.source import GaspSource
    from gasp_jax.selfplay.policy import ScriptedPolicy
    from gasp_jax.tokenizer import build_byte_tokenizer

    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    straight_dir.mkdir()
    resumed_dir.mkdir()
    block = _block(tmp_path, lemmas_per_step=1, buffer_max_size=1, solve_batch=1)
    policy = ScriptedPolicy(build_byte_tokenizer(), Script(), max_new_tokens=4096)
    straight = GaspSource("gasp", block, _run_config(), workdir=str(straight_dir))
    straight.collect(_ctx(straight, policy, sandbox, 0, _run_config()))
    assert [e["stage"] for e in straight.buffer.entries()] == ["lift"] and straight._index.ids == [straight.buffer.entries()[0]["id"]]
    state = json.loads(json.dumps(straight.state_dict()))
    shutil.copy(straight_dir / "curriculum.jsonl", resumed_dir / "curriculum.jsonl")
    fresh = lambda: ScriptedPolicy(build_byte_tokenizer(), Script(), max_new_tokens=4096)  # writes "evens" again
    straight.collect(_ctx(straight, fresh(), sandbox, 1, _run_config()))

    resumed = GaspSource("gasp", block, _run_config(), workdir=str(resumed_dir))
    resumed.load_state_dict(state)
    resumed.collect(_ctx(resumed, fresh(), sandbox, 1, _run_config()))
    read = lambda d: [json.loads(line) for line in (d / "curriculum.jsonl").read_text().splitlines()]
    assert read(straight_dir) == read(resumed_dir)
    step1 = [r for r in read(straight_dir) if r["step"] == 1]
    assert step1[0]["stage"] == "lemma" and not step1[0]["duplicate"] and step1[0]["accepted"]
    assert straight._index.ids == resumed._index.ids == [e["id"] for e in straight.buffer.entries()]


def test_policy_embedder_is_frozen_from_the_step_0_weights(tmp_path):
    """The trainer hands sources the step-0 weights (`ctx.initial_model`); the policy embedder is built from
    them, not from the (resumed, trained) weights the teacher samples with."""
    from gasp_jax import models
    from gasp_jax.gasp.source import GaspSource
    from gasp_jax.selfplay.policy import ScriptedPolicy
    from gasp_jax.selfplay.types import RolloutContext, Timers
    from gasp_jax.tokenizer import build_byte_tokenizer

    model = models.build_model(models.get_preset("tiny"))
    step0 = models.init_params(model, jax.random.key(0))
    trained = jax.tree.map(lambda x: x + 1.0, step0)
    teacher = ScriptedPolicy(build_byte_tokenizer(), lambda prompt, j: "", max_new_tokens=8)
    teacher.model, teacher.params = model, trained
    block = _block(tmp_path)
    block.dedup.embedder = "policy"
    source = GaspSource("gasp", block, _run_config(), workdir=str(tmp_path))
    ctx = RolloutContext(step=5, rng=np.random.default_rng(0), key=jax.random.key(0),
                         policies={"teacher": teacher, "student": teacher}, sandbox=None, timers=Timers(),
                         config=_run_config(), source_config=block, initial_model=lambda name: (model, step0))
    source._ensure_ready(ctx)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), source._embedder.params, step0)


def test_seed_tasks_are_validated_once_and_feed_the_student(tmp_path, sandbox):
    from gasp_jax.gasp.source import GaspSource
    from gasp_jax.selfplay.policy import ScriptedPolicy
    from gasp_jax.tokenizer import build_byte_tokenizer

    good = {"snippet": "def f(a):\n    return a * 2", "inputs": ["1", "2", "'x'", "[3]"], "outputs": ["2", "4", "'xx'", "[3, 3]"],
            "message": "Double it.", "imports": []}
    bad = {"snippet": "def f(a):\n    return a / 0", "inputs": ["1", "2", "3", "4"], "outputs": ["1", "2", "3", "4"],
           "message": "Broken.", "imports": []}
    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps(r) + "\n" for r in (good, bad)))
    policy = ScriptedPolicy(build_byte_tokenizer(), lambda prompt, j: "no idea", max_new_tokens=4096)
    source = GaspSource("gasp", _block(tmp_path, seed_file=str(seed), lemmas_per_step=1, solve_batch=3),
                        _run_config(), workdir=str(tmp_path))
    result = source.collect(_ctx(source, policy, sandbox, 0, _run_config()))
    assert [e["record"]["message"] for e in source.buffer.entries()] == ["Double it."]
    assert len(source._index) == 0  # seeds feed the student; they are not accepted questions
    solve = [e for e in result.episodes if e.role == "solve"]
    assert len(solve) == 3 and all(e.tags["outcome"] == "format_error" for e in solve)
    state = json.loads(json.dumps(source.state_dict()))
    resumed = GaspSource("gasp", _block(tmp_path, seed_file=str(seed)), _run_config(), workdir=str(tmp_path))
    resumed.load_state_dict(state)
    assert resumed._seeds_validated and len(resumed.buffer) == 1


def test_config_errors_at_startup_and_group_modes(tmp_path):
    from gasp_jax.gasp.source import GaspSource

    with pytest.raises(ValueError, match="unknown GASP axis 'f'"):
        GaspSource("gasp", _block(tmp_path, axes="io,f"), _run_config())
    for field, value in (("propose_groups", "per_goalpost"), ("solve_groups", "one"), ("lift_from", "all"),
                         ("student_kinds", "induction,proof")):
        with pytest.raises(ValueError, match=f"sources.gasp.{field}"):
            GaspSource("gasp", _block(tmp_path, **{field: value}), _run_config())
    block = _block(tmp_path)
    block.goalposts.ids = ("abc350_c",)  # a real problem without tests
    with pytest.raises(gasp.GoalpostError, match="abc350_c"):
        GaspSource("gasp", block, _run_config())
    per = GaspSource("gasp", _block(tmp_path), _run_config())
    assert (per._propose_group("lemma"), per._propose_group("lift")) == (("lemma", "propose"), ("lift", "propose"))
    assert per._solve_group("abduction") == ("abduction", "solve")
    shared = GaspSource("gasp", _block(tmp_path, propose_groups="shared", solve_groups="shared"), _run_config())
    assert shared._propose_group("lemma") == shared._propose_group("lift") == ("induction", "propose")
    assert shared._solve_group("abduction") == shared._solve_group("induction") == ("gasp", "solve")


def test_the_paper_preset_needs_a_goalposts_report():
    """The paper's goalposts are the problems no baseline solves, not every shipped problem: without a
    report (or explicit ids, or allow_all) the paper preset stops at start-up with one line saying how."""
    from configs import gasp as gasp_configs
    from gasp_jax.gasp.goalposts import GoalpostError
    from gasp_jax.selfplay import sources

    c = gasp_configs.get_config("paper")
    with pytest.raises(GoalpostError) as e:
        sources.build_sources(c)
    msg = str(e.value)
    assert "\n" not in msg and "sources.gasp.goalposts.report" in msg and "configs/lcb_goalposts.py" in msg
    c.sources.gasp.goalposts.ids = ("3466",)
    assert [g.id for g in sources.build_sources(c)["gasp"].pool.goalposts] == ["3466"]
