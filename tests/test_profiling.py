"""Observability: the profile window of a tiny AZR run lands where TensorBoard's profile plugin lists it,
MFU arithmetic, the recompilation counter, memory and goodput scalars, bad profile windows."""

import glob
import logging
import os
import time
import types

import jax
import numpy as np
import pytest

from gasp_jax import models, perf, profiling, rl
from gasp_jax.metrics import CompileTimer
from gasp_jax.selfplay import trainer
from gasp_jax.selfplay.types import Timers
from tests.test_selfplay_trainer import read_tb, tiny_config

QWEN7B = models.get_preset("qwen2.5-coder-7b")


# ------------------------------------------------------------------------------------------ arithmetic


def test_mfu_arithmetic_on_qwen7b():
    # Qwen2.5-Coder-7B: 28 layers, hidden 3584, MLP 18944, 28 query / 4 KV heads of 128, vocab 151936.
    per_layer = 3584 * 28 * 128 * 2 + 2 * 3584 * 4 * 128 + 3 * 3584 * 18944  # q, o; k, v; gate, up, down
    n = 28 * per_layer + 151936 * 3584  # + LM head
    assert perf.matmul_params(QWEN7B) == n == 7_069_827_072
    lens = [1024] * 4  # 4 sequences of 1024 tokens
    attention_fwd = 2 * 2 * 28 * 28 * 128 * 4 * (1024 * 1025 / 2)
    flops = perf.update_flops(QWEN7B, lens)
    assert flops.model == pytest.approx(6 * n * 4096 + 3 * attention_fwd, rel=1e-12)
    assert flops.remat == pytest.approx(2 * 151936 * 3584 * 4096, rel=1e-12)  # remat "none": the LM head only
    full = perf.update_flops(QWEN7B.replace(remat_policy="full"), lens)
    assert full.remat == pytest.approx(2 * 28 * per_layer * 4096 + attention_fwd + 2 * 151936 * 3584 * 4096, rel=1e-12)
    assert full.model == flops.model  # MFU does not depend on the remat policy; HFU does
    # 8 v5e chips (197 TFLOP/s bf16 each), 2 s for the step.
    peak = perf.device_peak("TPU v5 lite")
    assert peak.name == "TPU v5e"
    assert perf.utilisation(flops.model, 2.0, 8, peak.bf16_flops) == pytest.approx(flops.model / 2.0 / 8 / 197e12)
    assert 0.05 < perf.utilisation(flops.model, 2.0, 8, peak.bf16_flops) < 0.2


def test_matmul_params_match_the_initialised_tiny_model():
    mc = models.get_preset("tiny", tie_word_embeddings=False)
    shapes = jax.eval_shape(lambda: models.init_params(models.build_model(mc), jax.random.key(0)))
    names = {jax.tree_util.keystr(path): int(np.prod(x.shape)) for path, x in jax.tree_util.tree_leaves_with_path(shapes)}
    kernels = sum(n for name, n in names.items() if name.endswith("_proj']") or name == "['lm_head']")
    assert kernels == perf.matmul_params(mc)  # every projection (stacked over layers) + the LM head
    assert sum(names.values()) == mc.num_params  # the rest: embedding, norms, biases


def test_device_peaks_table():
    assert perf.device_peak("NVIDIA H100 80GB HBM3").name == "H100 SXM"
    assert perf.device_peak("NVIDIA H200").hbm_bytes_per_s == 4.8e12
    assert perf.device_peak("NVIDIA A100-SXM4-80GB").bf16_flops == 312e12
    assert perf.device_peak("TPU v4").name == "TPU v4"
    assert perf.device_peak("TPU v5").name == "TPU v5p"
    assert perf.device_peak("TPU v6 lite").name == "TPU v6e"
    assert perf.device_peak("cpu") is None
    # On CPU no MFU (no peak), but tokens/s and model FLOPs are there.
    out = profiling.update_perf(QWEN7B, [10, 20], 1.0)
    assert "perf/mfu" not in out and out["perf/update_tokens_per_s_per_device"] == 30 / jax.device_count()


