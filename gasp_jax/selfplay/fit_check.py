"""Start-up check that a run fits its model: the KV cache vs the model's context, every prompt known at
start-up + its new tokens vs the cache.

The trainer runs it after the sources are built and before the warm start or any compile; the protocol
runs it for every run (and every final evaluation) before anything trains. The model's context and
tokenizer come from configs alone (`model.hf_path`'s config.json, the warm start's host-only preparation
`warmstart.prepare`, or `model.preset`): no weight is read, nothing is trained. Prompts are rendered by the builders the sources
use and counted as the policy encodes them. A mismatch is one ValueError line naming the keys and the
numbers; a config that fits returns the report (the longest prompt of each kind).

Checked: `sampling.max_cache_length` <= context; `prompts.token_budget` (the tasks layer's prompt cap,
AZR and the GASP student) + `sampling.max_new_tokens` <= cache; every RLVR problem named by
`data.problem_ids` (with a date window: at least one) and `max_prompt_tokens` + new tokens; every GASP
lemma prompt of the active goalposts; the LCB prompts of the periodic evaluation and GASP's goalpost
evaluation when they are on. Not checkable before sampling: lift prompts (they hold a generated lemma).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from gasp_jax import models, sampling, warmstart
from gasp_jax.evaluation import function_tests
from gasp_jax.evaluation.code_eval import load_benchmark
from gasp_jax.evaluation.common import load_config_problems, make_prompt_fn
from gasp_jax.evaluation.periodic import policy_prompt_fn
from gasp_jax.gasp.goalposts import load_goalposts
from gasp_jax.tokenizer import build_byte_tokenizer


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the check needs of a model: its context, its tokenizer and where it comes from (messages)."""

    context: int
    tokenizer: Any
    where: str


def warmstart_spec(ws: ml_collections.ConfigDict, key: str = "init.warmstart") -> ModelSpec:
    """The warm start's model and tokenizer (a BPE one is trained on the warm start's rows) from the warm
    start's host-only preparation: nothing is trained, no weight exists yet."""
    prep = warmstart.prepare(ws)
    return ModelSpec(int(prep.model_config.max_position_embeddings), prep.tokenizer,
                     f"{key}.model {ws.model.hf_path or ws.model.preset!r}")


def model_spec(config: ml_collections.ConfigDict) -> ModelSpec:
    """The run's model as configured, without weights and without training the warm start."""
    ws = config.get("init", {}).get("warmstart", {})
    if ws.get("enabled", False):
        return warmstart_spec(ws)
    if config.model.get("hf_path"):
        return hf_spec(config.model.hf_path, "model.hf_path")

    mc = models.get_preset(config.model.preset)
    return ModelSpec(int(mc.max_position_embeddings), build_byte_tokenizer(), f"model.preset {config.model.preset!r}")


def hf_spec(path: str, key: str) -> ModelSpec:
    """The model of a local HF checkpoint directory."""
    mc = models.ModelConfig.from_hf_dict(models.hf.read_hf_config(path))
    return ModelSpec(int(mc.max_position_embeddings), models.load_tokenizer(path), f"{key} {path!r}")


@dataclasses.dataclass(frozen=True)
class Demand:
    """Prompts that must each fit `limit` together with `max_new` generated tokens."""

    what: str  # e.g. "sources.lcb: LCB problem"
    lengths: Mapping[str, int]  # item id -> prompt tokens
    max_new: int
    new_key: str  # the key that sets max_new
    every: bool  # every item must fit (named items); else at least one (a window, the rest is skipped)


def _count(tokenizer: Any, texts: Mapping[str, str], chat_template: bool) -> dict[str, int]:
    ids = sampling.encode_prompts(tokenizer, list(texts.values()), chat_template=chat_template)
    return {k: len(v) for k, v in zip(texts, ids)}


def _lcb_prompt_fn(style: str, tokenizer: Any, config: ml_collections.ConfigDict) -> Callable[[Any], str]:
    return policy_prompt_fn(style, tokenizer, run_config=config)


