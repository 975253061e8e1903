"""Jitted KV-cache sampler: one prefill program and one `lax.while_loop` decode program (the static
engine), and `generate`, the one entry point for both engines (`engine="continuous"` hands the call
to `engine.py`, continuous batching over refilled decode slots, with the same results).

    out = sampling.generate(model, params, [[1, 5, 9], [7, 7]], max_new_tokens=64, temperature=1.0,
                            top_p=0.95, eos_ids=(2,), num_samples=8, rng=jax.random.key(0))
    out.tokens    # int32 [2 * 8, 64], row i * 8 + j = prompt i, sample j; PAD_ID after the stop token
    out.logprobs  # fp32  [16, 64], log p(token) under the full-vocab softmax at the sampling temperature
    out.lengths   # int32 [16], generated tokens per row, the stop token included

Design (see docs/sampling.md)
- Prompts are left-padded to a static prompt bucket P and the batch to a static batch bucket (see
  `buckets.py`). The **prefill** program runs the whole padded prompt block through the model once,
  filling a P-slot KV cache, and returns the logits of the last slot only (the LM head is applied to
  one position per row, never to `[B, P, vocab]`).
- The **decode** program tiles the prompt cache `num_samples` times along the batch (one prefill per
  prompt), pads it to `P + max_new_tokens - 1` slots, samples the first token from the prefill logits,
  then runs a `lax.while_loop` that feeds one token per step and stops as soon as every row has emitted
  a stop token. Everything lives on device: there is no host round trip per step.
- Params are a jit argument, so new weights reuse the compiled programs. Programs are cached per
  (model config, mesh, rules, static sampling settings); jit's own cache then keys on shapes, which the
  buckets keep to a small set. Temperature, top-p and the stop ids are traced values (changing them
  never recompiles); greedy-vs-sampled, top-k (`lax.top_k` needs a static k) and whether top-p is on
  are static, so the top-p threshold search is only compiled in when it is used.
- The decode step runs the layers unrolled over per-layer weights and cache buffers (split once per
  call) instead of the scanned stack, which would slice (copy) every layer's weights each step.
- Randomness: row (prompt i, sample j) gets key `fold_in(fold_in(rng, i), j)` and step t of that row
  `fold_in(row_key, t)`. A row's draws therefore depend only on (rng, i, j) and the model, not on
  `num_samples`, the batch bucket or the mesh: sample 0 of a `num_samples=8` call equals the
  `num_samples=1` call with the same key.
- Sharding: with a mesh the batch is placed over the `cache_batch` mesh axes (data x fsdp by default)
  and the cache is constrained to `CACHE_AXES` (heads over tensor); the model constrains its own
  activations. The batch bucket is a multiple of the batch shards, so it always divides evenly.
- The full-size KV cache never crosses a jit boundary: it is created inside the decode program and is
  the while loop's carry, which XLA updates in place. Only the small P-slot prompt cache (un-tiled) is
  passed from prefill to decode, and it is released when `generate` returns.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from gasp_jax import sharding as shd
from gasp_jax.models.transformer import (
    CACHE_AXES,
    CACHE_LENGTH_AXIS,
    KVCache,
    Transformer,
    init_cache,
    unstack_layer_params,
)
from gasp_jax.sampling import buckets as bk

PAD_ID = 0  # token written after a row's stop token (use `lengths` to know where a row ends)
_EOS_SLOTS = 4  # stop ids are padded with -1 (never a token) to a multiple of this: few distinct shapes


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


def _greedy(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """argmax (first index on ties) and its fp32 log-probability under softmax(logits), from one
    max: the picked logit is the max, so its log-prob is -log(sum(exp(logits - max))). This drops
    the `lax.top_k(x, 1)` custom call and a second max (3.02 -> 2.86 ms per CPU decode step at
    16 x 8192); `jnp.argmax`'s variadic reduce is slower still on XLA:CPU."""
    peak = jnp.max(logits, axis=-1, keepdims=True)
    tokens = jnp.minimum(_first_index_of(logits, peak), logits.shape[-1] - 1)  # NaN rows: last index
    logprobs = -jnp.log(jnp.sum(jnp.exp(logits - peak), axis=-1))
    return tokens.astype(jnp.int32), logprobs


