"""Device meshes and logical-axis sharding.

Every weight and main activation in gasp_jax carries *logical* axis names (`"embed"`, `"mlp"`,
`"act_batch"`, ...). One rules table maps each logical name to an ordered tuple of mesh axes; this
module turns those annotations into `NamedSharding`s. Different rule tables (say, trainer vs sampler,
or teacher vs student) reuse the same model code.

A mesh axis is dropped from a dimension's spec when the dimension is not divisible by it (e.g. 2 KV
heads on a tensor axis of 4): that dimension is then replicated on the axis instead of failing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger("gasp_jax")

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


class MeshError(ValueError):
    """A mesh that does not fit the devices (the message names both)."""


def _describe_devices(devices: Sequence[jax.Device]) -> str:
    kinds = sorted({getattr(d, "device_kind", d.platform) for d in devices})
    processes = sorted({d.process_index for d in devices})
    slices = sorted({getattr(d, "slice_index", 0) or 0 for d in devices})
    where = f"{len(processes)} process(es)" + (f", {len(slices)} slices" if len(slices) > 1 else "")
    return f"{len(devices)} {'/'.join(kinds)} devices ({where})"


def _resolve_sizes(shape: Mapping[str, int], num_devices: int, what: str, devices_text: str) -> list[int]:
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise MeshError(f"unknown mesh axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise MeshError(f"at most one mesh axis may be -1, got {what} {dict(shape)}")
    if any(s == 0 or s < -1 for s in sizes):
        raise MeshError(f"mesh axis sizes must be positive (or one -1), got {what} {dict(shape)}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise MeshError(f"{what} {dict(shape)} does not divide {devices_text}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise MeshError(
            f"{what} {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, but this run has {devices_text}"
        )
    return sizes


def make_mesh(
    shape: Mapping[str, int] | None = None,
    *,
    dcn_shape: Mapping[str, int] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """Builds a `(data, fsdp, tensor)` mesh with Auto axis types.

    `shape` maps axis names to sizes; one size may be -1 (fill with the remaining devices). The default
    puts every device on `fsdp`. Missing axes get size 1.

    `dcn_shape` makes a multi-slice (hybrid) mesh, as MaxText does: `shape` is then the mesh inside
    one slice (ICI) and `dcn_shape` how slices are laid out across the data-centre network; each mesh
    axis has size `shape[a] * dcn_shape[a]`. Put `data` across slices (its gradient all-reduce is the
    only traffic that crosses DCN) and fsdp/tensor inside. Slices are the devices' `slice_index` on
    TPU and processes elsewhere (GPU nodes, CPU rehearsals).
    """
    devices = list(devices if devices is not None else jax.devices())
    text = _describe_devices(devices)
    dcn = {a: int(v) for a, v in (dcn_shape or {}).items()}
    if any(v < 1 for v in dcn.values()):
        raise MeshError(f"mesh.dcn sizes must be >= 1, got {dcn}")
    num_slices = math.prod(dcn.values()) if dcn else 1
    if num_slices == 1:
        sizes = _resolve_sizes(dict(shape or {"fsdp": -1}), len(devices), "mesh", text)
        return jax.make_mesh(
            tuple(sizes), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES), devices=devices
        )
    dcn_sizes = _resolve_sizes(dcn, num_slices, "mesh.dcn", f"{num_slices} slices")
    on_tpu_slices = devices[0].platform == "tpu" and all(getattr(d, "slice_index", None) is not None for d in devices)
    granules = {d.slice_index if on_tpu_slices else d.process_index for d in devices}
    if len(granules) != num_slices:
        unit = "slices" if on_tpu_slices else "processes"
        raise MeshError(f"mesh.dcn {dcn} needs {num_slices} slices, but this run has {text} on {len(granules)} {unit}")
    if len(devices) % num_slices:
        raise MeshError(f"{text} do not split evenly into {num_slices} slices")
    ici_sizes = _resolve_sizes(dict(shape or {"fsdp": -1}), len(devices) // num_slices, "mesh (per slice)", f"{len(devices) // num_slices} devices per slice of {text}")

    grid = mesh_utils.create_hybrid_device_mesh(
        ici_sizes, dcn_sizes, devices, process_is_granule=not on_tpu_slices
    )
    return Mesh(grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def _spec_and_dropped(logical, shape, mesh, rules) -> tuple[P, list[str]]:
    """The mesh spec, and why each rule-named mesh axis of size > 1 was not used (silent replication)."""
    if logical is None:
        return P(), []
    mesh_shape = dict(mesh.shape) if isinstance(mesh, Mesh) else dict(mesh)
    table = dict(rules)
    used: set[str] = set()
    out, dropped = [], []
    for name, dim in zip(tuple(logical), shape):
        target = table.get(name) if name is not None else None
        if target is None:
            out.append(None)
            continue
        axes = (target,) if isinstance(target, str) else tuple(target)
        kept = []
        for ax in axes:
            size = mesh_shape.get(ax, 1)
            if size == 1:
                continue
            if ax in used:
                dropped.append(f"{name}={dim}: {ax} already shards another dimension")
                continue
            if dim % (math.prod(mesh_shape[a] for a in kept) * size):
                dropped.append(f"{name}={dim}: {ax}={size} does not divide it")
                continue
            kept.append(ax)
        used.update(kept)
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return P(*out), dropped


def logical_to_mesh_spec(
    logical: Sequence[str | None] | P | None,
    shape: Sequence[int],
    mesh: Mesh | Mapping[str, int],
    rules: Rules = DEFAULT_RULES,
) -> P:
    """Maps logical axis names of an array of `shape` to a mesh `PartitionSpec`.

    Mesh axes that are absent, already used by an earlier dimension, or do not divide the dimension
    are dropped, so the result is always a valid sharding for `shape` (`param_placements` reports
    the drops). `mesh` may be a `Mesh` or just its shape (planning for devices one does not have).
    """
    return _spec_and_dropped(logical, shape, mesh, rules)[0]


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


def global_batch(local: Any, sharding: NamedSharding) -> Any:
    """A global array (tree) from each process's rows: process i contributes its contiguous block.

    The multi-host form of `put_host_array` for data every process produces only partly (its shard
    of a batch); with one process it is a plain placement. Rows must split evenly over processes.
    """
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


# ----------------------------------------------------------------------------------- start-up checks


class ShardingError(ValueError):
    """Parameters are not sharded enough to fit the devices."""


@dataclasses.dataclass(frozen=True)
class ParamPlacement:
    """How one parameter lands on the mesh."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    spec: P
    shards: int  # distinct pieces (product of the mesh axes the spec uses)
    bytes_per_device: int
    dropped: tuple[str, ...]  # rule axes that could not shard it (it is replicated on them instead)


