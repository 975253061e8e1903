"""Prompts for both roles and the three kinds, for base models (plain text) and chat models (the
tokenizer's chat template), plus the gold responses (``format_answer``, ``format_proposal``).

Templates: ``"full"`` (instructions in prose, R1-style wrapper for base models, AZR's layout) and
``"compact"`` (no prose: a few bytes of framing around the program and values, for tiny CPU models
with byte tokenizers; warmstart and the tiny presets use it). Base prompts end with ``<think>``,
so a response starts inside the reasoning; chat prompts end where the assistant turn starts, so
a response starts with ``<think>``. Either way the answer goes in ``<answer>...</answer>``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from gasp_jax.sandbox.policy import DEFAULT_BANNED_MODULES
from gasp_jax.tasks.parsing import ANSWER_FENCE
from gasp_jax.tasks.records import IO_KINDS, check_kind, program_text, split_pairs, validate_record

TEMPLATES = ("full", "compact")


class PromptTooLong(ValueError):
    """The prompt exceeds its token budget with every droppable part dropped."""


@dataclasses.dataclass(frozen=True)
class Prompt:
    """``text``: what the model is conditioned on; ``dropped``: references left out to fit the
    budget; ``n_tokens``: its length (tokenizer tokens, or UTF-8 bytes without a tokenizer)."""

    text: str
    dropped: int = 0
    n_tokens: int = 0


_BASE_WRAPPER = (
    "A conversation between User and Assistant. The User gives a task and the Assistant solves it. "
    "The Assistant first reasons about the task step by step, then gives the answer. The reasoning "
    "is enclosed in <think> </think> tags and the answer in <answer> </answer> tags, i.e. "
    "<think> reasoning here </think> <answer> answer here </answer>.\n"
    "User: {body}\nAssistant: <think>")
_CHAT_SUFFIX = ("\n\nFirst reason step by step inside <think> </think>, then give the answer inside "
                "<answer> </answer>.")


def _check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; expected one of {TEMPLATES}")


def _count(text: str, tokenizer: Any) -> int:
    if tokenizer is None:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(tokenizer.encode(text, add_special_tokens=False))


def wrap_prompt(body: str, *, template: str = "full", chat: bool = False, tokenizer: Any = None) -> str:
    """The prompt around a task body: the R1-style wrapper (full, base), `body + "\\n<think>"`
    (compact, base) or the tokenizer's chat template with one user turn (chat)."""
    _check_template(template)
    if chat:
        if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("chat=True needs a tokenizer with a chat template")
        content = body if template == "compact" else body + _CHAT_SUFFIX
        text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
        return text
    if template == "compact":
        return body + "\n<think>"
    return _BASE_WRAPPER.format(body=body)


def _fenced(lang: str, body: str) -> str:
    return f"```{lang}\n{body}\n```"


# ----------------------------------------------------------------------------------------------
# solver prompts
# ----------------------------------------------------------------------------------------------

def _solve_body(kind: str, rec: dict, template: str, n_visible: int | None) -> str:
    prog = program_text(rec)
    if template == "compact":
        if kind == "deduction":
            return f"#deduction\n{prog}\n>>> f({rec['input']})"
        if kind == "abduction":
            return f"#abduction\n{prog}\n>>> f(?)\n{rec['output']}"
        visible, _ = split_pairs(rec, n_visible)
        shown = "".join(f"\n>>> f({i})\n{o}" for i, o in visible)
        return f"#induction\n{rec['message']}{shown}"
    if kind == "deduction":
        return ("## Task: Predict the Output\n\nWork out exactly what the Python function `f` below returns "
                "for the given input.\n\n" + _fenced("python", prog) + "\n\nInput (the arguments of the call "
                f"`f(...)`):\n" + _fenced("input", rec["input"]) + "\n\nGive the returned value as a Python "
                "literal (a number, a quoted string, a list, a tuple, a dict, ...) in an ```output block "
                "inside the answer tags.")
    if kind == "abduction":
        return ("## Task: Find an Input\n\nFind arguments for the Python function `f` below such that `f` "
                "returns exactly the given output. Any arguments that produce it are accepted.\n\n"
                + _fenced("python", prog) + "\n\nOutput:\n" + _fenced("output", rec["output"])
                + "\n\nGive the arguments as they would be written inside the call `f(...)` (for two "
                "arguments: `'abc', 3`) in an ```input block inside the answer tags.")
    visible, hidden = split_pairs(rec, n_visible)
    pairs = "\n".join(f"```input\n{i}\n```\n```output\n{o}\n```" for i, o in visible)
    return ("## Task: Recover the Function\n\nWrite a Python function `f` that maps each input below to its "
            f"output. It will be checked on {len(hidden)} more inputs you do not see, so find the general "
            "rule rather than the listed cases.\n\nMessage from the task's author:\n"
            + _fenced("message", rec["message"]) + "\n\nExamples (inputs are the arguments of `f(...)`):\n"
            + pairs + "\n\nGive the program (imports included) defining `f` in a ```python block inside "
            "the answer tags.")


