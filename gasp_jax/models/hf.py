"""Hugging Face checkpoints <-> gasp_jax params, offline, from local directories.

`load_hf` reads `config.json` and safetensors (single file or sharded index), maps every tensor onto our
stacked-layer layout and places each parameter directly into its `NamedSharding`. Each device's slice
is translated back into slices of the HF tensors and read on its own (through the `safetensors` slicing
reader), so a process materialises only what its devices hold, one parameter at a time, and never a
full stacked tensor. `save_hf` writes a directory that `transformers.AutoModelForCausalLM` loads.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
from typing import Any, Callable

import jax
import ml_dtypes
import numpy as np
from jax.sharding import Mesh

from gasp_jax import sharding as shd
from gasp_jax.models import safetensors_io as st
from gasp_jax.models.config import ModelConfig
from gasp_jax.models.init import build_model, param_shardings
from gasp_jax.models.transformer import Transformer

log = logging.getLogger(__name__)

_NP_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}


# How our layout derives from the HF tensor (the reverse is `_Mapping.to_hf`):
#   "same"       ours = hf
#   "transpose"  ours [A, B] = hf [B, A].T
#   "heads_in"   ours [E, N, D] = hf [N*D, E].T  (q/k/v projections)
#   "heads_out"  ours [N, D, E] = hf [E, N*D].T  (o projection)
#   "heads_flat" ours [N, D] = hf [N*D]          (q/k/v biases)
KINDS = ("same", "transpose", "heads_in", "heads_out", "heads_flat")


@dataclasses.dataclass(frozen=True)
class _Mapping:
    """One of our params <-> one HF tensor name (per layer when `per_layer`)."""

    path: tuple[str, ...]
    hf_name: str  # may contain "{i}" for the layer index
    hf_shape: Callable[[ModelConfig], tuple[int, ...]]
    kind: str  # one of KINDS
    to_hf: Callable[[np.ndarray, ModelConfig], np.ndarray]

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf_name


def _identity(x, c):
    return x


def _mappings(c: ModelConfig) -> list[_Mapping]:
    e, f, h, k, d, v = c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size
    layer = "model.layers.{i}."

    def heads_in_to_hf(heads):  # ours [E, heads, D] -> HF [heads*D, E]
        return lambda x, c: x.reshape(e, heads * d).T

    transpose = lambda x, c: x.T
    maps = [
        _Mapping(("embedding",), "model.embed_tokens.weight", lambda c: (v, e), "same", _identity),
        _Mapping(("final_norm", "scale"), "model.norm.weight", lambda c: (e,), "same", _identity),
        _Mapping(("layers", "input_norm", "scale"), layer + "input_layernorm.weight", lambda c: (e,), "same", _identity),
        _Mapping(("layers", "post_attn_norm", "scale"), layer + "post_attention_layernorm.weight", lambda c: (e,), "same", _identity),
        _Mapping(("layers", "attn", "q_proj"), layer + "self_attn.q_proj.weight", lambda c: (h * d, e), "heads_in", heads_in_to_hf(h)),
        _Mapping(("layers", "attn", "k_proj"), layer + "self_attn.k_proj.weight", lambda c: (k * d, e), "heads_in", heads_in_to_hf(k)),
        _Mapping(("layers", "attn", "v_proj"), layer + "self_attn.v_proj.weight", lambda c: (k * d, e), "heads_in", heads_in_to_hf(k)),
        _Mapping(
            ("layers", "attn", "o_proj"), layer + "self_attn.o_proj.weight", lambda c: (e, h * d), "heads_out",
            lambda x, c: x.reshape(h * d, e).T,
        ),
        _Mapping(("layers", "mlp", "gate_proj"), layer + "mlp.gate_proj.weight", lambda c: (f, e), "transpose", transpose),
        _Mapping(("layers", "mlp", "up_proj"), layer + "mlp.up_proj.weight", lambda c: (f, e), "transpose", transpose),
        _Mapping(("layers", "mlp", "down_proj"), layer + "mlp.down_proj.weight", lambda c: (e, f), "transpose", transpose),
    ]
    if not c.tie_word_embeddings:
        maps.append(_Mapping(("lm_head",), "lm_head.weight", lambda c: (v, e), "transpose", transpose))
    if c.qkv_bias:
        for name, heads in (("q", h), ("k", k), ("v", k)):
            maps.append(
                _Mapping(
                    ("layers", "attn", f"{name}_bias"), layer + f"self_attn.{name}_proj.bias", lambda c, n=heads: (n * d,),
                    "heads_flat", lambda x, c: x.reshape(-1),
                )
            )
    if c.qk_norm:
        for name in ("q", "k"):
            maps.append(
                _Mapping(("layers", "attn", f"{name}_norm", "scale"), layer + f"self_attn.{name}_norm.weight", lambda c: (d,), "same", _identity)
            )
    return maps


def _our_shape(m: _Mapping, c: ModelConfig) -> tuple[int, ...]:
    """Our (per-layer) shape of mapping `m`'s tensor."""
    hs, d = m.hf_shape(c), c.head_dim
    if m.kind == "same":
        return tuple(hs)
    if m.kind == "transpose":
        return (hs[1], hs[0])
    if m.kind == "heads_in":
        return (hs[1], hs[0] // d, d)
    if m.kind == "heads_out":
        return (hs[1] // d, d, hs[0])
    return (hs[0] // d, d)  # heads_flat


def _bounds(index: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """`index` with every slice made explicit (start, stop; step 1), one per dimension of `shape`."""
    index = tuple(index) + (slice(None),) * (len(shape) - len(index))
    out = []
    for sl, dim in zip(index, shape):
        start, stop, step = sl.indices(dim)
        if step != 1:
            raise ValueError(f"strided shard index {sl} is not supported")
        out.append(slice(start, stop))
    return tuple(out)


def _read_ours(m: _Mapping, c: ModelConfig, read: Callable[[tuple[slice, ...]], np.ndarray], idx: tuple[slice, ...]) -> np.ndarray:
    """Our-layout slice `idx` (explicit bounds) of one (per-layer) tensor, reading only the HF slice it needs."""
    d = c.head_dim
    if m.kind == "same":
        return read(idx)
    if m.kind == "transpose":
        return read((idx[1], idx[0])).T
    heads = idx[1] if m.kind == "heads_in" else idx[0]
    rows = slice(heads.start * d, heads.stop * d)  # the HF rows/columns of these heads (all of head_dim)
    n = heads.stop - heads.start
    if m.kind == "heads_in":
        x = read((rows, idx[0]))  # [n*D, e']
        return x.T.reshape(x.shape[1], n, d)[:, :, idx[2]]
    if m.kind == "heads_out":
        x = read((idx[2], rows))  # [e', n*D]
        return x.T.reshape(n, d, x.shape[0])[:, idx[1], :]
    return read((rows,)).reshape(n, d)[:, idx[1]]  # heads_flat


def _get_path(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _set_path(tree, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def read_hf_config(path: str) -> dict[str, Any]:
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: not found (load_hf needs a local HF checkpoint directory)")
    with open(cfg_path) as f:
        return json.load(f)


def load_hf(
    path: str,
    *,
    dtype: str = "float32",
    param_dtype: str | None = None,
    mesh: Mesh | None = None,
    rules: shd.Rules = shd.DEFAULT_RULES,
    **config_overrides,
) -> tuple[Transformer, dict]:
    """Loads a local HF checkpoint into `(model, params)`, params placed by `rules` on `mesh`.

    `dtype` is the compute dtype and, unless `param_dtype` is given, also the storage dtype.
    Extra keyword arguments override `ModelConfig` fields (e.g. `remat_policy="full"`).
    """
    config = ModelConfig.from_hf_dict(
        read_hf_config(path), dtype=dtype, param_dtype=param_dtype or dtype, **config_overrides
    )
    model = build_model(config, mesh=mesh, rules=rules)
    shardings = param_shardings(model)
    ckpt = st.CheckpointDir(path)
    np_dtype = _NP_DTYPES[config.param_dtype]

    def check_shape(name: str, expected: tuple[int, ...]) -> None:
        shape = ckpt.shape(name)
        if tuple(shape) != tuple(expected):
            raise st.SafetensorsError(f"{ckpt.where(name)}: tensor {name!r} has shape {tuple(shape)}, expected {tuple(expected)}")

    params: dict = {}
    used = set()
    for m in _mappings(config):
        names = [m.hf_name.format(i=i) for i in range(config.num_layers)] if m.per_layer else [m.hf_name]
        for name in names:
            check_shape(name, m.hf_shape(config))
        used.update(names)
        shape = ((config.num_layers,) if m.per_layer else ()) + _our_shape(m, config)

        def host_slice(index, m=m, names=names, shape=shape) -> np.ndarray:
            idx = _bounds(index, shape)
            if not m.per_layer:
                return _read_ours(m, config, lambda i: ckpt.read(names[0], i), idx).astype(np_dtype, copy=False)
            out = np.empty(tuple(s.stop - s.start for s in idx), np_dtype)
            for j, layer in enumerate(range(idx[0].start, idx[0].stop)):
                out[j] = _read_ours(m, config, lambda i, n=names[layer]: ckpt.read(n, i), idx[1:])
            return out

        target = _get_path(shardings, m.path)
        value = jax.numpy.asarray(host_slice(())) if target is None else _place(shape, target, host_slice)
        _set_path(params, m.path, value)
    unexpected = [n for n in ckpt.names() if n not in used and not n.endswith("rotary_emb.inv_freq")]
    if unexpected and not (config.tie_word_embeddings and unexpected == ["lm_head.weight"]):
        log.warning("%s: %d checkpoint tensors unused, e.g. %s", path, len(unexpected), unexpected[:3])
    return model, params


def _place(shape: tuple[int, ...], sharding: jax.sharding.Sharding, host_slice: Callable) -> jax.Array:
    """A global array built device by device from host slices: one device's slice is alive on the host
    at a time (a slice shared by replicas is read once and dropped after its last device)."""
    index_map = sharding.addressable_devices_indices_map(shape)
    keys = {d: tuple(s.indices(n)[:2] for s, n in zip(_bounds(idx, shape), shape)) for d, idx in index_map.items()}
    remaining = collections.Counter(keys.values())
    cache: dict = {}
    pieces = []
    for device, idx in index_map.items():
        key = keys[device]
        host = cache.pop(key) if key in cache else host_slice(idx)
        remaining[key] -= 1
        if remaining[key]:
            cache[key] = host
        pieces.append(jax.device_put(host, device))
        del host
    return jax.make_array_from_single_device_arrays(shape, sharding, pieces)


def to_hf_tensors(config: ModelConfig, params: dict) -> dict[str, np.ndarray]:
    """Our params (device or host arrays) -> HF tensor dict on the host."""
    out = {}
    for m in _mappings(config):
        value = np.asarray(jax.device_get(_get_path(params, m.path)))
        if m.per_layer:
            for i in range(config.num_layers):
                out[m.hf_name.format(i=i)] = np.ascontiguousarray(m.to_hf(value[i], config))
        else:
            out[m.hf_name] = np.ascontiguousarray(m.to_hf(value, config))
    return out


def save_hf(
    model: Transformer,
    params: dict,
    out_dir: str,
    *,
    tokenizer: Any = None,
    max_shard_bytes: int = 4 * 1024**3,
) -> None:
    """Exports `params` as a HF checkpoint directory (config.json + safetensors, sharded when large)."""
    config = model.config
    os.makedirs(out_dir, exist_ok=True)
    tensors = to_hf_tensors(config, params)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        st.save_file(shards[0], os.path.join(out_dir, "model.safetensors"), metadata)
    else:
        weight_map = {}
        for j, shard in enumerate(shards):
            fname = f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors"
            st.save_file(shard, os.path.join(out_dir, fname), metadata)
            weight_map.update({name: fname for name in shard})
        total = sum(t.nbytes for t in tensors.values())
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config.to_hf_dict(), f, indent=2)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)


def load_tokenizer(path: str):
    """`transformers.AutoTokenizer` from a local directory (never a hub)."""
    from transformers import AutoTokenizer  # heavy: seconds to import, needed only for HF tokenizers

    return AutoTokenizer.from_pretrained(path, local_files_only=True)
