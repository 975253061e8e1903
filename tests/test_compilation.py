"""Programs compile in a run's first iteration, never later; the persistent cache's "auto" directory.

The tiny GASP preset (the main command) with its fixed rollout shapes, the quick warm start of its own
model and its periodic goalposts evaluation moved to iteration 2: every XLA program the later
iterations and the evaluation run (sampling, update, reshard) is built in iteration 1.
"""

from __future__ import annotations

import json

import pytest

from gasp_jax import runtime
from gasp_jax.protocol.experiment import load_config_file
from tests.test_presets import quick_warmstart


def _metrics(workdir) -> dict[int, dict]:
    rows = [json.loads(line) for line in (workdir / "tb" / "metrics.jsonl").read_text().splitlines()]
    return {int(r["step"]): r for r in rows}


def test_tiny_gasp_run_compiles_nothing_after_its_first_iteration(tmp_path, warmstart_cache):
    from gasp_jax import main
    from tests.test_sandbox_support import CAN_ISOLATE

    c = load_config_file("configs/gasp.py:tiny,steps=3")
    c.init.warmstart = quick_warmstart(c.init.warmstart, warmstart_cache)
    c.sandbox.allow_unsafe = not CAN_ISOLATE
    c.sources.gasp.eval.every = 2  # the goalposts evaluation (its own prompts and max_new_tokens) at step 2
    c.checkpoint.every = 10  # the last step's save only
    c.sampling.max_slots = 8  # the 8-device test mesh's one admit size: 4 admit programs, not 12
    summary = main.run_job(c, str(tmp_path))
    assert summary["final_step"] == 3
    metrics = _metrics(tmp_path)
    assert sorted(metrics) == [1, 2, 3]
    assert "gasp/goalposts/pass_at_1" in metrics[2] and "gasp/goalposts/pass_at_1" not in metrics[1]  # evaluated at 2
    assert metrics[1]["perf/compilations"] > 0 and metrics[1]["perf/sampling_programs_compiled"] > 0
    for step in (2, 3):
        assert metrics[step]["perf/compilations"] == 0, (step, metrics[step]["perf/compilations"])
        assert metrics[step]["perf/sampling_programs_compiled"] == 0


def test_fixed_shapes_calls_after_the_first_compile_nothing_on_a_one_device_mesh():
    """Calls with other row counts, prompt buckets and max_new_tokens reuse the first call's programs.
    On a 1-device mesh (the CPU main command) the slot state made by the init / decode programs and the
    one made by an admit differed in sharding, so every admit compiled again for the first refill of a
    call; the key on the mesh fixes it."""
    import jax
    import numpy as np

    from gasp_jax import models, profiling, sharding as shd
    from gasp_jax.sampling import core, engine

    mesh = shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    model = models.build_model(models.get_preset("tiny", num_layers=1, max_position_embeddings=256), mesh=mesh,
                               rules=shd.DEFAULT_RULES)
    params = jax.device_put(models.init_params(model, jax.random.key(0)), core.param_shardings(model))

    def call(lengths, max_new_tokens, num_samples=1):
        requests = [engine.Request(prompt=list(np.arange(n) % 50 + 3), max_new_tokens=max_new_tokens,
                                   num_samples=num_samples, temperature=0.5, eos_ids=(2,)) for n in lengths]
        return engine.run_requests(model, params, requests, rng=jax.random.key(len(lengths)), max_slots=8,
                                   prompt_buckets=(32, 128), max_cache_length=256, fixed_shapes=True)

    watch = profiling.CompileWatch()
    try:
        out, stats = call([20] * 5, 8)
        assert stats.slots == 8 and stats.cache_len == 256 and watch.take()
        for lengths, n, samples in (([100], 8, 1), ([20, 20, 20, 20], 16, 1), ([100] * 3, 4, 2), ([20], 120, 4)):
            out, stats = call(lengths, n, samples)
            assert stats.slots == 8 and stats.cache_len == 256
            assert out.lengths.shape == (len(lengths) * samples,) and (out.lengths > 0).all()
            assert [(p.name, p.shapes) for p in watch.take()] == [], (lengths, n, samples)
    finally:
        watch.close()


def test_fixed_shapes_needs_a_slot_count():
    import jax

    from gasp_jax import models
    from gasp_jax.sampling import engine

    model = models.build_model(models.get_preset("tiny", num_layers=1))
    with pytest.raises(ValueError, match="fixed_shapes needs max_slots or kv_cache_tokens"):
        engine.run_requests(model, None, [engine.Request(prompt=[3, 4], max_new_tokens=2)], rng=jax.random.key(0),
                            fixed_shapes=True)


@pytest.mark.parametrize("value, env, expected", [
    ("", {}, ""),
    ("auto", {"GASP_JAX_CACHE": "/c"}, "/c/xla"),
    ("auto", {"GASP_JAX_CACHE": "/c", "GASP_JAX_COMPILATION_CACHE": "off"}, ""),
    ("auto", {"GASP_JAX_CACHE": "/c", "GASP_JAX_COMPILATION_CACHE": "/x"}, "/x"),
    ("gs://bucket/xla", {"GASP_JAX_COMPILATION_CACHE": "off"}, "gs://bucket/xla"),  # an explicit path stays
])
def test_compilation_cache_dir_resolution(monkeypatch, value, env, expected):
    for name in ("GASP_JAX_CACHE", "GASP_JAX_COMPILATION_CACHE"):
        monkeypatch.delenv(name, raising=False)
    for name, v in env.items():
        monkeypatch.setenv(name, v)
    assert runtime.compilation_cache_dir(value) == expected


@pytest.mark.parametrize("spec", ["configs/gasp.py:tiny", "configs/azr.py:tiny", "configs/tiny_cpu.py",
                                  "configs/warmstart.py"])
def test_cpu_presets_use_the_persistent_cache_and_the_suite_does_not(spec, monkeypatch):
    assert load_config_file(spec).runtime.compilation_cache_dir == "auto"
    monkeypatch.delenv("GASP_JAX_COMPILATION_CACHE")  # conftest turns "auto" off for every test
    monkeypatch.setenv("GASP_JAX_CACHE", "/cache")
    assert runtime.compilation_cache_dir("auto") == "/cache/xla"
