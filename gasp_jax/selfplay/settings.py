"""The run config's rollout blocks, resolved once at set-up into typed, frozen objects.

`validation`, `judge`, `rewards` and `prompts` are read here and nowhere else: the trainer resolves them
when it builds a run and hands the result to every source in `RolloutContext.settings`, so the phases in
`phases.py` take typed values instead of reading the ConfigDict, and a bad block fails at set-up.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from gasp_jax import tasks
from gasp_jax.sandbox import Limits


@dataclasses.dataclass(frozen=True)
class PromptOptions:
    """The `prompts` block: template name, chat wrapping and the token budget (0: no budget)."""

    template: str
    chat: bool
    token_budget: int = 0

    def builder_kwargs(self, tokenizer: Any) -> dict:
        """Keyword arguments of the tasks layer's prompt builders; the budget is counted with `tokenizer`."""
        budget = self.token_budget
        return {"template": self.template, "chat": self.chat, "tokenizer": tokenizer if budget else None,
                "token_budget": budget or None}


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
    """What the self-play phases need from the run config, typed."""

    validation: tasks.ValidationConfig  # sandbox checks of a proposal
    judge: tasks.JudgeConfig  # sandbox judging of a student answer
    rewards: tasks.RewardConfig  # AZR's reward constants
    prompts: PromptOptions

    @classmethod
    def from_config(cls, config: Mapping) -> "RolloutSettings":
        return cls(validation=validation_config(config), judge=judge_config(config),
                   rewards=reward_config(config), prompts=prompt_options(config))


def sandbox_limits(block) -> Limits:
    """`sandbox.Limits` of a `validation` / `judge` block: `cpu_s` (the verdict-deciding CPU time), `memory_mb`
    and `wall_s` (the wall-clock backstop; 0 or absent: the sandbox's default, 2 * cpu_s + 1)."""
    return Limits(cpu_s=float(block.cpu_s), memory_bytes=int(block.memory_mb) << 20,
                  wall_s=float(block.get("wall_s", 0) or 0) or None)


def validation_config(config) -> tasks.ValidationConfig:
    """`tasks.ValidationConfig` from the run's `validation` block (sandbox limits per proposal)."""
    b = config.validation
    return tasks.ValidationConfig(limits=sandbox_limits(b),
                                  max_output_chars=int(b.max_output_chars), max_input_chars=int(b.max_input_chars),
                                  runs=int(b.runs))


def judge_config(config) -> tasks.JudgeConfig:
    """`tasks.JudgeConfig` from the run's `judge` block (None n_visible: half the induction pairs).
    A task's own program (abduction) runs under the `validation` limits: a program reads its
    rlimits, and different ones would tell it that it is being judged."""
    b = config.judge
    return tasks.JudgeConfig(limits=sandbox_limits(b), program_limits=sandbox_limits(config.validation),
                             n_visible=int(b.n_visible) or None)


def reward_config(config) -> tasks.RewardConfig:
    """`tasks.RewardConfig` from the run's `rewards` block (AZR's constants by default)."""
    return tasks.RewardConfig(**{k: float(v) for k, v in config.rewards.items()})


def prompt_options(config) -> PromptOptions:
    """`PromptOptions` from the run's `prompts` block."""
    b = config.prompts
    return PromptOptions(template=str(b.template), chat=bool(b.chat), token_budget=int(b.get("token_budget", 0)))
