"""Model: logits parity with transformers, HF round trip, sharding, bf16, bad inputs."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from gasp_jax import models, sharding
from tests.hf_utils import make_hf_checkpoint, torch_logits

TOKENS = np.random.default_rng(0).integers(0, 320, size=(3, 17)).astype(np.int32)

PARITY_CASES = {
    # name: (family, overrides)
    "qwen2_gqa4_untied": ("qwen2", dict(num_key_value_heads=1)),
    "qwen2_mha_tied": ("qwen2", dict(num_key_value_heads=4, tie_word_embeddings=True)),
    "qwen3_gqa2_headdim": ("qwen3", dict(num_key_value_heads=2, head_dim=16)),
    "llama3_rope_scaling_odd_width": (
        "llama",
        dict(
            hidden_size=52, num_attention_heads=4, num_key_value_heads=1, head_dim=14,
            max_position_embeddings=1024, rope_theta=500000.0,
            rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                              original_max_position_embeddings=64),
        ),
    ),
    "llama_linear_rope_mha": ("llama", dict(num_key_value_heads=4, rope_scaling=dict(rope_type="linear", factor=2.0))),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_logits_match_transformers(tmp_path, case):
    family, overrides = PARITY_CASES[case]
    hf_model = make_hf_checkpoint(str(tmp_path), family, **overrides)
    model, params = models.load_hf(str(tmp_path))
    ours = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(TOKENS)))
    ref = torch_logits(hf_model, TOKENS)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_config_translation(tmp_path):
    make_hf_checkpoint(str(tmp_path), "qwen3", num_key_value_heads=2, head_dim=16)
    model, _ = models.load_hf(str(tmp_path))
    c = model.config
    assert (c.model_type, c.qk_norm, c.qkv_bias, c.head_dim, c.num_kv_heads) == ("qwen3", True, False, 16, 2)
    make_hf_checkpoint(str(tmp_path / "q2"), "qwen2")
    assert models.load_hf(str(tmp_path / "q2"))[0].config.qkv_bias


@pytest.mark.parametrize("family,overrides", [
    ("qwen2", {}),
    ("qwen3", dict(num_key_value_heads=2)),
    ("llama", dict(tie_word_embeddings=True, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=64))),
])
def test_save_hf_round_trip(tmp_path, family, overrides):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    make_hf_checkpoint(src, family, **overrides)
    model, params = models.load_hf(src)
    # Change the weights so the export is not a copy of the source files.
    params = jax.tree.map(lambda x: x * 1.01, params)
    models.save_hf(model, params, dst)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(dst, local_files_only=True).eval()
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(TOKENS)))
    np.testing.assert_allclose(torch_logits(reloaded, TOKENS), ours, atol=1e-4, rtol=0)
    # And our own loader reads the export back exactly.
    model2, params2 = models.load_hf(dst)
    assert model2.config == model.config
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)


def test_sharded_index_round_trip(tmp_path):
    src = str(tmp_path / "src")
    make_hf_checkpoint(src, "qwen2")
    model, params = models.load_hf(src)
    dst = str(tmp_path / "sharded")
    models.save_hf(model, params, dst, max_shard_bytes=40_000)
    index = json.load(open(os.path.join(dst, "model.safetensors.index.json")))
    assert len(set(index["weight_map"].values())) > 2
    _, params2 = models.load_hf(dst)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)
    # transformers reads our sharded layout too.
    hf = transformers.AutoModelForCausalLM.from_pretrained(dst, local_files_only=True).eval()
    np.testing.assert_allclose(
        torch_logits(hf, TOKENS), np.asarray(model.apply({"params": params}, jnp.asarray(TOKENS))), atol=1e-4
    )


def _mesh():
    return sharding.make_mesh({"fsdp": 4, "tensor": 2})


def test_sharded_forward_equals_unsharded(tmp_path):
    make_hf_checkpoint(str(tmp_path), "qwen2", num_attention_heads=4, num_key_value_heads=2)
    model, params = models.load_hf(str(tmp_path))
    mesh = _mesh()
    smodel, sparams = models.load_hf(str(tmp_path), mesh=mesh)
    ref = np.asarray(model.apply({"params": params}, jnp.asarray(TOKENS)))
    out = np.asarray(jax.jit(smodel.apply)({"params": sparams}, jnp.asarray(TOKENS)))
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # Params land where the rules say: embed over fsdp, heads/mlp/vocab over tensor.
    spec = lambda path: sparams_at(sparams, path).sharding.spec
    assert spec(("layers", "attn", "q_proj")) == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    assert spec(("layers", "mlp", "down_proj")) == jax.sharding.PartitionSpec(None, "tensor", "fsdp")
    assert spec(("lm_head",)) == jax.sharding.PartitionSpec("fsdp", "tensor")
    q = sparams_at(sparams, ("layers", "attn", "q_proj"))
    assert q.addressable_shards[0].data.shape == (3, 48 // 4, 4 // 2, 12)


def sparams_at(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def test_random_init_is_sharded_and_runs():
    mesh = _mesh()
    cfg = models.get_preset("tiny")
    model = models.build_model(cfg, mesh=mesh)
    params = models.init_params(model, jax.random.key(1))
    expected = models.param_shardings(model)
    jax.tree.map(lambda p, s: p.sharding.is_equivalent_to(s, p.ndim) or pytest.fail(str(s)), params, expected)
    assert models.count_params(params) == cfg.num_params
    logits = jax.jit(model.apply)({"params": params}, jnp.zeros((8, 4), jnp.int32))
    assert logits.shape == (8, 4, cfg.vocab_size) and bool(jnp.isfinite(logits).all())


def test_indivisible_dims_fall_back_to_replication():
    mesh = sharding.make_mesh({"fsdp": 2, "tensor": 4})
    spec = sharding.logical_to_mesh_spec(("embed", "kv_heads", "head_dim"), (64, 2, 16), mesh)
    assert spec == jax.sharding.PartitionSpec("fsdp", None, None)


def test_bf16_forward_close_to_fp32(tmp_path):
    hf = make_hf_checkpoint(str(tmp_path), "qwen2")
    model, params = models.load_hf(str(tmp_path), dtype="bfloat16")
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
    out = np.asarray(model.apply({"params": params}, jnp.asarray(TOKENS)))
    ref = torch_logits(hf, TOKENS)
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    assert (out.argmax(-1) == ref.argmax(-1)).mean() > 0.9


def test_remat_and_cache_paths_match_plain_forward(tmp_path):
    make_hf_checkpoint(str(tmp_path), "llama")
    model, params = models.load_hf(str(tmp_path), remat_policy="full")
    ref = model.apply({"params": params}, jnp.asarray(TOKENS))
    grad = jax.grad(lambda p: model.apply({"params": p}, jnp.asarray(TOKENS)).sum())(params)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grad))
    # Prefill 10 tokens into a cache, then decode the rest one at a time.
    cache = models.init_cache(model.config, TOKENS.shape[0], 32)
    logits, cache = model.apply({"params": params}, jnp.asarray(TOKENS[:, :10]), cache=cache, cache_index=0)
    steps = [logits]
    for t in range(10, TOKENS.shape[1]):
        pos = jnp.full((TOKENS.shape[0], 1), t, jnp.int32)
        step, cache = model.apply({"params": params}, jnp.asarray(TOKENS[:, t : t + 1]), pos, cache=cache, cache_index=t)
        steps.append(step)
    np.testing.assert_allclose(np.concatenate(steps, 1), np.asarray(ref), atol=1e-4)


# ------------------------------------------------------------------------------------------ bad input


def test_unsupported_model_type(tmp_path):
    make_hf_checkpoint(str(tmp_path), "qwen2")
    cfg = json.load(open(tmp_path / "config.json"))
    cfg["model_type"] = "gpt2"
    json.dump(cfg, open(tmp_path / "config.json", "w"))
    with pytest.raises(ValueError, match=r"gpt2.*qwen2, qwen3, llama"):
        models.load_hf(str(tmp_path))


def test_missing_safetensors(tmp_path):
    make_hf_checkpoint(str(tmp_path), "qwen2")
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(models.SafetensorsError, match="no model.safetensors"):
        models.load_hf(str(tmp_path))


def test_truncated_safetensors(tmp_path):
    make_hf_checkpoint(str(tmp_path), "qwen2")
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(models.SafetensorsError, match=r"model\.safetensors.*truncated"):
        models.load_hf(str(tmp_path))


def _rewrite(path, drop=None, reshape=None):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(path))
    if drop:
        del tensors[drop]
    if reshape:
        tensors[reshape] = tensors[reshape][:-1]
    save_file(tensors, str(path))


def test_missing_tensor_named(tmp_path):
    make_hf_checkpoint(str(tmp_path), "qwen2")
    _rewrite(tmp_path / "model.safetensors", drop="model.layers.1.mlp.up_proj.weight")
    with pytest.raises(models.SafetensorsError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*missing"):
        models.load_hf(str(tmp_path))


def test_wrong_shape_named(tmp_path):
    make_hf_checkpoint(str(tmp_path), "qwen2")
    _rewrite(tmp_path / "model.safetensors", reshape="model.layers.0.self_attn.k_proj.weight")
    with pytest.raises(models.SafetensorsError, match=r"model\.safetensors.*k_proj\.weight.*shape"):
        models.load_hf(str(tmp_path))


def test_index_pointing_to_missing_file(tmp_path):
    src = str(tmp_path / "src")
    make_hf_checkpoint(src, "qwen2")
    model, params = models.load_hf(src)
    dst = tmp_path / "sharded"
    models.save_hf(model, params, str(dst), max_shard_bytes=40_000)
    victim = sorted(p for p in os.listdir(dst) if p.endswith(".safetensors"))[1]
    os.remove(dst / victim)
    with pytest.raises(models.SafetensorsError, match=victim):
        models.load_hf(str(dst))
