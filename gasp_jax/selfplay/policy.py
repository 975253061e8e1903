"""Policies: prompt strings in, `Completion`s out. The sampler-backed policy and a scripted test double.

Rollout layout: the sampler runs the model under its own sharding rules (`rollout_rules`; default: the
trainer's rules with every weight axis mapped to `tensor` only, so weights are replicated over
`data`/`fsdp` and a decode step never all-gathers a weight). The trainer reshards its params into that
layout once per iteration, device to device (`reshard_for_rollout`), optionally as a copy in
`rollout.dtype` (bf16: half the bytes of fp32 master weights, the same decode numerics since every
weight is cast to the compute dtype anyway); when layout and dtype coincide the reshard is a no-op and
the sampler reads the trainer's arrays.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from gasp_jax import models, profiling, sampling
from gasp_jax import sharding as shd
from gasp_jax.selfplay.types import Completion

log = logging.getLogger(__name__)

# Logical weight axes (see sharding.DEFAULT_RULES). Under the rollout rules each keeps only `tensor`.
WEIGHT_AXES = ("vocab", "embed", "q_heads", "kv_heads", "head_dim", "mlp", "layers", "norm")


def tensor_only_rules(rules: shd.Rules) -> tuple[tuple[str, Any], ...]:
    """`rules` with every weight axis restricted to the `tensor` mesh axis (data/fsdp dropped): the
    default rollout layout. Activation and cache rules are kept (batch over data x fsdp)."""
    out = []
    for name, target in shd.rules_from_config(rules):
        if name in WEIGHT_AXES:
            axes = (target,) if isinstance(target, str) else tuple(target or ())
            kept = tuple(a for a in axes if a == "tensor")
            target = kept[0] if len(kept) == 1 else (kept or None)
        out.append((name, target))
    return tuple(out)


def rollout_rules(rollout_config, trainer_rules: shd.Rules) -> tuple[tuple[str, Any], ...]:
    """The sampler's rules from the `rollout` config block: `rules="tensor_only"` (default), `"trainer"`
    (sample in the trainer's layout: no reshard, weights all-gathered by the decode program), or an
    explicit rules table."""
    rules = rollout_config.get("rules", "tensor_only") if rollout_config is not None else "tensor_only"
    if rules == "tensor_only":
        return tensor_only_rules(trainer_rules)
    if rules == "trainer":
        return shd.rules_from_config(trainer_rules)
    if isinstance(rules, str):
        raise ValueError(f"rollout.rules must be 'tensor_only', 'trainer' or a rules table, got {rules!r}")
    return shd.rules_from_config(rules)


def rollout_model(model, rules: shd.Rules):
    """The same model under the sampler's rules (same mesh, same weights' shapes)."""
    return model.clone(rules=shd.rules_from_config(rules))


_RESHARD_PROGRAMS: dict[tuple, Any] = {}


def reshard_program(sampler_model, dtype: str | None = None):
    """The jitted trainer-params -> rollout-params copy: each weight cast to `dtype` (None: kept) and
    laid out in the sampler's shardings, device to device. One program per (model, mesh, rules, dtype);
    `gasp_jax.aot` compiles this same function ahead of time."""
    key = (sampler_model.config, sampler_model.mesh, tuple(sampler_model.rules), dtype)
    if key not in _RESHARD_PROGRAMS:
        cast = (lambda p: jax.tree.map(lambda x: x.astype(dtype), p)) if dtype else (lambda p: p)
        _RESHARD_PROGRAMS[key] = jax.jit(cast, out_shardings=models.param_shardings(sampler_model))
    return _RESHARD_PROGRAMS[key]


def rollout_in_place(params, sampler_model, dtype: str | None = None) -> bool:
    """True when `params` (arrays, or `ShapeDtypeStruct`s with shardings) already are the rollout
    params: every leaf in `dtype` (None: any) and in the sampler's sharding. The reshard is then skipped."""
    target = jax.tree.leaves(models.param_shardings(sampler_model))
    return all((not dtype or np.dtype(x.dtype) == np.dtype(dtype)) and x.sharding.is_equivalent_to(t, len(x.shape))
               for x, t in zip(jax.tree.leaves(params), target))


def reshard_for_rollout(params, sampler_model, dtype: str | None = None):
    """The trainer's params in the sampler's layout (and `rollout.dtype`, e.g. a bf16 copy): a no-op
    when both already match, else one device-to-device program (`reshard_program`)."""
    if sampler_model.mesh is None:
        return jax.tree.map(lambda x: x.astype(dtype), params) if dtype else params
    if rollout_in_place(params, sampler_model, dtype):
        return params
    return reshard_program(sampler_model, dtype)(params)


