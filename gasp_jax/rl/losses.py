"""Token-level policy-gradient losses in fp32, returned as `(loss_sum, denominator, metrics)`.

Every loss returns an *unnormalised* sum and its denominator instead of a mean, so that splitting a
batch into micro-batches and adding sums and denominators gives exactly the full-batch loss
(`sum(loss_sum) / sum(denom)`); a mean of micro-batch means would weight micro-batches wrongly.

Metrics are `{name: (sum, count)}` pairs for the same reason; `finalize_metrics` divides them.

Shapes: `logp`, `old_logp`, `ref_logp`, `entropy`, `mask` are `[B, T]` aligned with the tokens
(`logp[b, t] = log pi(tokens[b, t] | tokens[b, :t])`); `advantages` is `[B]` (one per sequence) or
`[B, T]`. `mask` is the completion mask: 1 on the completion tokens that are trained (EOS included),
0 on prompt and padding.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3")

Metrics = dict[str, tuple[jax.Array, jax.Array]]


def aggregate(per_token: jax.Array, mask: jax.Array, agg: str = "token-mean", norm_length: int | None = None):
    """Reduces a per-token loss `[B, T]` to `(sum, denominator)` under `mask`.

    - `token-mean`: sum over valid tokens / number of valid tokens (AZR/verl default, DAPO).
    - `seq-mean-token-mean`: each sequence's token mean, summed / number of non-empty sequences (GRPO).
    - `seq-mean-token-sum-norm`: token sum / (non-empty sequences * `norm_length`), a constant
      length normaliser (Dr.GRPO); `norm_length` defaults to the padded length T.
    Sequences with no valid token count in no denominator.
    """
    mask = mask.astype(jnp.float32)
    masked = per_token.astype(jnp.float32) * mask
    if agg == "token-mean":
        return masked.sum(), mask.sum()
    seq_tokens = mask.sum(-1)
    num_seqs = (seq_tokens > 0).sum().astype(jnp.float32)
    if agg == "seq-mean-token-mean":
        return (masked.sum(-1) / jnp.maximum(seq_tokens, 1.0)).sum(), num_seqs
    if agg == "seq-mean-token-sum-norm":
        length = norm_length or per_token.shape[-1]
        return masked.sum(), num_seqs * float(length)
    raise ValueError(f"unknown loss aggregation {agg!r}; expected one of {AGG_MODES}")


def _token_mean_metric(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    mask = mask.astype(jnp.float32)
    return (x.astype(jnp.float32) * mask).sum(), mask.sum()


def _log_ratio(logp: jax.Array, old_logp: jax.Array, clamp: float) -> jax.Array:
    # Clamped before exp: a stale or mismatched token can have |log ratio| >> 1 and overflow fp32.
    return jnp.clip(logp - old_logp, -clamp, clamp)


def _broadcast_advantages(advantages: jax.Array, like: jax.Array) -> jax.Array:
    advantages = advantages.astype(jnp.float32)
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    return jnp.broadcast_to(advantages, like.shape)


def policy_loss(
    logp: jax.Array,
    old_logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None = None,
    agg: str = "token-mean",
    norm_length: int | None = None,
    log_ratio_clamp: float = 20.0,
):
    """PPO-clip policy-gradient loss with asymmetric clipping and optional dual-clip.

    Per token, with `r = exp(clip(logp - old_logp, +-log_ratio_clamp))` and advantage `A`:
        l = max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high))
        l = min(l, -A * dual_clip)            where A < 0, if dual_clip is set (> 1)
    aggregated by `aggregate(l, mask, agg)`.

    Returns `(loss_sum, denom, metrics)`; metrics (all `(sum, count)` over valid tokens):
      clip_frac       tokens whose gradient the clip zeroed (clipped branch strictly larger);
      clip_frac_low   A < 0 and r < 1 - clip_low;   clip_frac_high   A > 0 and r > 1 + clip_high;
      dual_clip_frac  A < 0 and the dual-clip bound active;
      approx_kl       k3 estimate of KL(pi_old || pi): mean of (r - 1) - log r (>= 0);
      ratio           mean importance ratio.
    """
    if dual_clip is not None and dual_clip and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    logp = logp.astype(jnp.float32)
    old_logp = old_logp.astype(jnp.float32)
    adv = _broadcast_advantages(advantages, logp)
    log_ratio = _log_ratio(logp, old_logp, log_ratio_clamp)
    ratio = jnp.exp(log_ratio)
    loss_unclipped = -adv * ratio
    loss_clipped = -adv * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = jnp.maximum(loss_unclipped, loss_clipped)
    dual_active = jnp.zeros_like(per_token, dtype=bool)
    if dual_clip:
        bound = -adv * dual_clip
        dual_active = (adv < 0) & (bound < per_token)
        per_token = jnp.where(adv < 0, jnp.minimum(per_token, bound), per_token)
    loss_sum, denom = aggregate(per_token, mask, agg, norm_length)
    metrics = {
        "clip_frac": _token_mean_metric(loss_clipped > loss_unclipped, mask),
        "clip_frac_low": _token_mean_metric((adv < 0) & (ratio < 1.0 - clip_low), mask),
        "clip_frac_high": _token_mean_metric((adv > 0) & (ratio > 1.0 + clip_high), mask),
        "dual_clip_frac": _token_mean_metric(dual_active, mask),
        "approx_kl": _token_mean_metric(jax.lax.stop_gradient((ratio - 1.0) - log_ratio), mask),
        "ratio": _token_mean_metric(jax.lax.stop_gradient(ratio), mask),
    }
    return loss_sum, denom, metrics


def kl_penalty(logp: jax.Array, ref_logp: jax.Array, estimator: str = "k3", clamp: float = 20.0) -> jax.Array:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1 / k2 / k3).

    k1 = log pi - log pi_ref;  k2 = (log pi - log pi_ref)^2 / 2;
    k3 = exp(d) - d - 1 with d = log pi_ref - log pi, d clamped to +-clamp and the result to [-10, 10]
    (as verl) so that a far-off token cannot overflow.
    """
    diff = logp.astype(jnp.float32) - ref_logp.astype(jnp.float32)
    if estimator == "k1":
        return diff
    if estimator == "k2":
        return 0.5 * jnp.square(diff)
    if estimator == "k3":
        d = jnp.clip(-diff, -clamp, clamp)
        return jnp.clip(jnp.exp(d) - d - 1.0, -10.0, 10.0)
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")