CDF_BLOCK = 128  # vocabulary block of the two-level inverse-CDF search


def _sample_from_probs(keys: jax.Array, probs: jax.Array) -> jax.Array:
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
    logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_p: jax.Array, mode: SamplingMode
) -> tuple[jax.Array, jax.Array]:
    """One token per row from fp32 `logits [B, V]` with per-row `keys [B]`.

    Order as in `transformers`: divide by temperature, keep the top-k, then the smallest set of the
    remaining (renormalised) tokens whose mass reaches `top_p` (ties with its least likely member kept).
    The returned log-probabilities are under the *untruncated* distribution
    `softmax(logits / temperature)`, the quantity a PPO ratio compares against; for greedy decoding
    (temperature 0) they are under `softmax(logits)`.
    """
    logits = logits.astype(jnp.float32)
    if mode.greedy:
        return _greedy(logits)
    scaled = logits / temperature
    if mode.top_k:
        # Sample among the k candidates (sorted, so top-p needs no further sort), then map back.
        values, indices = jax.lax.top_k(scaled, mode.top_k)
        if mode.use_top_p:
            probs = jax.nn.softmax(values, axis=-1)
            mass_before = jnp.cumsum(probs, axis=-1) - probs  # exclusive: the top token is always kept
            values = jnp.where(mass_before < top_p, values, -jnp.inf)
        choice = _sample_from_probs(keys, jax.nn.softmax(values, axis=-1))
        tokens = jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0]
    elif mode.use_top_p:
        probs = jax.nn.softmax(scaled, axis=-1)
        tokens = _sample_from_probs(keys, jnp.where(probs >= nucleus_threshold(probs, top_p)[:, None], probs, 0.0))
    else:
        tokens = _sample_from_probs(keys, jax.nn.softmax(scaled, axis=-1))
    tokens = tokens.astype(jnp.int32)
    return tokens, token_logprobs(scaled, tokens)


# ------------------------------------------------------------------------------------------- programs


def _prefill(params, tokens, pad_lens, *, model: Transformer):
    """Left-padded `tokens [B, P]` -> (P-slot `KVCache`, fp32 logits of the last slot `[B, V]`)."""
    batch, length = tokens.shape
    slots = jnp.arange(length, dtype=jnp.int32)
    positions = jnp.maximum(slots[None, :] - pad_lens[:, None], 0)
    kv_mask = slots[None, :] >= pad_lens[:, None]
    cache = init_cache(model.config, batch, length)
    cache = KVCache(*(shd.constrain(c, CACHE_AXES, model.mesh, model.rules) for c in cache))
    hidden, cache = model.apply(
        {"params": params}, tokens, positions, kv_mask=kv_mask, cache=cache, cache_index=0, return_hidden=True
    )
    # Left padding puts every prompt's last token in the last slot; only that row goes through the LM head.
    last_logits = model.apply({"params": params}, hidden[:, -1], method=Transformer.unembed)
    return cache, last_logits


class _DecodeState(NamedTuple):
    step: jax.Array  # int32 scalar: index of the token sampled next
    cache: KVCache
    last_token: jax.Array  # int32 [B]
    done: jax.Array  # bool [B]
    lengths: jax.Array  # int32 [B]
    tokens: jax.Array  # int32 [B, N]
    logprobs: jax.Array  # float32 [B, N]


