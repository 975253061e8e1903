"""The trainer end to end on CPU: the tiny AZR preset's TensorBoard tags, resume == straight run,
SIGTERM saves and stops, bad configs stop with one line."""

import json
import os
import signal
import struct

import jax
import ml_collections
import numpy as np
import pytest

from configs import azr as azr_config
from configs import common
from gasp_jax.checkpoint import Checkpointer
from gasp_jax.jobs import selfplay as selfplay_job
from gasp_jax.selfplay import phases, trainer
from gasp_jax.selfplay.types import Episode, SourceResult
from tests.test_sandbox_support import CAN_ISOLATE

KINDS = ("deduction", "abduction", "induction")


def read_tb(logdir):
    """{"scalars": {tag: [(step, value)]}, "tags": set of every tag} from tensorboardX event files."""
    from tensorboardX.proto import event_pb2

    scalars, tags = {}, set()
    for name in sorted(os.listdir(logdir)):
        if not name.startswith("events.out.tfevents"):
            continue
        with open(os.path.join(logdir, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):  # TFRecord framing: u64 length, u32 crc, payload, u32 crc
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 16 + n
            for v in event.summary.value:
                tags.add(v.tag)
                if v.HasField("simple_value"):
                    scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
    return {"scalars": scalars, "tags": tags}


def tiny_config(**overrides):
    """configs/azr.py:tiny on a random-init tiny model (no warm start): every shape small."""
    c = azr_config.get_config("tiny")
    c.init.warmstart.enabled = False
    c.model.preset = "tiny"
    c.sampling.max_new_tokens = 16
    c.sampling.prompt_buckets = (256, 512)
    c.prompts.token_budget = 256
    c.sources.azr.update(propose_per_kind=2, solve_per_kind=2, learnability_samples=2)
    c.sandbox.allow_unsafe = not CAN_ISOLATE
    c.rl.logprob_chunk_size = 64
    for k, v in overrides.items():
        common.apply_overrides(c, {k: v}, where="test")
    return c


def test_tiny_preset_two_iterations_writes_the_promised_tags(tmp_path):
    c = tiny_config(steps=2)
    c.log.text_every = 1
    summary = trainer.train(c, str(tmp_path))
    assert summary["final_step"] == 2 and summary["start_step"] == 0
    tb = read_tb(tmp_path / "tb")
    for kind in KINDS:
        for role in ("propose", "solve"):
            for metric in ("reward_mean", "completion_len_mean", "count"):
                assert [s for s, _ in tb["scalars"][f"{kind}/{role}/{metric}"]] == [1, 2]
        assert f"{kind}/solve/pass_rate" in tb["scalars"]
        for status in ("valid", "format_error", "invalid", "duplicate"):
            assert f"{kind}/propose/{status}_frac" in tb["scalars"]
    for tag in ("policy/rl/loss", "policy/rl/grad_norm", "policy/rl/sampler_logp_abs_diff_max",
                "policy/advantage/zero_adv_frac", "time/teacher_generate_s", "time/student_generate_s",
                "time/update_s", "time/reshard_s", "time/compile_s", "time/iteration_s",
                "time/sandbox_unhidden_frac", "perf/tokens_per_s", "buffer/deduction/size"):
        assert tag in tb["scalars"], tag
    assert {"config", "samples/deduction/propose", "samples/induction/solve"} <= {t.split("/text_summary")[0] for t in tb["tags"]}
    # A random-init model writes garbage: format errors, counted, never an exception.
    assert tb["scalars"]["deduction/propose/format_error_frac"][0][1] == 1.0
    rows = [json.loads(line) for line in open(tmp_path / "tb" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["time/compile_s"] > 0
    assert json.load(open(tmp_path / "config.json"))["sources"]["azr"]["type"] == "azr"
    assert json.load(open(tmp_path / "summary.json"))["final_step"] == 2


# ------------------------------------------------------------------------------------ resume == straight


class ParitySource:
    """A test source with a learning signal for a random-init model: reward = fraction of even token ids
    in the completion. Both roles sample (teacher: "propose" prompts, student: "solve"); its state (a
    running reward sum) is checkpointed like a buffer."""

    PROMPTS = ("count to five", "even numbers please", "hello", "abc")

    def __init__(self, name, block, run_config):
        self.name, self.block = name, block
        self.reward_sum = 0.0

    def collect(self, ctx):
        episodes = []
        for role in ("propose", "solve"):
            completions = phases.generate(ctx, role, list(self.PROMPTS), num_samples=2)
            for c in completions:
                reward = float(np.mean(c.tokens % 2 == 0))
                episodes.append(Episode.from_completion(c, role=role, group=("parity", role), reward=reward,
                                                        kind="parity"))
        self.reward_sum += sum(e.reward for e in episodes)
        return SourceResult(episodes=episodes, scalars={"parity/reward_sum": self.reward_sum})

    def state_dict(self):
        return {"reward_sum": self.reward_sum}

    def load_state_dict(self, state):
        self.reward_sum = state["reward_sum"]


class SigtermAfter:
    """Hook: sends this process SIGTERM after iteration `run_config.test_sigterm_after`."""

    def __init__(self, run_config, workdir):
        self.at = int(run_config.test_sigterm_after)

    def after_step(self, step, ctx):
        if step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return {}


def parity_config(steps, sigterm_after=0):
    c = common.base(steps=steps)
    c.model.preset = "tiny"
    c.sampling.update(max_new_tokens=8, prompt_buckets=(32,), max_cache_length=48)
    c.rl.optimizer.learning_rate = 3e-3
    c.rl.logprob_chunk_size = 16
    c.sources.parity = ml_collections.ConfigDict(dict(type="tests.test_selfplay_trainer:ParitySource"))
    c.checkpoint.update(every=3, async_save=False)
    c.sandbox.update(workers=1, allow_unsafe=not CAN_ISOLATE)
    if sigterm_after:
        c.hooks = ("tests.test_selfplay_trainer:SigtermAfter",)
        c.test_sigterm_after = sigterm_after
    return c


def _learned(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "tb", "metrics.jsonl"))]
    # Timings, throughput, compile counts and memory differ between runs; everything learned must not.
    keep = lambda r: {k: v for k, v in r.items() if not k.startswith(("time/", "perf/", "memory/")) and k != "time"}
    return {r["step"]: keep(r) for r in rows}


@pytest.mark.slow  # three trainer runs, 8 iterations (~50 s of CPU)
def test_resume_after_sigterm_equals_a_straight_run(tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    trainer.train(parity_config(4), straight)
    first = trainer.train(parity_config(4, sigterm_after=2), resumed)
    assert first.get("preempted") and first["final_step"] == 2  # saved on SIGTERM, off the every-3 schedule
    second = trainer.train(parity_config(4), resumed)
    assert second["start_step"] == 2 and second["final_step"] == 4

    a, b = _learned(straight), _learned(resumed)
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        assert a[step] == b[step], step
    assert a[4]["policy/rl/grad_norm"] > 0 and a[4]["policy/advantage/zero_adv_frac"] < 1  # it learned
    ckpt_a = Checkpointer(os.path.join(straight, "checkpoints"), async_save=False)
    ckpt_b = Checkpointer(os.path.join(resumed, "checkpoints"), async_save=False)
    run = trainer.setup(parity_config(4), straight)
    target = run.checkpoint_target()
    sa, ha, _ = ckpt_a.restore(target, 4)
    sb, hb, _ = ckpt_b.restore(target, 4)
    assert ha["sources"] == hb["sources"] and int(sa["states"]["policy"].step) == 4
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(sa["states"]), jax.device_get(sb["states"]))
    for c in (ckpt_a, ckpt_b, run.checkpointer):
        c.close()


@pytest.mark.slow  # two models, two update compilations
def test_separate_teacher_and_student_on_disjoint_devices(tmp_path):
    c = parity_config(1)
    c.rl.separate_teacher_student = True
    c.roles.placement = "split"
    summary = trainer.train(c, str(tmp_path))
    assert summary["final_step"] == 1
    run = trainer.setup(c, str(tmp_path))
    meshes = {name: set(slot.model.mesh.devices.flat) for name, slot in run.slots.items()}
    assert sorted(meshes) == ["student", "teacher"] and not meshes["teacher"] & meshes["student"]
    assert len(meshes["teacher"]) == len(meshes["student"]) == jax.device_count() // 2
    restored, host, _ = run.checkpointer.restore(run.checkpoint_target(), 1)
    assert host["run"]["states"] == ["student", "teacher"]
    for name, state in restored["states"].items():
        assert int(state.step) == 1  # each model took its own update (propose -> teacher, solve -> student)
        leaf = jax.tree.leaves(state.params)[0]
        assert set(leaf.sharding.device_set) <= meshes[name]
    teacher, student = (jax.device_get(restored["states"][n].params) for n in ("teacher", "student"))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(teacher), jax.tree.leaves(student)))
    rows = [json.loads(line) for line in open(tmp_path / "tb" / "metrics.jsonl")]
    assert "teacher/rl/loss" in rows[0] and "student/rl/loss" in rows[0]
    run.checkpointer.close()


