"""The `rl` section of an ml-collections config: schema, AZR/GASP defaults and validation.

    from gasp_jax.rl import config as rl_config
    c.rl = rl_config.default_config()        # in a configs/*.py get_config()
    c.rl.optimizer.learning_rate = 1e-6       # overrides as usual

Defaults follow AZR's released code (paper.md section 9.7), which GASP adopts: AdamW at a constant 1e-6,
weight decay 0, global-norm clip 1.0, PPO-clip 0.2 / 0.28 with dual-clip 3.0, `token-mean`
aggregation, no KL (so no reference forward pass) and entropy coefficient 0 (AZR's paper says 0.001, its
code runs 0.0; we follow the code).
"""

from __future__ import annotations

import ml_collections

from gasp_jax.config_checks import checker
from gasp_jax.rl.losses import AGG_MODES, KL_ESTIMATORS

SCHEDULES = ("constant", "warmup_cosine")
ADVANTAGE_ESTIMATORS = ("trr++", "grpo", "rloo", "dr_grpo")
OLD_LOGPROB_SOURCES = ("batch", "trainer")


def default_config() -> ml_collections.ConfigDict:
    """The `rl` config section with AZR/GASP defaults."""
    c = ml_collections.ConfigDict()

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-6  # peak learning rate
    c.optimizer.schedule = "constant"  # one of SCHEDULES
    c.optimizer.warmup_steps = 0  # linear warmup from 0 (both schedules)
    c.optimizer.total_steps = 0  # warmup_cosine: warmup + cosine decay length; required > warmup_steps
    c.optimizer.final_lr_fraction = 0.0  # warmup_cosine: final lr = fraction * peak
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.0  # decoupled (AdamW); never applied to norm scales or biases
    c.optimizer.max_grad_norm = 1.0  # global-norm clip; 0 disables

    c.loss = ml_collections.ConfigDict()
    c.loss.clip_low = 0.2  # ratio clipped below at 1 - clip_low
    c.loss.clip_high = 0.28  # ratio clipped above at 1 + clip_high (DAPO clip-higher)
    c.loss.dual_clip = 3.0  # dual-clip c (> 1) for negative advantages; 0 disables
    c.loss.agg = "token-mean"  # one of losses.AGG_MODES
    c.loss.norm_length = 0  # seq-mean-token-sum-norm constant; 0 = the batch's padded length T
    c.loss.log_ratio_clamp = 20.0  # |log pi - log pi_old| clamped before exp
    c.loss.kl_coef = 0.0  # KL-to-reference coefficient; 0 skips the reference entirely
    c.loss.kl_estimator = "k3"  # one of losses.KL_ESTIMATORS
    c.loss.entropy_coef = 0.0  # entropy bonus coefficient (loss -= coef * entropy)
    # Where pi_old comes from: "batch" = the sampler's log-probs stored in the batch (tunix); "trainer" =
    # the trainer's own log-probs at the current params (verl's recomputed old_log_prob; exact for one
    # update per batch, and it makes the ratio exactly 1).
    c.loss.old_logprobs = "batch"

    c.advantage = ml_collections.ConfigDict()
    c.advantage.estimator = "trr++"  # one of ADVANTAGE_ESTIMATORS
    c.advantage.whiten_eps = 1e-8  # TRR++: verl masked_whiten epsilon
    c.advantage.grpo_eps = 1e-6  # GRPO: std epsilon

    # PPO's schedule over one rollout batch (verl): `ppo_epochs` passes, each a fresh shuffle of the rows
    # cut into `ppo_mini_batch_size`-row optimiser steps (0 = the whole batch, one step per epoch).
    # AZR: 384 rows, 128 per step -> 3 steps, 1 epoch (configs/common.py:paper_base).
    c.ppo_mini_batch_size = 0
    c.ppo_epochs = 1
    c.micro_batches = 1  # k: the batch is split into k micro-batches, accumulated exactly, one update
    c.logprob_chunk_size = 256  # sequence chunk for the LM head / log-softmax (bounds [B, C, vocab] fp32)
    c.separate_teacher_student = False  # GASP shares one model; True keeps two train states
    return c


def validate_config(c: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (a ValueError) naming the first bad field of an `rl` section."""

    need = checker("rl.")
    o, l = c.optimizer, c.loss
    need(o.learning_rate > 0, "optimizer.learning_rate", f"must be > 0, got {o.learning_rate}")
    need(o.schedule in SCHEDULES, "optimizer.schedule", f"{o.schedule!r} not in {SCHEDULES}")
    need(o.warmup_steps >= 0, "optimizer.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    if o.schedule == "warmup_cosine":
        need(o.total_steps > o.warmup_steps, "optimizer.total_steps", "must exceed warmup_steps for warmup_cosine")
    need(0.0 <= o.final_lr_fraction <= 1.0, "optimizer.final_lr_fraction", "must be in [0, 1]")
    need(o.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")
    need(o.max_grad_norm >= 0, "optimizer.max_grad_norm", "must be >= 0 (0 disables)")
    need(0 <= l.clip_low < 1, "loss.clip_low", f"must be in [0, 1), got {l.clip_low}")
    need(l.clip_high >= 0, "loss.clip_high", f"must be >= 0, got {l.clip_high}")
    need(not l.dual_clip or l.dual_clip > 1, "loss.dual_clip", f"must be > 1 or 0 (off), got {l.dual_clip}")
    need(l.agg in AGG_MODES, "loss.agg", f"{l.agg!r} not in {AGG_MODES}")
    need(l.norm_length >= 0, "loss.norm_length", "must be >= 0")
    need(l.log_ratio_clamp > 0, "loss.log_ratio_clamp", "must be > 0")
    need(l.kl_coef >= 0, "loss.kl_coef", "must be >= 0")
    need(l.kl_estimator in KL_ESTIMATORS, "loss.kl_estimator", f"{l.kl_estimator!r} not in {KL_ESTIMATORS}")
    need(l.entropy_coef >= 0, "loss.entropy_coef", "must be >= 0")
    need(l.old_logprobs in OLD_LOGPROB_SOURCES, "loss.old_logprobs", f"{l.old_logprobs!r} not in {OLD_LOGPROB_SOURCES}")
    need(c.advantage.estimator in ADVANTAGE_ESTIMATORS, "advantage.estimator",
         f"{c.advantage.estimator!r} not in {ADVANTAGE_ESTIMATORS}")
    need(int(c.get("ppo_mini_batch_size", 0)) >= 0, "ppo_mini_batch_size",
         f"must be >= 0 (0 = the whole batch), got {c.get('ppo_mini_batch_size')}")
    need(int(c.get("ppo_epochs", 1)) >= 1, "ppo_epochs", f"must be >= 1, got {c.get('ppo_epochs')}")
    need(int(c.micro_batches) >= 1, "micro_batches", f"must be >= 1, got {c.micro_batches}")
    need(int(c.logprob_chunk_size) >= 1, "logprob_chunk_size", f"must be >= 1, got {c.logprob_chunk_size}")