def rl_loss(
    logp: jax.Array,
    entropy: jax.Array,
    old_logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    loss_config: Mapping,
    ref_logp: jax.Array | None = None,
):
    """The full objective: PPO-clip + kl_coef * KL(pi || pi_ref) - entropy_coef * entropy.

    All three terms share one aggregation, hence one denominator, so their sums add exactly.
    `loss_config` is the `rl.loss` config section. Returns `(loss_sum, denom, metrics)`.
    """
    c = loss_config
    pg_sum, denom, metrics = policy_loss(
        logp, old_logp, advantages, mask, clip_low=c["clip_low"], clip_high=c["clip_high"],
        dual_clip=c["dual_clip"] or None, agg=c["agg"], norm_length=c["norm_length"] or None,
        log_ratio_clamp=c["log_ratio_clamp"],
    )
    metrics = dict(metrics)
    metrics["pg_loss"] = (pg_sum, denom)
    loss_sum = pg_sum
    if c["kl_coef"]:  # static: with coef 0 the reference log-probs are never read (AZR default)
        if ref_logp is None:
            raise ValueError("loss.kl_coef > 0 needs reference log-probs (Batch.ref_logprobs)")
        kl_sum, _ = aggregate(kl_penalty(logp, ref_logp, c["kl_estimator"]), mask, c["agg"], c["norm_length"] or None)
        loss_sum = loss_sum + c["kl_coef"] * kl_sum
        metrics["kl_ref"] = (kl_sum, denom)
    ent_sum, _ = aggregate(entropy, mask, c["agg"], c["norm_length"] or None)
    if c["entropy_coef"]:
        loss_sum = loss_sum - c["entropy_coef"] * ent_sum
    metrics["entropy"] = _token_mean_metric(jax.lax.stop_gradient(entropy), mask)
    return loss_sum, denom, metrics


def finalize_metrics(metrics: Mapping[str, tuple[jax.Array, jax.Array]]) -> dict[str, jax.Array]:
    """`{name: sum / count}` (0 where the count is 0)."""
    return {k: jnp.where(n > 0, s / jnp.maximum(n, 1e-30), 0.0) for k, (s, n) in metrics.items()}
