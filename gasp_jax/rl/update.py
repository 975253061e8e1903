"""The RL update: one jitted, sharded step of exact micro-batch accumulation and one optimizer update.

    update = make_update_step(model, rl_config, mesh)
    state, metrics = update(state, batch)       # state donated; metrics: dict of replicated scalars

Inside the single `jax.jit`:
1. The batch `[B, ...]` is regrouped into `k` micro-batches `[k, B/k, ...]`; micro-batch j takes rows
   j, j + k, j + 2k, ... so that, with rows sharded over the data axes, every device keeps its own rows
   (no communication) and every micro-batch is spread over all data-parallel devices.
2. `lax.scan` over micro-batches: chunked log-probs (`logprobs.token_logprobs`), `losses.rl_loss`
   -> `(loss_sum, denom)`, and the gradient of `loss_sum`, accumulated in fp32.
3. The gradient is divided once by the summed denominator: identical to the full-batch gradient.
4. If the loss or the gradient norm is not finite (or no token was trained), the update is skipped:
   params, optimizer state and step are carried over unchanged (`jnp.where`, a select on replicated
   scalars, so every device and host takes the same decision), and `metrics["skipped"]` is 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gasp_jax import models
from gasp_jax import sharding as shd
from gasp_jax.rl.batch import Batch, validate_batch
from gasp_jax.rl.config import validate_config
from gasp_jax.rl.logprobs import token_logprobs
from gasp_jax.rl.losses import finalize_metrics, rl_loss
from gasp_jax.rl.train_state import TrainState, make_optimizer, make_schedule, train_state_shardings


def _batch_mesh_axes(model, mesh: Mesh | None) -> tuple[str, ...]:
    """Mesh axes the batch dimension is split over: the rules' "act_batch" axes of size > 1."""
    if mesh is None:
        return ()
    target = dict(model.rules).get("act_batch")
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    return tuple(a for a in axes if a in mesh.shape and mesh.shape[a] > 1)


def policy_loss_fn(params, micro: Batch, *, model, rl_config):
    """`loss_sum` of one micro-batch and its aux `(denom, metrics, sampler-diff stats)`: the RL loss.

    Log-probs are taken at each row's sampling temperature (`micro.temperature`), the sampler's quantity."""
    loss_cfg = rl_config.loss
    logp, entropy = token_logprobs(
        model, params, micro.tokens, positions=micro.positions, attention_mask=micro.attention_mask,
        chunk_size=rl_config.logprob_chunk_size, temperature=micro.temperature,
    )
    mask = micro.completion_mask
    old = jax.lax.stop_gradient(logp) if loss_cfg.old_logprobs == "trainer" else micro.old_logprobs
    ref = micro.ref_logprobs if loss_cfg.kl_coef else None
    if not loss_cfg.entropy_coef:
        entropy = jax.lax.stop_gradient(entropy)  # metric only: no backward through the entropy
    loss_sum, denom, metrics = rl_loss(logp, entropy, old, micro.advantages, mask, loss_cfg, ref)
    # Sampler vs trainer on the same (old) policy: the current params sampled this batch, so any gap is
    # numerics (bf16, kernels) or a bug (stale weights, template/tokenizer mismatch, misaligned masks).
    delta = jnp.where(mask, jnp.abs(jax.lax.stop_gradient(logp) - micro.old_logprobs), 0.0)
    metrics["sampler_logp_abs_diff_mean"] = (delta.sum(), mask.sum().astype(jnp.float32))
    return loss_sum, (denom, metrics, delta.max())


def _split_micro_batches(batch: Batch, k: int) -> Batch:
    # [B, ...] -> [B/k, k, ...] -> [k, B/k, ...]: micro-batch j = rows j::k (see module docstring).
    def split(x):
        return x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


