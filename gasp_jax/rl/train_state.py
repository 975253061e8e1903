"""Train state (params + optax state + step) and its shardings, built from the `rl` config.

The state is a plain pytree (`flax.struct` dataclass). Its shardings follow the model's logical rules:
params as `models.param_shardings`, and every param-shaped leaf of the optimizer state (Adam's mu, nu)
exactly like its param (via `optax.tree_map_params`), scalars (counts) replicated. The state is created
directly in those shardings; no host or single-device replica of the weights is made first.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

from gasp_jax import models
from gasp_jax.rl.config import validate_config


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer updates applied (skipped updates do not count)
    params: Any
    opt_state: Any


def make_schedule(optimizer_config) -> optax.Schedule:
    """Learning rate as a function of the update count: constant or linear-warmup + cosine decay."""
    o = optimizer_config
    peak = float(o.learning_rate)
    if o.schedule == "constant":
        if o.warmup_steps:
            return optax.linear_schedule(0.0, peak, int(o.warmup_steps))
        return optax.constant_schedule(peak)
    if o.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=peak, warmup_steps=int(o.warmup_steps),
            decay_steps=int(o.total_steps), end_value=peak * float(o.final_lr_fraction),
        )
    raise ValueError(f"unknown schedule {o.schedule!r}")


def _decay_mask(params):
    # Decoupled weight decay on matrices only: never on norm scales or biases (their last key says so;
    # stacked-layer norms are 2-D [layers, E], so ndim alone cannot tell).
    def keep(path, _):
        name = next((k.key for k in reversed(path) if isinstance(k, jax.tree_util.DictKey)), "")
        return not (str(name).endswith("scale") or str(name).endswith("bias"))

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(optimizer_config) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with the configured schedule."""
    o = optimizer_config
    adamw = optax.adamw(
        make_schedule(o), b1=float(o.b1), b2=float(o.b2), eps=float(o.eps),
        weight_decay=float(o.weight_decay), mask=_decay_mask,
    )
    if o.max_grad_norm:
        return optax.chain(optax.clip_by_global_norm(float(o.max_grad_norm)), adamw)
    return adamw


def train_state_shardings(model, rl_config) -> TrainState | None:
    """`TrainState` of `NamedSharding`s on `model.mesh` (None without a mesh)."""
    if model.mesh is None:
        return None
    tx = make_optimizer(rl_config.optimizer)
    param_sh = models.param_shardings(model)
    abstract = nn.meta.unbox(models.abstract_params(model))
    abstract_opt = jax.eval_shape(tx.init, abstract)
    replicated = NamedSharding(model.mesh, P())
    opt_sh = optax.tree_map_params(
        tx, lambda _, sh: sh, abstract_opt, param_sh,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct),
    )
    return TrainState(step=replicated, params=param_sh, opt_state=opt_sh)


def create_train_state(model, rl_config, *, rng: jax.Array | None = None, params: Any = None) -> TrainState:
    """A fresh state from random init (`rng`) or given `params` (e.g. `models.load_hf`), in its shardings.

    Given params are used as they are (same buffers) when already in place; pass a copy if the caller
    keeps using them, because the update step donates the state.
    """
    validate_config(rl_config)
    if (rng is None) == (params is None):
        raise ValueError("create_train_state needs exactly one of rng= or params=")
    tx = make_optimizer(rl_config.optimizer)
    shardings = train_state_shardings(model, rl_config)
    if params is None:
        params = models.init_params(model, rng)
    elif shardings is not None:
        params = jax.device_put(params, shardings.params)

    def init(p):
        return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p))

    if shardings is None:
        state = jax.jit(init)(params)
    else:
        state = jax.jit(init, in_shardings=(shardings.params,), out_shardings=shardings)(params)
    return state


def create_role_states(model, rl_config, *, rng: jax.Array | None = None, params: Any = None) -> dict[str, TrainState]:
    """`{"policy": state}` when teacher and student share one model (GASP default), else
    `{"teacher": state, "student": state}` starting from the same weights in separate buffers (so that
    donating one state never frees the other's params). The same update step serves every role."""
    if not rl_config.separate_teacher_student:
        return {"policy": create_train_state(model, rl_config, rng=rng, params=params)}
    teacher = create_train_state(model, rl_config, rng=rng, params=params)
    student_params = jax.tree.map(jnp.copy, teacher.params)
    return {"teacher": teacher, "student": create_train_state(model, rl_config, params=student_params)}
