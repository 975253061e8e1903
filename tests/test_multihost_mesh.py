"""Meshes from configs (single and multi-slice), mismatches naming both sides, and the start-up sharding check."""

import jax
import ml_collections
import pytest

from gasp_jax import models, runtime, sharding


def test_mesh_mismatch_names_mesh_and_devices():
    with pytest.raises(sharding.MeshError, match=r"mesh \{'data': 1, 'fsdp': 3, 'tensor': 1\} needs 3 devices, but this run has 8 cpu devices \(1 process"):
        sharding.make_mesh({"fsdp": 3})
    with pytest.raises(sharding.MeshError, match=r"mesh \{'fsdp': 3, 'tensor': -1\} does not divide 8 cpu devices"):
        sharding.make_mesh({"fsdp": 3, "tensor": -1})
    with pytest.raises(sharding.MeshError, match=r"mesh.dcn \{'data': 2\} needs 2 slices, but this run has 8 cpu devices .* on 1 processes"):
        sharding.make_mesh({"fsdp": -1}, dcn_shape={"data": 2})


def test_mesh_from_config_single_slice_dcn_and_unknown_axis():
    cfg = ml_collections.ConfigDict(dict(mesh=dict(data=1, fsdp=-1, tensor=2, dcn=dict(data=1))))
    assert dict(runtime.mesh_from_config(cfg).shape) == {"data": 1, "fsdp": 4, "tensor": 2}
    cfg.mesh.fdsp = 2
    with pytest.raises(sharding.MeshError, match="unknown axes \\['fdsp'\\]"):
        runtime.mesh_from_config(cfg)


def test_replicated_params_are_reported_and_oversized_params_fail(caplog):
    config = models.get_preset("qwen2.5-coder-1.5b")  # 12 q heads, 2 kv heads
    boxed = models.abstract_params(models.build_model(config))
    placements = {p.path: p for p in sharding.param_placements(boxed, {"data": 1, "fsdp": 1, "tensor": 8})}
    kv = placements["layers/attn/k_proj"]
    assert kv.spec == jax.sharding.PartitionSpec(None, None, None, None) and kv.shards == 1
    assert kv.dropped == ("kv_heads=2: tensor=8 does not divide it",)
    assert placements["layers/attn/q_proj"].dropped == ("q_heads=12: tensor=8 does not divide it",)
    assert placements["layers/mlp/up_proj"].shards == 8 and not placements["layers/mlp/up_proj"].dropped
    rows = list(placements.values())
    per_device = sharding.check_param_placements(rows, device_bytes=None)
    assert "layers/attn/k_proj" in caplog.text and "does not divide" in caplog.text
    total = sum(r.bytes_per_device * r.shards for r in rows)
    assert per_device < total
    assert sharding.check_param_placements(rows, device_bytes=4 * per_device, max_fraction=0.5) == per_device
    with pytest.raises(sharding.ShardingError, match=r"params need .* per device, more than 50% .*largest per device: layers/attn/o_proj .* spec P\(None, None, None, None\)"):
        sharding.check_param_placements(rows, device_bytes=per_device, max_fraction=0.5)


def test_startup_check_runs_before_weights_exist():
    mesh = sharding.make_mesh({"fsdp": 8})
    cfg = ml_collections.ConfigDict(dict(preset="qwen2.5-coder-7b", dtype="bfloat16", param_dtype="float32"))
    # 7.6B fp32 params on 8 devices is ~3.5 GiB each: a 4 GiB device fails the 50% rule before any init.
    with pytest.raises(sharding.ShardingError, match="more than 50%"):
        runtime.model_from_config(cfg, mesh, sharding.DEFAULT_RULES, jax.random.key(0), {"device_memory_gb": 4})


def test_memory_estimate_scales_with_the_mesh():
    config = models.get_preset("qwen2.5-coder-7b", dtype="bfloat16", param_dtype="float32")
    boxed = models.abstract_params(models.build_model(config))
    kw = dict(train_rows=128, train_length=1024, sample_rows=256, cache_length=1024)
    small = sharding.estimate_memory(boxed, config, {"data": 1, "fsdp": 8, "tensor": 1}, **kw)
    big = sharding.estimate_memory(boxed, config, {"data": 1, "fsdp": 32, "tensor": 1}, **kw)
    assert small["params"] == pytest.approx(4 * big["params"], rel=0.01)
    assert small["optimizer"] == 2 * small["params"] and small["grads"] == small["params"]
    assert small["kv_cache"] == 4 * big["kv_cache"]
    # 2 * layers * rows * length * kv_heads * head_dim * 2 bytes, rows split 8 ways.
    assert small["kv_cache"] == 2 * 28 * 256 * 1024 * 4 * 128 * 2 // 8
    # The rollout copy is dropped before the update: resident state + the larger of the two phases.
    update, rollout = small["grads"] + small["activations"], small["rollout_params"] + small["kv_cache"]
    assert small["total"] == small["params"] + small["optimizer"] + max(update, rollout)


def test_model_from_config_checks_then_loads_a_checkpoint(tmp_path, caplog):
    from tests.hf_utils import make_hf_checkpoint

    make_hf_checkpoint(str(tmp_path), "qwen2", num_attention_heads=4, num_key_value_heads=2)
    mesh = sharding.make_mesh({"fsdp": 2, "tensor": 4})
    cfg = ml_collections.ConfigDict(dict(hf_path=str(tmp_path), dtype="float32", param_dtype=""))
    model, params = runtime.model_from_config(cfg, mesh, sharding.DEFAULT_RULES, jax.random.key(0))
    assert model.mesh is mesh and models.count_params(params) == model.config.num_params
    assert "kv_heads=2: tensor=4 does not divide it" in caplog.text  # reported before the weights were read