def solve_prompt(kind: str, record: dict, *, n_visible: int | None = None, tokenizer: Any = None,
                 token_budget: int | None = None, chat: bool = False, template: str = "full") -> Prompt:
    """The solver's prompt for ``record`` as a ``kind`` task (induction shows the first
    ``n_visible`` pairs; None: half, AZR). ``PromptTooLong`` if it exceeds ``token_budget``."""
    check_kind(kind)
    _check_template(template)
    rec = validate_record(kind, record)
    text = wrap_prompt(_solve_body(kind, rec, template, n_visible), template=template, chat=chat, tokenizer=tokenizer)
    n = _count(text, tokenizer)
    if token_budget is not None and n > token_budget:
        raise PromptTooLong(f"{kind} solve prompt for record {rec['id']!r} has {n} tokens > {token_budget}")
    return Prompt(text, 0, n)


# ----------------------------------------------------------------------------------------------
# proposer prompts
# ----------------------------------------------------------------------------------------------

def _reference_compact(rec: dict) -> str:
    prog = program_text(rec)
    if "inputs" in rec:
        return prog + "".join(f"\n>>> f({i})\n{o}" for i, o in zip(rec["inputs"], rec["outputs"]))
    return f"{prog}\n>>> f({rec['input']})\n{rec['output']}"


def _reference_full(k: int, rec: dict) -> str:
    prog = _fenced("python", program_text(rec))
    if "inputs" in rec:
        pairs = "\n".join(f"```input\n{i}\n```\n```output\n{o}\n```" for i, o in zip(rec["inputs"], rec["outputs"]))
        return f"<reference {k}>\n{prog}\n```message\n{rec['message']}\n```\n{pairs}\n</reference {k}>"
    return (f"<reference {k}>\n{prog}\n```input\n{rec['input']}\n```\n```output\n{rec['output']}\n```\n"
            f"</reference {k}>")


def _propose_body(kind: str, refs: Sequence[dict], program: dict | None, banned: Sequence[str],
                  num_inputs: int, template: str) -> str:
    if template == "compact":
        if kind == "induction" and program is not None:
            return f"#propose induction {num_inputs}\n{program_text(program)}"
        head = f"#propose {kind}" + (f" {num_inputs}" if kind == "induction" else "")
        return head + "".join("\n" + _reference_compact(r) for r in refs)
    banned_text = ", ".join(sorted(banned))
    refs_text = "\n".join(_reference_full(k, r) for k, r in enumerate(refs, 1))
    rules = ("- the program defines a function `f` (helpers nested inside it or defined before it are fine) "
             "that takes at least one argument and returns a value;\n"
             "- `f` is deterministic: the same input always gives the same output; no randomness, dates or "
             "times, files, network, printing or other external state;\n"
             "- inputs and outputs are plain Python data (numbers, strings, lists, tuples, dicts, sets, None);\n"
             "- it finishes well within a second; imports go at the top;\n"
             f"- these words are not allowed in any form: {banned_text}.\n")
    if kind in IO_KINDS:
        goal = ("predict its output from the program and the input" if kind == "deduction"
                else "find an input that produces the output, given the program and the output")
        return ("## Task: Propose a New Code-Reasoning Task\n\nWrite a new Python program and one input for it. "
                f"A solver will be asked to {goal}, so make it take careful reasoning to get right "
                "(state that changes across several steps), but keep it solvable.\n\nRequirements:\n" + rules
                + "\nFormat, inside the answer tags:\n```python\ndef f(...):\n    ...\n```\n```input\n"
                "arguments of the call f(...), e.g. 'abc', 3\n```\n\nMake the task clearly different from "
                "these reference tasks:\n" + refs_text)
    if program is not None:
        return (f"## Task: Write Inputs and a Message for This Function\n\nWrite {num_inputs} different inputs "
                "for the Python function below and a message for a solver who will see half of the "
                "input/output pairs and must write the function. Choose inputs that together reveal what "
                "the function does, and a message that hints at it without containing code.\n\n"
                + _fenced("python", program_text(program)) + "\n\nRequirements: inputs are plain Python data; "
                f"write each in its own ```input block (the arguments of the call f(...)), then one ```message "
                "block, all inside the answer tags.")
    return (f"## Task: Propose a New Function-Induction Task\n\nWrite a new Python program, {num_inputs} different "
            "inputs for it, and a message. A solver will see the message and half of the input/output pairs "
            "and must write the function; it is checked on the other half. Make the rule take careful "
            "reasoning to find, but keep it findable from the examples.\n\nRequirements:\n" + rules
            + f"\nFormat, inside the answer tags: one ```python block, {num_inputs} ```input blocks (the "
            "arguments of the call f(...)), one ```message block (no code in it).\n\nMake the task clearly "
            "different from these reference tasks:\n" + refs_text)