def _decode(
    params,
    prompt_cache: KVCache,
    last_logits,
    pad_lens,
    prompt_lens,
    live,
    prompt_ids,
    row_limits,
    rng,
    temperature,
    top_p,
    eos_ids,
    *,
    model: Transformer,
    num_samples: int,
    max_new_tokens: int,
    mode: SamplingMode,
    unroll_layers: bool,
):
    """Samples `max_new_tokens` per row, `num_samples` rows per prompt, from a prefilled prompt cache.

    `live [Bp]` is False on batch-padding rows: they start done and produce nothing. `prompt_ids [Bp]`
    is each prompt's index in the caller's list (its RNG stream); `row_limits [Bp]` its max_new_tokens
    (<= `max_new_tokens`): a row stops at its limit as at a stop token.
    Returns `(tokens [B, N], logprobs [B, N], lengths [B])` with `B = Bp * num_samples`.

    With `unroll_layers` the loop body runs the layers as straight-line code over per-layer weights
    and per-layer cache buffers (split once, before the loop), so a step reads every weight and cache
    entry in place. A scanned layer stack instead slices each layer's weights and cache out of the
    stacked arrays at every step, which XLA materialises as copies on CPU (and without dynamic-slice
    fusion on GPU): up to 3x the bytes moved per step.
    """
    mesh, rules = model.mesh, model.rules
    num_prompts, prompt_slots = pad_lens.shape[0], prompt_cache.k.shape[CACHE_LENGTH_AXIS]
    batch = num_prompts * num_samples
    cache_len = prompt_slots + max_new_tokens - 1  # the last sampled token is never fed back

    def expand(c, axes):  # [(L,) Bp, K, P, D] -> [(L,) Bp * ns, K, cache_len, D], prompt-major rows
        batch_axis, length_axis = axes.index("cache_batch"), axes.index("cache_length")
        c = jnp.repeat(c, num_samples, axis=batch_axis) if num_samples > 1 else c
        widths = [(0, 0)] * c.ndim
        widths[length_axis] = (0, cache_len - prompt_slots)
        return shd.constrain(jnp.pad(c, widths), axes, mesh, rules)

    num_layers = model.config.num_layers
    if unroll_layers:
        params = unstack_layer_params(params, num_layers)
        model = model.clone(scan_layers=False)
        cache = KVCache(
            tuple(expand(prompt_cache.k[i], CACHE_AXES[1:]) for i in range(num_layers)),
            tuple(expand(prompt_cache.v[i], CACHE_AXES[1:]) for i in range(num_layers)),
        )
    else:
        cache = KVCache(expand(prompt_cache.k, CACHE_AXES), expand(prompt_cache.v, CACHE_AXES))
    tile = lambda x: jnp.repeat(x, num_samples, axis=0) if num_samples > 1 else x
    pad_lens, prompt_lens, live, row_limits = tile(pad_lens), tile(prompt_lens), tile(live), tile(row_limits)
    kv_mask = jnp.arange(cache_len, dtype=jnp.int32)[None, :] >= pad_lens[:, None]

    rows = jnp.arange(batch, dtype=jnp.int32)
    row_keys = jax.vmap(lambda i, j: jax.random.fold_in(jax.random.fold_in(rng, i), j))(
        tile(prompt_ids), rows % num_samples
    )

    def choose(step, logits):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
        return sample_tokens(logits, keys, temperature, top_p, mode)

    def record(state: _DecodeState, token, logprob) -> _DecodeState:
        active = ~state.done
        stopped = jnp.any(token[:, None] == eos_ids[None, :], axis=-1) | (state.step + 1 >= row_limits)
        return state._replace(
            step=state.step + 1,
            last_token=token,
            done=state.done | stopped,
            lengths=state.lengths + active.astype(jnp.int32),
            tokens=jax.lax.dynamic_update_index_in_dim(
                state.tokens, jnp.where(active, token, PAD_ID), state.step, axis=1
            ),
            logprobs=jax.lax.dynamic_update_index_in_dim(
                state.logprobs, jnp.where(active, logprob, 0.0), state.step, axis=1
            ),
        )

    state = _DecodeState(
        step=jnp.int32(0),
        cache=cache,
        last_token=jnp.zeros((batch,), jnp.int32),
        done=~live,
        lengths=jnp.zeros((batch,), jnp.int32),
        tokens=jnp.full((batch, max_new_tokens), PAD_ID, jnp.int32),
        logprobs=jnp.zeros((batch, max_new_tokens), jnp.float32),
    )
    state = record(state, *choose(0, tile(last_logits)))

    def cond(state: _DecodeState):
        return (state.step < max_new_tokens) & ~jnp.all(state.done)

    def body(state: _DecodeState):
        # Feed token step-1 (at slot P + step - 1, RoPE position prompt_len + step - 1); sample token `step`.
        slot = prompt_slots + state.step - 1
        positions = (prompt_lens + state.step - 1)[:, None]
        logits, cache = model.apply(
            {"params": params},
            state.last_token[:, None],
            positions,
            kv_mask=kv_mask,
            cache=state.cache,
            cache_index=slot,
        )
        return record(state._replace(cache=cache), *choose(state.step, logits[:, 0]))

    state = jax.lax.while_loop(cond, body, state)
    return state.tokens, state.logprobs, state.lengths