def run_demands(config: ml_collections.ConfigDict, sources: Mapping[str, Any], spec: ModelSpec) -> list[Demand]:
    """Every prompt demand of a self-play run whose prompts are known before sampling."""
    chat = bool(config.sampling.get("chat_template", False))
    max_new = int(config.sampling.max_new_tokens)
    out: list[Demand] = []
    budget = int(config.get("prompts", {}).get("token_budget", 0) or 0)
    if budget and any(str(b.type) in ("azr", "gasp") for b in config.sources.values()):
        out.append(Demand("prompts.token_budget: task prompt", {"budget": budget}, max_new, "sampling.max_new_tokens", True))
    for name, source in sources.items():
        block = config.sources[name]
        if str(block.type) == "lcb_rlvr":
            lcb = source.settings
            fn = _lcb_prompt_fn(lcb.prompt_style, spec.tokenizer, config)
            lengths = _count(spec.tokenizer, {pid: fn(p) for pid, p in sorted(source.problems.items())}, chat)
            new = lcb.max_new_tokens or max_new
            new_key = f"sources.{name}.max_new_tokens" if lcb.max_new_tokens else "sampling.max_new_tokens"
            out.append(Demand(f"sources.{name}: LCB problem (prompt_style={lcb.prompt_style!r})", lengths, new,
                              new_key, bool(lcb.data.get("problem_ids", ()))))
            if lcb.max_prompt_tokens:
                out.append(Demand(f"sources.{name}.max_prompt_tokens", {"limit": lcb.max_prompt_tokens}, new,
                                  new_key, True))
        elif str(block.type) == "gasp":
            goalposts = source.pool.goalposts
            texts = {f"{g.id} ({axis})": source.prompts.lemma(g.statement, axis, spec.tokenizer if source.chat else None)
                     for g in goalposts for axis in source.axes}
            out.append(Demand(f"sources.{name}: lemma prompt of goalpost", _count(spec.tokenizer, texts, chat), max_new,
                              "sampling.max_new_tokens", True))
            e = block.get("eval", {})
            if int(e.get("every", 0) or 0) > 0:
                fn = _lcb_prompt_fn(str(e.prompt_style), spec.tokenizer, config)
                lengths = _count(spec.tokenizer, {g.id: fn(g.problem) for g in goalposts}, chat)
                out.append(Demand(f"sources.{name}.eval: goalpost (prompt_style={e.prompt_style!r})", lengths,
                                  int(e.max_new_tokens), f"sources.{name}.eval.max_new_tokens", True))
    out += periodic_eval_demands(config, spec, chat)
    return out


def periodic_eval_demands(config: ml_collections.ConfigDict, spec: ModelSpec, chat: bool) -> list[Demand]:
    """The periodic evaluation's LCB prompts (the `eval` block, when its hook is on)."""
    e = config.get("eval", None)
    if e is None or int(e.get("every", 0) or 0) <= 0 or not config.get("hooks", ()):
        return []

    fn = _lcb_prompt_fn(str(e.get("prompt_style", "auto")), spec.tokenizer, config)
    out = []
    if e.lcb.get("enabled", True):
        problems, _, _ = load_config_problems(e.lcb.data)
        out.append(Demand(f"eval.lcb: LCB problem (prompt_style={e.get('prompt_style', 'auto')!r})",
                          _count(spec.tokenizer, {p.id: fn(p) for p in problems}, chat), int(e.lcb.max_new_tokens),
                          "eval.lcb.max_new_tokens", bool(e.lcb.data.get("problem_ids", ()))))
    if e.goalposts.get("enabled", False) and tuple(e.goalposts.select.get("ids", ()) or ()):
        pool = load_goalposts(e.goalposts.select, where="eval.goalposts.select")
        out.append(Demand(f"eval.goalposts: goalpost (prompt_style={e.get('prompt_style', 'auto')!r})",
                          _count(spec.tokenizer, {g.id: fn(g.problem) for g in pool.goalposts}, chat),
                          int(e.goalposts.max_new_tokens), "eval.goalposts.max_new_tokens", True))
    return out


