"""Code-reasoning tasks: records, prompts, parsing, validation, the judge, rewards.

Public contracts::

    from gasp_jax import tasks
    tasks.extract_answer(kind, response_text) -> str | None
    tasks.judge_many(sandbox, [(kind, record, answer), ...]) -> list[bool | None]

Kinds (AZR): ``deduction`` (program + input -> output), ``abduction`` (program + output -> an
input), ``induction`` (message + visible input/output pairs -> a program, judged on hidden
pairs). See ``docs/tasks.md`` for the formats, the judge's semantics and the design.
"""

from gasp_jax.tasks.execution import (NON_LITERAL_INPUT, JudgeConfig, Validation, ValidationConfig, gold_cache_clear,
                                      judge_many,
                                      judge_many_async, validate_proposals, validate_proposals_async,
                                      validate_records)
from gasp_jax.tasks.parsing import (ParsedProposal, ProposalError, answer_content, extract_answer, fenced_blocks,
                                    parse_proposal, proposal_from_record)
from gasp_jax.tasks.plain import NotPlain, decode, encode, plain_repr
from gasp_jax.tasks.prompts import (TEMPLATES, Prompt, PromptTooLong, format_answer, format_proposal, propose_prompt,
                                    solve_prompt, wrap_prompt)
from gasp_jax.tasks.records import (IO_KINDS, KINDS, TaskFormatError, io_record_from_induction, load_seed_file,
                                    load_seed_files, n_visible_pairs, program_text, record_key, record_kinds,
                                    select, split_pairs, validate_record)
from gasp_jax.tasks.rewards import DEFAULT_REWARDS, RewardConfig, proposer_reward, solver_outcome, solver_reward

__all__ = [
    "KINDS", "IO_KINDS", "TaskFormatError", "load_seed_file", "load_seed_files", "validate_record", "record_kinds",
    "record_key", "program_text", "split_pairs", "n_visible_pairs", "io_record_from_induction", "select",
    "Prompt", "PromptTooLong", "TEMPLATES", "propose_prompt", "solve_prompt", "wrap_prompt", "format_answer", "format_proposal",
    "extract_answer", "answer_content", "fenced_blocks", "parse_proposal", "proposal_from_record",
    "ParsedProposal", "ProposalError", "ValidationConfig", "Validation", "validate_proposals",
    "validate_proposals_async", "validate_records", "JudgeConfig", "judge_many", "judge_many_async",
    "gold_cache_clear", "NON_LITERAL_INPUT", "NotPlain", "encode", "decode", "plain_repr", "RewardConfig", "DEFAULT_REWARDS",
    "solver_reward", "proposer_reward", "solver_outcome",
]
