"""The static engine: one prefill program and one `lax.while_loop` decode program per batch of prompts,
decoded until its longest row stops. `sampling.generate` (`api.py`) is the entry point for both engines;
`engine.py` is continuous batching over refilled decode slots, with the same results.

    out = sampling.generate(model, params, [[1, 5, 9], [7, 7]], max_new_tokens=64, temperature=1.0,
                            top_p=0.95, eos_ids=(2,), num_samples=8, rng=jax.random.key(0))
    out.tokens    # int32 [2 * 8, 64], row i * 8 + j = prompt i, sample j; PAD_ID after the stop token
    out.logprobs  # fp32  [16, 64], log p(token) under the full-vocab softmax at the sampling temperature
    out.lengths   # int32 [16], generated tokens per row, the stop token included

Design (see docs/sampling.md)
- Prompts are left-padded to a static prompt bucket P and the batch to a static batch bucket (see
  `buckets.py`). The **prefill** program runs the whole padded prompt block through the model once,
  filling a P-slot KV cache, and returns the logits of the last slot only (the LM head is applied to
  one position per row, never to `[B, P, vocab]`); it is `core.prefill`, shared with `engine.py`.
- The **decode** program tiles the prompt cache `num_samples` times along the batch (one prefill per
  prompt), pads it to `P + max_new_tokens - 1` slots, samples the first token from the prefill logits,
  then runs a `lax.while_loop` that feeds one token per step and stops as soon as every row has emitted
  a stop token. Everything lives on device: there is no host round trip per step.
- Params are a jit argument, so new weights reuse the compiled programs. Programs are cached per
  (model config, mesh, rules, static sampling settings) in `core.program`; jit's own cache then keys on shapes, which the
  buckets keep to a small set. Temperature, top-p and the stop ids are traced values (changing them
  never recompiles); greedy-vs-sampled, top-k (`lax.top_k` needs a static k) and whether top-p is on
  are static, so the top-p threshold search is only compiled in when it is used.
- Prefill and decode run the layers unrolled over per-layer weights and cache buffers (split once per
  call, `core.decode_params`; packed for the CPU kernels on one CPU device, once per params,
  `core.use_cpu_kernels`)
  instead of the scanned stack, which would slice (copy) every layer's weights each step: the same
  model, weights and prefill as the continuous engine, so both give the same tokens and log-probs.
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
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gasp_jax import sharding as shd
from gasp_jax.models.transformer import CACHE_AXES, KVCache, Transformer
from gasp_jax.sampling import buckets as bk
from gasp_jax.sampling import core


# ------------------------------------------------------------------------------------------- programs


class _DecodeState(NamedTuple):
    step: jax.Array  # int32 scalar: index of the token sampled next
    cache: KVCache
    last_token: jax.Array  # int32 [B]
    done: jax.Array  # bool [B]
    lengths: jax.Array  # int32 [B]
    tokens: jax.Array  # int32 [B, N]
    logprobs: jax.Array  # float32 [B, N]


def decode(
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
    mode: core.SamplingMode,
):
    """Samples `max_new_tokens` per row, `num_samples` rows per prompt, from a prefilled prompt cache.

    `live [Bp]` is False on batch-padding rows: they start done and produce nothing. `prompt_ids [Bp]`
    is each prompt's index in the caller's list (its RNG stream); `row_limits [Bp]` its max_new_tokens
    (<= `max_new_tokens`): a row stops at its limit as at a stop token.
    Returns `(tokens [B, N], logprobs [B, N], lengths [B], steps)` with `B = Bp * num_samples` and `steps`
    the tokens sampled per row before the loop exited (1 when every row stops at its first token).

    `model` is the model the prefill ran: with `scan_layers=False` (`params` from `core.unstack_program`,
    packed or not, split once per call) the loop body runs the layers as straight-line code over per-layer
    weights and per-layer cache buffers, so a step reads every weight and cache entry in place. A scanned
    layer stack instead slices each layer's weights and cache out of the stacked arrays at every step,
    which XLA materialises as copies on CPU (and without dynamic-slice fusion on GPU): up to 3x the bytes
    moved per step.
    """
    mesh, rules = model.mesh, model.rules
    num_prompts, prompt_slots = pad_lens.shape[0], prompt_cache.length
    batch = num_prompts * num_samples
    cache_len = prompt_slots + max_new_tokens - 1  # the last sampled token is never fed back

    def expand(c, axes):  # [(L,) Bp, K, P, D] -> [(L,) Bp * ns, K, cache_len, D], prompt-major rows
        batch_axis, length_axis = axes.index("cache_batch"), axes.index("cache_length")
        c = jnp.repeat(c, num_samples, axis=batch_axis) if num_samples > 1 else c
        widths = [(0, 0)] * c.ndim
        widths[length_axis] = (0, cache_len - prompt_slots)
        return shd.constrain(jnp.pad(c, widths), axes, mesh, rules)

    num_layers = model.config.num_layers
    if not model.scan_layers:  # the prefill's per-layer prompt cache
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
    row_keys = core.row_keys(rng, tile(prompt_ids), rows % num_samples)

    def choose(step, logits):
        return core.sample_tokens(logits, core.step_keys(row_keys, step), temperature, top_p, mode,
                                  cpu_kernels=model.packed_weights)

    def record(state: _DecodeState, token, logprob) -> _DecodeState:
        active = ~state.done
        stopped = jnp.any(token[:, None] == eos_ids[None, :], axis=-1) | (state.step + 1 >= row_limits)
        return state._replace(
            step=state.step + 1,
            last_token=token,
            done=state.done | stopped,
            lengths=state.lengths + active.astype(jnp.int32),
            tokens=jax.lax.dynamic_update_index_in_dim(
                state.tokens, jnp.where(active, token, core.PAD_ID), state.step, axis=1
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
        tokens=jnp.full((batch, max_new_tokens), core.PAD_ID, jnp.int32),
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
    return state.tokens, state.logprobs, state.lengths, state.step



def decode_program(model: Transformer, *, num_samples: int, max_new_tokens: int, mode: core.SamplingMode):
    """jit of `decode(params, prompt_cache, last_logits, pad_lens, prompt_lens, live, prompt_ids, row_limits,
    rng, temperature, top_p, eos_ids)` for these static settings; one executable per prompt batch and
    bucket. No donation: no output has the prompt cache's shape, so XLA could not reuse its buffer.
    `model` is the prefill's: the decode model (`core.decode_model`) when the layers run unrolled."""
    return core.program(decode, model, num_samples=int(num_samples), max_new_tokens=int(max_new_tokens),
                        mode=mode)