# -------------------------------------------------------------------------------------- program cache

_PROGRAMS: dict[tuple, Any] = {}
_PROGRAMS_LOCK = threading.Lock()


def _model_key(model: Transformer) -> tuple:
    return (model.config, model.mesh, tuple(model.rules))


def _program(kind: str, model: Transformer, **static) -> Any:
    """The jitted program `kind` for this model shape and static settings, built once per process.

    jit adds its own per-shape cache below this one; `compiled_program_count` reports its size."""
    key = (kind, _model_key(model), tuple(sorted(static.items())))
    with _PROGRAMS_LOCK:
        fn = _PROGRAMS.get(key)
        if fn is None:
            if kind == "prefill":
                fn = jax.jit(functools.partial(_prefill, model=model))
            elif kind == "decode":
                # No donation: no output has the prompt cache's shape, so XLA could not reuse its buffer.
                fn = jax.jit(functools.partial(_decode, model=model, **static))
            elif kind == "param_shardings":
                from gasp_jax.models.init import param_shardings

                fn = param_shardings(model)
            else:
                raise KeyError(kind)
            _PROGRAMS[key] = fn
        return fn


def compiled_program_count() -> int:
    """Number of XLA executables the sampler has compiled in this process (all models, all shapes)."""
    with _PROGRAMS_LOCK:
        return sum(fn._cache_size() for key, fn in _PROGRAMS.items() if key[0] != "param_shardings")


def clear_program_cache() -> None:
    with _PROGRAMS_LOCK:
        _PROGRAMS.clear()


# ------------------------------------------------------------------------------------ host-side plan


@dataclasses.dataclass(frozen=True)
class _Plan:
    num_prompts: int
    padded_prompts: int  # batch bucket for the prefill (prompts); decode batch = this * num_samples
    prompt_bucket: int
    mode: SamplingMode


def batch_shards(mesh: Mesh | None, rules: shd.Rules) -> int:
    """How many ways the cache batch dimension is split on `mesh` under `rules`."""
    if mesh is None:
        return 1
    target = dict(rules).get("cache_batch")
    axes = () if target is None else (target,) if isinstance(target, str) else tuple(target)
    return math.prod(mesh.shape[a] for a in axes if a in mesh.shape)


