"""Entry point, configs, checkpointing, metrics and the byte tokenizer."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_flags  # noqa: F401  (config files import ml_collections)

from gasp_jax import main as gasp_main
from gasp_jax import models, sharding
from gasp_jax.checkpoint import Checkpointer
from gasp_jax.metrics import MetricWriter
from gasp_jax.tokenizer import build_byte_tokenizer
from tests.hf_utils import make_hf_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name, arg=None):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, "configs", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_demo_job_writes_tensorboard_and_checkpoint(tmp_path):
    config = load_config("tiny_cpu.py")
    with config.unlocked():
        config.job = "demo"
    summary = gasp_main.run_job(config, str(tmp_path))
    assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
    assert os.path.isdir(tmp_path / "checkpoints" / "0")
    lines = [json.loads(l) for l in open(tmp_path / "tb" / "metrics.jsonl")]
    assert lines and "demo/prompt_nll" in lines[0]
    assert 0 < summary["prompt_nll"] < 10


def test_unknown_job_is_rejected(tmp_path):
    config = load_config("tiny_cpu.py")
    with config.unlocked():
        config.job = "nope"
    with pytest.raises(ValueError, match="unknown job 'nope'"):
        gasp_main.run_job(config, str(tmp_path))


def test_checkpoint_round_trip_keeps_shardings(tmp_path):
    mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
    model = models.build_model(models.get_preset("tiny"), mesh=mesh)
    params = models.init_params(model, jax.random.key(0))
    ckpt = Checkpointer(str(tmp_path), max_to_keep=2, async_save=True)
    for step in (1, 2, 3):
        ckpt.save(step, {"params": jax.tree.map(lambda x: x * step, params)}, {"step": step})
    ckpt.wait()
    assert ckpt.latest_step() == 3
    assert sorted(os.listdir(tmp_path)) == ["2", "3"]  # keep-2 policy
    state, host, step = ckpt.restore({"params": params})
    assert step == 3 and host == {"step": 3}
    for new, old in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old) * 3)
        assert new.sharding.is_equivalent_to(old.sharding, old.ndim)
    ckpt.close()


def test_restore_from_empty_directory_returns_none(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "empty"))
    assert ckpt.restore({"x": jnp.zeros(3)}) is None
    ckpt.close()


def test_metric_writer(tmp_path):
    writer = MetricWriter(str(tmp_path))
    writer.write(5, {"a": 1.5, "b": np.float32(2)})
    writer.close()
    (line,) = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert line["step"] == 5 and line["a"] == 1.5 and line["b"] == 2.0


def test_byte_tokenizer_round_trips_and_loads_from_checkpoint_dir(tmp_path):
    tok = build_byte_tokenizer()
    text = "def f(x):\n    return {'é': x ** 2}  # ünïcode\t"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))  # one id per byte, id == byte value
    assert tok.decode(ids) == text
    assert tok.eos_token_id == 256 and tok.pad_token_id == 257 and len(tok) == 260
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # Saved next to a checkpoint, it is what load_tokenizer returns for that directory.
    make_hf_checkpoint(str(tmp_path), "qwen2")
    tok.save_pretrained(str(tmp_path))
    loaded = models.load_tokenizer(str(tmp_path))
    assert loaded.encode(text) == ids and loaded.eos_token_id == 256


def _toy_config(**overrides):
    config = load_config("tiny_cpu.py")
    with config.unlocked():
        config.update(dict(steps=6, prompts_per_step=8, samples_per_prompt=2, eval_every=3, log_every=3))
        config.checkpoint.every = 3
        config.rl.optimizer.warmup_steps = 2
        config.rl.optimizer.total_steps = 20  # one schedule for every run length below
        config.update(overrides)
    return config


def _final_state(ckpt_dir):
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(str(ckpt_dir)) as manager:
        step = manager.latest_step()
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, restored["state"]


@pytest.fixture
def compilation_cache(tmp_path):
    """The three runs below compile the same programs: share them through JAX's persistent cache."""
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def test_toy_rl_job_logs_checkpoints_and_resumes_exactly(tmp_path, compilation_cache):
    # Interrupted: 6 steps, then the same command with steps=9 resumes at 6.
    first = gasp_main.run_job(_toy_config(), str(tmp_path / "a"))
    assert first["start_step"] == 0
    resumed = gasp_main.run_job(_toy_config(steps=9), str(tmp_path / "a"))
    assert resumed["start_step"] == 6
    # Uninterrupted: 9 steps straight.
    gasp_main.run_job(_toy_config(steps=9), str(tmp_path / "b"))
    step_a, state_a = _final_state(tmp_path / "a" / "checkpoints")
    step_b, state_b = _final_state(tmp_path / "b" / "checkpoints")
    assert step_a == step_b == 9
    for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    rows = [json.loads(l) for l in open(tmp_path / "a" / "tb" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, 10))
    assert {"reward/mean", "rl/loss", "rl/grad_norm", "eval/greedy_solved_frac"} <= set().union(*rows)
    assert glob.glob(str(tmp_path / "a" / "tb" / "events.out.tfevents.*"))
