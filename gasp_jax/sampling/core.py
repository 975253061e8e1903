"""What both sampling engines share: token choice, the prefill program, per-row keys, host transfers
and the one program cache.

`sampler.py` (static batches) and `engine.py` (continuous batching) import this module and not each
other; `api.generate` dispatches between them.

Program cache: `program(fn, model, **static)` is `jax.jit(partial(fn, model=model, **static))`, built
once per (function, model shape, mesh, rules, static settings); jit's own cache below it keys on the
argument shapes, which the buckets keep to a small set. The engines expose one builder per program
(`prefill_program` here, `sampler.decode_program`, `engine.admit_program` / `engine.decode_program` /
`engine.init_program`): each returns the jitted function for its static settings, so it can be
lowered and compiled ahead of time from abstract shapes (`fn.lower(*jax.ShapeDtypeStruct...)`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import weakref
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from gasp_jax import sharding as shd
from gasp_jax.kernels import cpu_gemm, cpu_sampling
from gasp_jax.models import init as init_lib
from gasp_jax.models.transformer import (
    CACHE_AXES,
    KVCache,
    Transformer,
    init_cache,
    pack_decode_params,
    unstack_layer_params,
)

PAD_ID = 0  # token written after a row's stop token (use `lengths` to know where a row ends)
EOS_SLOTS = 4  # stop ids are padded with -1 (never a token) to a multiple of this: few distinct shapes


class SampleOutput(NamedTuple):
    """Host (NumPy) arrays, rows prompt-major: row `i * num_samples + j` is prompt i, sample j."""

    tokens: np.ndarray  # int32 [N, max_new_tokens], PAD_ID after the stop token
    logprobs: np.ndarray  # float32 [N, max_new_tokens], 0 after the stop token
    lengths: np.ndarray  # int32 [N], number of generated tokens including the stop token


@dataclasses.dataclass(frozen=True)
class SamplingMode:
    """The static part of the sampling settings (what changes the compiled program)."""

    greedy: bool
    top_k: int  # 0: off
    use_top_p: bool


def sampling_mode(vocab_size: int, temperature: float, top_k: int, top_p: float) -> SamplingMode:
    """The static mode of these settings: temperature 0 is greedy (top-k / top-p unused then)."""
    greedy = float(temperature) == 0.0
    return SamplingMode(
        greedy=greedy,
        top_k=0 if greedy or top_k >= vocab_size else int(top_k),
        use_top_p=not greedy and float(top_p) < 1.0,
    )


def padded_stop_ids(eos_ids: Sequence[int], width: int | None = None) -> np.ndarray:
    """`eos_ids` as int32, -1 padded to `width` (default: the next multiple of `EOS_SLOTS`)."""
    width = width or -(-max(len(eos_ids), 1) // EOS_SLOTS) * EOS_SLOTS
    out = np.full((width,), -1, np.int32)
    out[: len(eos_ids)] = np.asarray(list(eos_ids), np.int32)
    return out


# --------------------------------------------------------------------------------------- validation


def check_prompt(k: int, prompt, vocab_size: int) -> np.ndarray:
    """Prompt `k` as an int32 array; ValueError naming the prompt when it is not a flat, non-empty list of ids."""
    a = np.asarray(prompt)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"prompt {k} must be a flat list of integer token ids, got shape {a.shape} dtype {a.dtype}")
    if a.size == 0:
        raise ValueError(f"prompt {k} is empty: every prompt needs at least one token")
    if a.min() < 0 or a.max() >= vocab_size:
        raise ValueError(f"prompt {k} has token ids outside [0, {vocab_size}): min {a.min()}, max {a.max()}")
    return a.astype(np.int32)


def check_settings(vocab_size: int, *, num_samples, temperature, top_k, top_p, eos_ids) -> None:
    """ValueError naming the first bad sampling setting."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if not math.isfinite(float(temperature)) or temperature < 0:
        raise ValueError(f"temperature must be finite and >= 0 (0 = greedy), got {temperature!r}")
    if not isinstance(top_k, (int, np.integer)) or not 0 <= top_k <= vocab_size:
        raise ValueError(f"top_k must be an int in [0, vocab_size={vocab_size}] (0 = off), got {top_k!r}")
    if not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    for e in eos_ids:
        if not isinstance(e, (int, np.integer)) or not 0 <= e < vocab_size:
            raise ValueError(f"eos_ids must be token ids in [0, {vocab_size}), got {tuple(eos_ids)!r}")


# --------------------------------------------------------------------------------------- token choice


