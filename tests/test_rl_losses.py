"""RL losses and chunked log-probs against NumPy references (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gasp_jax import models
from gasp_jax.rl import losses
from gasp_jax.rl.logprobs import reference_token_logprobs, token_logprobs

B, T = 5, 9
AGGS = losses.AGG_MODES


def _inputs(seed=0, per_token_adv=False):
    rng = np.random.default_rng(seed)
    old = -rng.uniform(0.1, 4.0, (B, T)).astype(np.float32)
    # Deltas spread well past both clip bounds, but never exactly on a bound (no ties).
    logp = (old + rng.uniform(-0.9, 0.9, (B, T))).astype(np.float32)
    adv = rng.normal(size=(B, T) if per_token_adv else (B,)).astype(np.float32)
    if not per_token_adv:
        adv[1] = 0.0  # a zero-advantage sequence
    mask = rng.random((B, T)) < 0.7
    mask[:, 0] = False
    mask[3] = False  # an empty sequence (counts in no denominator)
    return logp, old, adv, mask


def _np_policy_loss(logp, old, adv, mask, clip_low, clip_high, dual_clip, agg, norm_length=None):
    """Value and d(loss_sum / denom)/d(logp), computed by hand."""
    a = adv[:, None] * np.ones_like(logp) if adv.ndim == 1 else adv
    r = np.exp(np.clip(logp - old, -20, 20))
    l1, l2 = -a * r, -a * np.clip(r, 1 - clip_low, 1 + clip_high)
    per = np.maximum(l1, l2)
    d = -a * r  # derivative of l1 w.r.t. logp
    grad = np.where(l2 > l1, 0.0, d)  # the clipped branch (outside the band) has zero gradient
    if dual_clip:
        bound = -a * dual_clip
        dual = (a < 0) & (bound < per)
        per = np.where(dual, bound, per)
        grad = np.where(dual, 0.0, grad)
    m = mask.astype(np.float64)
    seq_len = m.sum(1)
    nseq = (seq_len > 0).sum()
    if agg == "token-mean":
        w = m / m.sum()
    elif agg == "seq-mean-token-mean":
        w = m / np.maximum(seq_len, 1)[:, None] / nseq
    else:
        w = m / (nseq * (norm_length or logp.shape[1]))
    return (per * w).sum(), grad * w


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("dual_clip", [None, 3.0])
@pytest.mark.parametrize("per_token_adv", [False, True])
def test_policy_loss_matches_numpy(agg, dual_clip, per_token_adv):
    logp, old, adv, mask = _inputs(per_token_adv=per_token_adv)
    if dual_clip:
        adv = adv * 4  # make the dual-clip bound bind on some tokens
        old = old - np.where(adv.reshape(B, -1)[:, :1] < 0, 1.5, 0).astype(np.float32)
    kw = dict(clip_low=0.2, clip_high=0.28, dual_clip=dual_clip, agg=agg)

    def mean_loss(lp):
        s, d, _ = losses.policy_loss(lp, old, adv, mask, **kw)
        return s / d

    value, grad = jax.value_and_grad(mean_loss)(jnp.asarray(logp))
    ref_value, ref_grad = _np_policy_loss(logp, old, adv, mask, 0.2, 0.28, dual_clip, agg)
    np.testing.assert_allclose(float(value), ref_value, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-5, atol=1e-7)


def test_policy_loss_metrics_and_denominators():
    logp, old, adv, mask = _inputs()
    s, d, m = losses.policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    assert float(d) == mask.sum()
    r = np.exp(logp - old)
    a = np.broadcast_to(adv[:, None], r.shape)
    frac = lambda x: float(m[x][0] / m[x][1])
    np.testing.assert_allclose(frac("clip_frac_low"), ((a < 0) & (r < 0.8))[mask].mean(), rtol=1e-6)
    np.testing.assert_allclose(frac("clip_frac_high"), ((a > 0) & (r > 1.28))[mask].mean(), rtol=1e-6)
    np.testing.assert_allclose(frac("clip_frac"), (((a < 0) & (r < 0.8)) | ((a > 0) & (r > 1.28)))[mask].mean(), rtol=1e-6)
    np.testing.assert_allclose(frac("approx_kl"), ((r - 1) - np.log(r))[mask].mean(), rtol=1e-5)
    _, d2, _ = losses.policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, agg="seq-mean-token-mean")
    assert float(d2) == 4  # 5 rows, one empty
    _, d3, _ = losses.policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28,
                                  agg="seq-mean-token-sum-norm", norm_length=100)
    assert float(d3) == 400


def test_log_ratio_is_clamped_before_exp():
    logp = jnp.array([[0.0, 0.0]])
    old = jnp.array([[0.0, -200.0]])  # an absurd delta would overflow exp in fp32
    adv = jnp.array([-1.0])
    s, d, m = losses.policy_loss(logp, old, adv, jnp.array([[False, True]]), clip_low=0.2, clip_high=0.28)
    assert np.isfinite(float(s)) and np.isfinite(float(m["ratio"][0]))
    np.testing.assert_allclose(float(m["ratio"][0]), np.exp(20.0), rtol=1e-5)


def test_dual_clip_must_exceed_one():
    logp, old, adv, mask = _inputs()
    with pytest.raises(ValueError, match="dual_clip"):
        losses.policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=0.9)


def _np_kl(logp, ref, est):
    diff = logp - ref
    if est == "k1":
        return diff, np.ones_like(diff)
    if est == "k2":
        return 0.5 * diff**2, diff
    d = -diff
    return np.exp(d) - d - 1, 1 - np.exp(d)


@pytest.mark.parametrize("est", losses.KL_ESTIMATORS)
@pytest.mark.parametrize("agg", AGGS)
def test_full_objective_with_kl_and_entropy(est, agg):
    logp, old, adv, mask = _inputs(seed=1)
    rng = np.random.default_rng(2)
    ref = (logp + rng.normal(scale=0.3, size=logp.shape)).astype(np.float32)
    ent = rng.uniform(0, 3, logp.shape).astype(np.float32)
    cfg = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, agg=agg, norm_length=0, log_ratio_clamp=20.0,
               kl_coef=0.1, kl_estimator=est, entropy_coef=0.01)

    def mean_loss(lp, e):
        s, d, _ = losses.rl_loss(lp, e, old, adv, mask, cfg, ref)
        return s / d

    value, (g_lp, g_ent) = jax.value_and_grad(mean_loss, argnums=(0, 1))(jnp.asarray(logp), jnp.asarray(ent))
    pg, pg_grad = _np_policy_loss(logp, old, adv, mask, 0.2, 0.28, 3.0, agg)
    kl, kl_grad = _np_kl(logp.astype(np.float64), ref, est)
    _, w = _np_policy_loss(np.zeros_like(logp), np.zeros_like(logp), -np.ones(B, np.float32), mask, 0.2, 0.28, None, agg)
    # (with logp = old and A = -1 the per-token gradient is exactly the aggregation weight)
    np.testing.assert_allclose(float(value), pg + 0.1 * (kl * w).sum() - 0.01 * (ent * w).sum(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(g_lp), pg_grad + 0.1 * kl_grad * w, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(g_ent), -0.01 * w, rtol=1e-5, atol=1e-9)


def test_kl_skipped_when_coefficient_is_zero():
    logp, old, adv, mask = _inputs()
    cfg = dict(clip_low=0.2, clip_high=0.28, dual_clip=0.0, agg="token-mean", norm_length=0, log_ratio_clamp=20.0,
               kl_coef=0.0, kl_estimator="k3", entropy_coef=0.0)
    s, _, m = losses.rl_loss(logp, np.zeros_like(logp), old, adv, mask, cfg, ref_logp=None)
    s_ref, _, _ = losses.policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert float(s) == float(s_ref) and "kl_ref" not in m
    with pytest.raises(ValueError, match="reference"):
        losses.rl_loss(logp, np.zeros_like(logp), old, adv, mask, dict(cfg, kl_coef=0.5), ref_logp=None)


# ----------------------------------------------------------------------------------- chunked log-probs


@pytest.fixture(scope="module")
def tiny():
    model = models.build_model(models.get_preset("tiny"))
    params = models.init_params(model, jax.random.key(3))
    # Larger-than-init weights so the distribution is far from uniform (a stronger check).
    params = jax.tree.map(lambda x: x * 4.0 if x.ndim >= 2 else x, params)
    return model, params


@pytest.mark.parametrize("chunk", [4, 13])  # 4: the last chunk is padded; 13: one chunk
def test_chunked_logprobs_match_full_logits(tiny, chunk):
    model, params = tiny
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 512, (3, 13)), jnp.int32)
    attn = jnp.asarray(np.arange(13)[None] < np.array([[13], [9], [5]]))
    w = jnp.asarray(rng.normal(size=(3, 13)), jnp.float32) * attn

    def run(fn, **kw):
        # Values and gradients of a random weighting of both outputs, in one compiled program.
        def loss(p):
            lp, ent = fn(model, p, tokens, attention_mask=attn, **kw)
            return (lp * w).sum() + (ent * w).sum(), (lp, ent)

        (_, (lp, ent)), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return lp, ent, g

    lp, ent, g = run(token_logprobs, chunk_size=chunk)
    ref_lp, ref_ent, g_ref = run(reference_token_logprobs)
    np.testing.assert_allclose(np.asarray(lp), np.asarray(ref_lp), atol=2e-5)
    np.testing.assert_allclose(np.asarray(ent), np.asarray(ref_ent), atol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-4, rtol=1e-3), g, g_ref)
    assert float(lp[0, 0]) == 0.0 and float(ent[0, 0]) == 0.0
    # Independent check of one value straight from the logits.
    logits = np.asarray(jax.jit(model.apply)({"params": params}, tokens, kv_mask=attn), np.float64)
    lse = np.log(np.exp(logits[0, 3] - logits[0, 3].max()).sum()) + logits[0, 3].max()
    np.testing.assert_allclose(float(lp[0, 4]), logits[0, 3, int(tokens[0, 4])] - lse, atol=2e-5)


def test_chunked_logprobs_never_build_full_logits(tiny):
    model, params = tiny
    tokens = jnp.zeros((2, 64), jnp.int32)
    grad = jax.grad(lambda p: token_logprobs(model, p, tokens, chunk_size=16)[0].sum())
    hlo = jax.jit(grad).lower(params).compile().as_text()
    assert "f32[2,16,512]" in hlo  # one chunk of logits exists...
    assert "f32[2,64,512]" not in hlo and "f32[4,2,16,512]" not in hlo  # ...never all of them


@pytest.mark.parametrize("agg", AGGS)
def test_sums_and_denominators_add_exactly_over_any_row_split(agg):
    """The property exact accumulation rests on: for every aggregation, splitting rows into micro-batches
    and adding (loss_sum, denom) pairs gives the full-batch loss; averaging micro-batch means does not."""
    rng = np.random.default_rng(7)
    logp, old, adv, _ = _inputs(seed=3)
    lengths = np.array([1, 8, 2, 0, 5])  # very uneven micro-batches
    mask = np.arange(T)[None, :] >= T - lengths[:, None]
    kw = dict(clip_low=0.2, clip_high=0.28, dual_clip=3.0, agg=agg)
    full_s, full_d, _ = losses.policy_loss(logp, old, adv, mask, **kw)
    for _ in range(5):
        order = rng.permutation(B)
        parts = np.array_split(order, rng.integers(2, B + 1))
        sums = [losses.policy_loss(logp[p], old[p], adv[p], mask[p], **kw)[:2] for p in parts]
        total = sum(float(s) for s, _ in sums) / sum(float(d) for _, d in sums)
        np.testing.assert_allclose(total, float(full_s) / float(full_d), rtol=1e-5)
    means = [float(s) / float(d) for s, d in (losses.policy_loss(logp[p], old[p], adv[p], mask[p], **kw)[:2]
                                              for p in ([0], [1, 2, 3, 4])) if float(d) > 0]
    assert abs(np.mean(means) - float(full_s) / float(full_d)) > 1e-3  # the mean-of-means bug is visible
