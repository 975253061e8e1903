"""Rollout layout: the sampler's weights are sharded over `tensor` only (replicated over data/fsdp), so
the compiled decode loop never all-gathers a weight; the trainer reshards into that layout once."""

import re

import jax
import numpy as np
import pytest

from gasp_jax import models, sampling
from gasp_jax import sharding as shd
from gasp_jax.sampling import core as sampling_core, sampler as static_sampler
from gasp_jax.selfplay.policy import reshard_for_rollout, rollout_model, tensor_only_rules

CFG = models.get_preset("tiny", max_position_embeddings=128)
_REAL_PROGRAM = sampling_core.program


def _compiled_decode_hlo(model, params, monkeypatch) -> str:
    """HLO text of the decode program `generate` compiles for `model` (its args captured on the call)."""
    captured = {}
    real = _REAL_PROGRAM

    def spy(build, m, **static):
        fn = real(build, m, **static)
        if build is not static_sampler.decode:
            return fn

        def call(*args):
            captured["args"] = args
            return fn(*args)

        captured["fn"] = fn
        return call

    monkeypatch.setattr(sampling_core, "program", spy)
    sampling.generate(model, params, [[3, 4, 5, 6]] * 8, max_new_tokens=4, rng=jax.random.key(0),
                      prompt_buckets=(8,), max_cache_length=16)
    return captured["fn"].lower(*captured["args"]).compile().as_text()


def _weight_gathers(hlo: str, weight_shapes: set) -> list[str]:
    """all-gather ops whose result has the full shape of a (per-layer) weight."""
    hits = []
    for line in hlo.splitlines():
        if "all-gather(" not in line and "all-gather-start(" not in line:
            continue
        m = re.search(r"=\s*\(?[a-z0-9]+\[([0-9,]*)\]", line)
        if m and tuple(int(d) for d in m.group(1).split(",") if d) in weight_shapes:
            hits.append(line.strip()[:160])
    return hits


def test_decode_in_the_rollout_layout_never_all_gathers_a_weight(monkeypatch):
    mesh = shd.make_mesh({"fsdp": 4, "tensor": 2})
    trainer_model = models.build_model(CFG, mesh=mesh)
    params = models.init_params(trainer_model, jax.random.key(0))
    per_layer = models.transformer.unstack_layer_params(jax.device_get(params), CFG.num_layers)
    weight_shapes = {tuple(x.shape) for x in jax.tree.leaves(per_layer) if np.ndim(x) >= 2}
    weight_shapes |= {tuple(x.shape) for x in jax.tree.leaves(params) if x.ndim >= 2}

    # The trainer's layout (embed over fsdp) makes the decode loop gather weights: the check can fail.
    assert _weight_gathers(_compiled_decode_hlo(trainer_model, params, monkeypatch), weight_shapes)

    sampler_model = rollout_model(trainer_model, tensor_only_rules(trainer_model.rules))
    rollout_params = reshard_for_rollout(params, sampler_model)
    for leaf in jax.tree.leaves(rollout_params):  # replicated over data/fsdp, split over tensor at most
        assert set(a for spec in leaf.sharding.spec if spec for a in ((spec,) if isinstance(spec, str) else spec)) <= {"tensor"}
    assert not _weight_gathers(_compiled_decode_hlo(sampler_model, rollout_params, monkeypatch), weight_shapes)
    # Same weights, same samples in either layout (the reshard is a copy, not a change).
    a = sampling.generate(trainer_model, params, [[3, 4, 5]], max_new_tokens=6, rng=jax.random.key(1),
                          prompt_buckets=(8,), max_cache_length=16, temperature=0.0)
    b = sampling.generate(sampler_model, rollout_params, [[3, 4, 5]], max_new_tokens=6, rng=jax.random.key(1),
                          prompt_buckets=(8,), max_cache_length=16, temperature=0.0)
    np.testing.assert_array_equal(a.tokens, b.tokens)


def test_tensor_only_rules_keep_activation_and_cache_rules():
    rules = dict(tensor_only_rules(shd.DEFAULT_RULES))
    assert rules["embed"] is None and rules["mlp"] == "tensor" and rules["vocab"] == "tensor"
    assert rules["cache_batch"] == ("data", "fsdp") and rules["act_batch"] == ("data", "fsdp")