def token_logprobs(scaled_logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """fp32 log-softmax of `scaled_logits [B, V]` over the full vocabulary, at `tokens [B]`."""
    scaled_logits = scaled_logits.astype(jnp.float32)
    picked = jnp.take_along_axis(scaled_logits, tokens[:, None], axis=-1)[:, 0]
    return picked - jax.nn.logsumexp(scaled_logits, axis=-1)


def _first_index_of(x: jax.Array, value: jax.Array) -> jax.Array:
    """Per row, the first index where `x [B, N] == value [B, 1]` (N when there is none)."""
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    return jnp.min(jnp.where(x == value, iota, x.shape[-1]), axis=-1)


def greedy_tokens(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """argmax (first index on ties) and its fp32 log-probability under softmax(logits), from one
    max: the picked logit is the max, so its log-prob is -log(sum(exp(logits - max))). This drops
    the `lax.top_k(x, 1)` custom call and a second max (3.02 -> 2.86 ms per CPU decode step at
    16 x 8192); `jnp.argmax`'s variadic reduce is slower still on XLA:CPU."""
    peak = jnp.max(logits, axis=-1, keepdims=True)
    tokens = jnp.minimum(_first_index_of(logits, peak), logits.shape[-1] - 1)  # NaN rows: last index
    logprobs = -jnp.log(jnp.sum(jnp.exp(logits - peak), axis=-1))
    return tokens.astype(jnp.int32), logprobs


CDF_BLOCK = 128  # vocabulary block of the two-level inverse-CDF search


def sample_from_probs(keys: jax.Array, probs: jax.Array) -> jax.Array:
    """One draw per row from the (unnormalised, non-negative) `probs [B, V]`, one key per row.

    Inverse-CDF sampling with a single uniform per row, where Gumbel-max needs V random numbers
    per row (39M per step at batch 256 and a 152k vocabulary). Two levels keep it cheap: the
    cumulative mass of 128-token blocks picks the block, a cumsum inside that block picks the
    token. Tokens of zero mass are never drawn (the target mass is > 0 and every step of the
    search lands on the first entry whose cumulative mass reaches it).
    """
    batch, vocab = probs.shape
    probs = probs.astype(jnp.float32)
    blocks = -(-vocab // CDF_BLOCK)
    if blocks * CDF_BLOCK != vocab:
        probs = jnp.pad(probs, ((0, 0), (0, blocks * CDF_BLOCK - vocab)))
    probs = probs.reshape(batch, blocks, CDF_BLOCK)
    block_cdf = jnp.cumsum(jnp.sum(probs, axis=-1), axis=-1)  # [B, blocks], non-decreasing
    u = 1.0 - jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)  # (0, 1]
    target = u * block_cdf[:, -1]
    block = jnp.minimum(jnp.sum(block_cdf < target[:, None], axis=-1), blocks - 1)
    before = jnp.where(block > 0, jnp.take_along_axis(block_cdf, jnp.maximum(block - 1, 0)[:, None], -1)[:, 0], 0.0)
    inside = jnp.take_along_axis(probs, block[:, None, None], axis=1)[:, 0]  # [B, CDF_BLOCK]
    index = jnp.sum(before[:, None] + jnp.cumsum(inside, axis=-1) < target[:, None], axis=-1)
    # Rounding can leave the target just above the block's last cumulative value: take the
    # block's last token of positive mass then (the block has one: its mass moved the CDF).
    last_positive = CDF_BLOCK - 1 - _first_index_of(inside[:, ::-1] > 0, jnp.bool_(True))
    return (block * CDF_BLOCK + jnp.minimum(index, last_positive)).astype(jnp.int32)


def nucleus_threshold(probs: jax.Array, top_p: jax.Array) -> jax.Array:
    """Per row, the smallest probability c whose token is in the top-p nucleus: `probs >= c` is the
    smallest set of most-likely tokens with mass >= top_p (every token tied with the last one included).

    Exact and sort-free: c is the largest float32 t with `sum(probs[probs >= t]) >= top_p`. That mass is
    non-increasing in t, so a bisection over the (ordered) bit patterns of non-negative float32s finds t
    exactly in 31 masked reductions over the vocabulary; a full sort of the vocabulary instead costs
    ~20 ms per step on XLA:CPU at 16 x 8192.
    """
    probs = probs.astype(jnp.float32)
    as_float = lambda bits: jax.lax.bitcast_convert_type(bits, jnp.float32)
    mass_from = lambda bits: jnp.sum(jnp.where(probs >= as_float(bits)[:, None], probs, 0.0), axis=-1)
    # Invariant: mass_from(lo) >= top_p > mass_from(hi). lo = 0.0 keeps every token (mass 1 up to
    # rounding); hi = just above the largest prob keeps none.
    lo = jnp.zeros(probs.shape[:1], jnp.int32)
    hi = jax.lax.bitcast_convert_type(jnp.max(probs, axis=-1), jnp.int32) + 1
    top_p = jnp.minimum(top_p, mass_from(lo))  # rounding: the full mass may sum to just under top_p = 1

    def body(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = mass_from(mid) >= top_p
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

    lo, _ = jax.lax.fori_loop(0, 31, body, (lo, hi))  # hi - lo < 2**31 halves to 1 in 31 steps
    return as_float(lo)


def sample_tokens(
    logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_p: jax.Array, mode: SamplingMode,
    cpu_kernels: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """One token per row from fp32 `logits [B, V]` with per-row `keys [B]`.

    Order as in `transformers`: divide by temperature, keep the top-k, then the smallest set of the
    remaining (renormalised) tokens whose mass reaches `top_p` (ties with its least likely member kept).
    The returned log-probabilities are under the *untruncated* distribution
    `softmax(logits / temperature)`, the quantity a PPO ratio compares against; for greedy decoding
    (temperature 0) they are under `softmax(logits)`. `cpu_kernels`: the greedy pick through
    `kernels.cpu_sampling.greedy` (the packed CPU decode model's; same result, one pass per row).
    """
    logits = logits.astype(jnp.float32)
    if mode.greedy:
        return cpu_sampling.greedy(logits) if cpu_kernels else greedy_tokens(logits)
    scaled = logits / temperature
    if mode.top_k:
        # Sample among the k candidates (sorted, so top-p needs no further sort), then map back.
        values, indices = jax.lax.top_k(scaled, mode.top_k)
        if mode.use_top_p:
            probs = jax.nn.softmax(values, axis=-1)
            mass_before = jnp.cumsum(probs, axis=-1) - probs  # exclusive: the top token is always kept
            values = jnp.where(mass_before < top_p, values, -jnp.inf)
        choice = sample_from_probs(keys, jax.nn.softmax(values, axis=-1))
        tokens = jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0]
    elif mode.use_top_p:
        probs = jax.nn.softmax(scaled, axis=-1)
        tokens = sample_from_probs(keys, jnp.where(probs >= nucleus_threshold(probs, top_p)[:, None], probs, 0.0))
    else:
        tokens = sample_from_probs(keys, jax.nn.softmax(scaled, axis=-1))
    tokens = tokens.astype(jnp.int32)
    return tokens, token_logprobs(scaled, tokens)


def choose_tokens(logits, keys, temperature, top_p, variant, variants: tuple[SamplingMode, ...],
                  cpu_kernels: bool = False):
    """Token and log-prob per row, each row under its own `variants[variant[row]]`.

    `temperature` and `top_p` are per row `[B]`. With one variant this is `sample_tokens`; with several,
    every variant is computed and each row picks its own (static shapes, exact per-row results)."""
    picks = []
    for mode in variants:
        if mode.greedy:
            picks.append(sample_tokens(logits, keys, temperature, top_p, mode, cpu_kernels))
        else:  # per-row temperature [B, 1]; top-p [B, 1] against the k candidates, [B] for the nucleus
            picks.append(sample_tokens(logits, keys, temperature[:, None], top_p[:, None] if mode.top_k else top_p, mode))
    if len(picks) == 1:
        return picks[0]
    tokens = jnp.stack([p[0] for p in picks], axis=-1)
    logprobs = jnp.stack([p[1] for p in picks], axis=-1)
    pick = lambda x: jnp.take_along_axis(x, variant[:, None], axis=-1)[:, 0]
    return pick(tokens), pick(logprobs)


# ---------------------------------------------------------------------------------------------- keys


def as_key(rng) -> jax.Array:
    """`rng` as a typed key (a legacy uint32[2] `PRNGKey` is wrapped); ValueError for anything else."""
    if isinstance(rng, jax.Array) and jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        if rng.shape != ():
            raise ValueError(f"rng must be a single key, got a key array of shape {rng.shape}")
        return rng
    raw = np.asarray(rng) if rng is not None else None
    if raw is not None and raw.dtype == np.uint32 and raw.shape == (2,):
        return jax.random.wrap_key_data(raw)  # a legacy `jax.random.PRNGKey`
    raise ValueError(f"rng must be a key from jax.random.key(seed) (or PRNGKey), got {rng!r}")


def row_keys(rng: jax.Array, request_ids: jax.Array, sample_ids: jax.Array) -> jax.Array:
    """Key of row (request k, sample j): `fold_in(fold_in(rng, k), j)`; its t-th token draws from
    `fold_in(row_key, t)`. A row's draws depend only on (rng, k, j, t), not on batching or slots."""
    return jax.vmap(lambda i, j: jax.random.fold_in(jax.random.fold_in(rng, i), j))(request_ids, sample_ids)


def step_keys(keys: jax.Array, step: jax.Array) -> jax.Array:
    """Per-row key of token `step` (a scalar or one step per row)."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None if jnp.ndim(step) == 0 else 0))(keys, step)


# -------------------------------------------------------------------------------------- host and mesh


def batch_shards(mesh: Mesh | None, rules: shd.Rules) -> int:
    """How many ways the cache batch dimension is split on `mesh` under `rules`."""
    if mesh is None:
        return 1
    target = dict(rules).get("cache_batch")
    axes = () if target is None else (target,) if isinstance(target, str) else tuple(target)
    return math.prod(mesh.shape[a] for a in axes if a in mesh.shape)


def use_cpu_kernels(model: Transformer, requested: bool | None = None) -> bool:
    """Whether the unrolled decode runs on packed weights (`pack_decode_params`): each layer one
    `kernels.cpu_layer` call, the LM head through `kernels.cpu_gemm`, greedy picks through
    `kernels.cpu_sampling`.

    `requested=None` (the default everywhere): yes where it applies, an fp32 model on one CPU device with
    the kernel built; False: never; True: yes, or ValueError saying why it cannot."""
    if requested is False:
        return False
    cfg = model.config
    devices = model.mesh.devices.flat if model.mesh is not None else jax.devices()[:1]
    platforms = {d.platform for d in devices}
    why = (
        "the model is not fp32" if jnp.dtype(cfg.dtype) != jnp.float32 or jnp.dtype(cfg.param_dtype) != jnp.float32
        else f"the model runs on {sorted(platforms)}, not one CPU device"
        if platforms != {"cpu"} or (model.mesh is not None and model.mesh.size > 1)
        else "the kernel is not built (see the log line of gasp_jax.kernels)" if not cpu_gemm.available()
        else ""
    )
    if why and requested:
        raise ValueError(f"cpu_kernels=True but {why}")
    return not why


def to_host(x: jax.Array) -> np.ndarray:
    """One device array as NumPy, gathered across processes when multi-host."""
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def fetch(tree):
    """Device arrays -> NumPy in one `device_get` (gathered across processes when multi-host)."""
    if jax.process_count() > 1:
        return jax.tree.map(to_host, tree)
    return jax.device_get(tree)


def place_rows(model: Transformer, x: np.ndarray):
    """`x [B, ...]` placed with its batch over the `cache_batch` mesh axes (as is without a mesh)."""
    if model.mesh is None:
        return x
    return jax.device_put(
        x, shd.named_sharding(("cache_batch",) + (None,) * (x.ndim - 1), x.shape, model.mesh, model.rules)
    )


# -------------------------------------------------------------------------------------------- programs


def prefill(params, tokens, pad_lens, *, model: Transformer):
    """Left-padded `tokens [B, P]` -> (P-slot `KVCache`, fp32 logits of the last slot `[B, V]`).

    With `model.scan_layers=False` (params from `unstack_layer_params`) the layers run unrolled and
    the cache is per layer: no layer's weights are sliced out of the stacked arrays, which XLA:CPU
    copies (the whole model once per prefill, a fifth of a one-prompt prefill at 8 layers x 512)."""
    cache, hidden = _prefill(params, tokens, pad_lens, model=model)
    # Left padding puts every prompt's last token in the last slot; only that row goes through the LM head.
    return cache, model.apply({"params": params}, hidden[:, -1], method=Transformer.unembed)


def prefill_cache(params, tokens, pad_lens, *, model: Transformer) -> KVCache:
    """`prefill`'s P-slot cache alone (no LM head), for callers that sample the next token elsewhere."""
    return _prefill(params, tokens, pad_lens, model=model)[0]


def _prefill(params, tokens, pad_lens, *, model: Transformer):
    batch, length = tokens.shape
    slots = jnp.arange(length, dtype=jnp.int32)
    positions = jnp.maximum(slots[None, :] - pad_lens[:, None], 0)
    kv_mask = slots[None, :] >= pad_lens[:, None]
    per_layer = not model.scan_layers
    axes = CACHE_AXES[1:] if per_layer else CACHE_AXES
    c = lambda x: shd.constrain(x, axes, model.mesh, model.rules)
    cache = init_cache(model.config, batch, length, per_layer=per_layer)
    cache = KVCache(*(tuple(map(c, part)) if per_layer else c(part) for part in cache))
    hidden, cache = model.apply(
        {"params": params}, tokens, positions, kv_mask=kv_mask, cache=cache, cache_index=0, return_hidden=True
    )
    return cache, hidden


def decode_model(model: Transformer, packed: bool = False) -> Transformer:
    """The model both engines prefill and decode with when the layers run unrolled (`packed`: over weights
    for the CPU kernels, `use_cpu_kernels`); its params come from `decode_params`."""
    return model.clone(scan_layers=False, packed_weights=bool(packed))


def _unstack(params, *, model: Transformer, packed: bool):
    params = unstack_layer_params(params, model.config.num_layers)
    return pack_decode_params(params, model.config) if packed else params


def unstack_program(model: Transformer, packed: bool = False):
    """jit of `params -> ` the `decode_model(model, packed)` params: the per-layer split of the scanned
    params (`unstack_layer_params`), packed (`pack_decode_params`) with `packed`. One copy of the layer
    weights per call, made once before the first prefill."""
    return program(_unstack, model, packed=bool(packed))


def decode_params(model: Transformer, params: Any, packed: bool = False) -> Any:
    """`unstack_program(model, packed)(params)`, except that the packed copy (CPU kernels) of the very same
    params arrays is made once: a later call with those arrays (a rollout's next call with unchanged
    weights, a benchmark's rounds) reuses it. One entry, the last params packed, dropped when params with
    other arrays come or by `clear_program_cache`. Unpacked (accelerator) params are never kept: that
    copy is the size of the model, in device memory."""
    if not packed:
        return unstack_program(model)(params)
    leaves, tree = jax.tree.flatten(params)
    key = (_model_key(model), tree)
    with _PROGRAMS_LOCK:
        if _PACKED and _PACKED[0][0] == key and all(ref() is leaf for ref, leaf in zip(_PACKED[0][1], leaves)):
            return _PACKED[0][2]
    out = unstack_program(model, True)(params)
    if all(isinstance(leaf, jax.Array) for leaf in leaves):  # immutable: the same object, the same values
        with _PROGRAMS_LOCK:
            _PACKED[:] = [(key, [weakref.ref(leaf) for leaf in leaves], out)]
    return out


def prefill_program(model: Transformer):
    """jit of `prefill(params, tokens [B, P], pad_lens [B])`; one executable per (B, P)."""
    return program(prefill, model)


# -------------------------------------------------------------------------------------- program cache

_PROGRAMS: dict[tuple, Any] = {}
_PARAM_SHARDINGS: dict[tuple, Any] = {}
_PACKED: list = []  # [(model key and params tree, weak refs to the params leaves, their packed copy)]
_PROGRAMS_LOCK = threading.Lock()


def _model_key(model: Transformer) -> tuple:
    return (model.config, model.mesh, tuple(model.rules), model.scan_layers, model.packed_weights)


def program(fn: Callable, model: Transformer, *, donate_argnums: tuple[int, ...] = (), **static) -> Any:
    """`jax.jit(partial(fn, model=model, **static))`, built once per process for this function, model
    shape, mesh, rules and static settings (hashable). jit adds its own per-shape cache below this one;
    `compiled_program_count` reports its size."""
    key = (fn.__module__, fn.__qualname__, _model_key(model), donate_argnums, tuple(sorted(static.items())))
    with _PROGRAMS_LOCK:
        jitted = _PROGRAMS.get(key)
        if jitted is None:
            jitted = jax.jit(functools.partial(fn, model=model, **static), donate_argnums=donate_argnums)
            _PROGRAMS[key] = jitted
        return jitted


def param_shardings(model: Transformer):
    """The params' `NamedSharding` tree for `model`'s mesh (built once per model shape)."""
    key = _model_key(model)
    with _PROGRAMS_LOCK:
        out = _PARAM_SHARDINGS.get(key)
    if out is None:
        out = init_lib.param_shardings(model)
        with _PROGRAMS_LOCK:
            _PARAM_SHARDINGS[key] = out
    return out


def compiled_program_count() -> int:
    """XLA executables compiled so far by both engines in this process (all models, all shapes)."""
    with _PROGRAMS_LOCK:
        return sum(fn._cache_size() for fn in _PROGRAMS.values())


def clear_program_cache() -> None:
    """Drops every jitted sampling program (and with them their compiled executables)."""
    with _PROGRAMS_LOCK:
        _PROGRAMS.clear()
        _PARAM_SHARDINGS.clear()
        _PACKED.clear()