def test_decode_bytes_lower_bound():
    mc = models.get_preset("tiny")
    kv = 2 * 2 * 2 * 16 * 4  # k and v, 2 layers, 2 KV heads, head_dim 16, fp32
    assert perf.kv_bytes_per_position(mc) == kv
    got = perf.decode_bytes_per_device(mc, weight_bytes=1000.0, decode_steps=10, kv_positions_read=80,
                                       num_devices=4, weight_shards=2)
    assert got == 10 * 1000 / 2 + 80 * kv / 4


# --------------------------------------------------------------------------------------- recompilation


def _update_batch(length_bucket):
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(1, 100, 4)) for _ in range(4)]
    comps = [list(rng.integers(1, 100, 3)) for _ in range(4)]
    return rl.make_batch(prompts, comps, [np.zeros(3)] * 4, rng.normal(size=4), length_buckets=(length_bucket,))


def test_recompilation_counter_zero_after_warmup_and_one_for_a_new_bucket(caplog):
    c = rl.default_config()
    c.logprob_chunk_size = 8
    model = models.build_model(models.get_preset("tiny", num_layers=1))  # one layer: a quicker compile
    update = rl.make_update_step(model, c)
    state = rl.create_train_state(model, c, rng=jax.random.key(0))
    watch = profiling.CompileWatch()
    try:
        batch16 = _update_batch(16)
        state, _ = update(state, batch16)  # warm-up: compiles
        assert watch.take()
        for _ in range(2):  # the same bucket: nothing new
            state, m = update(state, batch16)
            jax.block_until_ready(m)
        assert watch.take() == []
        state, m = update(state, _update_batch(32))  # a new length bucket
        jax.block_until_ready(m)
        programs = watch.take()
    finally:
        watch.close()
    assert len(programs) == 1, programs
    assert "update" in programs[0].name and "int32[4,32]" in programs[0].shapes  # the new bucket's tokens
    with caplog.at_level(logging.WARNING, logger="gasp_jax.profiling"):
        profiling.alarm_recompilation(programs, step=2, warmup=3)  # still warming up: quiet
        assert not caplog.records
        profiling.alarm_recompilation(programs, step=5, warmup=3)
    assert len(caplog.records) == 1
    assert programs[0].name in caplog.text and "int32[4,32]" in caplog.text and "step 5" in caplog.text


# ------------------------------------------------------------------------------------ goodput, timers


def test_phases_exclude_compilation_and_goodput_adds_up():
    timers = Timers()
    compile_timer = CompileTimer()
    t0 = time.perf_counter()
    with timers.phase("gasp_lemma"):
        with timers.phase("teacher_generate"):
            jax.jit(lambda x: x * 3 + 1)(np.ones((7, 13), np.float32)).block_until_ready()  # a new program
        with timers.phase("sandbox_wait"):
            time.sleep(0.02)
    with timers.phase("eval"):
        with timers.phase("student_generate"):
            time.sleep(0.01)
    wall, compiled = time.perf_counter() - t0, compile_timer.take()
    exclusive, inclusive = dict(timers.exclusive), timers.reset()
    assert compiled > 0
    assert set(exclusive) == {"gasp_lemma", "gasp_lemma>teacher_generate", "gasp_lemma>sandbox_wait", "eval",
                              "eval>student_generate"}
    # The generate phase's own time lost its compilation; its whole-phase time did not.
    assert exclusive["gasp_lemma>teacher_generate"] == pytest.approx(inclusive["teacher_generate"] - compiled, abs=1e-6)
    scalars = profiling.goodput(exclusive, wall, compiled)
    assert sum(scalars.values()) == pytest.approx(wall, rel=1e-9)
    assert scalars["time/goodput/evaluation_s"] >= 0.01  # generation inside evaluation is evaluation
    assert scalars["time/goodput/sandbox_s"] >= 0.02
    assert scalars["time/goodput/compile_s"] == compiled
    assert "other" in profiling.goodput_line(scalars)


def test_memory_scalars_have_host_rss_and_device_stats_when_reported():
    out = profiling.MemoryMonitor().scalars()
    assert out["memory/host_rss_bytes"] > 10 * 2**20
    fake = types.SimpleNamespace(device_kind="TPU v5 lite",
                                 memory_stats=lambda: {"bytes_in_use": 5, "peak_bytes_in_use": 15 * 2**30,
                                                       "bytes_limit": 16 * 2**30})
    monitor = profiling.MemoryMonitor([fake])
    out = monitor.scalars()
    assert out["memory/device_peak_bytes"] == 15 * 2**30 and out["memory/device_bytes_in_use"] == 5
    assert monitor.warned  # 15 of 16 GiB > 90%


