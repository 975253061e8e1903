"""Supervised fine-tuning (SFT): token-mean cross-entropy on completion tokens, through the RL update.

    step = rl.sft.make_sft_step(model, rl_config, mesh)       # rl_config: the usual `rl` section
    batch = rl.sft.make_sft_batch(prompt_ids, target_ids, batch_multiple=step.micro_batches * step.batch_divisor)
    state, metrics = step(state, batch)                        # metrics["loss"]: the token-mean cross-entropy

The step is `rl.make_update_step` with `loss_fn=sft_loss_fn`: the same micro-batch accumulation (exact
full-batch gradient), skip on non-finite, optimizer, shardings and train state as the RL update; only
the per-micro-batch loss differs. Log-probs come from the chunked `token_logprobs` (no `[B, T, vocab]`
fp32 logits) at temperature 1. The `rl.loss` section is not read; `rl.optimizer`, `micro_batches` and
`logprob_chunk_size` are.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gasp_jax.rl.batch import DEFAULT_LENGTH_BUCKETS, Batch, make_batch
from gasp_jax.rl.logprobs import token_logprobs
from gasp_jax.rl.losses import aggregate
from gasp_jax.rl.update import UpdateStep, make_update_step


def sft_loss_fn(params, micro: Batch, *, model, rl_config):
    """`(loss_sum, (denom, metrics, 0))` of one micro-batch: the summed negative log-likelihood of the
    completion tokens and their count (token-mean over the whole batch after accumulation)."""
    logp, entropy = token_logprobs(
        model, params, micro.tokens, positions=micro.positions, attention_mask=micro.attention_mask,
        chunk_size=rl_config.logprob_chunk_size,
    )
    mask = micro.completion_mask
    nll_sum, denom = aggregate(-logp, mask, "token-mean")
    metrics = {
        "entropy": aggregate(jax.lax.stop_gradient(entropy), mask, "token-mean"),
        # Share of target tokens the policy gives probability > 1/2 (then they are surely its argmax).
        "confident_frac": aggregate((jax.lax.stop_gradient(logp) > jnp.log(0.5)).astype(jnp.float32), mask),
    }
    return nll_sum, (denom, metrics, jnp.zeros((), jnp.float32))


def make_sft_batch(
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    *,
    length_buckets: Sequence[int] | None = DEFAULT_LENGTH_BUCKETS,
    batch_multiple: int = 1,
    batch_buckets: Sequence[int] | None = None,
    pad_id: int = 0,
) -> Batch:
    """Host `Batch` of `[prompt, target]` rows; the completion mask covers the target tokens (end targets
    with the stop token so the model learns to stop). Advantages and old log-probs are unused (1, 0)."""
    zeros = [np.zeros(len(t), np.float32) for t in targets]
    return make_batch(prompts, targets, zeros, np.ones(len(prompts), np.float32), length_buckets=length_buckets,
                      batch_multiple=batch_multiple, batch_buckets=batch_buckets, pad_id=pad_id)


def make_sft_step(model, rl_config: ml_collections.ConfigDict, mesh=None) -> UpdateStep:
    """The jitted, sharded SFT step: `step(state, batch) -> (state, metrics)`, state donated.

    Metrics: `loss` (token-mean cross-entropy, nats), `entropy`, `confident_frac`, `grad_norm`,
    `learning_rate`, `num_tokens`, `num_sequences`, `skipped` (and the update's constant
    `sampler_logp_abs_diff_max` = 0, meaningless here)."""
    c = ml_collections.ConfigDict(rl_config.to_dict())
    c.loss.kl_coef = 0.0  # no reference log-probs in an SFT batch
    return make_update_step(model, c, mesh, loss_fn=sft_loss_fn)
