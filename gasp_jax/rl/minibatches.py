"""PPO's optimisation schedule over one rollout batch: `ppo_epochs` passes of shuffled mini-batches.

    ppo = make_ppo_update(model, rl_config, mesh)     # rl.ppo_mini_batch_size, rl.ppo_epochs
    state, metrics, per_step = ppo(state, batch, rng)   # rng: the run's host np.random.Generator

verl (and AZR on it) advantage-normalises the whole rollout batch, then splits it into mini-batches of
`ppo_mini_batch_size` rows, one optimiser step each, for `ppo_epochs` passes (AZR: 384 sequences,
mini-batch 128 -> 3 steps, 1 epoch). From the second step on the params have moved away from the policy
that sampled the batch, so the importance ratio differs from 1 and PPO's clip acts.

The loop is host-side, around the one jitted `UpdateStep` (`update(state, batch)`, unchanged): the rows
are already host NumPy arrays, so a shuffle is a host permutation (no cross-device gather), every step
has the same `[rows_per_step, T]` shape (one compiled program, which is also what an ahead-of-time
compile sees), and a handful of dispatches per iteration cost nothing next to the step itself.

pi_old: `loss.old_logprobs="batch"` uses the sampler's log-probs stored in the batch; `"trainer"`
recomputes them once, at the params before the first step, for every row (`make_logprob_step`) and then
keeps them fixed, as verl's `old_log_prob` (recomputing inside each step would make every ratio 1).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from gasp_jax import sharding as shd
from gasp_jax.rl.batch import Batch
from gasp_jax.rl.config import validate_config
from gasp_jax.rl.update import UpdateStep, make_logprob_step, make_update_step

# Metrics that add up over steps (counts), and those only the first step measures meaningfully: before
# it the params are the sampling params, so |logp_trainer - logp_sampler| is the sync/numerics check.
SUMMED_METRICS = ("num_tokens", "num_sequences", "denominator")
FIRST_STEP_METRICS = ("sampler_logp_abs_diff_mean", "sampler_logp_abs_diff_max")


def minibatch_indices(num_rows: int, mini_batch_size: int, epochs: int, rng: np.random.Generator | None
                      ) -> list[np.ndarray]:
    """Row indices of every optimiser step: per epoch, a fresh permutation of `range(num_rows)` (drawn from
    `rng`) cut into chunks of `mini_batch_size` rows, the last one shorter. A mini-batch size of 0 or
    >= `num_rows` is the whole batch per step, in order (one step's gradient ignores row order)."""
    if num_rows < 1:
        raise ValueError(f"minibatch_indices: need at least one row, got {num_rows}")
    if not mini_batch_size or mini_batch_size >= num_rows:
        return [np.arange(num_rows) for _ in range(int(epochs))]
    if rng is None:
        raise ValueError("minibatch_indices: shuffled mini-batches need an rng (the run's host generator)")
    out = []
    for _ in range(int(epochs)):
        order = rng.permutation(num_rows)
        out += [order[i:i + mini_batch_size] for i in range(0, num_rows, mini_batch_size)]
    return out


def take_rows(batch: Batch, index: np.ndarray, rows: int) -> Batch:
    """A host `Batch` of `rows` rows: `batch`'s rows `index` first, then padding rows (all-zero masks,
    zero advantage, temperature 1), the layout `make_batch` pads with."""
    index = np.asarray(index)
    if len(index) > rows:
        raise ValueError(f"take_rows: {len(index)} rows do not fit in {rows}")

    def take(x, fill):
        if x is None:
            return None
        x = np.asarray(x)
        out = np.full((rows, *x.shape[1:]), fill, x.dtype)
        out[:len(index)] = x[index]
        return out

    t = batch.tokens.shape[1]
    positions = take(batch.positions, 0)
    positions[len(index):] = np.arange(t, dtype=positions.dtype)
    return Batch(tokens=take(batch.tokens, 0), positions=positions,
                 attention_mask=take(batch.attention_mask, False), completion_mask=take(batch.completion_mask, False),
                 old_logprobs=take(batch.old_logprobs, 0.0), advantages=take(batch.advantages, 0.0),
                 ref_logprobs=take(batch.ref_logprobs, 0.0), temperature=take(batch.temperature, 1.0))


def average_metrics(per_step: list[dict[str, float]]) -> dict[str, float]:
    """One iteration's metrics from its steps: the mean of each metric over steps, except counts (summed)
    and the sampler-vs-trainer check (the first step's); plus `optimizer_steps`."""
    out = {}
    for name in per_step[0]:
        values = [float(m[name]) for m in per_step]
        if name in SUMMED_METRICS:
            out[name] = float(np.sum(values))
        elif name in FIRST_STEP_METRICS:
            out[name] = values[0]
        else:
            out[name] = float(np.mean(values))
    out["optimizer_steps"] = float(len(per_step))
    return out


@dataclasses.dataclass(frozen=True)
class PPOUpdate:
    """`ppo(state, batch, rng) -> (state, metrics, per_step)`: `ppo_epochs` passes of shuffled
    `ppo_mini_batch_size`-row optimiser steps of `update` over the real rows of a host `batch`.

    `metrics` are the iteration's (see `average_metrics`); `per_step` the host metrics of every step.
    With mini-batch size 0 and one epoch it is exactly one `update(state, batch)`."""

    update: UpdateStep
    mini_batch_size: int
    epochs: int
    logprob_step: Callable | None  # recomputes pi_old once (loss.old_logprobs="trainer", several steps)

    @property
    def micro_batches(self) -> int:
        return self.update.micro_batches

    @property
    def batch_divisor(self) -> int:
        return self.update.batch_divisor

    @property
    def rows_per_step(self) -> int:
        """Rows of every mini-batch step: the smallest `multiple x 2^i` >= the mini-batch size, `multiple` the
        update's row multiple (micro-batches x data-parallel devices): the trainer's row buckets."""
        rows = self.update.micro_batches * self.update.batch_divisor
        while rows < self.mini_batch_size:
            rows *= 2
        return rows

    def __call__(self, state, batch: Batch, rng: np.random.Generator | None = None):
        if not self.mini_batch_size and self.epochs == 1:
            state, metrics = self.update(state, batch)
            per_step = [{k: float(v) for k, v in jax.device_get(metrics).items()}]
            return state, average_metrics(per_step), per_step
        if not isinstance(batch.tokens, np.ndarray):
            raise ValueError("PPOUpdate: mini-batches are cut from a host (NumPy) batch")
        if self.logprob_step is not None:
            placed = batch
            if self.update.batch_sharding is not None:
                placed = jax.tree.map(lambda x: shd.put_host_array(x, self.update.batch_sharding), batch)
            old = self.logprob_step(state.params, placed)
            batch = batch.replace(old_logprobs=np.asarray(multihost_utils.process_allgather(old, tiled=True), np.float32))
        num_rows = int(np.asarray(batch.attention_mask).any(-1).sum())  # real rows come first
        steps = minibatch_indices(num_rows, self.mini_batch_size, self.epochs, rng)
        per_step = []
        for index in steps:
            whole = len(index) == num_rows  # the batch as built (its own row bucket), no copy
            mini = batch if whole else take_rows(batch, index, self.rows_per_step)
            state, metrics = self.update(state, mini)
            per_step.append({k: float(v) for k, v in jax.device_get(metrics).items()})
        return state, average_metrics(per_step), per_step


def make_ppo_update(model, rl_config: ml_collections.ConfigDict, mesh=None, *, loss_fn: Callable | None = None
                    ) -> PPOUpdate:
    """The `rl.ppo_mini_batch_size` / `rl.ppo_epochs` schedule around `make_update_step`."""
    validate_config(rl_config)
    size, epochs = int(rl_config.get("ppo_mini_batch_size", 0)), int(rl_config.get("ppo_epochs", 1))
    several_steps = bool(size) or epochs > 1
    logprob_step = None
    step_config = rl_config
    if several_steps and rl_config.loss.old_logprobs == "trainer":
        # pi_old fixed at the pre-update params for every step: recomputed once, then read from the batch.
        logprob_step = make_logprob_step(model, rl_config, mesh)
        step_config = ml_collections.ConfigDict(rl_config.to_dict())
        step_config.loss.old_logprobs = "batch"
    update = make_update_step(model, step_config, mesh, loss_fn=loss_fn)
    return PPOUpdate(update=update, mini_batch_size=size, epochs=epochs, logprob_step=logprob_step)
