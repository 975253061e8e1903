"""A decoder-only transformer for the Qwen2 / Qwen2.5 / Qwen3 / Llama 3 families, in Flax Linen.

Read top to bottom: RMSNorm, RoPE, attention (GQA, optional q/k bias and q/k norm, KV cache), SwiGLU MLP,
one decoder layer, and the `Transformer` that embeds, scans the layers and projects to logits.

Conventions
- Params are a plain pytree (`model.init(...)["params"]`, unboxed). Layer weights are stacked on a
  leading `layers` axis because the layers run under `nn.scan`.
- Every weight is created with logical axis names; activations are constrained by logical names when the
  model is given a mesh (see `gasp_jax.sharding`). Without a mesh the constraints are no-ops.
- KV cache: `KVCache(k, v)` with `k, v: [layers, batch, kv_heads, cache_len, head_dim]`. A call with a
  cache writes the new keys/values at slots `[cache_index, cache_index + T)` and attends over all slots
  allowed by `kv_mask` (which slots hold real tokens) and causality by slot index.
  Layout choices, both for decode speed: (batch, kv_heads) lead, so the attention matmuls read the
  cache with their batch dimensions major and no per-step transpose of the cache; and the whole
  cache is a *carry* of the layer scan, each layer writing its slice in place with
  `dynamic_update_slice`, rather than a scanned input/output (which would copy every layer's cache
  into a freshly stacked output at every decode step). With `scan_layers=False` the cache is instead a
  tuple of per-layer buffers (`init_cache(..., per_layer=True)`).
- Packed weights (`packed_weights=True`, decode on CPU): each unrolled layer is one
  `kernels.cpu_layer.decoder_layer` call over weights packed once per rollout (`pack_decode_params`) and
  the LM head one `kernels.cpu_gemm` call. XLA:CPU's dot repacks its weight operand on every call, which
  at decode's few rows costs as much as the matmul, and the dozen small ops around a layer's matmuls are
  each a pass over memory of their own; same math up to float rounding, fp32 only.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import Mesh

from gasp_jax import sharding as shd
from gasp_jax.kernels import cpu_gemm, cpu_layer
from gasp_jax.models.config import ModelConfig

_NEG_INF = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: fully-masked (padding) rows stay NaN-free


class KVCache(NamedTuple):
    """Stacked `[L, B, K, S, D]` arrays (scanned layers), or tuples of L `[B, K, S, D]` arrays
    (`per_layer=True`, for `scan_layers=False`: each layer's cache is its own buffer)."""

    k: Any
    v: Any

    @property
    def length(self) -> int:
        k = self.k[0] if isinstance(self.k, (tuple, list)) else self.k
        return k.shape[-2]


CACHE_AXES = ("cache_layers", "cache_batch", "cache_kv_heads", "cache_length", "cache_head_dim")
CACHE_LENGTH_AXIS = CACHE_AXES.index("cache_length")


def init_cache(config: ModelConfig, batch: int, length: int, dtype: Any = None, per_layer: bool = False) -> KVCache:
    """Zero KV cache for `batch` rows and `length` slots (one buffer per layer with `per_layer`)."""
    dtype = dtype or config.dtype
    if per_layer:
        shape = (batch, config.num_kv_heads, length, config.head_dim)
        zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
        return KVCache(zeros(), zeros())
    shape = (config.num_layers, batch, config.num_kv_heads, length, config.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def _param(module: nn.Module, name: str, init, shape, axes, dtype):
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


_KERNEL_INIT = nn.initializers.normal(stddev=0.02)


class RMSNorm(nn.Module):
    dim: int
    eps: float
    dtype: Any
    param_dtype: Any
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x):
        scale = _param(self, "scale", nn.initializers.ones, (self.dim,), (self.axis_name,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return scale.astype(self.dtype) * y.astype(self.dtype)


# ----------------------------------------------------------------------------------------------- RoPE


def rope_inv_freq(config: ModelConfig) -> jax.Array:
    """Inverse frequencies [head_dim // 2], with linear or Llama-3 scaling applied."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    s = config.rope_scaling
    if s is None or s.type == "default":
        return inv_freq
    if s.type == "linear":
        return inv_freq / s.factor
    # llama3: keep high frequencies, divide low ones by `factor`, interpolate in between.
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    interpolated = (1 - smooth) * inv_freq / s.factor + smooth * inv_freq
    return jnp.where(
        wavelen > low_wavelen, inv_freq / s.factor, jnp.where(wavelen < high_wavelen, inv_freq, interpolated)
    )


def rope_tables(positions: jax.Array, inv_freq: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos and sin `[B, T, D/2]` of the rotation angles of `positions: [B, T]`."""
    angles = positions.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotates `x: [B, T, H, D]` by `positions: [B, T]` (HF's rotate-half layout), in fp32."""
    cos, sin = (a[:, :, None, :] for a in rope_tables(positions, inv_freq))
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


# ------------------------------------------------------------------------------------------ Attention


def attend(q, key, val, mask):
    """Grouped-query attention of `q [B, T, H, D]` over `key, val [B, K, S, D]` where `mask [B, T, S]`:
    query head n reads kv head n // (H / K), as HF's repeat_kv. Returns `[B, T, H, D]` in q's dtype."""
    b, t, h, d = q.shape
    k = key.shape[1]
    q = q.reshape(b, t, k, h // k, d)
    scores = jnp.einsum("btkgd,bksd->bkgts", q, key, preferred_element_type=jnp.float32)
    scores = scores * (1.0 / math.sqrt(d))
    scores = jnp.where(mask[:, None, None, :, :], scores, _NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    # Output in the batched-matmul layout [B, K, G, T, D], then transpose: asking the einsum for
    # [B, T, K, G, D] directly makes XLA:CPU fall back to a slow dot (10x at decode shapes).
    return jnp.einsum("bkgts,bksd->bkgtd", probs, val).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


class Attention(nn.Module):
    config: ModelConfig
    mesh: Mesh | None
    rules: shd.Rules

    @nn.compact
    def __call__(self, x, positions, mask, cache_kv, layer, cache_index):
        """`cache_kv`: None, this layer's own `(k, v)` buffers `[B, K, S, D]` (unrolled layers), or the
        stacked cache of all layers `[L, B, K, S, D]` (scanned layers), of which it writes slice `layer`."""
        cfg = self.config
        e, h, k, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        pdt, dt = cfg.param_dtype, cfg.dtype
        # Declared in this order (o before the biases): init draws each param's key in turn.
        wq = _param(self, "q_proj", _KERNEL_INIT, (e, h, d), ("embed", "q_heads", "head_dim"), pdt)
        wk = _param(self, "k_proj", _KERNEL_INIT, (e, k, d), ("embed", "kv_heads", "head_dim"), pdt)
        wv = _param(self, "v_proj", _KERNEL_INIT, (e, k, d), ("embed", "kv_heads", "head_dim"), pdt)
        wo = _param(self, "o_proj", _KERNEL_INIT, (h, d, e), ("q_heads", "head_dim", "embed"), pdt)
        q = jnp.einsum("bte,ehd->bthd", x, wq.astype(dt))
        key = jnp.einsum("bte,ekd->btkd", x, wk.astype(dt))
        val = jnp.einsum("bte,ekd->btkd", x, wv.astype(dt))
        if cfg.qkv_bias:
            zeros = nn.initializers.zeros
            q = q + _param(self, "q_bias", zeros, (h, d), ("q_heads", "head_dim"), pdt).astype(dt)
            key = key + _param(self, "k_bias", zeros, (k, d), ("kv_heads", "head_dim"), pdt).astype(dt)
            val = val + _param(self, "v_bias", zeros, (k, d), ("kv_heads", "head_dim"), pdt).astype(dt)
        if cfg.qk_norm:  # Qwen3: RMSNorm over head_dim, before RoPE.
            q = RMSNorm(d, cfg.rms_norm_eps, dt, pdt, "head_dim", name="q_norm")(q)
            key = RMSNorm(d, cfg.rms_norm_eps, dt, pdt, "head_dim", name="k_norm")(key)

        inv_freq = rope_inv_freq(cfg)
        q = apply_rope(q, positions, inv_freq)
        key = apply_rope(key, positions, inv_freq)
        q = shd.constrain(q, ("act_batch", "act_length", "act_heads", None), self.mesh, self.rules)
        key = shd.constrain(key, ("act_batch", "act_length", "act_kv_heads", None), self.mesh, self.rules)

        key = key.transpose(0, 2, 1, 3)  # [B, K, T, D]: the cache layout
        val = val.transpose(0, 2, 1, 3)
        new_cache_kv = None
        if cache_kv is not None:
            # A per-layer cache is this layer's own [B, K, S, D]; a stacked one holds every layer,
            # [L, B, K, S, D], and this layer writes (then reads) its slice `layer`.
            stacked = cache_kv[0].ndim == 5
            lead = (layer,) if stacked else ()
            axes = CACHE_AXES if stacked else CACHE_AXES[1:]
            per_row = jnp.ndim(cache_index) == 1  # one write slot per row (continuous batching)
            start = tuple(jnp.asarray(i, jnp.int32) for i in (*lead, 0, 0, 0 if per_row else cache_index, 0))

            def write_row(row_buf, row_new, index):  # [(L,) K, S, D] <- [(1,) K, T, D] at slot `index`
                row_start = (jnp.asarray(layer, jnp.int32),) * stacked + (0, jnp.asarray(index, jnp.int32), 0)
                return jax.lax.dynamic_update_slice(row_buf, row_new, row_start)

            def write(buf, new):
                new = new[None] if stacked else new
                if per_row:  # a batched dynamic_update_slice: an in-place scatter of T slots per row
                    batch_axis = 1 if stacked else 0
                    buf = jax.vmap(write_row, in_axes=(batch_axis, batch_axis, 0), out_axes=batch_axis)(
                        buf, new.astype(buf.dtype), cache_index
                    )
                else:
                    buf = jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), start)
                return shd.constrain(buf, axes, self.mesh, self.rules)

            new_cache_kv = (write(cache_kv[0], key), write(cache_kv[1], val))
            read = lambda buf: jax.lax.dynamic_index_in_dim(buf, layer, 0, keepdims=False) if stacked else buf
            key, val = (read(buf).astype(dt) for buf in new_cache_kv)

        out = attend(q, key, val, mask)
        out = shd.constrain(out, ("act_batch", "act_length", "act_heads", None), self.mesh, self.rules)
        out = jnp.einsum("bthd,hde->bte", out, wo.astype(dt))
        out = checkpoint_name(out, "attn_out")
        return out, new_cache_kv


class MLP(nn.Module):
    config: ModelConfig
    mesh: Mesh | None
    rules: shd.Rules

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        e, f, pdt, dt = cfg.hidden_size, cfg.intermediate_size, cfg.param_dtype, cfg.dtype
        wg = _param(self, "gate_proj", _KERNEL_INIT, (e, f), ("embed", "mlp"), pdt)
        wu = _param(self, "up_proj", _KERNEL_INIT, (e, f), ("embed", "mlp"), pdt)
        wd = _param(self, "down_proj", _KERNEL_INIT, (f, e), ("mlp", "embed"), pdt)
        gate = jnp.einsum("bte,ef->btf", x, wg.astype(dt))
        up = jnp.einsum("bte,ef->btf", x, wu.astype(dt))
        hidden = shd.constrain(nn.silu(gate) * up, ("act_batch", "act_length", "act_mlp"), self.mesh, self.rules)
        return jnp.einsum("btf,fe->bte", hidden, wd.astype(dt))


class DecoderLayer(nn.Module):
    config: ModelConfig
    mesh: Mesh | None
    rules: shd.Rules

    @nn.compact
    def __call__(self, carry, positions, mask, layer, cache_index):
        """`carry = (x, cache_kv)`: the residual stream and the whole cache (None without one)."""
        x, cache_kv = carry
        cfg = self.config
        norm = lambda name: RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype, name=name)
        attn_out, new_cache_kv = Attention(cfg, self.mesh, self.rules, name="attn")(
            norm("input_norm")(x), positions, mask, cache_kv, layer, cache_index
        )
        x = x + attn_out
        x = x + MLP(cfg, self.mesh, self.rules, name="mlp")(norm("post_attn_norm")(x))
        x = shd.constrain(x, ("act_batch", "act_length", "act_embed"), self.mesh, self.rules)
        return (x, new_cache_kv), None


class PackedDecoderLayer(nn.Module):
    """`DecoderLayer` over packed weights (`pack_decode_params`) as one `kernels.cpu_layer` call: fp32, one
    CPU device, a per-layer cache (or none). Takes the RoPE tables instead of positions."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, rope, mask, cache_kv, cache_index):
        cfg = self.config
        e, h, k, d, f = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
        shapes = cpu_layer.LayerWeights(
            input_norm=(e,), qkv=cpu_gemm.packed_shape(e, (h + 2 * k) * d), qkv_bias=((h + 2 * k) * d,),
            qk_norm=(2, d), o=cpu_gemm.packed_shape(h * d, e), post_attn_norm=(e,),
            gate_up=(2 * cpu_gemm.packed_shape(e, f)[0], e, cpu_gemm.PANEL), down=cpu_gemm.packed_shape(f, e))
        weights = cpu_layer.LayerWeights(*(self.param(n, nn.initializers.zeros, s, jnp.float32)
                                           for n, s in zip(shapes._fields, shapes)))
        b, t = x.shape[:2]
        if cache_kv is None:  # attend within the call: a cache of its own T slots
            cache_kv = (jnp.zeros((b, k, t, d), jnp.float32),) * 2
            cache_index = 0
        index = jnp.broadcast_to(jnp.asarray(cache_index, jnp.int32), (b,))
        out, key, val = cpu_layer.decoder_layer(x, weights, *rope, index, mask, *cache_kv, num_heads=h,
                                                eps=cfg.rms_norm_eps, qk_norm=cfg.qk_norm)
        return out, (key, val)


def _remat_policy(name: str):
    return {
        "full": None,  # save nothing: recompute the whole layer
        "dots": jax.checkpoint_policies.checkpoint_dots,
        "dots_with_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        "save_attn_out": jax.checkpoint_policies.save_only_these_names("attn_out"),
    }[name]


class Transformer(nn.Module):
    """Decoder-only LM. `__call__(tokens)` -> fp32 logits `[B, T, vocab]`.

    Args of `__call__`:
      tokens: int32 `[B, T]`.
      positions: int32 `[B, T]` RoPE positions; default `arange(T)`.
      kv_mask: bool `[B, S]`, which key slots hold real tokens (S = T without a cache, the cache length
        with one). Default: all valid.
      cache / cache_index: a `KVCache` and the int32 slot where `tokens[:, 0]` is written: a scalar
        (every row), or one slot per row `[B]` (decode slots at different depths, as in continuous
        batching). With a cache the call returns `(logits, new_cache)`.
      return_hidden: return the final-norm hidden states `[B, T, E]` instead of logits (for chunked
        log-prob computation with `unembed`).

    `scan_layers=False` runs the layers as an unrolled Python loop over per-layer params
    `layers_0 ... layers_{L-1}` (see `unstack_layer_params`). Same math; meant for decoding, where a
    scanned stack slices (and on CPU copies) every layer's weights out of the stacked arrays at every
    step, while separate per-layer arrays are read in place.

    `packed_weights=True` (with `scan_layers=False`, fp32, one CPU device) takes params from
    `pack_decode_params`: the projections and the LM head run through `kernels.cpu_gemm`.
    """

    config: ModelConfig
    mesh: Mesh | None = None
    rules: shd.Rules = shd.DEFAULT_RULES
    scan_layers: bool = True
    packed_weights: bool = False

    def setup(self):
        cfg = self.config
        if self.packed_weights and self.scan_layers:
            raise ValueError("packed_weights=True needs scan_layers=False (params from pack_decode_params)")
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("vocab", "embed")),
            (cfg.vocab_size, cfg.hidden_size),
            cfg.param_dtype,
        )
        if self.packed_weights:
            self.lm_head_packed = self.param(
                "lm_head_packed", nn.initializers.zeros, cpu_gemm.packed_shape(cfg.hidden_size, cfg.vocab_size),
                jnp.float32,
            )
        elif not cfg.tie_word_embeddings:
            self.lm_head = self.param(
                "lm_head",
                nn.with_logical_partitioning(_KERNEL_INIT, ("embed", "vocab")),
                (cfg.hidden_size, cfg.vocab_size),
                cfg.param_dtype,
            )
        if self.packed_weights:
            self.layer_list = [PackedDecoderLayer(cfg, name=f"layers_{i}") for i in range(cfg.num_layers)]
            self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype)
            return
        layer_cls = DecoderLayer
        if cfg.remat_policy != "none":
            layer_cls = nn.remat(layer_cls, policy=_remat_policy(cfg.remat_policy), prevent_cse=False)
        if not self.scan_layers:
            self.layer_list = [layer_cls(cfg, self.mesh, self.rules, name=f"layers_{i}")
                               for i in range(cfg.num_layers)]
            self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype)
            return
        self.layers = nn.scan(
            layer_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast),
            length=cfg.num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(cfg, self.mesh, self.rules, name="layers")
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype)

    def __call__(self, tokens, positions=None, *, kv_mask=None, cache=None, cache_index=None, return_hidden=False):
        cfg = self.config
        b, t = tokens.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        x = jnp.take(self.embedding, tokens, axis=0).astype(cfg.dtype)
        x = shd.constrain(x, ("act_batch", "act_length", "act_embed"), self.mesh, self.rules)

        if cache is None:
            query_slots = jnp.arange(t)
            num_slots = t
            cache_kv = None
        else:
            if cache_index is None:
                raise ValueError("cache_index is required with a cache")
            # A scalar cache_index: every row writes at the same slots; a [B] one: row r at its own.
            query_slots = jnp.asarray(cache_index, jnp.int32)[..., None] + jnp.arange(t)  # [T] or [B, T]
            num_slots = cache.length
            cache_kv = (cache.k, cache.v)
        mask = query_slots[..., :, None] >= jnp.arange(num_slots)  # causal by slot  [(B,) T, S]
        mask = jnp.broadcast_to(mask, (b, t, num_slots))
        if kv_mask is not None:
            mask = mask & kv_mask[:, None, :].astype(bool)

        if self.scan_layers:
            if cache_kv is not None and isinstance(cache_kv[0], (tuple, list)):
                raise ValueError("a per-layer cache needs scan_layers=False; scanned layers take a stacked cache")
            layer_ids = jnp.arange(cfg.num_layers, dtype=jnp.int32)
            (x, new_cache_kv), _ = self.layers((x, cache_kv), positions, mask, layer_ids, cache_index)
        else:
            if cache_kv is not None and not isinstance(cache_kv[0], (tuple, list)):
                raise ValueError("scan_layers=False needs a per-layer cache: init_cache(..., per_layer=True)")
            new_k, new_v = [], []
            rope = rope_tables(positions, rope_inv_freq(cfg)) if self.packed_weights else None  # once, not per layer
            for i, layer in enumerate(self.layer_list):
                layer_cache = None if cache_kv is None else (cache_kv[0][i], cache_kv[1][i])
                if self.packed_weights:
                    x, layer_cache = layer(x, rope, mask, layer_cache, cache_index)
                else:
                    (x, layer_cache), _ = layer((x, layer_cache), positions, mask, i, cache_index)
                if layer_cache is not None:
                    new_k.append(layer_cache[0])
                    new_v.append(layer_cache[1])
            new_cache_kv = (tuple(new_k), tuple(new_v))
        x = self.final_norm(x)
        out = x if return_hidden else self.unembed(x)
        if cache is None:
            return out
        return out, KVCache(*new_cache_kv)

    def unembed(self, hidden):
        """fp32 logits from final hidden states `[..., E]`."""
        dt = self.config.dtype
        if self.packed_weights:
            return cpu_gemm.matmul(hidden.astype(jnp.float32), self.lm_head_packed, self.config.vocab_size)
        if self.config.tie_word_embeddings:
            logits = jnp.einsum("...e,ve->...v", hidden.astype(dt), self.embedding.astype(dt))
        else:
            logits = jnp.einsum("...e,ev->...v", hidden.astype(dt), self.lm_head.astype(dt))
        return logits.astype(jnp.float32)


def unstack_layer_params(params: Any, num_layers: int) -> Any:
    """Scanned params (`layers` stacked on a leading axis) -> the `scan_layers=False` layout."""
    out = {k: v for k, v in params.items() if k != "layers"}
    for i in range(num_layers):
        out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"])
    return out


def pack_layer(layer: Any, config: ModelConfig) -> cpu_layer.LayerWeights:
    """One unrolled layer's params (`unstack_layer_params(...)["layers_i"]`) -> `cpu_layer.LayerWeights`:
    q|k|v, o, gate|up and down packed, the norms and biases in fp32 (zero biases, unit q/k norms where the
    model has none)."""
    e, h, k, d = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
    attn, mlp = layer["attn"], layer["mlp"]
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    bias = [attn[n].reshape(-1) if config.qkv_bias else jnp.zeros((m * d,)) for n, m in
            (("q_bias", h), ("k_bias", k), ("v_bias", k))]
    return cpu_layer.LayerWeights(
        input_norm=f32(layer["input_norm"]["scale"]),
        qkv=cpu_gemm.pack(jnp.concatenate([attn[n].reshape(e, -1) for n in ("q_proj", "k_proj", "v_proj")], axis=1)),
        qkv_bias=f32(jnp.concatenate(bias)),
        qk_norm=f32(jnp.stack([attn[n]["scale"] if config.qk_norm else jnp.ones((d,)) for n in ("q_norm", "k_norm")])),
        o=cpu_gemm.pack(attn["o_proj"].reshape(h * d, e)),
        post_attn_norm=f32(layer["post_attn_norm"]["scale"]),
        gate_up=cpu_layer.pack_gate_up(mlp["gate_proj"], mlp["up_proj"]),
        down=cpu_gemm.pack(mlp["down_proj"]),
    )


def pack_decode_params(params: Any, config: ModelConfig) -> Any:
    """Unrolled params (`unstack_layer_params`) -> the `packed_weights=True` layout: each layer `pack_layer`'s
    `cpu_layer.LayerWeights` (as a dict), the LM head (the embedding's transpose when tied) packed as
    `lm_head_packed`, the embedding and final norm as they are."""
    out = {name: v for name, v in params.items() if not name.startswith("layers_") and name != "lm_head"}
    head = params["embedding"].T if config.tie_word_embeddings else params["lm_head"]
    out["lm_head_packed"] = cpu_gemm.pack(head)  # pack() casts to fp32
    for i in range(config.num_layers):
        out[f"layers_{i}"] = pack_layer(params[f"layers_{i}"], config)._asdict()
    return out