def accumulate_gradients(params, batch: Batch, *, model, rl_config, param_shardings=None, loss_fn=None):
    """Exact gradient of the batch loss over `rl_config.micro_batches` micro-batches (traceable).

    `loss_fn(params, micro, *, model, rl_config) -> (loss_sum, (denom, metrics, delta_max))` defaults to
    `policy_loss_fn`; another loss (e.g. supervised warm start) reuses the same accumulation and update.

    Returns `(grads, loss, denom, metrics)`: fp32 grads of `sum(loss_sum) / sum(denom)` (the full-batch
    loss), that loss, the summed denominator and finalized metrics (incl. the sampler-vs-trainer
    |delta logp| mean and max). `param_shardings` pins the fp32 accumulator to the params' layout.
    """
    k = int(rl_config.micro_batches)
    loss_fn = loss_fn or policy_loss_fn
    loss_and_grad = jax.value_and_grad(
        lambda p, mb: loss_fn(p, mb, model=model, rl_config=rl_config), has_aux=True
    )
    micro = _split_micro_batches(batch, k)
    mesh = model.mesh
    if mesh is not None:
        axes = _batch_mesh_axes(model, mesh)
        micro = jax.lax.with_sharding_constraint(micro, NamedSharding(mesh, P(None, axes or None)))

    def accumulate(grad_acc, mb):
        (loss_sum, (denom, metrics, delta_max)), grads = loss_and_grad(params, mb)
        grad_acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grad_acc, grads)
        return grad_acc, (loss_sum, denom, metrics, delta_max)

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    if param_shardings is not None:
        zeros = jax.lax.with_sharding_constraint(zeros, param_shardings)
    grad_sum, (loss_sums, denoms, metric_parts, delta_maxes) = jax.lax.scan(accumulate, zeros, micro)

    # Divide once by the total denominator: the same gradient as one pass over the whole batch.
    denom = denoms.sum()
    scale = jnp.where(denom > 0, 1.0 / jnp.maximum(denom, 1e-30), 0.0)
    grads = jax.tree.map(lambda g: g * scale, grad_sum)
    metrics = finalize_metrics(jax.tree.map(lambda x: x.sum(), metric_parts))
    metrics["sampler_logp_abs_diff_max"] = delta_maxes.max()
    metrics["denominator"] = denom
    return grads, loss_sums.sum() * scale, denom, metrics


@dataclasses.dataclass(frozen=True)
class UpdateStep:
    """`update(state, batch) -> (state, metrics)`, with host-side batch validation before the device step.

    Attributes: `jitted` (the raw jitted function, same signature), `state_shardings`,
    `batch_sharding`, `micro_batches`, `batch_divisor` (rows per micro-batch must divide by it).
    """

    jitted: Callable
    state_shardings: Any
    batch_sharding: Any
    micro_batches: int
    batch_divisor: int
    vocab_size: int
    need_ref: bool

    def __call__(self, state: TrainState, batch: Batch):
        validate_batch(batch, micro_batches=self.micro_batches, batch_divisor=self.batch_divisor,
                       vocab_size=self.vocab_size, need_ref=self.need_ref)
        if not self.need_ref and batch.ref_logprobs is not None:
            batch = batch.replace(ref_logprobs=None)  # never shipped to the device when unused
        if batch.temperature is None:  # one compiled signature: T = 1 unless the rows say otherwise
            batch = batch.replace(temperature=np.ones(batch.tokens.shape[:1], np.float32))
        if batch.advantages.ndim == 1:  # one compiled signature: per-token advantages [B, T]
            adv = batch.advantages[:, None]
            xp = np if isinstance(adv, np.ndarray) else jnp
            batch = batch.replace(advantages=xp.broadcast_to(adv, batch.tokens.shape).astype(np.float32))
        if self.batch_sharding is not None:
            # Host arrays (identical on every process) -> each device receives only its rows; works
            # across processes, where device_put of a host array onto other hosts' devices does not.
            batch = jax.tree.map(
                lambda x: shd.put_host_array(x, self.batch_sharding) if isinstance(x, np.ndarray)
                else jax.device_put(x, self.batch_sharding), batch)
        return self.jitted(state, batch)

    def lower(self, state: TrainState, batch: Batch):
        """`jax.jit(...).lower` on the same arguments (for cost analysis / HLO dumps)."""
        return self.jitted.lower(state, batch)


