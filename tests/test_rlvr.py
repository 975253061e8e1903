"""RLVR on LiveCodeBench: the LCB source on real problems with the real grader, driven by a scripted
policy whose answers are known (official O1-Mini solutions, a wrong program, no code), so every reward
and group is exact; problem order, zero-signal handling and resume; the GASP + RLVR mix rule."""

import json

import jax
import numpy as np
import pytest

from gasp_jax.data import paths
from gasp_jax.sandbox import Limits, Sandbox
from tests.test_sandbox_support import CAN_ISOLATE

selfplay = pytest.importorskip("gasp_jax.selfplay")

LCB_FILE = paths.data_file(paths.LCB_PUBLIC_V5)
OFFICIAL = paths.data_file(paths.LCB_O1_SUBMISSION)
# Official O1-Mini passes: a LeetCode (functional) and an AtCoder (stdin) problem, both before 2024-08-01.
PROBLEMS = ("2777", "abc301_a")


@pytest.fixture(scope="module")
def sb():
    with Sandbox(workers=2, limits=Limits(cpu_s=6.0, wall_s=60.0), allow_unsafe=not CAN_ISOLATE) as box:
        yield box


@pytest.fixture(scope="module")
def official():
    return {r["question_id"]: r for r in paths.read_json(OFFICIAL)}


def _run_config(**lcb):
    from configs import rlvr

    c = rlvr.tiny()
    c.init.warmstart.enabled = False
    c.sampling.max_cache_length = 0  # the scripted policy has no KV cache: no prompt-length bound
    s = c.sources.lcb
    s.prompt_style = "auto"  # LCB's own chat prompt (the tiny preset's "question" fits the tiny context)
    s.data.problem_ids = PROBLEMS
    s.problems_per_step = 2
    s.samples_per_problem = 3
    s.max_prompt_tokens = 0
    s.limits.cpu_s = 6.0
    for key, value in lcb.items():
        node, *path = key.split(".")
        target = s[node] if path else s
        target[path[0] if path else node] = value
    return c


def _ctx(source, policy, sandbox, step, run_config):
    from gasp_jax.selfplay.types import RolloutContext, Timers

    return RolloutContext(step=step, rng=np.random.default_rng(step), key=jax.random.key(step),
                          policies={"teacher": policy, "student": policy}, sandbox=sandbox, timers=Timers(),
                          config=run_config, source_config=run_config.sources[source.name])


class Script:
    """Sample 0: the official solution in a fenced block; 1: a fenced wrong program; 2: prose, no code."""

    def __init__(self, official, problems):
        self.official = official
        self.statements = {pid: p.statement[:200] for pid, p in problems.items()}
        self.fn = {pid: p.fn_name for pid, p in problems.items()}

    def __call__(self, prompt: str, j: int) -> str:
        pid = next(p for p, text in self.statements.items() if text in prompt)
        if j == 0:
            return f"Here it is:\n```python\n{self.official[pid]['code_list'][0]}\n```"
        if j == 1:
            return "```python\nprint(42)\n```" if pid.startswith("abc") else (
                "```python\nclass Solution:\n    def %s(self, *a):\n        return -1\n```" % self.fn[pid])
        return "I am not sure how to solve this."


