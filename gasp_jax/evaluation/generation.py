"""The default ``generate_fn`` for the LCB jobs: a checkpoint + tokenizer driven by our sampler.

The jobs only need ``generate_fn(prompts, n) -> list[list[str]]`` (see ``runner.GenerateFn``), so
they can be tested with a fake generator; this module builds the real one from a config:

    model.hf_path    local HF checkpoint directory (weights + tokenizer), loaded with load_hf, or
    model.preset     a ModelConfig preset with random weights (smoke tests); model.tokenizer optional.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import jax

from gasp_jax import models, runtime, sampling
from gasp_jax import sharding as shd
from gasp_jax.evaluation.runner import GenerateFn
from gasp_jax.tokenizer import build_byte_tokenizer

log = logging.getLogger(__name__)


def eos_ids_for(tokenizer: Any, checkpoint: str | None = None, extra: Sequence[int] = ()) -> tuple[int, ...]:
    """Stop tokens: the tokenizer's EOS, the checkpoint's ``generation_config.json`` EOS ids, extras.

    Chat models end a turn with a token (e.g. ``<|im_end|>``) that is not always the tokenizer's EOS,
    which is why the generation config is consulted too.
    """
    ids: list[int] = []
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(int(tokenizer.eos_token_id))
    if checkpoint:
        path = os.path.join(checkpoint, "generation_config.json")
        if os.path.exists(path):
            with open(path) as f:
                eos = json.load(f).get("eos_token_id")
            ids.extend([int(e) for e in eos] if isinstance(eos, list) else [int(eos)] if eos is not None else [])
    ids.extend(int(e) for e in extra)
    return tuple(dict.fromkeys(ids))


def sampler_generate_fn(
    model: Any,
    params: Any,
    tokenizer: Any,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_ids: Sequence[int] = (),
    seed: int = 0,
    mesh: Any = None,
    max_rows: int = 256,
    max_cache_length: int | None = None,
) -> GenerateFn:
    """``generate_fn`` over ``gasp_jax.sampling.generate_text`` (one prefill per prompt, n samples each).

    Prompts arrive fully rendered (the LCB prompt code applied the chat template), so the sampler's
    own chat templating is off and no special tokens are added. Stop tokens are ``eos_ids`` plus the
    sampler's defaults (tokenizer and model config EOS). Each call folds a call counter into the
    seed: the same sequence of calls gives the same samples. At most ``max_rows`` rows (prompts x n)
    go to one sampler call and each row has ``max_cache_length`` KV slots (default: the model's
    context, which for 32k-context models is far more memory than LCB prompts need), bounding the
    KV cache. Longer prompts are refused with a ValueError (the job skips that problem).
    """
    base_key = jax.random.key(seed)
    stop = tuple(dict.fromkeys([*eos_ids, *sampling.default_eos_ids(tokenizer, model)]))
    calls = 0

    def generate(prompts: list[str], n: int) -> list[list[str]]:
        nonlocal calls
        per_call = max(1, max_rows // max(1, n))
        out: list[list[str]] = []
        for start in range(0, len(prompts), per_call):
            rng = jax.random.fold_in(base_key, calls)
            calls += 1
            out.extend(
                sampling.generate_text(
                    model,
                    params,
                    tokenizer,
                    list(prompts[start : start + per_call]),
                    num_samples=n,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    eos_ids=stop,
                    chat_template=False,
                    rng=rng,
                    mesh=mesh,
                    max_cache_length=max_cache_length,
                )
            )
        return out

    return generate


def load_model_and_tokenizer(model_cfg: Any, *, mesh: Any = None, rules: Any = None) -> tuple[Any, Any, Any]:
    """``(model, params, tokenizer)`` from ``model.hf_path`` or a random-init ``model.preset``.

    Models come from ``runtime.model_from_config`` (the project's one way to build them). The
    tokenizer is ``model.tokenizer`` or the checkpoint's own; a preset without one gets the
    project's byte-level tokenizer.
    """
    if not model_cfg.get("hf_path") and not model_cfg.get("preset"):
        raise ValueError("config.model needs hf_path (a local HF checkpoint directory) or a preset")
    if not model_cfg.get("hf_path"):
        log.warning("model.preset=%s: RANDOM weights (smoke test only)", model_cfg.preset)
    rng = jax.random.key(int(model_cfg.get("init_seed", 0)))
    model, params = runtime.model_from_config(model_cfg, mesh, rules or shd.DEFAULT_RULES, rng)
    tokenizer_path = model_cfg.get("tokenizer") or model_cfg.get("hf_path")
    if tokenizer_path:
        tokenizer = models.load_tokenizer(tokenizer_path)
    else:
        tokenizer = build_byte_tokenizer()
    return model, params, tokenizer


def build_generate_fn(model_cfg: Any, sampling_cfg: Any, *, mesh: Any = None) -> tuple[GenerateFn, Any]:
    """``(generate_fn, tokenizer)`` for a ``config.model`` / ``config.sampling`` pair."""
    model, params, tokenizer = load_model_and_tokenizer(model_cfg, mesh=mesh)
    max_new = int(sampling_cfg.max_new_tokens)
    context = int(model.config.max_position_embeddings)
    max_prompt = int(sampling_cfg.get("max_prompt_tokens", 0) or 0)
    cache = min(context, max_prompt + max_new) if max_prompt else None
    eos = eos_ids_for(tokenizer, model_cfg.get("hf_path") or None, sampling_cfg.get("extra_eos_ids", ()))
    fn = sampler_generate_fn(
        model,
        params,
        tokenizer,
        max_new_tokens=max_new,
        temperature=float(sampling_cfg.temperature),
        top_k=int(sampling_cfg.get("top_k", 0)),
        top_p=float(sampling_cfg.get("top_p", 1.0)),
        eos_ids=eos,
        seed=int(sampling_cfg.get("seed", 0)),
        mesh=mesh,
        max_rows=int(sampling_cfg.get("max_rows", 256)),
        max_cache_length=cache,
    )
    return fn, tokenizer


def mesh_for(config: Any) -> Any:
    """The device mesh from ``config.mesh`` when ``config.use_mesh`` is set, else None (one device)."""
    if not config.get("use_mesh", False):
        return None

    return runtime.mesh_from_config(config)