def param_placements(boxed_abstract: Any, mesh: Mesh | Mapping[str, int], rules: Rules = DEFAULT_RULES) -> list[ParamPlacement]:
    """One `ParamPlacement` per parameter of a tree of boxed (abstract) params."""
    mesh_shape = dict(mesh.shape) if isinstance(mesh, Mesh) else dict(mesh)
    specs = logical_specs(boxed_abstract)
    arrays = nn.meta.unbox(boxed_abstract)
    flat_specs = dict(jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, P))[0])
    out = []
    for path, x in jax.tree_util.tree_flatten_with_path(arrays)[0]:
        spec, dropped = _spec_and_dropped(flat_specs.get(path), x.shape, mesh_shape, rules)
        axes = [a for entry in spec if entry is not None for a in ((entry,) if isinstance(entry, str) else entry)]
        shards = math.prod(mesh_shape[a] for a in axes)
        nbytes = math.prod(x.shape) * np.dtype(x.dtype).itemsize
        out.append(
            ParamPlacement(
                jax.tree_util.keystr(path, simple=True, separator="/"), tuple(x.shape), np.dtype(x.dtype), spec,
                shards, -(-nbytes // shards), tuple(dropped),
            )
        )
    return out


def device_memory_bytes(device: jax.Device | None = None) -> int | None:
    """The accelerator's memory limit as reported by the runtime (None on CPU)."""
    device = device or jax.local_devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # some backends raise instead of returning None
        stats = {}
    limit = stats.get("bytes_limit")
    return int(limit) if limit else None


def check_param_placements(
    placements: Sequence[ParamPlacement],
    *,
    device_bytes: int | None,
    max_fraction: float = 0.5,
) -> int:
    """Logs each silently replicated parameter; raises when params alone exceed `max_fraction` of a device.

    Returns the parameter bytes per device. Without a known device size only the report is logged.
    """
    per_device = sum(p.bytes_per_device for p in placements)
    total = sum(math.prod(p.shape) * p.dtype.itemsize for p in placements)
    for p in placements:
        if p.dropped:
            log.warning(
                "sharding: %s %s is replicated on a mesh axis its rule names (%s); spec %s, %s per device",
                p.path, p.shape, "; ".join(p.dropped), p.spec, _gib(p.bytes_per_device),
            )
    log.info("sharding: params %s in total, %s per device", _gib(total), _gib(per_device))
    if device_bytes and per_device > max_fraction * device_bytes:
        worst = sorted(placements, key=lambda p: -p.bytes_per_device)[:5]
        raise ShardingError(
            f"params need {_gib(per_device)} per device, more than {max_fraction:.0%} of the device's "
            f"{_gib(device_bytes)} (sharding.max_param_memory_fraction); largest per device: "
            + ", ".join(f"{p.path} {p.shape} spec {p.spec} {_gib(p.bytes_per_device)}" for p in worst)
            + ". Shard more (a larger fsdp/tensor axis) or use bfloat16 params."
        )
    return per_device


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _spec_shards(spec: P, mesh_shape: Mapping[str, int]) -> int:
    axes = [a for entry in spec if entry is not None for a in ((entry,) if isinstance(entry, str) else entry)]
    return math.prod(mesh_shape[a] for a in axes)


def estimate_memory(
    boxed_abstract: Any,
    model_config: Any,
    mesh_shape: Mapping[str, int],
    rules: Rules = DEFAULT_RULES,
    *,
    train_rows: int,
    train_length: int,
    micro_batches: int = 1,
    logprob_chunk: int = 256,
    sample_rows: int,
    cache_length: int,
    rollout_rules: Rules | None = None,
    rollout_dtype: Any = None,
    rollout_copies: int = 1,
    optimizer_states: int = 2,
) -> dict[str, int]:
    """Bytes per device of one RL iteration on this mesh (the hand model; `gasp_jax.aot` has XLA's).

    Resident: params + optimizer (AdamW: 2 states shaped like the params). The update adds fp32
    gradients and the activations of one micro-batch: under full remat each layer's input saved plus one
    layer's working set (MLP and projections, its attention scores `[rows, heads, T, T]` in fp32 + the
    probabilities + their fp32 gradient) and one log-prob chunk; without remat every layer's working set. The rollout adds the copy of the params in the sampler's layout and
    `rollout_dtype` (`rollout_copies` of them: the continuous engine also splits the layers) and the KV
    cache of `sample_rows` rows of `cache_length` slots (the engine's slots). The rollout copy is dropped
    before the update, so `total` = resident + the larger of the two phases.
    """
    c = model_config
    mesh_shape = dict(mesh_shape)
    placements = param_placements(boxed_abstract, mesh_shape, rules)
    params = sum(p.bytes_per_device for p in placements)
    grads = sum(p.bytes_per_device * 4 // p.dtype.itemsize for p in placements)  # accumulated in fp32
    out = {"params": params, "grads": grads, "optimizer": optimizer_states * params}
    rollout = placements if rollout_rules is None else param_placements(boxed_abstract, mesh_shape, rollout_rules)
    itemsize = np.dtype(rollout_dtype).itemsize if rollout_dtype else None
    copied = (rollout_rules is not None and tuple(rollout_rules) != tuple(rules)) or (
        itemsize is not None and any(p.dtype.itemsize != itemsize for p in rollout))
    out["rollout_params"] = rollout_copies * sum(
        p.bytes_per_device * (itemsize or p.dtype.itemsize) // p.dtype.itemsize for p in rollout) if copied else 0
    act_bytes = np.dtype(jax.numpy.dtype(c.dtype)).itemsize
    cache_shape = (c.num_layers, sample_rows, cache_length, c.num_kv_heads, c.head_dim)
    cache_spec = logical_to_mesh_spec(
        ("cache_layers", "cache_batch", "cache_length", "cache_kv_heads", "cache_head_dim"), cache_shape,
        mesh_shape, rollout_rules or rules,
    )
    out["kv_cache"] = 2 * math.prod(cache_shape) * act_bytes // _spec_shards(cache_spec, mesh_shape)
    rows = max(1, train_rows // max(1, micro_batches))
    act_spec = logical_to_mesh_spec(("act_batch", "act_length", "act_embed"), (rows, train_length, c.hidden_size), mesh_shape, rules)
    batch_shards = _spec_shards(P(act_spec[0]), mesh_shape)
    local_rows = -(-rows // batch_shards)
    tensor = mesh_shape.get("tensor", 1)
    heads = -(-c.num_heads // tensor) if c.num_kv_heads % tensor == 0 else c.num_heads
    saved = c.num_layers * local_rows * train_length * c.hidden_size * act_bytes
    layer = local_rows * train_length * (4 * c.hidden_size + 3 * c.intermediate_size // tensor) * 4
    attention = local_rows * heads * train_length * train_length * (4 + act_bytes + 4)
    head = local_rows * min(logprob_chunk, train_length) * (c.vocab_size // tensor) * 4 * 2
    if getattr(c, "remat_policy", "full") in ("full", "save_attn_out"):
        out["activations"] = saved + layer + attention + head
    else:  # without full remat the backward pass keeps every layer's working set
        out["activations"] = c.num_layers * (layer + attention) + saved + head
    update = out["grads"] + out["activations"]
    sampling = out["rollout_params"] + out["kv_cache"]
    out["total"] = params + out["optimizer"] + max(update, sampling)
    return out
