"""Continuous-batching rollout engine: a fixed set of decode slots that are refilled as requests finish.

    out, stats = engine.run_requests(model, params, [
        engine.Request(prompt=[1, 5, 9], max_new_tokens=16, num_samples=4, temperature=1.0, eos_ids=(2,)),
        engine.Request(prompt=[7, 7], max_new_tokens=2048, temperature=0.0),
    ], rng=jax.random.key(0), max_slots=64)
    out.tokens[row], out.logprobs[row], out.lengths[row]  # rows request-major, as `sampling.generate`
    stats.slot_utilisation                                 # active slot-steps / (slots x decode steps)

`sampling.generate(..., engine="continuous")` is the same engine behind the static sampler's API.

Design (see docs/sampling.md, "Continuous batching")
- **Slots.** `max_slots` decode rows over one per-slot KV cache of `cache_len` slots each (a length
  bucket >= every request's prompt bucket + max_new_tokens - 1). Each slot carries its own request
  state: cache write index, RoPE position, left-padding length, last token, tokens generated so far,
  limit, stop ids, sampling settings, RNG key. The model writes each row's new key/value at its own
  slot (`Transformer(..., cache_index=[B])`), so slots at different depths decode in one batch.
- **Refill.** Between chunks the host takes queued requests that fit the free slots (a request's
  `num_samples` rows go in together), groups them by prompt bucket and *admits* each group in batches
  of `admit_sizes` (1, 4, 16, ... prompts: the group size's base-4 digits, so no padded prompt rows and
  few programs). One admit program prefills the batch but each prompt's last token
  (`core.prefill_cache`: left-padded, no LM head), scatters each prompt's cache into its
  `num_samples` free slots (the copies share the one prefill) and starts each slot on the prompt's
  last token: the slot's first decode step writes it and samples the first token, through the LM
  head that step runs for every slot anyway (a one-prompt admit would read the whole head for one
  row: at 8 layers x 512 a fifth of its time). The queue is admitted longest-`max_new_tokens`-first
  (stable), so long requests do not start last and hold the tail; the order never changes the results
  (see Randomness).
- **Early refill.** While requests wait, a decode chunk also ends as soon as enough slots have
  finished for the next request (`refill_slots`, default slots // 16): a finished slot waits at most
  until that point, not until the chunk's end, while a chunk with nothing to refill runs its
  `chunk_steps` in one device call.
- **Decode.** One jitted program runs up to `chunk_steps` decode steps over all slots (a
  `lax.while_loop` that also exits when every slot is done) and returns the chunk's tokens and
  log-probs `[slots, chunk_steps]`, the per-slot counters and done flags. Finished and free slots keep
  computing (static shapes) but emit nothing. The slot state is donated into every insert and decode
  call, so the cache is updated in place and never copied between chunks.
- **Attention window.** A chunk attends over (and writes) only the first `window` cache slots: the
  smallest of cache_len / 4, cache_len / 2, cache_len (`attention_windows`) that holds every active
  slot's writes of the chunk. Early in the slots' lives (and for short requests) a step reads a quarter
  or half of the KV bytes; the masked slots past the window contributed nothing anyway. With the CPU
  kernels (`cpu_kernels`) attention reads only each row's valid slots whatever the window, so every
  chunk runs the whole cache (one decode program, no window copies).
- **Same results as the static sampler, to float rounding.** Same math: the cache layout inside a
  slot (prompt left-padded to its bucket at slots [0, P), generated tokens from slot P, RoPE positions
  from the prompt length), same `sample_tokens` / greedy pick, same RNG, log-probs the full-vocab
  `log_softmax(logits / T)` of the sampled token (`log_softmax(logits)` when greedy). What differs is
  rounding: the engine's prompt buckets are finer (16, 24, 32, 48, ...: `bk.fine_prompt_buckets`), the
  first token's logits come from a decode step rather than the prefill, and the masked attention
  reduction is wider (cache_len vs P + N - 1 slots; masked slots contribute exact zeros). Tokens
  equal the static sampler's in the tests; log-probs agree to ~1e-5.
- **Randomness.** Request k's sample j uses `row_key = fold_in(fold_in(rng, k), j)` and its t-th
  token `fold_in(row_key, t)`, the static sampler's scheme with k the request's index in the call.
  A row's draws depend only on (rng, k, j, t) and the model: not on the slot it lands in, when it is
  admitted, which requests finish first, the slot count, the chunk length or the mesh.
- **Per-request settings.** `max_new_tokens`, `eos_ids`, `temperature`, `top_k`, `top_p` are per
  request. The sampling *variants* present in a call (greedy; top-k value; top-p on/off) are static;
  with more than one, each step computes every variant and picks per slot, so a row's tokens are
  exactly what the static sampler gives it with its own settings.
- **Compiles.** Programs are cached per (model, static settings) in `core.program`; shapes come from
  buckets: admit per (admit size, prompt bucket, inserted rows), decode per (slots, cache_len,
  chunk_steps, variants, stop-id width, attention window), plus one state init and one layer split. A
  ragged call with 16 slots, one sample per prompt and prompts of up to 64 tokens (default buckets
  16/24/32/48/64) compiles at most 3 x 5 admits + 3 decodes (1 with the CPU kernels) + 2
  (`EngineStats.programs_compiled` says how many a call compiled). Params, temperatures, top-p values,
  stop ids, limits and prompts within a bucket are traced: they never recompile. `admit_program`, `decode_program`, `init_program` and
  `core.unstack_program` return the jitted programs for given static settings, so they can be lowered and
  compiled ahead of time from abstract shapes (`abstract_state` gives the slot state's).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gasp_jax import sharding as shd
from gasp_jax.models.transformer import (
    CACHE_AXES,
    KVCache,
    Transformer,
    init_cache,
)
from gasp_jax.sampling import buckets as bk
from gasp_jax.sampling import core
from gasp_jax.sampling.core import PAD_ID, SampleOutput, SamplingMode

DEFAULT_CHUNK_STEPS = 16
DEFAULT_MAX_SLOTS = 256  # when neither max_slots nor kv_cache_tokens is given
MIN_CACHE_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class Request:
    """One prompt and how to continue it; `num_samples` rows share one prefill."""

    prompt: Sequence[int]
    max_new_tokens: int
    num_samples: int = 1
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    eos_ids: Sequence[int] = ()


@dataclasses.dataclass
class EngineStats:
    """What one `run_requests` call did. Utilisation: active slot-steps over slots x decode steps run
    (every token, the first included, comes from a decode step)."""

    slots: int
    cache_len: int
    chunk_steps: int
    decode_steps: int = 0
    active_slot_steps: int = 0
    chunks: int = 0
    prefills: int = 0  # admit (prefill + insert) calls: per refill, per prompt bucket, per `admit_sizes` batch
    prefilled_prompts: int = 0  # prompts run through a prefill: one per request, whatever its num_samples
    tokens: int = 0  # generated tokens, every row's stop token included
    programs_compiled: int = 0  # XLA executables this call compiled (0 once its buckets are warm)
    window_steps: dict = dataclasses.field(default_factory=dict)  # attention window -> decode steps run with it

    @property
    def slot_utilisation(self) -> float:
        return self.active_slot_steps / max(1, self.slots * self.decode_steps)


# ------------------------------------------------------------------------------------- device state


class SlotState(NamedTuple):
    """Per-slot decode state; every leaf is `[slots, ...]` except the cache (`CACHE_AXES` layout)."""

    cache: KVCache
    write_index: jax.Array  # int32: cache slot where `last_token` is written next
    position: jax.Array  # int32: RoPE position of `last_token`
    pad_len: jax.Array  # int32: cache slots [0, pad_len) are the prompt's left padding (masked)
    last_token: jax.Array  # int32
    step: jax.Array  # int32: tokens generated so far (= index of the next token)
    limit: jax.Array  # int32: max_new_tokens of the slot's request
    done: jax.Array  # bool: free, or finished (stop id or limit)
    row_key: jax.Array  # PRNG key per slot: fold_in(fold_in(rng, request), sample)
    temperature: jax.Array  # float32 (1 for greedy rows: their variant ignores it)
    top_p: jax.Array  # float32
    variant: jax.Array  # int32: index into the call's static tuple of `SamplingMode`s
    eos: jax.Array  # int32 [slots, E], -1 padded


def _constrain_state(state: SlotState, model: Transformer) -> SlotState:
    mesh, rules = model.mesh, model.rules
    per_layer = isinstance(state.cache.k, (tuple, list))
    axes = CACHE_AXES[1:] if per_layer else CACHE_AXES
    c = lambda x: shd.constrain(x, axes, mesh, rules)
    cache = KVCache(*(tuple(map(c, part)) if per_layer else c(part) for part in state.cache))
    rows = lambda x: shd.constrain(x, ("cache_batch",) + (None,) * (x.ndim - 1), mesh, rules)
    fields = {f: rows(getattr(state, f)) for f in SlotState._fields if f not in ("cache", "row_key")}
    return SlotState(cache=cache, row_key=state.row_key, **fields)


def _init_state(rng, *, model: Transformer, slots: int, cache_len: int, eos_width: int, per_layer: bool) -> SlotState:
    zeros = jnp.zeros((slots,), jnp.int32)
    state = SlotState(
        cache=init_cache(model.config, slots, cache_len, per_layer=per_layer),
        write_index=zeros, position=zeros, pad_len=zeros, last_token=zeros, step=zeros, limit=zeros + 1,
        done=jnp.ones((slots,), bool),
        row_key=jax.random.split(rng, slots),  # placeholders: every slot gets its row's key on insert
        temperature=jnp.ones((slots,), jnp.float32), top_p=jnp.ones((slots,), jnp.float32),
        variant=zeros, eos=jnp.full((slots, eos_width), -1, jnp.int32),
    )
    return _constrain_state(state, model)


def _insert(
    state: SlotState,
    prompt_cache: KVCache | None,
    last_tokens,
    pad_lens,
    prompt_lens,
    rng,
    slot_ids,
    source_rows,
    request_ids,
    sample_ids,
    limits,
    temperatures,
    top_ps,
    variant_ids,
    eos,
    *,
    model: Transformer,
):
    """Copies prompt `source_rows[r]`'s prefilled cache (every prompt slot but the last) into slot
    `slot_ids[r]` (rows past the live ones carry slot id = slots and are dropped) and starts the slot
    on the prompt's last token: the slot's first decode step writes it and samples the first token."""
    prompt_slots = 0 if prompt_cache is None else prompt_cache.length

    def put(buf, rows):  # buf [slots, K, C, D] <- rows [R, K, P - 1, D] into slots [0, P - 1)
        return buf.at[slot_ids, :, :prompt_slots, :].set(rows.astype(buf.dtype), mode="drop")

    per_layer = isinstance(state.cache.k, (tuple, list))
    if prompt_cache is None:  # one-slot prompts: nothing to prefill
        cache = state.cache
    elif per_layer:
        cache = KVCache(*(
            tuple(put(buf, jnp.take(src[i], source_rows, axis=0)) for i, buf in enumerate(part))
            for part, src in zip(state.cache, prompt_cache)
        ))
    else:
        cache = KVCache(*(
            jax.vmap(put, in_axes=(0, 0))(part, jnp.take(src, source_rows, axis=1))
            for part, src in zip(state.cache, prompt_cache)
        ))
    set_ = lambda x, v: x.at[slot_ids].set(v, mode="drop")
    src = lambda x: jnp.take(x, source_rows, axis=0)
    zeros = jnp.zeros_like(slot_ids)
    state = SlotState(
        cache=cache,
        write_index=set_(state.write_index, zeros + prompt_slots),
        position=set_(state.position, src(prompt_lens) - 1),
        pad_len=set_(state.pad_len, src(pad_lens)),
        last_token=set_(state.last_token, src(last_tokens)),
        step=set_(state.step, zeros),
        limit=set_(state.limit, limits),
        done=set_(state.done, zeros.astype(bool)),
        row_key=set_(state.row_key, core.row_keys(rng, request_ids, sample_ids)),
        temperature=set_(state.temperature, temperatures),
        top_p=set_(state.top_p, top_ps),
        variant=set_(state.variant, variant_ids),
        eos=set_(state.eos, eos),
    )
    return _constrain_state(state, model)


def _admit(params, state: SlotState, tokens, pad_lens, rng, slot_ids, source_rows, request_ids, sample_ids, limits,
           temperatures, top_ps, variant_ids, eos, *, model: Transformer):
    """Prefills the left-padded prompts `tokens [Rp, P]` but their last token (`core.prefill_cache`) and
    inserts them (`_insert`) in one program: one dispatch per admitted batch, and the prompt cache never
    leaves the device program. No LM head here: each slot's first token comes from its first decode step,
    whose head runs for every slot anyway (an admit of one prompt would read the whole head for one row)."""
    prompt_cache = core.prefill_cache(params, tokens[:, :-1], pad_lens, model=model) if tokens.shape[1] > 1 else None
    prompt_lens = tokens.shape[1] - pad_lens
    return _insert(state, prompt_cache, tokens[:, -1], pad_lens, prompt_lens, rng, slot_ids, source_rows, request_ids,
                   sample_ids, limits, temperatures, top_ps, variant_ids, eos, model=model)


def _map_cache(fn, *caches: KVCache) -> KVCache:
    """`fn` applied to every (k or v) buffer of `caches`, stacked or per layer."""
    if isinstance(caches[0].k, (tuple, list)):
        return KVCache(*(tuple(fn(*bufs) for bufs in zip(*parts)) for parts in zip(*caches)))
    return KVCache(*(fn(*parts) for parts in zip(*caches)))


def _decode_chunk(params, state: SlotState, refill_after, *, model: Transformer, chunk_steps: int,
                  variants: tuple[SamplingMode, ...], window: int = 0):
    """Up to `chunk_steps` decode steps over every slot: fewer when all are done, or as soon as
    `refill_after` (int32) more slots are done than at the start, so the host can refill them without
    waiting for the chunk's end (pass slots + 1 when nothing waits).

    `window` (static; 0: the whole cache): the chunk attends over and writes only cache slots
    [0, window), which must hold every active slot's writes of this chunk (write index + chunk_steps).
    The window is cut from the cache once before the loop and written back once after it, so a chunk
    early in the slots' lives reads a fraction of the KV bytes per step. Results are unchanged: slots
    past an active row's write index are masked anyway. Free and finished rows may write their
    (ignored) token at the window's last slot, which their next occupant's prompt or causality hides.

    Returns (state, tokens [slots, chunk_steps], logprobs [slots, chunk_steps], steps run). A slot
    active at the start emits one token per step until it stops, so its tokens are the first
    `step_after - step_before` columns; the rest are PAD_ID / 0."""
    full_cache = state.cache
    if window and window < full_cache.length:
        state = state._replace(cache=_map_cache(lambda b: jax.lax.slice_in_dim(b, 0, window, axis=b.ndim - 2),
                                                full_cache))
    slots, cache_len = state.step.shape[0], state.cache.length
    key_slots = jnp.arange(cache_len, dtype=jnp.int32)[None, :]

    def body(carry):
        i, st, tokens, logprobs = carry
        logits, cache = model.apply(
            {"params": params},
            st.last_token[:, None],
            st.position[:, None],
            kv_mask=key_slots >= st.pad_len[:, None],
            cache=st.cache,
            cache_index=st.write_index,
        )
        keys = core.step_keys(st.row_key, st.step)
        token, logprob = core.choose_tokens(logits[:, 0], keys, st.temperature, st.top_p, st.variant, variants,
                                           cpu_kernels=model.packed_weights)
        active = ~st.done
        stopped = jnp.any(token[:, None] == st.eos, axis=-1) | (st.step + 1 >= st.limit)
        advance = (active & ~stopped).astype(jnp.int32)  # a finished row's next write would pass its region
        st = st._replace(
            cache=cache,
            last_token=jnp.where(active, token, st.last_token),
            step=st.step + active.astype(jnp.int32),
            write_index=st.write_index + advance,
            position=st.position + advance,
            done=st.done | stopped,
        )
        tokens = jax.lax.dynamic_update_index_in_dim(tokens, jnp.where(active, token, PAD_ID), i, axis=1)
        logprobs = jax.lax.dynamic_update_index_in_dim(logprobs, jnp.where(active, logprob, 0.0), i, axis=1)
        return i + 1, st, tokens, logprobs

    done_at_start = jnp.sum(state.done.astype(jnp.int32))

    def cond(carry):
        i, st = carry[:2]
        done = jnp.sum(st.done.astype(jnp.int32))
        return (i < chunk_steps) & (done < slots) & (done < done_at_start + refill_after)

    carry = (
        jnp.int32(0), state,
        jnp.full((slots, chunk_steps), PAD_ID, jnp.int32), jnp.zeros((slots, chunk_steps), jnp.float32),
    )
    steps, state, tokens, logprobs = jax.lax.while_loop(cond, body, carry)
    if state.cache.length < full_cache.length:
        put_back = lambda full, part: jax.lax.dynamic_update_slice_in_dim(full, part, 0, axis=full.ndim - 2)
        state = state._replace(cache=_map_cache(put_back, full_cache, state.cache))
    return _constrain_state(state, model), tokens, logprobs, steps


# ------------------------------------------------------------------------------------------- programs


def init_program(model: Transformer, *, slots: int, cache_len: int, eos_width: int, per_layer: bool):
    """jit of `init(rng) -> SlotState`: every slot free, the cache zeroed."""
    return core.program(_init_state, model, slots=int(slots), cache_len=int(cache_len), eos_width=int(eos_width),
                        per_layer=bool(per_layer))


def abstract_state(model: Transformer, *, slots: int, cache_len: int, eos_width: int, per_layer: bool) -> SlotState:
    """The slot state's shapes and dtypes (`jax.ShapeDtypeStruct`s, nothing computed), for lowering
    `admit_program` / `decode_program` ahead of time."""
    init = init_program(model, slots=slots, cache_len=cache_len, eos_width=eos_width, per_layer=per_layer)
    return jax.eval_shape(init, jax.random.key(0))


def admit_program(model: Transformer):
    """jit of `_admit(params, state, tokens [Rp, P], pad_lens [Rp], rng, slot_ids [R], source_rows [R],
    request_ids [R], sample_ids [R], limits [R], temperatures [R], top_ps [R], variant_ids [R], eos [R, E])
    -> state`; the state is donated (the slot cache is updated in place). One executable per (slots,
    cache_len, Rp, P, R): Rp is one of `admit_sizes`, P a prompt bucket. It samples nothing, so it does
    not depend on the sampling variants: a slot's first token is its first decode step's.
    `run_requests` passes the decode model (`scan_layers=False` over the split layers when they run
    unrolled): the prefill then slices no layer out of the stacked weights either."""
    return core.program(_admit, model, donate_argnums=(1,))


def decode_program(decode_model: Transformer, *, chunk_steps: int, variants: tuple[SamplingMode, ...],
                   window: int = 0):
    """jit of `_decode_chunk(params, state, refill_after)` for the decode model (`scan_layers=False` when
    the layers run unrolled over `unstack_layer_params`) attending over cache slots [0, window) (0: all);
    the state is donated."""
    return core.program(_decode_chunk, decode_model, donate_argnums=(1,), chunk_steps=int(chunk_steps),
                        variants=tuple(variants), window=int(window))


WINDOW_HALVINGS = 2  # attention windows: cache_len, cache_len / 2, cache_len / 4 (decode programs per call)


def attention_windows(cache_len: int, chunk_steps: int) -> tuple[int, ...]:
    """Decode attention windows for a slot cache of `cache_len`, smallest first: the cache length halved
    up to `WINDOW_HALVINGS` times while a window still holds a chunk past the smallest prompt bucket
    (the last one is the whole cache). Few and fixed per cache length, so a run meets the same programs
    every call; each chunk runs the smallest one that holds every active slot's writes."""
    out, w = [cache_len], cache_len
    for _ in range(WINDOW_HALVINGS):
        if w % 2 or w // 2 < bk.MIN_PROMPT_BUCKET + chunk_steps:
            break
        w //= 2
        out.append(w)
    return tuple(reversed(out))


