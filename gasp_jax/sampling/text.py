"""String-level sampling on top of `generate`: strings in, strings out, with a HF tokenizer.

    texts = generate_text(model, params, tokenizer, ["Write a function that ..."], num_samples=8,
                          max_new_tokens=1024, temperature=0.8, top_p=0.95, chat_template=True,
                          rng=jax.random.key(0))
    texts[i][j]   # prompt i, sample j, decoded without the stop token
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
from jax.sharding import Mesh

from gasp_jax.sampling.api import generate


def default_eos_ids(tokenizer: Any, model: Any = None) -> tuple[int, ...]:
    """The tokenizer's EOS id plus the model config's `eos_token_id`(s), deduplicated, in that order."""
    ids: list[int] = []
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(int(tokenizer.eos_token_id))
    cfg_eos = getattr(getattr(model, "config", None), "eos_token_id", None)
    if cfg_eos is not None:
        ids.extend(int(e) for e in (cfg_eos if isinstance(cfg_eos, (list, tuple)) else [cfg_eos]))
    return tuple(dict.fromkeys(ids))


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], *, chat_template: bool = False, system_prompt: str | None = None
) -> list[list[int]]:
    """Token ids per prompt. With `chat_template`, each prompt is one user turn (after an optional system
    turn) rendered by the tokenizer's chat template with the generation prompt appended; the rendered
    text already holds every special token, so none are added again."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, got a single string")
    ids = []
    for p in prompts:
        if not isinstance(p, str):
            raise ValueError(f"prompts must be strings, got {type(p).__name__}")
        if chat_template:
            if getattr(tokenizer, "chat_template", None) is None:
                raise ValueError("chat_template=True but the tokenizer has no chat template")
            messages = ([{"role": "system", "content": system_prompt}] if system_prompt is not None else []) + [
                {"role": "user", "content": p}
            ]
            p = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids.append(list(tokenizer.encode(p, add_special_tokens=False)))
    return ids


def generate_text(
    model: Any,
    params: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    num_samples: int = 1,
    max_new_tokens: int | Sequence[int],
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_ids: Sequence[int] | None = None,
    chat_template: bool = False,
    system_prompt: str | None = None,
    skip_special_tokens: bool = True,
    rng: jax.Array,
    mesh: Mesh | None = None,
    **generate_kwargs: Any,
) -> list[list[str]]:
    """Samples `num_samples` completions per prompt string; returns `texts[i][j]` (prompt i, sample j).

    `eos_ids` defaults to `default_eos_ids(tokenizer, model)`. The stop token is removed from the text;
    other special tokens too when `skip_special_tokens`. `max_new_tokens` is an int or one per prompt.
    Extra keyword arguments (`engine="static"|"continuous"`, `max_slots`, `kv_cache_tokens`,
    `chunk_steps`, `prompt_buckets`, `max_cache_length`, `unroll_layers`) go to `generate`. Errors in
    the arguments raise ValueError before compiling.
    """
    token_ids = encode_prompts(tokenizer, prompts, chat_template=chat_template, system_prompt=system_prompt)
    if eos_ids is None:
        eos_ids = default_eos_ids(tokenizer, model)
    out = generate(
        model,
        params,
        token_ids,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_ids=tuple(eos_ids),
        num_samples=num_samples,
        rng=rng,
        mesh=mesh,
        **generate_kwargs,
    )
    stop = set(int(e) for e in eos_ids)
    texts = []
    for row in range(len(token_ids) * num_samples):
        ids = [int(t) for t in out.tokens[row, : int(out.lengths[row])]]
        if ids and ids[-1] in stop:
            ids = ids[:-1]
        texts.append(tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))
    return [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(token_ids))]
