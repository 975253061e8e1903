"""The CPU attention kernel (gasp_jax/kernels/attention.cc): equal to `transformer.attend` for decode and
prefill shapes, grouped heads and odd head sizes; reads only the slots the mask keeps (the result does not
change with masked slots appended or with other rows); its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gasp_jax.kernels import cpu_attention
from gasp_jax.models.transformer import attend


def _inputs(seed, b, t, h, k, s, d, keep=0.7):
    r = np.random.default_rng(seed)
    q, keys, vals = (r.standard_normal(shape, np.float32) for shape in ((b, t, h, d), (b, k, s, d), (b, k, s, d)))
    return q, keys, vals, r.random((b, t, s)) < keep


@pytest.mark.parametrize("b,t,h,k,s,d", [
    (16, 1, 8, 2, 384, 64),  # a decode step at the peer benchmark's 8x512 shape
    (2, 64, 8, 2, 64, 64),  # a prefill
    (3, 5, 4, 4, 17, 8),  # no grouping, head size below one vector
    (2, 3, 6, 2, 5, 20),  # head size not a multiple of 16
    (5, 1, 4, 1, 40, 16),  # one kv head for all queries
    (1, 1, 2, 1, 1, 32),  # one slot
])
def test_equals_masked_attention(kernel, b, t, h, k, s, d):
    q, keys, vals, mask = _inputs(0, b, t, h, k, s, d)
    mask[0, 0] = False  # a query with no valid slot: the mean of v, as the masked softmax gives
    want = np.asarray(attend(jnp.asarray(q), keys, vals, jnp.asarray(mask)))
    got = np.asarray(jax.jit(cpu_attention.attention)(q, keys, vals, mask))
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=2e-5)
    np.testing.assert_allclose(got[0, 0], np.repeat(vals[0].mean(axis=1), h // k, axis=0), atol=2e-6)


def test_reads_only_the_kept_slots(kernel):
    """Appending masked slots (a longer cache window) or changing what masked slots hold, or another row,
    changes no bit of a row's result."""
    q, keys, vals, mask = _inputs(1, 4, 1, 8, 2, 48, 64)
    fn = jax.jit(cpu_attention.attention)
    base = np.asarray(fn(q, keys, vals, mask))
    longer = lambda x, fill: np.concatenate([x, np.full(x.shape[:2] + (80,) + x.shape[3:], fill, np.float32)], 2)
    wider = np.asarray(fn(q, longer(keys, 1e30), longer(vals, np.nan), np.concatenate(
        [mask, np.zeros((4, 1, 80), bool)], -1)))
    np.testing.assert_array_equal(wider, base)
    scrambled_k, scrambled_v = keys.copy(), vals.copy()
    scrambled_k[:, :, ~mask[0, 0]] = 7.0  # row 0's masked slots, in every row
    scrambled_v[1:] = -vals[1:]  # the other rows' values
    out = np.asarray(fn(q, scrambled_k, scrambled_v, mask))
    np.testing.assert_array_equal(out[0], base[0])


def test_under_vmap(kernel):
    q, keys, vals, mask = _inputs(2, 2, 3, 4, 2, 9, 16)
    stack = lambda x: np.stack([x, x[::-1]])
    got = jax.vmap(cpu_attention.attention)(stack(q), stack(keys), stack(vals), stack(mask))
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(cpu_attention.attention(
        q[::-1], keys[::-1], vals[::-1], mask[::-1])), atol=0)


def test_bad_inputs_say_what_is_wanted(kernel):
    q, keys, vals, mask = _inputs(3, 2, 1, 6, 4, 8, 16)
    with pytest.raises(ValueError, match="K dividing H"):
        cpu_attention.attention(q, keys, vals, mask)
    q, keys, vals, mask = _inputs(3, 2, 1, 8, 4, 8, 16)
    with pytest.raises(ValueError, match=r"want \[B, T, S\]"):
        cpu_attention.attention(q, keys, vals, mask[:, :, :4])
    with pytest.raises(ValueError, match="float32 only"):
        cpu_attention.attention(q.astype(jnp.bfloat16), keys, vals, mask)