def _validate(
    model: Transformer,
    prompts,
    *,
    max_new_tokens,
    temperature,
    top_k,
    top_p,
    eos_ids,
    num_samples,
    prompt_buckets,
    max_cache_length,
) -> tuple[list[np.ndarray], _Plan]:
    """Checks every argument and picks the static shapes; raises ValueError before anything compiles."""
    cfg = model.config
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) and not isinstance(prompts, np.ndarray):
        raise ValueError(f"prompts must be a list of token-id lists, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: nothing to generate")
    arrays = []
    for i, p in enumerate(prompts):
        a = np.asarray(p)
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"prompt {i} must be a flat list of integer token ids, got shape {a.shape} dtype {a.dtype}")
        if a.size == 0:
            raise ValueError(f"prompt {i} is empty: every prompt needs at least one token")
        if a.min() < 0 or a.max() >= cfg.vocab_size:
            raise ValueError(f"prompt {i} has token ids outside [0, {cfg.vocab_size}): min {a.min()}, max {a.max()}")
        arrays.append(a.astype(np.int32))
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if not math.isfinite(float(temperature)) or temperature < 0:
        raise ValueError(f"temperature must be finite and >= 0 (0 = greedy), got {temperature!r}")
    if not isinstance(top_k, (int, np.integer)) or not 0 <= top_k <= cfg.vocab_size:
        raise ValueError(f"top_k must be an int in [0, vocab_size={cfg.vocab_size}] (0 = off), got {top_k!r}")
    if not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    for e in eos_ids:
        if not isinstance(e, (int, np.integer)) or not 0 <= e < cfg.vocab_size:
            raise ValueError(f"eos_ids must be token ids in [0, {cfg.vocab_size}), got {tuple(eos_ids)!r}")

    cache_limit = int(max_cache_length or cfg.max_position_embeddings)
    if max_cache_length is not None and max_cache_length > cfg.max_position_embeddings:
        raise ValueError(
            f"max_cache_length={max_cache_length} exceeds the model's max_position_embeddings={cfg.max_position_embeddings}"
        )
    longest = max(a.size for a in arrays)
    prompt_limit = cache_limit - max_new_tokens
    if prompt_limit < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} does not fit the cache of {cache_limit} slots with any prompt")
    if prompt_buckets is not None:
        if not prompt_buckets or any(int(b) < 1 for b in prompt_buckets):
            raise ValueError(f"prompt_buckets must be positive lengths, got {prompt_buckets!r}")
        configured = max(int(b) for b in prompt_buckets)
        if longest > configured:
            raise ValueError(f"a prompt of {longest} tokens is longer than the largest prompt bucket ({configured})")
    buckets = bk.effective_prompt_buckets(
        prompt_buckets if prompt_buckets is not None else bk.default_prompt_buckets(prompt_limit), prompt_limit
    )
    if longest > prompt_limit:
        raise ValueError(
            f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the cache of {cache_limit} "
            "slots (max_cache_length / the model's max_position_embeddings)"
        )
    mode = SamplingMode(
        greedy=float(temperature) == 0.0,
        top_k=0 if float(temperature) == 0.0 or top_k >= cfg.vocab_size else int(top_k),
        use_top_p=float(temperature) != 0.0 and float(top_p) < 1.0,
    )
    plan = _Plan(
        num_prompts=len(arrays),
        padded_prompts=bk.batch_bucket(len(arrays), batch_shards(model.mesh, model.rules)),
        prompt_bucket=bk.pick_bucket(longest, buckets),
        mode=mode,
    )
    return arrays, plan