def pick_window(windows: Sequence[int], needed: int) -> int:
    """The smallest window >= `needed` cache slots (the last, the whole cache, otherwise)."""
    return next((w for w in windows if w >= needed), windows[-1])


# ------------------------------------------------------------------------------------ host-side plan


@dataclasses.dataclass(frozen=True)
class _Row:
    request: int
    sample: int
    row: int  # output row


@dataclasses.dataclass(frozen=True)
class _Plan:
    prompts: list  # int32 arrays
    prompt_buckets: list  # per request
    slots: int
    cache_len: int
    eos_width: int
    variants: tuple  # of SamplingMode
    variant_of: list  # per request
    row_offsets: list  # first output row per request
    total_rows: int
    width: int  # output columns: the largest max_new_tokens
    fixed_shapes: bool = False  # slots, cache_len and admit rows from the settings alone (see run_requests)
    warm_buckets: tuple = ()  # fixed_shapes: every prompt bucket this call's settings can use


def cache_length_bucket(length: int, limit: int) -> int:
    """Per-slot cache length for `length` needed slots: the next of 16, 24, 32, 48, 64, ... (powers of
    two and 1.5x powers, at most a third wasted), capped at `limit`."""
    return min(max(MIN_CACHE_BUCKET, bk.batch_bucket(length)), limit)


