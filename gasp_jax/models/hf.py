"""Hugging Face checkpoints <-> gasp_jax params, offline, from local directories.

`load_hf` reads `config.json` and safetensors (single file or sharded index), maps every tensor onto our
stacked-layer layout and places each parameter directly into its `NamedSharding` (each device receives
only its slice). `save_hf` writes a directory that `transformers.AutoModelForCausalLM` loads.
"""

from __future__ import annotations

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


@dataclasses.dataclass(frozen=True)
class _Mapping:
    """One of our params <-> one HF tensor name (per layer when `per_layer`)."""

    path: tuple[str, ...]
    hf_name: str  # may contain "{i}" for the layer index
    hf_shape: Callable[[ModelConfig], tuple[int, ...]]
    to_ours: Callable[[np.ndarray, ModelConfig], np.ndarray]
    to_hf: Callable[[np.ndarray, ModelConfig], np.ndarray]

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.hf_name


def _identity(x, c):
    return x


def _mappings(c: ModelConfig) -> list[_Mapping]:
    e, f, h, k, d, v = c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size
    layer = "model.layers.{i}."

    def proj_in(heads):  # HF [heads*D, E] <-> ours [E, heads, D]
        return (
            lambda x, c: x.T.reshape(e, heads, d),
            lambda x, c: x.reshape(e, heads * d).T,
        )

    maps = [
        _Mapping(("embedding",), "model.embed_tokens.weight", lambda c: (v, e), _identity, _identity),
        _Mapping(("final_norm", "scale"), "model.norm.weight", lambda c: (e,), _identity, _identity),
        _Mapping(("layers", "input_norm", "scale"), layer + "input_layernorm.weight", lambda c: (e,), _identity, _identity),
        _Mapping(("layers", "post_attn_norm", "scale"), layer + "post_attention_layernorm.weight", lambda c: (e,), _identity, _identity),
        _Mapping(("layers", "attn", "q_proj"), layer + "self_attn.q_proj.weight", lambda c: (h * d, e), *proj_in(h)),
        _Mapping(("layers", "attn", "k_proj"), layer + "self_attn.k_proj.weight", lambda c: (k * d, e), *proj_in(k)),
        _Mapping(("layers", "attn", "v_proj"), layer + "self_attn.v_proj.weight", lambda c: (k * d, e), *proj_in(k)),
        _Mapping(
            ("layers", "attn", "o_proj"), layer + "self_attn.o_proj.weight", lambda c: (e, h * d),
            lambda x, c: x.T.reshape(h, d, e), lambda x, c: x.reshape(h * d, e).T,
        ),
        _Mapping(("layers", "mlp", "gate_proj"), layer + "mlp.gate_proj.weight", lambda c: (f, e), lambda x, c: x.T, lambda x, c: x.T),
        _Mapping(("layers", "mlp", "up_proj"), layer + "mlp.up_proj.weight", lambda c: (f, e), lambda x, c: x.T, lambda x, c: x.T),
        _Mapping(("layers", "mlp", "down_proj"), layer + "mlp.down_proj.weight", lambda c: (e, f), lambda x, c: x.T, lambda x, c: x.T),
    ]
    if not c.tie_word_embeddings:
        maps.append(_Mapping(("lm_head",), "lm_head.weight", lambda c: (v, e), lambda x, c: x.T, lambda x, c: x.T))
    if c.qkv_bias:
        for name, heads in (("q", h), ("k", k), ("v", k)):
            maps.append(
                _Mapping(
                    ("layers", "attn", f"{name}_bias"), layer + f"self_attn.{name}_proj.bias", lambda c, n=heads: (n * d,),
                    lambda x, c, n=heads: x.reshape(n, d), lambda x, c: x.reshape(-1),
                )
            )
    if c.qk_norm:
        for name in ("q", "k"):
            maps.append(
                _Mapping(("layers", "attn", f"{name}_norm", "scale"), layer + f"self_attn.{name}_norm.weight", lambda c: (d,), _identity, _identity)
            )
    return maps


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

    def read(name: str, expected_shape: tuple[int, ...]) -> np.ndarray:
        arr = ckpt.get(name)
        if tuple(arr.shape) != tuple(expected_shape):
            where = ckpt._where.get(name, path)
            raise st.SafetensorsError(
                f"{where}: tensor {name!r} has shape {tuple(arr.shape)}, expected {tuple(expected_shape)}"
            )
        return arr

    params: dict = {}
    used = set()
    for m in _mappings(config):
        if m.per_layer:
            names = [m.hf_name.format(i=i) for i in range(config.num_layers)]
            host = np.stack([m.to_ours(read(n, m.hf_shape(config)), config) for n in names]).astype(np_dtype)
            used.update(names)
        else:
            host = m.to_ours(read(m.hf_name, m.hf_shape(config)), config).astype(np_dtype)
            used.add(m.hf_name)
        target = _get_path(shardings, m.path)
        _set_path(params, m.path, shd.put_host_array(host, target) if target is not None else jax.numpy.asarray(host))
    unexpected = [n for n in ckpt.names() if n not in used and not n.endswith("rotary_emb.inv_freq")]
    if unexpected and not (config.tie_word_embeddings and unexpected == ["lm_head.weight"]):
        log.warning("%s: %d checkpoint tensors unused, e.g. %s", path, len(unexpected), unexpected[:3])
    return model, params


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
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)
