"""AZR self-play: one iteration of AzrSource through the real sandbox, driven by a scripted policy.

The scripted teacher writes known proposals (valid, garbage, crashing, duplicate); the scripted student
answers each task correctly on exactly k of its n learnability samples, so every status, pass rate,
reward, buffer entry and advantage is known in advance.
"""

import jax
import ml_collections
import numpy as np
import pytest

from configs import common
from gasp_jax import models, rl
from gasp_jax.sandbox import Limits, Sandbox
from gasp_jax.selfplay import azr, trainer
from gasp_jax.selfplay.policy import ScriptedPolicy
from gasp_jax.selfplay.types import Episode, RolloutContext, Timers
from gasp_jax.tokenizer import build_byte_tokenizer
from tests.test_sandbox_support import CAN_ISOLATE

N = 4  # learnability samples
DOUBLE = "def f(x):\n    return x * 2"
REVERSE = "def f(s):\n    return s[::-1]"
CRASH = "def f(x):\n    return x // 0"


def _proposal(program: str, inp: str) -> str:
    return f"</think><answer>```python\n{program}\n```\n```input\n{inp}\n```</answer>"


class Teacher:
    """The i-th proposal of each kind, in order."""

    PLAN = {
        "deduction": [_proposal(DOUBLE, "3"), "no idea what to write"],
        "abduction": [_proposal(REVERSE, "'abc'"), _proposal(CRASH, "1")],
        # The program is given (drawn from the deduction/abduction buffers: only the identity seed there).
        "induction": ["</think><answer>" + "".join(f"```input\n{i}\n```\n" for i in (1, 2, 3, 4))
                      + "```message\necho\n```</answer>"] * 2,  # the second is a duplicate of the first
    }

    def __init__(self):
        self.count = {k: 0 for k in self.PLAN}

    def __call__(self, prompt: str, j: int) -> str:
        kind = prompt.split("\n")[0].split()[1]
        i = self.count[kind]
        self.count[kind] += 1
        return self.PLAN[kind][i]


def _answer(text: str) -> str:
    return f"</think><answer>{text}</answer>"


def student(prompt: str, j: int) -> str:
    """Sample j of a task: DOUBLE(3) right for j < 2, REVERSE always right, identity deduction right,
    identity abduction formatted but wrong, induction right for j < 1 and a format error otherwise."""
    if prompt.startswith("#deduction") and "x * 2" in prompt:
        return _answer("6" if j < 2 else "7")
    if prompt.startswith("#deduction"):
        return _answer('"Hello world"')
    if prompt.startswith("#abduction") and "s[::-1]" in prompt:
        return _answer("'abc'")
    if prompt.startswith("#abduction"):
        return _answer("'nope'")
    if prompt.startswith("#induction"):
        return _answer("def f(a):\n    return a") if j < 1 else "I give up"
    raise AssertionError(f"unexpected student prompt {prompt!r}")


def _config():
    c = common.base(steps=1)
    c.prompts.template = "compact"
    c.prompts.token_budget = 0
    c.validation.cpu_s = c.judge.cpu_s = 4.0
    block = c.sources.azr = azr.default_config()
    block.propose_per_kind, block.solve_per_kind, block.references = 2, 2, 1
    block.learnability_samples, block.induction_inputs = N, 4
    return c


@pytest.fixture(scope="module")
def iteration():
    config = _config()
    tok = build_byte_tokenizer()
    teacher, solver = ScriptedPolicy(tok, Teacher()), ScriptedPolicy(tok, student)
    source = azr.AzrSource("azr", config.sources.azr, config)
    with Sandbox(workers=2, limits=Limits(cpu_s=4.0, wall_s=30.0), allow_unsafe=not CAN_ISOLATE) as box:
        ctx = RolloutContext(step=0, rng=np.random.default_rng(0), key=jax.random.key(0),
                             policies={"teacher": teacher, "student": solver}, sandbox=box, timers=Timers(),
                             config=config, source_config=config.sources.azr)
        result = source.collect(ctx)
    return config, source, result, solver, ctx.timers


def test_buffers_take_the_new_valid_tasks_once(iteration):
    _, source, _, _, _ = iteration
    snippets = {k: [r["snippet"] for r in b.records] for k, b in source.buffers.items()}
    identity = "def f(a):\n    return a"
    assert snippets == {"deduction": [identity, DOUBLE], "abduction": [identity, REVERSE],
                        "induction": [identity, identity]}  # the seed and the new (inputs 1..4) task
    new_ded = source.buffers["deduction"].records[1]
    assert new_ded["output"] == "6" and new_ded["origin"] == "propose" and new_ded["step"] == 0
    assert source.buffers["induction"].records[1]["inputs"] == ["1", "2", "3", "4"]
    assert source.buffers["induction"].records[1]["outputs"] == ["1", "2", "3", "4"]
    # The state round-trips through JSON-able dicts (checkpoints).
    clone = azr.AzrSource("azr", source.settings, None)  # the typed settings in place of the block
    clone.load_state_dict(source.state_dict())
    assert clone.state_dict() == source.state_dict()