def test_lcb_source_rewards_and_groups_exact(sb, official):
    from gasp_jax.rlvr.source import LcbSource
    from gasp_jax.selfplay.policy import ScriptedPolicy
    from gasp_jax.tokenizer import build_byte_tokenizer

    config = _run_config()
    source = LcbSource("lcb", config.sources.lcb, config)
    assert sorted(source.problems) == sorted(PROBLEMS)
    script = Script(official, source.problems)
    policy = ScriptedPolicy(build_byte_tokenizer(), script, max_new_tokens=4096)
    result = source.collect(_ctx(source, policy, sb, 0, config))

    (prompts, n), = policy.calls
    assert n == 3 and len(prompts) == 2
    assert all(p.startswith("<|im_start|>system\nYou are an expert Python programmer") for p in prompts)  # LCB chat prompt
    by_problem = {}
    for e in result.episodes:
        by_problem.setdefault(e.tags["task_id"], []).append(e)
    assert sorted(by_problem) == sorted(PROBLEMS)
    for pid, eps in by_problem.items():
        assert [e.reward for e in eps] == [1.0, 0.0, 0.0]
        assert [e.tags["outcome"] for e in eps] == ["correct", "wrong", "format_error"]
        assert {e.group for e in eps} == {("lcb", pid)} and all(e.role == "solve" for e in eps)
        assert eps[1].tags["status"] == "WA" and eps[2].tags["status"] in ("CE", "RE", "WA")
    assert result.scalars["lcb/solve/pass_rate"] == pytest.approx(1 / 3)
    assert result.scalars["lcb/solve/count"] == 6.0
    assert result.scalars["lcb/no_code_frac"] == pytest.approx(1 / 3)
    assert result.scalars["lcb/constant_group_frac"] == 0.0 and result.scalars["lcb/solved_problem_frac"] == 1.0
    assert result.scalars["lcb/grade_programs_per_s"] > 0

    # The episodes go through the trainer's batch builder with GRPO groups: advantages are exact.
    from gasp_jax import rl
    from gasp_jax.selfplay.trainer import episodes_to_batch

    class _Update:
        batch_divisor = 1

    config.rl.advantage.estimator = "grpo"
    batch, stats = episodes_to_batch(result.episodes, config.rl, _Update())
    adv = np.asarray(batch.advantages)[:6]
    r = np.array([1.0, 0.0, 0.0])
    expected = (r - r.mean()) / (r.std(ddof=1) + config.rl.advantage.grpo_eps)
    np.testing.assert_allclose(adv, np.concatenate([expected, expected]), rtol=1e-5)
    assert stats["num_groups"] == 2.0 and isinstance(batch, rl.Batch)

    # group_by="source": one TRR++-style group for all LCB episodes.
    config = _run_config(group_by="source")
    source = LcbSource("lcb", config.sources.lcb, config)
    result = source.collect(_ctx(source, ScriptedPolicy(build_byte_tokenizer(), script, max_new_tokens=4096), sb, 0, config))
    assert {e.group for e in result.episodes} == {("lcb", "solve")}

    # A prompt that cannot fit the sampler's KV cache with its completion is left out, with the reason.
    config = _run_config()
    config.sampling.max_cache_length = 1280  # both prompts are longer than 1280 - 64 new tokens
    source = LcbSource("lcb", config.sources.lcb, config)
    with pytest.raises(ValueError, match=r"no usable problem \(prompt longer than 1216 tokens"):
        source.collect(_ctx(source, policy, sb, 0, config))


def _constant_grades(source, chosen, passed):
    from gasp_jax.evaluation.grading import SampleGrade
    from gasp_jax.selfplay.types import Completion

    n = source.settings.samples_per_problem
    comp = Completion("x", np.array([1], np.int32), np.array([2, 3], np.int32), np.zeros(2, np.float32), False, 1.0)
    grades = [[SampleGrade("PASS" if passed[p] else "WA", passed[p], None if passed[p] else -2)] * n for p in chosen]
    return source.episodes(chosen, [comp] * (len(chosen) * n), ["code"] * (len(chosen) * n), grades, n)