@pytest.mark.slow  # GASP through the trainer: sampler, sandbox, mini-batched updates, two goalpost evaluations
def test_gasp_evaluates_after_each_update_and_trains_in_mini_batches(tmp_path):
    from configs import gasp as gasp_config

    c = gasp_config.get_config("tiny")
    c.init.warmstart.enabled = False  # a random-init tiny model: garbage lemmas, the pipeline still runs
    c.model.preset = "tiny"
    c.steps = 2
    c.sampling.max_new_tokens = 16
    c.sampling.max_cache_length = 1280  # byte-level prompts of the random-init model are longer than BPE ones
    c.sources.gasp.update(lemmas_per_step=4, learnability_samples=2, solve_batch=4)
    c.sources.gasp.eval.update(every=1, num_samples=1, ks="1", max_new_tokens=8)
    c.sources.gasp.dedup.update(embedder="policy", max_tokens=64)  # built from Run.initial_model's step-0 weights
    c.sandbox.allow_unsafe = not CAN_ISOLATE
    c.rl.logprob_chunk_size = 64
    c.rl.ppo_mini_batch_size = 4
    summary = trainer.train(c, str(tmp_path))
    assert summary["final_step"] == 2
    rows = [json.loads(line) for line in open(tmp_path / "tb" / "metrics.jsonl")]
    for row in rows:  # the goalposts-solved evaluation ran after each update, with its running union
        assert row["gasp/goalposts/solved_union"] >= row["gasp/goalposts/solved_count"] >= 0
        assert row["policy/rl/optimizer_steps"] == -(-row["episodes"] // 4)  # 4-row mini-batches
    for step in (1, 2):
        report = json.loads((tmp_path / "goalposts_eval" / f"step_{step:06d}.json").read_text())
        assert report["step"] == step and set(report["solved"]) <= set(report["solved_union"])


# ----------------------------------------------------------------------------------------- bad configs


def test_bad_arguments_and_values_stop_with_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"unknown argument 'sources.azr.referencez'") as e:
        azr_config.get_config("tiny,sources.azr.referencez=3")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        azr_config.get_config("huge")
    bad = tiny_config()
    bad.sampling.temperature = 0.0
    with pytest.raises(SystemExit, match=r"^error: config: sampling.temperature: must be > 0") as e:
        selfplay_job.run(bad, str(tmp_path))
    assert "\n" not in str(e.value)
    bad = tiny_config()
    bad.sources.azr.kinds = "deduction,sorting"
    with pytest.raises(SystemExit, match="sources.azr.kinds: unknown task type"):
        selfplay_job.run(bad, str(tmp_path))


def test_a_checkpoint_of_another_model_shape_is_refused(tmp_path):
    run = trainer.setup(tiny_config(), str(tmp_path))
    saved = {"run": dict(run.metadata())}
    trainer.check_compatible(saved, run)  # its own metadata fits
    other = dict(saved["run"], model=dict(saved["run"]["model"], hidden_size=128))
    with pytest.raises(trainer.ConfigError, match=r"different model \(hidden_size: checkpoint 128, config 64\)"):
        trainer.check_compatible({"run": other}, run)
    with pytest.raises(trainer.ConfigError, match="train states"):
        trainer.check_compatible({"run": dict(saved["run"], states=["student", "teacher"])}, run)
    run.checkpointer.close()
