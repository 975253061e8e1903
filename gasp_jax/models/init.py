"""Building a `Transformer` and creating its params directly in their shardings."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import Mesh

from gasp_jax import sharding as shd
from gasp_jax.models.config import ModelConfig
from gasp_jax.models.transformer import Transformer


def build_model(config: ModelConfig, *, mesh: Mesh | None = None, rules: shd.Rules = shd.DEFAULT_RULES) -> Transformer:
    """A `Transformer` whose activations are constrained on `mesh` by `rules` (none without a mesh)."""
    return Transformer(config, mesh=mesh, rules=shd.rules_from_config(rules))


def _init_fn(model: Transformer):
    dummy = jnp.zeros((1, 1), jnp.int32)
    return lambda rng: model.init(rng, dummy)["params"]


def abstract_params(model: Transformer) -> Any:
    """Params as boxed `ShapeDtypeStruct`s carrying logical axis names; nothing is allocated."""
    return jax.eval_shape(_init_fn(model), jax.random.key(0))


def param_logical_axes(model: Transformer) -> Any:
    """Tree of logical `PartitionSpec`s, one per param."""
    return shd.logical_specs(abstract_params(model))


def param_shardings(model: Transformer) -> Any:
    """Tree of `NamedSharding`s for the params on `model.mesh` (None leaves without a mesh)."""
    boxed = abstract_params(model)
    if model.mesh is None:
        return jax.tree.map(lambda _: None, nn.meta.unbox(boxed))
    return shd.tree_shardings(boxed, model.mesh, model.rules)


def init_params(model: Transformer, rng: jax.Array) -> Any:
    """Random params created on-device in their final shardings (no full replica anywhere first)."""
    init = lambda key: nn.meta.unbox(_init_fn(model)(key))
    if model.mesh is None:
        return jax.jit(init)(rng)
    return jax.jit(init, out_shardings=param_shardings(model))(rng)


def count_params(params: Any) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
