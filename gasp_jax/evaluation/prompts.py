"""LiveCodeBench prompts (the official generic chat template and the base-model few-shot template).

The strings reproduce ``lcb_runner/prompts/code_generation.py`` (LiveCodeBench commit 28fef95)
character for character, because pass@1 on LCB moves by points with the prompt: the same sentences,
blank lines and trailing ``\\n\\n`` after ``### Answer: ...``.

Styles:
  * ``chat``: system message + user message (LCB's ``OpenAIChat``/``LLaMa3`` style); rendered into
    text by the tokenizer's chat template.
  * ``chat_no_system``: the system text prepended to the user turn (LCB's reasoning-model style, for
    chat templates without a system role).
  * ``base``: one few-shot example from LCB's ``few_shot_examples/generation/{func,stdin}.json``
    followed by the question, for base (non-chat) models.
  * ``question``: LCB's user message alone, no system text and no chat turn (not an LCB format: for
    small-context models such as the tiny CPU presets, whose warm start trains on plain text; with the
    byte tokenizer the chat-wrapped prompt of the shortest LCB problem is 969 tokens, this 755).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from gasp_jax.data.livecodebench import Problem

PromptStyle = Literal["chat", "chat_no_system", "base", "question"]
PROMPT_STYLES: tuple[str, ...] = ("chat", "chat_no_system", "base", "question")

SYSTEM_MESSAGE = (
    "You are an expert Python programmer. You will be given a question (problem specification) and "
    "will generate a correct Python program that matches the specification and passes all tests."
)
FORMAT_WITH_STARTER_CODE = (
    "You will use the following starter code to write the solution to the problem and enclose your "
    "code within delimiters."
)
FORMAT_WITHOUT_STARTER_CODE = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test "
    "on the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python "
    "program runs, it reads the inputs, runs the algorithm and writes output to STDOUT."
)
ANSWER_LINE = "### Answer: (use the provided format with backticks)"


def question_prompt(statement: str, starter_code: str) -> str:
    """LCB's generic user message for one question (with or without starter code)."""
    text = f"### Question:\n{statement}\n\n"
    if starter_code:
        text += f"### Format: {FORMAT_WITH_STARTER_CODE}\n"
        text += f"```python\n{starter_code}\n```\n\n"
    else:
        text += f"### Format: {FORMAT_WITHOUT_STARTER_CODE}\n"
        text += "```python\n# YOUR CODE HERE\n```\n\n"
    return text + ANSWER_LINE + "\n\n"


def chat_messages(problem: Problem, *, system_role: bool = True) -> list[dict[str, str]]:
    """Chat turns for ``problem``: a system + user pair, or one user turn carrying the system text."""
    user = question_prompt(problem.statement, problem.starter_code)
    if system_role:
        return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": user}]
    return [{"role": "user", "content": SYSTEM_MESSAGE + "\n\n" + user}]


def load_few_shot(directory: str | Path) -> dict[str, list[dict[str, str]]]:
    """Read LCB's ``func.json`` / ``stdin.json`` few-shot files (lists of example dicts)."""
    directory = Path(directory)
    out = {}
    for name, keys in (("func", ("question", "sample_code", "answer")), ("stdin", ("question", "answer"))):
        with open(directory / f"{name}.json", encoding="utf-8") as f:
            examples = json.load(f)
        if not examples or any(not all(isinstance(e.get(k), str) for k in keys) for e in examples):
            raise ValueError(f"{directory / name}.json: expected a non-empty list of {keys} objects")
        out[name] = examples
    return out


def _base_block(question: str, starter_code: str | None, answer: str) -> str:
    text = f"### Question\n{question}\n\n"
    if starter_code is not None:
        text += f"### Starter Code\n{starter_code}\n\n"
    text += f"### Answer\n\n{answer}"
    if answer:
        text += "\n\n"
    return text


def base_prompt(problem: Problem, few_shot: Mapping[str, Sequence[Mapping[str, str]]]) -> str:
    """LCB's base-model prompt: the first few-shot example of the problem's kind, then the question.

    Functional problems (with starter code) use ``func`` examples and show a ``### Starter Code``
    section in both blocks; stdin problems use ``stdin`` examples without it.
    """
    if problem.starter_code:
        ex = few_shot["func"][0]
        return _base_block(ex["question"], ex["sample_code"], ex["answer"]) + _base_block(
            problem.statement, problem.starter_code, ""
        )
    ex = few_shot["stdin"][0]
    return _base_block(ex["question"], None, ex["answer"]) + _base_block(problem.statement, None, "")


class ChatTemplater(Protocol):
    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def render_prompt(
    problem: Problem,
    style: PromptStyle,
    *,
    tokenizer: ChatTemplater | None = None,
    few_shot: Mapping[str, Sequence[Mapping[str, str]]] | None = None,
) -> str:
    """The text a model is conditioned on for ``problem`` in ``style``.

    Chat styles need a tokenizer with a chat template (``add_generation_prompt=True``, so the text
    ends where the assistant turn starts); ``base`` needs the few-shot examples.
    """
    if style == "base":
        if few_shot is None:
            raise ValueError("prompt style 'base' needs few-shot examples (load_few_shot)")
        return base_prompt(problem, few_shot)
    if style == "question":
        return question_prompt(problem.statement, problem.starter_code)
    if style not in ("chat", "chat_no_system"):
        raise ValueError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")
    if tokenizer is None or getattr(tokenizer, "chat_template", "missing") is None:
        raise ValueError(f"prompt style {style!r} needs a tokenizer with a chat template")
    messages = chat_messages(problem, system_role=style == "chat")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text