def make_update_step(model, rl_config, mesh: Mesh | None = None, *, loss_fn: Callable | None = None) -> UpdateStep:
    """Builds the jitted update for `model` (whose `.mesh` must be `mesh`) and the `rl` config section.

    `loss_fn` replaces the RL loss (see `accumulate_gradients`); None is `policy_loss_fn`."""
    validate_config(rl_config)
    # Snapshot: the jitted function may re-trace later (a new batch bucket); a caller mutating its
    # ConfigDict in between must not silently change the loss of the later traces.
    rl_config = ml_collections.FrozenConfigDict(rl_config)
    if mesh is not None and model.mesh is not mesh:
        raise ValueError("make_update_step: build the model with the same mesh (models.build_model(config, mesh=mesh))")
    mesh = model.mesh
    k = int(rl_config.micro_batches)
    tx = make_optimizer(rl_config.optimizer)
    schedule = make_schedule(rl_config.optimizer)
    state_sh = train_state_shardings(model, rl_config)
    batch_axes = _batch_mesh_axes(model, mesh)

    def update(state: TrainState, batch: Batch):
        params = state.params
        grads, loss, denom, metrics = accumulate_gradients(
            params, batch, model=model, rl_config=rl_config, param_shardings=state_sh and state_sh.params,
            loss_fn=loss_fn,
        )
        grad_norm = optax.global_norm(grads)  # fp32, before clipping
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & (denom > 0)
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
        updates, new_opt_state = tx.update(grads, state.opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(ok, new, old)
        new_state = TrainState(
            step=state.step + ok.astype(jnp.int32),
            params=jax.tree.map(keep, new_params, params),
            opt_state=jax.tree.map(keep, new_opt_state, state.opt_state),
        )
        metrics.update(
            loss=loss,
            grad_norm=grad_norm,
            skipped=1.0 - ok.astype(jnp.float32),
            learning_rate=jnp.asarray(schedule(state.step), jnp.float32),
            num_tokens=batch.completion_mask.sum().astype(jnp.float32),
            num_sequences=batch.completion_mask.any(-1).sum().astype(jnp.float32),
        )
        return new_state, metrics

    if mesh is None:
        jitted = jax.jit(update, donate_argnums=(0,))
        batch_sh = None
        divisor = 1
    else:
        batch_sh = NamedSharding(mesh, P(batch_axes or None))  # prefix: rows split, the rest replicated
        replicated = NamedSharding(mesh, P())
        jitted = jax.jit(update, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, replicated),
                         donate_argnums=(0,))
        divisor = math.prod(mesh.shape[a] for a in batch_axes)
    return UpdateStep(jitted=jitted, state_shardings=state_sh, batch_sharding=batch_sh, micro_batches=k,
                      batch_divisor=divisor, vocab_size=model.config.vocab_size,
                      need_ref=bool(rl_config.loss.kl_coef))


def make_logprob_step(model, rl_config, mesh: Mesh | None = None) -> Callable:
    """Jitted `logprobs(params, batch) -> [B, T] fp32` log-probs of the batch tokens (0 off the completion
    mask), chunked like the update. Use it for reference-policy log-probs (`Batch.ref_logprobs`, only
    when `loss.kl_coef > 0`) or to recompute pi_old with the trainer; params are not donated."""
    if mesh is not None and model.mesh is not mesh:
        raise ValueError("make_logprob_step: build the model with the same mesh")
    chunk = int(rl_config.logprob_chunk_size)

    def logprobs(params, batch: Batch):
        lp, _ = token_logprobs(model, params, batch.tokens, positions=batch.positions,
                               attention_mask=batch.attention_mask, chunk_size=chunk,
                               temperature=batch.temperature)
        return jnp.where(batch.completion_mask, lp, 0.0)

    if model.mesh is None:
        return jax.jit(logprobs)
    rows = NamedSharding(model.mesh, P(_batch_mesh_axes(model, model.mesh) or None))
    return jax.jit(logprobs, in_shardings=(models.param_shardings(model), rows), out_shardings=rows)
