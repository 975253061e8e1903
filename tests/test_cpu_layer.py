"""The fused CPU decoder layer (gasp_jax/kernels/decoder_layer.cc): equal to `transformer.DecoderLayer` with a
per-layer cache (prefill and per-row decode, with and without q/k/v bias and Qwen3 q/k norm, grouped heads,
widths that are not whole panels); skipped (fully masked) queries pass x through and write no slot; cache
writes clamp as dynamic_update_slice; its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gasp_jax import models, sharding
from gasp_jax.kernels import cpu_layer
from gasp_jax.models import transformer


def _config(**kw):
    base = dict(model_type="qwen2", vocab_size=64, hidden_size=48, intermediate_size=40, num_layers=1, num_heads=4,
                num_kv_heads=2, head_dim=12, qkv_bias=True, max_position_embeddings=64)
    return models.ModelConfig(**{**base, **kw})


def _layer(cfg, seed):
    """A DecoderLayer's params, with norm scales and biases away from their init (ones / zeros)."""
    layer = transformer.DecoderLayer(cfg, None, sharding.DEFAULT_RULES)
    x = jnp.zeros((1, 1, cfg.hidden_size))
    cache = (jnp.zeros((1, cfg.num_kv_heads, 4, cfg.head_dim)),) * 2
    params = nn.unbox(layer.init(jax.random.key(seed), (x, cache), jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1, 4), bool),
                        0, 0)["params"])
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [leaf + 0.1 * jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, keys)]
    return layer, jax.tree.unflatten(tree, leaves)


def _both(cfg, params, layer, x, positions, mask, cache, index):
    """(kernel, XLA) results: (out, k cache, v cache) each."""
    rope = transformer.rope_tables(positions, transformer.rope_inv_freq(cfg))
    weights = transformer.pack_layer(params, cfg)
    got = jax.jit(lambda *a: cpu_layer.decoder_layer(*a, num_heads=cfg.num_heads, eps=cfg.rms_norm_eps,
                                                     qk_norm=cfg.qk_norm))(
        x, weights, *rope, jnp.broadcast_to(jnp.asarray(index, jnp.int32), (x.shape[0],)), mask, *cache)
    (out, new_cache), _ = jax.jit(lambda p, *a: layer.apply({"params": p}, *a))(
        params, (x, cache), positions, mask, 0, index)
    return got, (out, *new_cache)


def _inputs(cfg, b, t, s, seed):
    r = np.random.default_rng(seed)
    x = jnp.asarray(r.standard_normal((b, t, cfg.hidden_size), np.float32))
    cache = tuple(jnp.asarray(r.standard_normal((b, cfg.num_kv_heads, s, cfg.head_dim), np.float32)) for _ in "kv")
    return x, cache


@pytest.mark.parametrize("bias,qk_norm", [(True, False), (False, False), (False, True)])
def test_prefill_and_decode_equal_the_xla_layer(kernel, bias, qk_norm):
    cfg = _config(qkv_bias=bias, qk_norm=qk_norm, model_type="qwen3" if qk_norm else "qwen2")
    layer, params = _layer(cfg, 0)
    b, t, s = 3, 5, 9
    # Prefill: T tokens from slot 0, causal, row 1 left-padded by two slots.
    x, cache = _inputs(cfg, b, t, s, 1)
    positions = jnp.broadcast_to(jnp.arange(t), (b, t)).at[1].set(jnp.maximum(jnp.arange(t) - 2, 0))
    kv = jnp.ones((b, s), bool).at[1, :2].set(False)
    mask = (jnp.arange(t)[:, None] >= jnp.arange(s))[None] & kv[:, None, :]
    got, want = _both(cfg, params, layer, x, positions, mask, cache, 0)
    real = np.ones((b, t), bool)
    real[1, :2] = False  # row 1's padding queries keep no slot: skipped (the next test)
    np.testing.assert_allclose(np.asarray(got[0])[real], np.asarray(want[0])[real], atol=2e-5, rtol=2e-5)
    for g, w, old in zip(got[1:], want[1:], cache):
        np.testing.assert_allclose(np.asarray(g)[:, :, 2:], np.asarray(w)[:, :, 2:], atol=2e-5, rtol=2e-5)
        np.testing.assert_allclose(np.asarray(g)[[0, 2], :, :2], np.asarray(w)[[0, 2], :, :2], atol=2e-5, rtol=2e-5)
        np.testing.assert_array_equal(g[1, :, :2], old[1, :, :2])
    # Decode: one token per row at its own slot, attending to its first index + 1 slots.
    x, cache = _inputs(cfg, b, 1, s, 2)
    index = jnp.asarray([0, 4, 8], jnp.int32)
    mask = (jnp.arange(s)[None, None, :] <= index[:, None, None])
    got, want = _both(cfg, params, layer, x, index[:, None] + 3, mask, cache, index)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-5, rtol=2e-5)