# ------------------------------------------------------------------------------------- profile window


def test_bad_profile_windows_warn_once_and_never_raise(tmp_path, caplog):
    block = profiling.default_config()
    with caplog.at_level(logging.WARNING, logger="gasp_jax.profiling"):
        block.update(start_step=9, num_steps=5)
        profiling.ProfileWindow(block, logdir=str(tmp_path), first_step=0, last_step=10)
        assert len(caplog.records) == 1 and "beyond the run's last step 10" in caplog.text
        caplog.clear()
        block.update(start_step=3, num_steps=2)
        profiling.ProfileWindow(block, logdir=str(tmp_path), first_step=5, last_step=10)  # resumed at 5
        assert len(caplog.records) == 1 and "resume point" in caplog.text
        caplog.clear()
        # A trace already running: the window's start fails -> one warning, the run goes on.
        jax.profiler.start_trace(str(tmp_path / "outer"))
        try:
            block.update(start_step=1, num_steps=1)
            window = profiling.ProfileWindow(block, logdir=str(tmp_path / "inner"), first_step=0, last_step=3)
            window.begin(1)
            window.end(1)
            window.close()
        finally:
            jax.profiler.stop_trace()
        assert len(caplog.records) == 1 and "profiler did not start" in caplog.text
        assert not window.active


def _plugin_runs(logdir):
    """The profile runs TensorBoard's profile plugin lists under `logdir`, and each run's tools."""
    plugin = pytest.importorskip("xprof.profile_plugin")
    context = types.SimpleNamespace(logdir=str(logdir), data_provider=None,
                                    flags=types.SimpleNamespace(master_tpu_unsecure_channel=""))
    p = plugin.ProfilePlugin(context)
    return {run: p.run_tools_imp(run) for run in p.runs_imp()}


def test_tiny_azr_profile_window_writes_a_trace_the_plugin_lists(tmp_path):
    c = tiny_config(steps=2)
    c.profile.update(start_step=2, num_steps=1)
    trainer.train(c, str(tmp_path))
    traces = glob.glob(str(tmp_path / "tb" / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
    runs = _plugin_runs(tmp_path)
    assert len(runs) == 1
    (run, tools), = runs.items()
    assert run.startswith("tb/") and "trace_viewer" in " ".join(tools)

    tb = read_tb(tmp_path / "tb")["scalars"]
    for step in (1, 2):
        parts = sum(v for tag, vals in tb.items() if tag.startswith("time/goodput/") for s, v in vals if s == step)
        wall = dict(tb["time/iteration_s"])[step]
        assert parts == pytest.approx(wall, rel=1e-4)  # the goodput split adds up to the wall clock
    compilations = dict(tb["perf/compilations"])
    assert compilations[1] > 0
    for tag in ("perf/update_tokens_per_s_per_device", "perf/update_model_flops",
                "perf/generate_tokens_per_s_per_device", "perf/generate_hbm_bytes_per_s_per_device",
                "memory/host_rss_bytes"):
        assert all(v > 0 for _, v in tb[tag]), tag
    assert "perf/mfu" not in tb  # CPU: no peak, no MFU


def test_profile_calls_traces_the_chosen_sampler_calls_of_an_evaluation_job(tmp_path, caplog):
    block = profiling.default_config()
    block.update(start_step=2, num_steps=1)
    double = jax.jit(lambda x: 2 * x)
    fn = profiling.profile_calls(lambda x: np.asarray(double(x)), block, logdir=str(tmp_path / "tb"), name="lcb_eval")
    assert [int(fn(np.int32(i))) for i in range(3)] == [0, 2, 4]
    fn.close()
    assert len(glob.glob(str(tmp_path / "tb" / "plugins" / "profile" / "*" / "*.xplane.pb"))) == 1
    block.update(start_step=5)
    fn = profiling.profile_calls(lambda: None, block, logdir=str(tmp_path / "late"), name="lcb_eval")
    fn()
    with caplog.at_level(logging.WARNING, logger="gasp_jax.profiling"):
        fn.close()
    assert "made 1 sampler calls; nothing traced" in caplog.text