@dataclasses.dataclass(frozen=True)
class _Plan:
    num_prompts: int
    padded_prompts: int  # batch bucket for the prefill (prompts); decode batch = this * num_samples
    prompt_bucket: int
    mode: core.SamplingMode


def _plan(model: Transformer, arrays: list[np.ndarray], *, max_new_tokens: int, temperature, top_k, top_p,
          prompt_buckets, max_cache_length) -> _Plan:
    """Picks one batch's static shapes; ValueError (before anything compiles) when they do not fit."""
    cfg = model.config
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
    return _Plan(
        num_prompts=len(arrays),
        padded_prompts=bk.batch_bucket(len(arrays), core.batch_shards(model.mesh, model.rules)),
        prompt_bucket=bk.pick_bucket(longest, buckets),
        mode=core.sampling_mode(cfg.vocab_size, temperature, top_k, top_p),
    )


def _left_pad(arrays: list[np.ndarray], plan: _Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tokens [Bp, P], pad_lens [Bp], prompt_lens [Bp], live [Bp]); padding rows hold one PAD_ID token."""
    bp, p = plan.padded_prompts, plan.prompt_bucket
    tokens = np.full((bp, p), core.PAD_ID, np.int32)
    lengths = np.ones((bp,), np.int32)
    for i, a in enumerate(arrays):
        tokens[i, p - a.size :] = a
        lengths[i] = a.size
    live = np.arange(bp) < len(arrays)
    return tokens, (p - lengths).astype(np.int32), lengths, live


# ------------------------------------------------------------------------------------------ public API


def generate_static(model: Transformer, params: Any, arrays: Sequence[np.ndarray], limits: Sequence[int], *,
                    rng: jax.Array, temperature: float, top_k: int, top_p: float, eos_ids: Sequence[int],
                    num_samples: int, max_slots: int | None, prompt_buckets, max_cache_length,
                    unroll_layers: bool) -> core.SampleOutput:
    """The static engine behind `sampling.generate`: checked int32 prompts, one limit per prompt, run in
    consecutive batches of `max_slots // num_samples` prompts (default: one batch), each decoded until
    its longest row stops. Every batch is planned (and checked) before the first one compiles."""
    prompts_per_batch = len(arrays)
    if max_slots is not None:
        shards = core.batch_shards(model.mesh, model.rules)
        if isinstance(max_slots, bool) or not isinstance(max_slots, (int, np.integer)) or max_slots < 1:
            raise ValueError(f"max_slots must be a positive int, got {max_slots!r}")
        if max_slots % shards:
            raise ValueError(
                f"max_slots={max_slots} does not divide over the mesh's {shards} batch shards (cache_batch axes); "
                f"use a multiple of {shards}"
            )
        if num_samples > max_slots:
            raise ValueError(f"num_samples={num_samples} exceeds max_slots={max_slots}")
        prompts_per_batch = max(1, max_slots // num_samples)
    batches = [range(s, min(s + prompts_per_batch, len(arrays))) for s in range(0, len(arrays), prompts_per_batch)]
    plans = [
        _plan(model, [arrays[i] for i in b], max_new_tokens=max(limits[i] for i in b), temperature=temperature,
              top_k=top_k, top_p=top_p, prompt_buckets=prompt_buckets, max_cache_length=max_cache_length)
        for b in batches
    ]
    if model.mesh is not None:
        params = jax.device_put(params, core.param_shardings(model))  # no-op when already placed
    # Both programs of every batch run the decode model over weights split once per call (packed: once per
    # params, `core.decode_params`).
    decode_model, decode_params = model, params
    if unroll_layers:
        packed = core.use_cpu_kernels(model)
        decode_model = core.decode_model(model, packed)
        decode_params = core.decode_params(model, params, packed)
    outs = [
        _generate_batch(decode_model, decode_params, [arrays[i] for i in b], plan, [limits[i] for i in b], b.start,
                        rng=rng, temperature=temperature, top_p=top_p, eos_ids=eos_ids, num_samples=num_samples)
        for b, plan in zip(batches, plans)
    ]
    width = max(limits)
    pad = lambda x: np.pad(x, ((0, 0), (0, width - x.shape[1])))
    return core.SampleOutput(
        tokens=np.concatenate([pad(o.tokens) for o in outs]),
        logprobs=np.concatenate([pad(o.logprobs) for o in outs]),
        lengths=np.concatenate([o.lengths for o in outs]),
    )


def _generate_batch(model, params, arrays, plan, limits, first_prompt_id, *, rng, temperature, top_p, eos_ids,
                    num_samples) -> core.SampleOutput:
    """One static batch: prefill, then decode until every row stops (or reaches its limit)."""
    tokens, pad_lens, prompt_lens, live = _left_pad(arrays, plan)
    prompt_ids = np.arange(plan.padded_prompts, dtype=np.int32) + first_prompt_id
    row_limits = np.ones((plan.padded_prompts,), np.int32)
    row_limits[: len(limits)] = limits
    if model.mesh is not None:
        tokens, pad_lens, prompt_lens, live, prompt_ids, row_limits = (
            core.place_rows(model, x) for x in (tokens, pad_lens, prompt_lens, live, prompt_ids, row_limits)
        )
    decode_fn = decode_program(model, num_samples=num_samples, max_new_tokens=max(limits), mode=plan.mode)
    prompt_cache, last_logits = core.prefill_program(model)(params, tokens, pad_lens)
    out = decode_fn(
        params, prompt_cache, last_logits, pad_lens, prompt_lens, live, prompt_ids, row_limits, rng,
        np.float32(temperature if temperature > 0 else 1.0), np.float32(top_p), core.padded_stop_ids(eos_ids),
    )
    n = plan.num_prompts * num_samples
    return core.SampleOutput(*(x[:n] for x in core.fetch(out[:3])))