def propose_prompt(kind: str, references: Sequence[dict], *, banned_modules: Sequence[str] = DEFAULT_BANNED_MODULES,
                   program: dict | None = None, num_inputs: int = 10, tokenizer: Any = None,
                   token_budget: int | None = None, chat: bool = False, template: str = "full") -> Prompt:
    """The proposer's prompt: ``references`` (records shown as examples; the last ones are
    dropped first to fit ``token_budget``), the banned-module list (full template), and for
    induction either a given ``program`` (AZR: the proposer writes inputs + message) or none
    (GASP: it writes the program too). ``PromptTooLong`` if it does not fit without references."""
    check_kind(kind)
    _check_template(template)
    refs = [validate_record("induction" if "inputs" in r else "deduction", r) for r in references]
    prog = None
    if program is not None:
        if kind != "induction":
            raise ValueError("program= is only for induction proposals")
        prog = validate_record("induction" if "inputs" in program else "deduction", program)
    banned = sorted(banned_modules)
    for keep in range(len(refs), -1, -1):
        body = _propose_body(kind, refs[:keep], prog, banned, num_inputs, template)
        text = wrap_prompt(body, template=template, chat=chat, tokenizer=tokenizer)
        n = _count(text, tokenizer)
        if token_budget is None or n <= token_budget:
            return Prompt(text, len(refs) - keep, n)
    raise PromptTooLong(f"{kind} propose prompt has {n} tokens > {token_budget} with no references")


# ----------------------------------------------------------------------------------------------
# gold responses
# ----------------------------------------------------------------------------------------------

def _response(blocks: str, *, template: str, chat: bool, reasoning: str) -> str:
    think = ("<think>" if chat else "") + reasoning + "</think>"
    if template == "compact":
        return f"{think}<answer>{blocks}</answer>"
    return f"{think}\n<answer>\n{blocks}\n</answer>"


def format_answer(kind: str, record: dict, *, template: str = "full", chat: bool = False, reasoning: str = "") -> str:
    """The gold solver response for ``record`` (what follows the prompt): the stored output
    (deduction), the stored input (abduction) or the program (induction) in the answer format.
    ``extract_answer(kind, format_answer(kind, rec))`` gives that text back."""
    check_kind(kind)
    _check_template(template)
    rec = validate_record(kind, record)
    value = rec["output"] if kind == "deduction" else rec["input"] if kind == "abduction" else program_text(rec)
    body = value if template == "compact" else _fenced(ANSWER_FENCE[kind], value)
    return _response(body, template=template, chat=chat, reasoning=reasoning)


def format_proposal(kind: str, record: dict, *, template: str = "full", chat: bool = False, reasoning: str = "",
                    with_program: bool | None = None) -> str:
    """The gold proposer response that ``parse_proposal`` reads back as ``record``'s task:
    program + input (deduction/abduction); inputs + message, and the program too when
    ``with_program`` (default: True, i.e. the prompt gave no program), for induction."""
    check_kind(kind)
    _check_template(template)
    rec = validate_record(kind, record)
    parts = []
    if kind in IO_KINDS or with_program is None or with_program:
        parts.append(_fenced("python", program_text(rec)))
    if kind in IO_KINDS:
        parts.append(_fenced("input", rec["input"]))
    else:
        parts += [_fenced("input", x) for x in rec["inputs"]]
        parts.append(_fenced("message", rec["message"]))
    return _response("\n".join(parts), template=template, chat=chat, reasoning=reasoning)
