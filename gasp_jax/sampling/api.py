"""`generate`: the one entry point of both engines (static batches in `sampler.py`, continuous batching in
`engine.py`); it checks the arguments every engine shares and hands the call to the chosen one."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from gasp_jax.models.transformer import Transformer
from gasp_jax.sampling import core
from gasp_jax.sampling import engine as continuous_engine
from gasp_jax.sampling import sampler as static_engine

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
    fixed_shapes: bool = False,
) -> core.SampleOutput:
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
      fixed_shapes: continuous engine only: the same programs for every call of these settings, warmed
        by the first (`engine.run_requests`); a run's later calls compile nothing.

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
    core.check_settings(model.config.vocab_size, num_samples=num_samples, temperature=temperature, top_k=top_k,
                        top_p=top_p, eos_ids=eos_ids)
    if mesh is not None and model.mesh is not mesh:
        model = model.clone(mesh=mesh)
    if engine == "continuous":
        requests = [
            continuous_engine.Request(prompt=p, max_new_tokens=n, num_samples=num_samples, temperature=temperature,
                                      top_k=top_k, top_p=top_p, eos_ids=tuple(eos_ids))
            for p, n in zip(prompts, limits)
        ]
        out, _ = continuous_engine.run_requests(
            model, params, requests, rng=rng, max_slots=max_slots, kv_cache_tokens=kv_cache_tokens,
            chunk_steps=continuous_engine.DEFAULT_CHUNK_STEPS if chunk_steps is None else chunk_steps,
            prompt_buckets=prompt_buckets, max_cache_length=max_cache_length, unroll_layers=unroll_layers,
            fixed_shapes=fixed_shapes,
        )
        return out
    if kv_cache_tokens is not None or chunk_steps is not None or fixed_shapes:
        raise ValueError("kv_cache_tokens, chunk_steps and fixed_shapes apply to engine='continuous' only")
    arrays = [core.check_prompt(i, p, model.config.vocab_size) for i, p in enumerate(prompts)]
    return static_engine.generate_static(
        model, params, arrays, limits, rng=core.as_key(rng), temperature=temperature, top_k=top_k, top_p=top_p,
        eos_ids=eos_ids, num_samples=int(num_samples), max_slots=max_slots, prompt_buckets=prompt_buckets,
        max_cache_length=max_cache_length, unroll_layers=unroll_layers,
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


