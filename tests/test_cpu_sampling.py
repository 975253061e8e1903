"""The CPU greedy kernel (gasp_jax/kernels/greedy.cc): the first index of each row's maximum and its
log-softmax, as `sampling.core.greedy_tokens`; NaN and all -inf rows; its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gasp_jax.kernels import cpu_sampling
from gasp_jax.sampling import core


@pytest.mark.parametrize("vocab", [32768, 1000, 17, 16, 5])
def test_equals_greedy_tokens(kernel, vocab):
    logits = np.random.default_rng(vocab).standard_normal((9, vocab)).astype(np.float32) * 4
    logits[2, : min(3, vocab)] = 30.0  # a tie: the first index wins
    logits[3] = -1e30  # flat row: index 0, log-prob -log(V)
    want_tokens, want_logprobs = core.greedy_tokens(jnp.asarray(logits))
    tokens, logprobs = jax.jit(cpu_sampling.greedy)(logits)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(want_tokens))
    assert tokens.dtype == jnp.int32 and int(tokens[2]) == 0 and int(tokens[3]) == 0
    x = logits.astype(np.float64)
    exact = -np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1))  # fp32 sums of 32k terms round at ~1e-6
    np.testing.assert_allclose(np.asarray(logprobs), exact, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(np.asarray(logprobs), np.asarray(want_logprobs), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(logprobs[3]), -np.log(vocab), rtol=1e-6)


def test_nan_and_minus_inf_rows_give_the_last_index_and_nan(kernel):
    logits = np.zeros((3, 40), np.float32)
    logits[0, 7] = np.nan
    logits[1] = -np.inf
    tokens, logprobs = cpu_sampling.greedy(logits)
    assert tokens.tolist() == [39, 39, 0] and np.isnan(logprobs[:2]).all()
    np.testing.assert_allclose(float(logprobs[2]), -np.log(40), rtol=1e-6)


def test_bad_inputs(kernel):
    with pytest.raises(ValueError, match=r"float32 logits \[B, V > 0\]"):
        cpu_sampling.greedy(np.zeros((2, 3), np.float64).astype(jnp.bfloat16))
    with pytest.raises(ValueError, match=r"float32 logits \[B, V > 0\]"):
        cpu_sampling.greedy(np.zeros((2, 3, 4), np.float32))