def test_problem_order_zero_signal_and_resume():
    from gasp_jax.rlvr.source import LcbSource

    config = _run_config()
    s = config.sources.lcb
    s.data.problem_ids = ()
    s.data.max_problems = 6  # the six earliest problems of the training window
    s.problems_per_step = 2
    s.zero_signal.after = 2
    s.zero_signal.policy = "skip"
    source = LcbSource("lcb", s, config)
    ids = sorted(source.problems)
    assert len(ids) == 6 and all(p.date.isoformat() < "2024-08-01" for p in source.problems.values())
    rng = np.random.default_rng(0)
    epoch0 = source.order(0)
    assert sorted(epoch0) == ids and source.order(0) == epoch0 and source.order(1) != epoch0
    first, _ = source.choose(rng)
    assert first == epoch0[:2]
    # Two constant visits of first[0] (always solved) make it dead; first[1] has signal (revives).
    for _ in range(2):
        _constant_grades(source, [first[0]], {first[0]: True})
    eps, scalars = _constant_grades(source, [first[1]], {first[1]: False})
    assert source.dead(first[0]) and not source.dead(first[1]) and scalars["lcb/dead_problems"] == 1.0
    state = json.loads(json.dumps(source.state_dict()))

    seen = []
    for _ in range(5):  # walks into epoch 1: the dead problem is never drawn again
        chosen, passed_over = source.choose(rng)
        seen += chosen
    assert first[0] not in seen[-6:] and source.epoch >= 1

    resumed = LcbSource("lcb", s, config)
    resumed.load_state_dict(state)
    again = [p for _ in range(5) for p in resumed.choose(np.random.default_rng(0))[0]]
    assert again == seen  # a resumed source draws what the straight one drew (skip policy: rng unused)

    s.zero_signal.policy = "keep"
    keep = LcbSource("lcb", s, config)
    keep.load_state_dict(state)
    assert first[0] in [p for _ in range(5) for p in keep.choose(rng)[0]]  # the rest of epoch 0 + all of epoch 1

    with pytest.raises(ValueError, match="sources.lcb.group_by"):
        bad = _run_config()
        bad.sources.lcb.group_by = "prompt"
        LcbSource("lcb", bad.sources.lcb, bad)


def test_lcb_source_temperature_unset_is_the_runs_and_zero_is_greedy_so_refused(sb, official):
    from gasp_jax import overrides
    from gasp_jax.rlvr.source import LcbSource
    from gasp_jax.selfplay.policy import ScriptedPolicy
    from gasp_jax.tokenizer import build_byte_tokenizer

    config = _run_config(problems_per_step=1, samples_per_problem=1)
    assert config.sources.lcb.temperature is None and config.sources.lcb.max_new_tokens is None
    for value, expected in ((None, 0.7), (0.3, 0.3)):  # None: the policy's (the run's) temperature
        config.sources.lcb.temperature = value
        source = LcbSource("lcb", config.sources.lcb, config)
        policy = ScriptedPolicy(build_byte_tokenizer(), Script(official, source.problems), temperature=0.7)
        episodes = source.collect(_ctx(source, policy, sb, 0, config)).episodes
        assert episodes and {e.temperature for e in episodes} == {expected}, value
    overrides.apply_overrides(config, {"sources.lcb.temperature": 1, "sources.lcb.max_new_tokens": 64}, where="test")
    settings = LcbSource("lcb", config.sources.lcb, config).settings
    assert (settings.temperature, settings.max_new_tokens) == (1.0, 64)  # typed overrides of the placeholders
    config.sources.lcb.max_new_tokens = 0  # what configs wrote for "the run's value": still that
    assert LcbSource("lcb", config.sources.lcb, config).settings.max_new_tokens is None
    config.sources.lcb.temperature = 0.0  # greedy, as everywhere (it used to mean the run's value): refused
    with pytest.raises(ValueError, match=r"^sources.lcb.temperature: must be > 0 \(0 is greedy") as e:
        LcbSource("lcb", config.sources.lcb, config)
    assert "\n" not in str(e.value)