def check_demands(demands: Sequence[Demand], *, cache: int, cache_key: str, spec: ModelSpec) -> dict[str, int]:
    """Raises ValueError (one line) for the first demand that does not fit; returns the longest per demand.
    `cache_key` says where the cache length comes from."""
    limit = f"the KV cache {cache} ({cache_key}" + (f"; = the context of {spec.where})" if cache == spec.context else ")")
    longest = {}
    for d in demands:
        if not d.lengths:
            continue
        too_long = {k: n for k, n in d.lengths.items() if n + d.max_new > cache}
        if too_long and (d.every or len(too_long) == len(d.lengths)):
            item, n = max(too_long.items(), key=lambda kv: kv[1]) if d.every else min(too_long.items(), key=lambda kv: kv[1])
            qualifier = "" if d.every else " (the shortest: none fits)"
            raise ValueError(f"{d.what} {item}{qualifier}: {n} prompt tokens + {d.new_key}={d.max_new} = "
                             f"{n + d.max_new} > {limit}; {len(too_long)} of {len(d.lengths)} do not fit")
        longest[d.what] = max(n for k, n in d.lengths.items() if k not in too_long)
    return longest


def check_run(config: ml_collections.ConfigDict, sources: Mapping[str, Any]) -> dict[str, int]:
    """The whole start-up check of a self-play run (ValueError naming keys and numbers on a mismatch)."""
    spec = model_spec(config)
    configured = int(config.sampling.get("max_cache_length", 0) or 0)
    if configured > spec.context:
        raise ValueError(f"sampling.max_cache_length={configured} > the model's context {spec.context} "
                         f"(max_position_embeddings of {spec.where}); set it <= {spec.context} (0: the context)")
    cache, key = configured or spec.context, f"sampling.max_cache_length={configured}"
    return check_demands(run_demands(config, sources, spec), cache=cache, cache_key=key, spec=spec)


def eval_demand(name: str, config: ml_collections.ConfigDict, spec: ModelSpec) -> tuple[Demand, int, str]:
    """One evaluation job config's prompts (`lcb_eval` or `code_eval`), its KV cache and the cache's key
    (as `evaluation.generation` sizes it: `max_prompt_tokens` + `max_new_tokens`, at most the context)."""
    s = config.sampling
    max_new = int(s.max_new_tokens)
    max_prompt = int(s.get("max_prompt_tokens", 0) or 0)
    cache = min(spec.context, max_prompt + max_new) if max_prompt else spec.context
    cache_key = f"eval.{name}.sampling.max_prompt_tokens={max_prompt} + max_new_tokens, at most the context" \
        if max_prompt else f"eval.{name}.sampling.max_prompt_tokens=0"
    style = str(config.prompt.style)
    if config.job == "code_eval":
        problems, _ = load_benchmark(config.data, config.benchmark)
        texts = {p.id: function_tests.render_prompt(p, style, tokenizer=spec.tokenizer) for p in problems}
        every = True  # a benchmark's problems are all scored
    else:
        problems, _, _ = load_config_problems(config.data)
        fn = make_prompt_fn(config.prompt, spec.tokenizer)
        texts = {p.id: fn(p) for p in problems}
        every = bool(config.data.get("problem_ids", ()))
    demand = Demand(f"eval.{name}: problem (prompt.style={style!r})", _count(spec.tokenizer, texts, False), max_new,
                    f"eval.{name}.sampling.max_new_tokens", every)
    return demand, cache, cache_key


def check_eval(name: str, config: ml_collections.ConfigDict, spec: ModelSpec) -> dict[str, int]:
    """The start-up check of one evaluation of a checkpoint with the model `spec`."""
    demand, cache, cache_key = eval_demand(name, config, spec)
    return check_demands([demand], cache=cache, cache_key=cache_key, spec=spec)