def slots_for_budget(kv_cache_tokens: int, cache_len: int, shards: int = 1) -> int:
    """Decode slots a budget of `kv_cache_tokens` cached tokens holds at `cache_len` per slot, rounded
    down to a multiple of the batch shards. KV bytes = slots x cache_len x kv_bytes_per_token."""
    return (int(kv_cache_tokens) // int(cache_len)) // shards * shards


def _plan(model: Transformer, requests, *, max_slots, kv_cache_tokens, prompt_buckets, max_cache_length,
          fixed_shapes: bool = False) -> _Plan:
    """Validates every request and sizes the slots; raises ValueError before anything compiles."""
    cfg = model.config
    if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence) or len(requests) == 0:
        raise ValueError("requests must be a non-empty list of engine.Request")
    if fixed_shapes and max_slots is None and kv_cache_tokens is None:
        raise ValueError("fixed_shapes needs max_slots or kv_cache_tokens (the slot count every call uses)")
    cache_limit = int(max_cache_length or cfg.max_position_embeddings)
    if max_cache_length is not None and not 1 <= max_cache_length <= cfg.max_position_embeddings:
        raise ValueError(
            f"max_cache_length={max_cache_length} must be in [1, max_position_embeddings={cfg.max_position_embeddings}]"
        )
    if prompt_buckets is not None and (not prompt_buckets or any(int(b) < 1 for b in prompt_buckets)):
        raise ValueError(f"prompt_buckets must be positive lengths, got {prompt_buckets!r}")
    shards = core.batch_shards(model.mesh, model.rules)
    prompts, buckets_, variant_of, variants, needed, offsets = [], [], [], [], 1, []
    rows, max_eos, max_samples = 0, 1, 1
    # fixed_shapes: the buckets any request of these settings can land in, whatever its max_new_tokens.
    warm = set(bk.effective_prompt_buckets(_base_buckets(prompt_buckets, cache_limit, 1, True), cache_limit - 1)
               if fixed_shapes else ())
    for k, r in enumerate(requests):
        if not isinstance(r, Request):
            raise ValueError(f"request {k} must be an engine.Request, got {type(r).__name__}")
        a = core.check_prompt(k, r.prompt, cfg.vocab_size)
        n = r.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"max_new_tokens of prompt {k} must be a positive int, got {n!r}")
        core.check_settings(cfg.vocab_size, num_samples=r.num_samples, temperature=r.temperature, top_k=r.top_k,
                            top_p=r.top_p, eos_ids=r.eos_ids)
        if a.size + n > cache_limit:
            raise ValueError(
                f"prompt {k} of {a.size} tokens plus max_new_tokens={n} exceeds the cache of {cache_limit} slots "
                "(max_cache_length / the model's max_position_embeddings)"
            )
        if prompt_buckets is not None and a.size > max(int(b) for b in prompt_buckets):
            raise ValueError(f"a prompt of {a.size} tokens is longer than the largest prompt bucket ({max(prompt_buckets)})")
        own = bk.effective_prompt_buckets(_base_buckets(prompt_buckets, cache_limit, n, fixed_shapes), cache_limit - n)
        if fixed_shapes:
            warm.update(own)
        p = bk.pick_bucket(a.size, own)
        mode = core.sampling_mode(cfg.vocab_size, r.temperature, r.top_k, r.top_p)
        if mode not in variants:
            variants.append(mode)
        prompts.append(a)
        buckets_.append(p)
        variant_of.append(variants.index(mode))
        needed = max(needed, p + n - 1)
        offsets.append(rows)
        rows += r.num_samples
        max_eos = max(max_eos, len(r.eos_ids))
        max_samples = max(max_samples, r.num_samples)
    cache_len = cache_limit if fixed_shapes else cache_length_bucket(needed, cache_limit)
    if max_slots is not None:
        if isinstance(max_slots, bool) or not isinstance(max_slots, (int, np.integer)) or max_slots < 1:
            raise ValueError(f"max_slots must be a positive int, got {max_slots!r}")
        if max_slots % shards:
            raise ValueError(
                f"max_slots={max_slots} does not divide over the mesh's {shards} batch shards (cache_batch axes); "
                f"use a multiple of {shards}"
            )
        if kv_cache_tokens is not None and max_slots * cache_len > kv_cache_tokens:
            raise ValueError(
                f"max_slots={max_slots} x cache_len={cache_len} exceeds kv_cache_tokens={kv_cache_tokens}"
            )
        slots = int(max_slots)
    elif kv_cache_tokens is not None:
        slots = slots_for_budget(kv_cache_tokens, cache_len, shards)
        if slots < 1:
            raise ValueError(
                f"kv_cache_tokens={kv_cache_tokens} holds no slot of {cache_len} cached tokens "
                f"(x {shards} batch shards); the longest request needs {needed}"
            )
    else:
        slots = DEFAULT_MAX_SLOTS // shards * shards or shards
    if not fixed_shapes:
        slots = min(slots, bk.batch_bucket(rows, shards))  # never more slots than the call has rows
    if max_samples > slots:
        raise ValueError(f"num_samples={max_samples} exceeds the {slots} decode slots (its rows share one prefill)")
    return _Plan(
        prompts=prompts, prompt_buckets=buckets_, slots=slots, cache_len=cache_len,
        eos_width=-(-max_eos // core.EOS_SLOTS) * core.EOS_SLOTS, variants=tuple(variants), variant_of=variant_of,
        row_offsets=offsets, total_rows=rows, width=max(int(r.max_new_tokens) for r in requests),
        fixed_shapes=bool(fixed_shapes), warm_buckets=tuple(sorted(warm)),
    )


def _base_buckets(prompt_buckets, cache_limit: int, max_new_tokens: int, fixed_shapes: bool):
    """The prompt buckets before the per-request cap (cache limit - max_new_tokens): the given ones, else
    powers of two and 1.5x each (`bk.fine_prompt_buckets`: an admit prefills its batch's bucket, so finer
    buckets cut padded prefill tokens by about half for one admit program per extra bucket); with
    fixed_shapes the defaults do not depend on max_new_tokens either."""
    if prompt_buckets is not None:
        return prompt_buckets
    return bk.fine_prompt_buckets(cache_limit if fixed_shapes else cache_limit - max_new_tokens)


# ------------------------------------------------------------------------------------------ public API


def run_requests(
    model: Transformer,
    params: Any,
    requests: Sequence[Request],
    *,
    rng: jax.Array,
    max_slots: int | None = None,
    kv_cache_tokens: int | None = None,
    chunk_steps: int = DEFAULT_CHUNK_STEPS,
    mesh: Mesh | None = None,
    prompt_buckets: Sequence[int] | None = None,
    max_cache_length: int | None = None,
    unroll_layers: bool = True,
    longest_first: bool = True,
    refill_slots: int | None = None,
    fixed_shapes: bool = False,
    cpu_kernels: bool | None = None,
) -> tuple[SampleOutput, EngineStats]:
    """Generates every request's `num_samples` rows over a fixed set of refilled decode slots.

    Args:
      requests: `Request`s; request k's sample j is output row `sum(num_samples of requests < k) + j`.
      rng: a `jax.random.key`; row (k, j) draws from `fold_in(fold_in(rng, k), j)` (see the module doc).
      max_slots: decode slots (a multiple of the mesh's batch shards). Default: as many as
        `kv_cache_tokens` holds, else 256; never more than the call's rows (bucketed).
      kv_cache_tokens: budget of cached tokens over all slots: slots = budget // cache_len.
      chunk_steps: decode steps per device call; the host refills free slots between chunks.
      longest_first: admit requests in decreasing `max_new_tokens` (stable); False: in order.
      refill_slots: while requests wait, a decode chunk ends early once this many more slots are free
        (default: slots // 16, at least 1), so finished slots refill without waiting for the chunk's end.
      fixed_shapes: every call with the same settings runs the same programs, whatever its requests:
        `max_slots` (or the budget's) slots even for fewer rows, the cache at the full cache limit,
        every admit at `slots` rows; the first call compiles the admit program of every prompt bucket
        its settings allow (`warm_admits`), so a run's later calls compile nothing. Needs `max_slots`
        or `kv_cache_tokens`.
      cpu_kernels: each unrolled layer one `kernels.cpu_layer` call and the LM head `kernels.cpu_gemm`, over
        weights packed once per params (`core.use_cpu_kernels`, `core.decode_params`); None: where that
        applies (fp32 on one CPU device).
      Others as `sampling.generate`.

    Returns:
      (`SampleOutput` with rows request-major, columns up to the largest `max_new_tokens`, PAD_ID / 0
      after each row's end; `EngineStats`).

    Raises:
      ValueError: on any bad argument, before anything is compiled.
    """
    if mesh is not None and model.mesh is not mesh:
        model = model.clone(mesh=mesh)
    if isinstance(chunk_steps, bool) or not isinstance(chunk_steps, (int, np.integer)) or chunk_steps < 1:
        raise ValueError(f"chunk_steps must be a positive int, got {chunk_steps!r}")
    if refill_slots is not None and (isinstance(refill_slots, bool) or not isinstance(refill_slots, (int, np.integer))
                                     or refill_slots < 1):
        raise ValueError(f"refill_slots must be a positive int, got {refill_slots!r}")
    plan = _plan(
        model, requests, max_slots=max_slots, kv_cache_tokens=kv_cache_tokens, prompt_buckets=prompt_buckets,
        max_cache_length=max_cache_length, fixed_shapes=fixed_shapes,
    )
    rng = core.as_key(rng)
    if model.mesh is not None:  # on the mesh like the params: the slot state's sharding, part of every
        rng = jax.device_put(rng, NamedSharding(model.mesh, PartitionSpec()))  # program's key, is then one
    shards = core.batch_shards(model.mesh, model.rules)
    compiled_before = core.compiled_program_count()
    if model.mesh is not None:
        params = jax.device_put(params, core.param_shardings(model))
    packed = unroll_layers and core.use_cpu_kernels(model, cpu_kernels)
    decode_model = core.decode_model(model, packed) if unroll_layers else model
    decode_params = core.decode_params(model, params, packed) if unroll_layers else params
    admit = admit_program(decode_model)  # unrolled prefill on the split layers too
    # The CPU kernel's attention reads only each row's valid slots: a smaller window saves it nothing.
    windows = (plan.cache_len,) if packed else attention_windows(plan.cache_len, int(chunk_steps))
    decodes = {w: decode_program(decode_model, chunk_steps=chunk_steps, variants=plan.variants,
                                 window=0 if w == plan.cache_len else w) for w in windows}
    state = init_program(
        model, slots=plan.slots, cache_len=plan.cache_len, eos_width=plan.eos_width, per_layer=unroll_layers
    )(rng)
    stats = EngineStats(slots=plan.slots, cache_len=plan.cache_len, chunk_steps=int(chunk_steps))
    refill_slots = max(1, plan.slots // 16) if refill_slots is None else int(refill_slots)
    sizes = admit_sizes(plan.slots, shards)
    if plan.fixed_shapes:
        state = warm_admits(admit, tuple(decodes.values()), decode_params, decode_params, state, rng, plan, sizes, model)

    tokens = np.full((plan.total_rows, plan.width), PAD_ID, np.int32)
    logprobs = np.zeros((plan.total_rows, plan.width), np.float32)
    lengths = np.zeros((plan.total_rows,), np.int32)
    order = sorted(range(len(requests)), key=lambda k: -int(requests[k].max_new_tokens)) if longest_first else list(
        range(len(requests))
    )
    queue = list(order)
    free = list(range(plan.slots))
    owner: dict[int, int] = {}  # slot -> output row
    row_bucket = np.repeat(plan.prompt_buckets, [r.num_samples for r in requests])  # a row's first cache write

    while True:
        # Refill: admit queued requests (all their samples at once) while they fit the free slots.
        admitted = []
        budget = len(free)
        while queue and requests[queue[0]].num_samples <= budget:
            budget -= requests[queue[0]].num_samples
            admitted.append(queue.pop(0))
        for bucket in sorted({plan.prompt_buckets[k] for k in admitted}):
            group = [k for k in admitted if plan.prompt_buckets[k] == bucket]
            for batch in split_batches(group, sizes):
                state = _admit_batch(admit, decode_params, state, rng, plan, requests, batch, bucket, free, owner,
                                     model)
                stats.prefills += 1
                stats.prefilled_prompts += len([k for k in batch if k is not None])
        if not owner:
            break
        # The chunk ends early once enough slots free up for the next waiting request (or `refill_slots`).
        wanted = max(refill_slots, requests[queue[0]].num_samples - len(free)) if queue else plan.slots + 1
        # Attend over the smallest window that holds this chunk's writes (row r writes slot bucket - 1 + length next).
        live = np.fromiter(owner.values(), np.int64)
        window = pick_window(windows, int((row_bucket[live] + lengths[live]).max()) - 1 + chunk_steps)
        stats.window_steps[window] = stats.window_steps.get(window, 0)
        state, chunk_tokens, chunk_logprobs, steps = decodes[window](decode_params, state, np.int32(wanted))
        # One transfer (one sync) per chunk.
        chunk_tokens, chunk_logprobs, step, done, steps = core.fetch(
            (chunk_tokens, chunk_logprobs, state.step, state.done, steps))
        steps = int(steps)
        stats.chunks += 1
        stats.decode_steps += steps
        stats.window_steps[window] += steps
        for slot, row in list(owner.items()):
            emitted = int(step[slot]) - int(lengths[row])
            tokens[row, lengths[row] : step[slot]] = chunk_tokens[slot, :emitted]
            logprobs[row, lengths[row] : step[slot]] = chunk_logprobs[slot, :emitted]
            lengths[row] = step[slot]
            stats.active_slot_steps += emitted
            if done[slot]:
                del owner[slot]
                free.append(slot)
        free.sort()
    stats.tokens = int(lengths.sum())
    stats.programs_compiled = core.compiled_program_count() - compiled_before
    return SampleOutput(tokens=tokens, logprobs=logprobs, lengths=lengths), stats


ADMIT_GROWTH = 4  # admitted prompt batches come in sizes shards * 4**i: few programs, no padded prompt rows


def admit_sizes(slots: int, shards: int = 1) -> tuple[int, ...]:
    """Prompt-batch sizes of the admit program, largest first: shards x 1, 4, 16, ... up to the slots.

    A refill of n prompts runs as n's base-4 digits (7 = 4 + 1 + 1 + 1): at most 3 calls per size and
    no padded rows when unsharded, against a program per batch bucket (1, 2, 3, 4, 6, 8, ...) before."""
    sizes, size = [], shards
    while size <= max(slots, shards):
        sizes.append(size)
        size *= ADMIT_GROWTH
    return tuple(reversed(sizes))


def split_batches(group: list[int], sizes: Sequence[int]) -> list[list[int | None]]:
    """`group` cut into batches of the given sizes (largest first); a remainder below the smallest size
    is padded with None (an empty prompt row that is never inserted)."""
    out, rest = [], list(group)
    for size in sizes:
        while len(rest) >= size:
            out.append(rest[:size])
            rest = rest[size:]
    if rest:
        out.append(rest + [None] * (sizes[-1] - len(rest)))
    return out


def _admit_batch(admit, params, state, rng, plan, requests, batch, bucket, free, owner, model):
    """Admits `batch` (requests of one prompt bucket; None = a padding row): one prefill shared by each
    request's samples, every sample row into a free slot. Returns the state."""
    block = np.full((len(batch), bucket), PAD_ID, np.int32)
    prompt_lens = np.ones((len(batch),), np.int32)
    for i, k in enumerate(batch):
        if k is not None:
            block[i, bucket - plan.prompts[k].size :] = plan.prompts[k]
            prompt_lens[i] = plan.prompts[k].size
    pad_lens = (bucket - prompt_lens).astype(np.int32)
    rows = [(i, k, j) for i, k in enumerate(batch) if k is not None for j in range(requests[k].num_samples)]
    width = plan.slots if plan.fixed_shapes else bk.batch_bucket(len(rows))
    slots_, sources, req_ids, sample_ids = (np.zeros((width,), np.int32) for _ in range(4))
    slots_[:] = plan.slots  # out of range: dropped by the scatter
    limits = np.ones((width,), np.int32)
    temps, top_ps = np.ones((width,), np.float32), np.ones((width,), np.float32)
    variant_ids = np.zeros((width,), np.int32)
    eos = np.full((width, plan.eos_width), -1, np.int32)
    for r, (i, k, j) in enumerate(rows):
        req = requests[k]
        slot = free.pop(0)
        owner[slot] = plan.row_offsets[k] + j
        slots_[r], sources[r], req_ids[r], sample_ids[r] = slot, i, k, j
        limits[r] = req.max_new_tokens
        temps[r] = req.temperature if req.temperature > 0 else 1.0
        top_ps[r] = req.top_p
        variant_ids[r] = plan.variant_of[k]
        eos[r, : len(req.eos_ids)] = list(req.eos_ids)
    return admit(params, state, core.place_rows(model, block), core.place_rows(model, pad_lens), rng,
                 slots_, sources, req_ids, sample_ids, limits, temps, top_ps, variant_ids, eos)


_WARMED: set = set()  # (admit program, decode program, slots, cache_len, eos width, bucket): already run


def warm_admits(admit, decodes, params, decode_params, state, rng, plan, sizes, model):
    """fixed_shapes: runs the admit program once for every (admit size, prompt bucket) of `plan` not run
    before in this process, and each decode chunk program (one per attention window) once, with every
    row dropped (slot id = slots), so they compile now and a later call of the same settings compiles
    nothing. Returns the (unchanged) state. Costs one small prefill per new program, once per process."""
    width = plan.slots
    drop = np.full((width,), plan.slots, np.int32)
    zeros = np.zeros((width,), np.int32)
    ones = np.ones((width,), np.float32)
    eos = np.full((width, plan.eos_width), -1, np.int32)
    common = (admit, decodes, plan.slots, plan.cache_len, plan.eos_width)
    for size in sizes:
        for bucket in plan.warm_buckets:
            key = (*common, size, bucket)
            if key in _WARMED:
                continue
            block = np.full((size, bucket), PAD_ID, np.int32)
            pad_lens = np.full((size,), bucket - 1, np.int32)
            state = admit(params, state, core.place_rows(model, block), core.place_rows(model, pad_lens), rng,
                          drop, zeros, zeros, zeros, np.ones((width,), np.int32), ones, ones, zeros, eos)
            _WARMED.add(key)
    if common not in _WARMED:  # every slot is free: the chunk's loop exits before its first step
        for decode in decodes:
            state = decode(decode_params, state, np.int32(plan.slots + 1))[0]
        _WARMED.add(common)
    return state
