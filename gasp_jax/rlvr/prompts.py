"""LCB prompts for a live policy: the prompt style a run's policy expects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gasp_jax.data.livecodebench import Problem
from gasp_jax.evaluation import prompts as lcb_prompts
from gasp_jax.evaluation.common import make_prompt_fn

STYLES = ("auto", *lcb_prompts.PROMPT_STYLES)


def lcb_prompt_fn(style: str, tokenizer: Any, *, run_config: Any = None) -> Callable[[Problem], str]:
    """``problem -> prompt text`` in LCB's format for a policy with ``tokenizer``.

    ``auto``: when the run's sampler applies the chat template itself (``sampling.chat_template``), the
    policy gets LCB's user message (system text folded in); otherwise LCB's ``chat`` prompt rendered
    with the tokenizer's template, or LCB's few-shot ``base`` prompt for a tokenizer without one.
    """
    if style not in STYLES:
        raise ValueError(f"unknown LCB prompt style {style!r}; expected one of {STYLES}")
    if style == "auto":
        chat_in_policy = bool((run_config or {}).get("sampling", {}).get("chat_template", False))
        if chat_in_policy:
            return lambda p: lcb_prompts.chat_messages(p, system_role=False)[0]["content"]
        style = "chat" if getattr(tokenizer, "chat_template", None) else "base"
    return make_prompt_fn({"style": style}, tokenizer)