def test_a_fully_masked_query_passes_x_through_and_writes_nothing(kernel):
    """Row 1's second query keeps no slot (its own, 3, masked for every query): its output is its input, its
    cache slot keeps its old value, and the other queries get what they get with the XLA layer."""
    cfg = _config()
    layer, params = _layer(cfg, 3)
    x, cache = _inputs(cfg, 2, 2, 6, 4)
    mask = jnp.ones((2, 2, 6), bool).at[1, 1].set(False).at[1, :, 3].set(False)
    got, want = _both(cfg, params, layer, x, jnp.zeros((2, 2), jnp.int32), mask, cache, 2)
    np.testing.assert_array_equal(got[0][1, 1], x[1, 1])
    np.testing.assert_array_equal(got[1][1, :, 3], cache[0][1, :, 3])  # slot 2 + 1, not written
    np.testing.assert_array_equal(got[2][1, :, 3], cache[1][1, :, 3])
    np.testing.assert_allclose(got[0][0], want[0][0], atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(got[0][1, 0], want[0][1, 0], atol=2e-5, rtol=2e-5)


def test_cache_writes_clamp_like_dynamic_update_slice(kernel):
    """A write index past S - T writes the last T slots, as XLA's dynamic_update_slice."""
    cfg = _config()
    layer, params = _layer(cfg, 5)
    x, cache = _inputs(cfg, 2, 3, 7, 6)
    mask = jnp.ones((2, 3, 7), bool)
    got, want = _both(cfg, params, layer, x, jnp.zeros((2, 3), jnp.int32), mask, cache, 6)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-5, rtol=2e-5)
    assert not np.allclose(got[1][:, :, 4:], cache[0][:, :, 4:])
    np.testing.assert_array_equal(got[1][:, :, :4], cache[0][:, :, :4])


def test_errors(kernel):
    cfg = _config()
    _, params = _layer(cfg, 7)
    weights = transformer.pack_layer(params, cfg)
    x, cache = _inputs(cfg, 2, 1, 5, 8)
    rope = (jnp.zeros((2, 1, 6)),) * 2
    call = lambda **kw: cpu_layer.decoder_layer(
        kw.get("x", x), weights, *kw.get("rope", rope), jnp.zeros((2,), jnp.int32), kw.get("mask", jnp.ones((2, 1, 5))),
        *kw.get("cache", cache), num_heads=kw.get("heads", 4), eps=1e-6, qk_norm=False)
    call()  # the valid call runs
    with pytest.raises(ValueError, match="want mask"):
        call(mask=jnp.ones((2, 1, 4)))
    with pytest.raises(ValueError, match="dividing the heads"):
        call(heads=3)
    with pytest.raises(ValueError, match="float32 only"):
        call(x=x.astype(jnp.bfloat16))
    with pytest.raises(Exception, match="disagree in shape"):  # the kernel's own check: weights of another width
        call(heads=2)
