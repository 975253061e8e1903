"""Device meshes and logical-axis sharding.

Every weight and main activation in gasp_jax carries *logical* axis names (`"embed"`, `"mlp"`,
`"act_batch"`, ...). One rules table maps each logical name to an ordered tuple of mesh axes; this
module turns those annotations into `NamedSharding`s. Different rule tables (say, trainer vs sampler,
or teacher vs student) reuse the same model code.

A mesh axis is dropped from a dimension's spec when the dimension is not divisible by it (e.g. 2 KV
heads on a tensor axis of 4): that dimension is then replicated on the axis instead of failing.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes (in order). Names missing from the table are replicated.
# Params: "vocab", "embed", "q_heads", "kv_heads", "head_dim", "mlp", "layers", "norm".
# Activations: "act_*". KV cache: "cache_*".
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("layers", None),
    ("norm", None),
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_layers", None),
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
    ("cache_kv_heads", "tensor"),
    ("cache_head_dim", None),
)

Rules = Sequence[tuple[str, Any]]


def make_mesh(
    shape: Mapping[str, int] | None = None,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """Builds a `(data, fsdp, tensor)` mesh with Auto axis types.

    `shape` maps axis names to sizes; one size may be -1 (fill with the remaining devices). The default
    puts every device on `fsdp`. Missing axes get size 1.
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = dict(shape or {"fsdp": -1})
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {shape}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not divide into mesh {shape}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {len(devices)}")
    return jax.make_mesh(
        tuple(sizes), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices
    )


def logical_to_mesh_spec(
    logical: Sequence[str | None] | P | None,
    shape: Sequence[int],
    mesh: Mesh,
    rules: Rules = DEFAULT_RULES,
) -> P:
    """Maps logical axis names of an array of `shape` to a mesh `PartitionSpec`.

    Mesh axes that are absent, already used by an earlier dimension, or do not divide the dimension
    are dropped, so the result is always a valid sharding for `shape`.
    """
    if logical is None:
        return P()
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name, dim in zip(tuple(logical), shape):
        target = table.get(name) if name is not None else None
        if target is None:
            out.append(None)
            continue
        axes = (target,) if isinstance(target, str) else tuple(target)
        kept = []
        for ax in axes:
            if ax not in mesh.shape or ax in used or mesh.shape[ax] == 1:
                continue
            if dim % (math.prod(mesh.shape[a] for a in kept) * mesh.shape[ax]):
                continue
            kept.append(ax)
        used.update(kept)
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return P(*out)


def named_sharding(logical, shape, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> NamedSharding:
    return NamedSharding(mesh, logical_to_mesh_spec(logical, shape, mesh, rules))


def logical_specs(boxed_tree) -> Any:
    """Logical PartitionSpecs of a tree of `nn.LogicallyPartitioned` boxes (unboxed leaves -> P())."""
    return nn.get_partition_spec(boxed_tree)


def tree_shardings(boxed_tree, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """NamedShardings for a tree of (possibly abstract) boxed arrays, following the rules."""
    specs = logical_specs(boxed_tree)
    shapes = jax.tree.map(lambda x: x.shape, nn.meta.unbox(boxed_tree))
    return jax.tree.map(
        lambda spec, shape: named_sharding(spec, shape, mesh, rules),
        specs,
        shapes,
        is_leaf=lambda x: isinstance(x, P),
    )


def constrain(x: jax.Array, logical: Sequence[str | None], mesh: Mesh | None, rules: Rules) -> jax.Array:
    """`with_sharding_constraint` by logical names; a no-op without a mesh (CPU tests, 1 device)."""
    if mesh is None or mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, named_sharding(logical, x.shape, mesh, rules))


def rules_from_config(rules: Any) -> tuple[tuple[str, Any], ...]:
    """Normalises a rules table from an ml-collections config (lists become tuples; hashable)."""
    out = []
    for name, target in rules:
        if isinstance(target, (list, tuple)):
            target = tuple(target)
        out.append((str(name), target))
    return tuple(out)


def put_host_array(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """Places a host array on devices, each device receiving only its own slice."""
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])