def test_gasp_rlvr_mix_rule():
    from configs import gasp_rlvr
    from gasp_jax.selfplay.sources import is_due

    c = gasp_rlvr.get_config("tiny")
    assert c.mix.mode == "ratio" and {"gasp", "lcb"} <= set(c.sources.keys())
    assert all(is_due(c.sources.gasp, t) and is_due(c.sources.lcb, t) for t in range(6))
    for share, samples in ((0.5, 4), (0.75, 2), (0.2, 1)):
        c = gasp_rlvr.get_config(f"tiny,mix.lcb_share={share},sources.lcb.samples_per_problem={samples}")
        lcb_episodes = c.sources.lcb.problems_per_step * samples
        gasp_solve = c.sources.gasp.solve_batch
        # LCB's share of the student episodes is the requested one, to one problem's group.
        assert abs(lcb_episodes - share / (1 - share) * gasp_solve) <= samples / 2
    c = gasp_rlvr.get_config("tiny,mix.mode=alternate")
    due = [(is_due(c.sources.gasp, t), is_due(c.sources.lcb, t)) for t in range(6)]
    assert due == [(True, False), (False, True)] * 3
    # Each source keeps its own advantage groups (the same estimator whitens them separately).
    assert c.sources.lcb.group_by == "problem" and c.hooks == ("gasp_jax.evaluation.periodic:PeriodicEval",)
    with pytest.raises(ValueError, match="mix.mode"):
        gasp_rlvr.get_config("tiny,mix.mode=sometimes")


def test_periodic_eval_counts_completed_iterations_and_keeps_the_solved_union(tmp_path, sb):
    """The one periodic evaluation (every method's hook; GASP's goalpost evaluation is the same code):
    after every `every`-th completed iteration and the last; `solved_union` never decreases, across a resume."""
    from configs import common, rlvr
    from gasp_jax.evaluation import periodic
    from gasp_jax.selfplay import sources
    from gasp_jax.selfplay.policy import ScriptedPolicy
    from gasp_jax.selfplay.types import RolloutContext, Timers
    from gasp_jax.tokenizer import build_byte_tokenizer

    assert [s for s in range(1, 8) if periodic.is_due(3, s, 7)] == [3, 6, 7] and not periodic.is_due(0, 3, 7)
    c = rlvr.add_evaluation(common.base(steps=4))
    c.eval.every, c.eval.prompt_style, c.eval.lcb.enabled = 2, "question", False
    g = c.eval.goalposts
    g.select.ids, g.n, g.ks = ("abc333_a", "abc320_a"), 2, (1, 2)
    solves = {"abc333_a": True}

    def respond(prompt, j):
        if solves["abc333_a"] and "Concatenate N copies of the digit N" in prompt:
            return "```python\nN = int(input())\nprint(str(N) * N)\n```"
        return "no idea"

    policy = ScriptedPolicy(build_byte_tokenizer(), respond, max_new_tokens=4096)
    ctx = lambda: RolloutContext(step=0, rng=np.random.default_rng(0), key=jax.random.key(0),
                                 policies={"teacher": policy, "student": policy}, sandbox=sb, timers=Timers(),
                                 config=c, source_config=c.eval)
    hook = sources.resolve(periodic.HOOK)(c, str(tmp_path))  # the trainer's hook: GASP's measure passed in
    assert hook.after_step(1, ctx()) == {}
    at2 = hook.after_step(2, ctx())
    solves["abc333_a"] = False
    resumed = sources.resolve(periodic.HOOK)(c, str(tmp_path))
    resumed.load_state_dict(json.loads(json.dumps(hook.state_dict())))
    at4 = resumed.after_step(4, ctx())
    assert at2["eval/goalposts/solved_count"] == 1.0 and at2["eval/goalposts/solved_union"] == 1.0
    assert at4["eval/goalposts/solved_count"] == 0.0 and at4["eval/goalposts/solved_union"] == 1.0
    history = [json.loads(line) for line in (tmp_path / "eval" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2, 4]
    assert history[-1]["goalposts"]["solved"] == [] and history[-1]["goalposts"]["solved_union"] == ["abc333_a"]
    report = json.loads((tmp_path / "eval" / "goalposts" / "step_000004.json").read_text())
    assert report["solved_union"] == ["abc333_a"] and report["solved_union_count"] == 1