def test_proposal_statuses_and_proposer_rewards(iteration):
    _, _, result, _, _ = iteration
    propose = [e for e in result.episodes if e.role == "propose"]
    got = [(e.tags["kind"], e.tags["outcome"], e.reward) for e in propose]
    assert got == [
        ("deduction", "valid", 0.5),        # p = 2/4 -> 1 - p
        ("deduction", "format_error", -1.0),
        ("abduction", "valid", -0.5),       # p = 1: too easy
        ("abduction", "invalid", -1.0),     # crashes on its input
        ("induction", "valid", 0.75),       # p = 1/4
        ("induction", "duplicate", 0.75),   # valid, scored, not stored twice
    ]
    s = result.scalars
    assert s["deduction/propose/valid_frac"] == 0.5 and s["deduction/propose/format_error_frac"] == 0.5
    assert s["abduction/propose/invalid_frac"] == 0.5 and s["induction/propose/duplicate_frac"] == 0.5
    assert s["abduction/propose/non_literal_input_frac"] == 0.0  # its input is a literal; the program crashes
    assert s["deduction/propose/est_pass_rate_mean"] == 0.5
    np.testing.assert_allclose(sorted(result.histograms["induction/propose/est_pass_rate"]), [0.25, 0.25])
    assert "samples/deduction/propose" in result.texts and "samples/abduction/solve" in result.texts


def test_student_batch_new_first_and_solver_rewards(iteration):
    _, _, result, solver, _ = iteration
    # Calls: teacher proposals are not the student's; the student got one learnability call (n samples of
    # each accepted task: DOUBLE, REVERSE, 2 x induction) and then one solve call.
    (learn_prompts, n), (solve_prompts, one) = solver.calls
    assert n == N and one == 1 and len(learn_prompts) == 4 and len(solve_prompts) == 6
    assert "x * 2" in solve_prompts[0] and "s[::-1]" in solve_prompts[2] and "echo" in solve_prompts[4]
    expected = {"deduction": lambda p: 1.0, "induction": lambda p: 1.0,
                "abduction": lambda p: 1.0 if "s[::-1]" in p else -0.5}
    solve = [e for e in result.episodes if e.role == "solve"]
    assert [e.tags["kind"] for e in solve] == ["deduction"] * 2 + ["abduction"] * 2 + ["induction"] * 2
    for e, prompt in zip(solve, solve_prompts):
        assert e.reward == expected[e.tags["kind"]](prompt), (prompt, e.reward)
        assert e.group == (e.tags["kind"], "solve")
    assert result.scalars["deduction/solve/pass_rate"] == 1.0


def _trr(rewards, lengths):
    r, n = np.asarray(rewards, float), np.asarray(lengths, float)
    if r.max() == r.min():
        return np.zeros_like(r)
    mu = (n * r).sum() / n.sum()
    var = (n * (r - mu) ** 2).sum() / (n.sum() - 1)
    return (r - mu) / np.sqrt(var + 1e-8)


def test_advantages_whiten_each_type_role_group_and_the_update_runs(iteration):
    config, _, result, _, _ = iteration
    model = models.build_model(models.get_preset("tiny"))
    update = rl.make_update_step(model, config.rl)
    eps = result.episodes
    batch, stats = trainer.episodes_to_batch(eps, config.rl, update)
    assert stats["num_groups"] == 6.0
    for group in {e.group for e in eps}:
        idx = [i for i, e in enumerate(eps) if e.group == group]
        want = _trr([eps[i].reward for i in idx], [len(eps[i].tokens) for i in idx])
        np.testing.assert_allclose(batch.advantages[idx], want, rtol=1e-5, atol=1e-6)
    assert np.abs(batch.advantages[: len(eps)]).max() > 0  # some group has a learning signal
    state = rl.create_train_state(model, config.rl, rng=jax.random.key(0))
    state, metrics = update(state, batch)
    assert float(metrics["skipped"]) == 0.0 and int(state.step) == 1


def test_episode_routing_shared_and_separate():
    ep = lambda role: Episode(role=role, group=("deduction", role), prompt_tokens=np.ones(2, np.int32),
                              tokens=np.ones(1, np.int32), logprobs=np.zeros(1, np.float32), reward=0.0)
    eps = [ep("propose"), ep("solve"), ep("solve")]
    assert {k: len(v) for k, v in trainer.split_by_state(eps, False).items()} == {"policy": 3}
    assert {k: len(v) for k, v in trainer.split_by_state(eps, True).items()} == {"teacher": 1, "student": 2}
    with pytest.raises(ValueError, match="role"):
        ep("judge")