def _completions(out: sampling.SampleOutput, prompt_ids: list[list[int]], num_samples: int, tokenizer,
                 eos_ids: Sequence[int], max_new_tokens: int, temperature: float) -> list[Completion]:
    stop = set(int(e) for e in eos_ids)
    result = []
    for row in range(len(prompt_ids) * num_samples):
        n = int(out.lengths[row])
        ids = out.tokens[row, :n].astype(np.int32)
        ended = n > 0 and int(ids[-1]) in stop
        text_ids = ids[:-1] if ended else ids
        result.append(Completion(
            text=tokenizer.decode([int(t) for t in text_ids], skip_special_tokens=True),
            prompt_tokens=np.asarray(prompt_ids[row // num_samples], np.int32),
            tokens=ids,
            logprobs=out.logprobs[row, :n].astype(np.float32),
            truncated=not ended and n >= max_new_tokens,
            temperature=float(temperature),
        ))
    return result


class SamplerPolicy:
    """A model, its live params and a tokenizer, sampling with `gasp_jax.sampling.generate`.

    `sampling_config` is the run's `sampling` block: temperature, top_p, top_k, max_new_tokens,
    chat_template, engine ("static" | "continuous"), prompt_buckets, max_cache_length. Call
    `set_params` with rollout-layout params (`reshard_for_rollout`) before generating.
    """

    def __init__(self, model, tokenizer, sampling_config: ml_collections.ConfigDict, *, eos_ids=None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = sampling_config
        self.eos_ids = tuple(eos_ids) if eos_ids is not None else sampling.default_eos_ids(tokenizer, model)
        if not self.eos_ids:
            raise ValueError("SamplerPolicy: the tokenizer has no EOS token and no eos_ids were given")
        self.params = None
        self.tokens_generated = 0  # running count (tokens/s metric)
        # Running counts for the HBM roofline (perf.decode_bytes_per_device): decode steps (a lower bound:
        # each call decodes at least as many steps as its longest row) and KV-cache positions attended.
        self.decode_steps = 0
        self.kv_positions_read = 0
        self.programs_compiled = 0  # running count of XLA programs this policy's calls built (profiling.compile_count)

    def set_params(self, params) -> None:
        self.params = params

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        return sampling.encode_prompts(self.tokenizer, prompts, chat_template=bool(self.config.get("chat_template", False)))

    def generate(self, prompts: Sequence[str], *, num_samples: int = 1, temperature: float | None = None,
                 max_new_tokens: int | None = None, rng: jax.Array) -> list[Completion]:
        if self.params is None:
            raise RuntimeError("SamplerPolicy.generate before set_params")
        if not prompts:
            return []
        c = self.config
        temperature = float(c.temperature if temperature is None else temperature)
        max_new_tokens = int(c.max_new_tokens if max_new_tokens is None else max_new_tokens)
        with jax.profiler.TraceAnnotation("tokenize"):
            prompt_ids = self.encode(prompts)
        kwargs = {}
        engine = c.get("engine", "static")
        if engine != "static":  # the continuous-batching engine; static is the sampler's default
            kwargs["engine"] = engine
            for name in ("kv_cache_tokens", "chunk_steps"):
                if c.get(name):
                    kwargs[name] = int(c.get(name))
            if c.get("fixed_shapes", False):
                kwargs["fixed_shapes"] = True
        if c.get("max_slots"):
            kwargs["max_slots"] = int(c.max_slots)
        if c.get("prompt_buckets"):
            kwargs["prompt_buckets"] = tuple(int(b) for b in c.prompt_buckets)
        if c.get("max_cache_length"):
            kwargs["max_cache_length"] = int(c.max_cache_length)
        compiled0 = profiling.compile_count()
        out = sampling.generate(
            self.model, self.params, prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature,
            top_k=int(c.get("top_k", 0)), top_p=float(c.get("top_p", 1.0)), eos_ids=self.eos_ids,
            num_samples=int(num_samples), rng=rng, **kwargs,
        )
        compiled = profiling.compile_count() - compiled0
        if compiled:
            self.programs_compiled += compiled
            log.info("sampling %d prompts x %d (max_new_tokens=%d) compiled %d programs", len(prompt_ids),
                     int(num_samples), max_new_tokens, compiled)
        self.tokens_generated += int(np.sum(out.lengths))
        self.decode_steps += int(np.max(out.lengths))
        prompt_lens = np.repeat([len(p) for p in prompt_ids], int(num_samples)).astype(np.int64)
        lengths = out.lengths.astype(np.int64)
        self.kv_positions_read += int(np.sum(prompt_lens * lengths + lengths * (lengths + 1) // 2))
        with jax.profiler.TraceAnnotation("detokenize"):
            return _completions(out, prompt_ids, int(num_samples), self.tokenizer, self.eos_ids, max_new_tokens,
                                temperature if temperature > 0 else 1.0)


class ScriptedPolicy:
    """Test double: `responder(prompt_text, sample_index) -> str` gives each completion's text.

    Completions carry the tokenizer's ids of that text plus EOS and a fixed log-prob per token, so
    batches, advantages and the real update step run on them unchanged. `calls` records every
    `(prompts, num_samples)` request, for asserting on what a source asked for.
    """

    def __init__(self, tokenizer, responder: Callable[[str, int], str], *, logprob: float = -0.5,
                 max_new_tokens: int = 256, temperature: float = 1.0, eos_id: int | None = None):
        self.tokenizer = tokenizer
        self.responder = responder
        self.logprob = float(logprob)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.eos_id = int(tokenizer.eos_token_id if eos_id is None else eos_id)
        self.calls: list[tuple[list[str], int]] = []
        self.tokens_generated = 0

    def generate(self, prompts: Sequence[str], *, num_samples: int = 1, temperature: float | None = None,
                 max_new_tokens: int | None = None, rng: jax.Array = None) -> list[Completion]:
        del rng
        limit = int(self.max_new_tokens if max_new_tokens is None else max_new_tokens)
        temperature = float(self.temperature if temperature is None else temperature)
        self.calls.append((list(prompts), int(num_samples)))
        out = []
        for prompt in prompts:
            prompt_ids = np.asarray(self.tokenizer.encode(prompt, add_special_tokens=False), np.int32)
            for j in range(num_samples):
                ids = list(self.tokenizer.encode(self.responder(prompt, j), add_special_tokens=False)) + [self.eos_id]
                truncated = len(ids) > limit
                ids = ids[:limit]
                text_ids = ids if truncated else ids[:-1]
                self.tokens_generated += len(ids)
                out.append(Completion(
                    text=self.tokenizer.decode(text_ids, skip_special_tokens=True), prompt_tokens=prompt_ids,
                    tokens=np.asarray(ids, np.int32), logprobs=np.full(len(ids), self.logprob, np.float32),
                    truncated=truncated, temperature=temperature,
                ))
        return out