def _left_pad(arrays: list[np.ndarray], plan: _Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tokens [Bp, P], pad_lens [Bp], prompt_lens [Bp], live [Bp]); padding rows hold one PAD_ID token."""
    bp, p = plan.padded_prompts, plan.prompt_bucket
    tokens = np.full((bp, p), PAD_ID, np.int32)
    lengths = np.ones((bp,), np.int32)
    for i, a in enumerate(arrays):
        tokens[i, p - a.size :] = a
        lengths[i] = a.size
    live = np.arange(bp) < len(arrays)
    return tokens, (p - lengths).astype(np.int32), lengths, live


def _to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def _as_key(rng) -> jax.Array:
    if isinstance(rng, jax.Array) and jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        if rng.shape != ():
            raise ValueError(f"rng must be a single key, got a key array of shape {rng.shape}")
        return rng
    raw = np.asarray(rng) if rng is not None else None
    if raw is not None and raw.dtype == np.uint32 and raw.shape == (2,):
        return jax.random.wrap_key_data(raw)  # a legacy `jax.random.PRNGKey`
    raise ValueError(f"rng must be a key from jax.random.key(seed) (or PRNGKey), got {rng!r}")


# ------------------------------------------------------------------------------------------ public API


ENGINES = ("static", "continuous")


def generate(
    model: Transformer,
    params: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int | Sequence[int],
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_ids: Sequence[int] = (),
    num_samples: int = 1,
    rng: jax.Array,
    mesh: Mesh | None = None,
    prompt_buckets: Sequence[int] | None = None,
    max_cache_length: int | None = None,
    unroll_layers: bool = True,
    engine: str = "static",
    max_slots: int | None = None,
    kv_cache_tokens: int | None = None,
    chunk_steps: int | None = None,
) -> SampleOutput:
    """Samples `num_samples` continuations of each prompt (lists of token ids).

    Args:
      model, params: a `Transformer` and its params (as from `models.load_hf`); params are a jit
        argument, so passing new weights never recompiles.
      prompts: token-id lists of any lengths >= 1 (each is left-padded to a prompt bucket).
      max_new_tokens: tokens generated per row (fewer if the row stops): one int, or one per prompt.
      temperature: 0 for greedy; otherwise logits are divided by it before top-k / top-p.
      top_k: keep the k most likely tokens (0 = off). top_p: nucleus mass in (0, 1] (1 = off).
      eos_ids: a row stops after emitting any of these (the stop token is kept and counted).
      num_samples: rows per prompt; the prompt is prefilled once and its KV cache shared.
      rng: a `jax.random.key`; the same key gives the same samples, with either engine.
      mesh: shard over this mesh (defaults to `model.mesh`): batch over the `cache_batch` axes
        (data x fsdp), heads over tensor.
      prompt_buckets: static prompt lengths to pad to (default: powers of two from 16).
      max_cache_length: cache slots per row (default: the model's max_position_embeddings); a prompt's
        bucket plus `max_new_tokens` must fit.
      unroll_layers: run the decode step's layers unrolled over per-layer weight and cache buffers
        (faster steps, longer compile; the weights are split once per call, an extra copy of the layer
        weights while the call runs). False keeps the scanned layer stack.
      engine: "static" (one batch decoded until its longest row stops) or "continuous" (decode slots
        refilled as rows finish, `engine.py`). Same results: greedy tokens identical, same RNG streams.
      max_slots: rows decoded at once (a multiple of the mesh's batch shards). Continuous: the slot
        count (default from `kv_cache_tokens`, else 256, never above the call's rows). Static: prompts
        run in consecutive batches of at most this many rows (default: all in one batch).
      kv_cache_tokens, chunk_steps: continuous engine only: the slot cache budget in cached tokens
        (slots = budget // per-slot cache length) and decode steps per device call (default 16).

    Returns:
      `SampleOutput(tokens, logprobs, lengths)` as NumPy arrays with `len(prompts) * num_samples` rows,
      prompt-major, `max(max_new_tokens)` columns. `logprobs` are fp32 log-probabilities of each
      generated token under the full-vocab `softmax(logits / temperature)` (`softmax(logits)` when greedy).

    Raises:
      ValueError: on any bad argument, before anything is compiled.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) and not isinstance(prompts, np.ndarray):
        raise ValueError(f"prompts must be a list of token-id lists, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: nothing to generate")
    limits = _per_prompt_limits(max_new_tokens, len(prompts))
    if mesh is not None and model.mesh is not mesh:
        model = model.clone(mesh=mesh)
    if engine == "continuous":
        from gasp_jax.sampling import engine as engine_lib  # engine.py builds on this module

        if not isinstance(num_samples, (int, np.integer)) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        requests = [
            engine_lib.Request(prompt=p, max_new_tokens=n, num_samples=num_samples, temperature=temperature,
                               top_k=top_k, top_p=top_p, eos_ids=tuple(eos_ids))
            for p, n in zip(prompts, limits)
        ]
        out, _ = engine_lib.run_requests(
            model, params, requests, rng=rng, max_slots=max_slots, kv_cache_tokens=kv_cache_tokens,
            chunk_steps=engine_lib.DEFAULT_CHUNK_STEPS if chunk_steps is None else chunk_steps,
            prompt_buckets=prompt_buckets, max_cache_length=max_cache_length, unroll_layers=unroll_layers,
        )
        return out
    if kv_cache_tokens is not None or chunk_steps is not None:
        raise ValueError("kv_cache_tokens and chunk_steps apply to engine='continuous' only")
    prompts_per_batch = len(prompts)
    if max_slots is not None:
        shards = batch_shards(model.mesh, model.rules)
        if isinstance(max_slots, bool) or not isinstance(max_slots, (int, np.integer)) or max_slots < 1:
            raise ValueError(f"max_slots must be a positive int, got {max_slots!r}")
        if max_slots % shards:
            raise ValueError(
                f"max_slots={max_slots} does not divide over the mesh's {shards} batch shards (cache_batch axes); "
                f"use a multiple of {shards}"
            )
        if isinstance(num_samples, (int, np.integer)) and num_samples > max_slots:
            raise ValueError(f"num_samples={num_samples} exceeds max_slots={max_slots}")
        prompts_per_batch = max(1, max_slots // max(1, int(num_samples)))
    kwargs = dict(temperature=temperature, top_k=top_k, top_p=top_p, eos_ids=eos_ids, num_samples=num_samples,
                  prompt_buckets=prompt_buckets, max_cache_length=max_cache_length)
    batches = [range(s, min(s + prompts_per_batch, len(prompts))) for s in range(0, len(prompts), prompts_per_batch)]
    planned = [_validate(model, [prompts[i] for i in b], max_new_tokens=max(limits[i] for i in b), **kwargs) for b in batches]
    rng = _as_key(rng)
    outs = [
        _generate_static(model, params, arrays, plan, [limits[i] for i in b], b.start, rng=rng,
                         temperature=temperature, top_p=top_p, eos_ids=eos_ids, num_samples=num_samples,
                         unroll_layers=unroll_layers)
        for b, (arrays, plan) in zip(batches, planned)
    ]
    width = max(limits)
    pad = lambda x: np.pad(x, ((0, 0), (0, width - x.shape[1])))
    return SampleOutput(
        tokens=np.concatenate([pad(o.tokens) for o in outs]),
        logprobs=np.concatenate([pad(o.logprobs) for o in outs]),
        lengths=np.concatenate([o.lengths for o in outs]),
    )


def _per_prompt_limits(max_new_tokens, num_prompts: int) -> list[int]:
    """`max_new_tokens` (an int, or one per prompt) as one positive int per prompt."""
    if isinstance(max_new_tokens, (int, np.integer)) and not isinstance(max_new_tokens, bool):
        limits = [max_new_tokens] * num_prompts
    elif isinstance(max_new_tokens, (Sequence, np.ndarray)) and not isinstance(max_new_tokens, (str, bytes)):
        limits = list(max_new_tokens)
        if len(limits) != num_prompts:
            raise ValueError(f"max_new_tokens has {len(limits)} entries for {num_prompts} prompts (one per prompt)")
    else:
        raise ValueError(f"max_new_tokens must be a positive int or one per prompt, got {max_new_tokens!r}")
    for n in limits:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"max_new_tokens must be positive ints, got {n!r}")
    return [int(n) for n in limits]


def _generate_static(model, params, arrays, plan, limits, first_prompt_id, *, rng, temperature, top_p, eos_ids,
                     num_samples, unroll_layers) -> SampleOutput:
    """One static batch: prefill, then decode until every row stops (or reaches its limit)."""
    tokens, pad_lens, prompt_lens, live = _left_pad(arrays, plan)
    prompt_ids = np.arange(plan.padded_prompts, dtype=np.int32) + first_prompt_id
    row_limits = np.ones((plan.padded_prompts,), np.int32)
    row_limits[: len(limits)] = limits
    eos = np.full((-(-max(len(eos_ids), 1) // _EOS_SLOTS) * _EOS_SLOTS,), -1, np.int32)
    eos[: len(eos_ids)] = np.asarray(list(eos_ids), np.int32)
    max_new_tokens = max(limits)

    if model.mesh is not None:
        params = jax.device_put(params, _program("param_shardings", model))  # no-op when already placed
        rows = lambda x: jax.device_put(
            x, shd.named_sharding(("cache_batch",) + (None,) * (x.ndim - 1), x.shape, model.mesh, model.rules)
        )
        tokens, pad_lens, prompt_lens, live, prompt_ids, row_limits = map(
            rows, (tokens, pad_lens, prompt_lens, live, prompt_ids, row_limits)
        )

    prefill = _program("prefill", model)
    decode = _program(
        "decode", model, num_samples=int(num_samples), max_new_tokens=int(max_new_tokens), mode=plan.mode,
        unroll_layers=bool(unroll_layers),
    )
    prompt_cache, last_logits = prefill(params, tokens, pad_lens)
    out_tokens, out_logprobs, out_lengths = decode(
        params,
        prompt_cache,
        last_logits,
        pad_lens,
        prompt_lens,
        live,
        prompt_ids,
        row_limits,
        rng,
        np.float32(temperature if temperature > 0 else 1.0),
        np.float32(top_p),
        eos,
    )
    n = plan.num_prompts * num_samples
    return SampleOutput(
        tokens=_to_host(out_tokens)[:n],
        logprobs=_to_host(out_logprobs)[:n],
        lengths=_to_host(out_lengths)[:n],
    )
