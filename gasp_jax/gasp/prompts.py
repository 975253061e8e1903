"""The GASP teacher's two prompts, written for this project (the paper's texts are not public).

* **Lemma**: the teacher sees ONE goalpost statement and an axis, and writes an *easier* induction task
  (a program ``f``, ``num_inputs`` inputs, a message) that keeps the goalpost's algorithmic theme.
* **Lift**: the teacher sees ONLY the lemma (its program, the message and the input/output pairs the
  environment computed) and the same axis, and writes a *harder* variant. The goalpost is never shown:
  the paper reports that a teacher shown the goalpost copies its surface features.

Axes (one drawn uniformly per lemma; the lift uses the lemma's):
  ``io``        the complexity of the inputs/outputs (flat list -> nested lists, more arguments, examples
                from which f is harder to infer), keeping the algorithm;
  ``algorithm`` the complexity of the algorithm itself (fewer/more steps, constraints, compositions).

Both prompts ask for the same answer format as every induction proposal in this project (one
```python block defining ``f``, ``num_inputs`` ```input blocks, one ```message block), so parsing and
validation are the tasks layer's. ``template="compact"`` keeps them short for tiny CPU models;
``"full"`` spells out the rules (a 7B base model needs them). Compact prompts follow the tasks layer's
compact shapes (``#lemma <axis> <N>`` + the statement; ``#lift <axis> <N>`` + the lemma's program and
``>>> f(x)`` pairs), the form the warm start teaches a tiny model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from gasp_jax import tasks
from gasp_jax.sandbox.policy import DEFAULT_BANNED_MODULES

AXES = ("io", "algorithm")

AXIS_TEXT = {
    "io": {
        "name": "input/output complexity",
        "lemma": "Make the inputs and outputs simpler than the problem's (e.g. one flat list instead of "
                 "nested structures, fewer arguments, small values), keeping the same kind of algorithm.",
        "lift": "Make the inputs and outputs more complex (e.g. nested lists, more arguments, richer "
                "return values, examples from which f is harder to infer), keeping the same algorithm.",
    },
    "algorithm": {
        "name": "algorithm complexity",
        "lemma": "Make the algorithm simpler than the problem's (fewer steps, one idea of the solution, "
                 "no tricky constraints), keeping its core theme.",
        "lift": "Make the algorithm harder (an extra step, a composition of operations, a constraint that "
                "needs the core idea applied with more care), keeping the task's theme.",
    },
}

TEMPLATES = ("full", "compact")


def check_axis(axis: str) -> str:
    if axis not in AXES:
        raise ValueError(f"unknown GASP axis {axis!r}; expected one of {AXES}")
    return axis


def check_template(template: str) -> str:
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; expected one of {TEMPLATES}")
    return template


def default_banned_modules() -> tuple[str, ...]:
    """The modules sandbox validation rejects: what a full prompt lists as not allowed."""
    return tuple(sorted(DEFAULT_BANNED_MODULES))


@dataclasses.dataclass(frozen=True)
class TeacherPrompts:
    """The one builder of the teacher's lemma and lift prompts as the model sees them (body + wrapper).

    `GaspSource` and the warm start's GASP rows both build their prompts here, so the rows a model is
    warm-started on and the prompts it answers in self-play are the same text.
    """

    num_inputs: int
    template: str = "full"
    chat: bool = False
    max_statement_chars: int = 0
    lift_shown_pairs: int = 5
    banned_modules: tuple[str, ...] = dataclasses.field(default_factory=default_banned_modules)

    def __post_init__(self):
        check_template(self.template)
        if int(self.num_inputs) < 1:
            raise ValueError(f"TeacherPrompts.num_inputs must be >= 1, got {self.num_inputs}")

    def lemma(self, statement: str, axis: str, tokenizer: Any = None) -> str:
        body = lemma_prompt(statement, axis, num_inputs=int(self.num_inputs), banned_modules=self.banned_modules,
                            template=self.template, max_statement_chars=int(self.max_statement_chars))
        return wrap_prompt(body, template=self.template, chat=self.chat, tokenizer=tokenizer)

    def lift(self, lemma: Mapping[str, Any], axis: str, tokenizer: Any = None) -> str:
        body = lift_prompt(lemma, axis, num_inputs=int(self.num_inputs), banned_modules=self.banned_modules,
                           template=self.template, shown_pairs=int(self.lift_shown_pairs))
        return wrap_prompt(body, template=self.template, chat=self.chat, tokenizer=tokenizer)


def wrap_prompt(body: str, *, template: str = "full", chat: bool = False, tokenizer: Any = None) -> str:
    """The prompt the model sees around a body: the tasks layer's wrapper, so that GASP's proposals are
    answered (and parsed) exactly like every other proposal of the project."""
    return tasks.wrap_prompt(body, template=template, chat=chat, tokenizer=tokenizer)


def _format_rules(num_inputs: int, banned_modules: Sequence[str]) -> str:
    banned = ", ".join(sorted(banned_modules)) if banned_modules else "none"
    return (
        "Requirements:\n"
        "- the program defines a function `f` that takes at least one argument and returns a value;\n"
        "- `f` is deterministic: no randomness, dates or times, files, network, printing or input();\n"
        "- inputs and outputs are plain Python data (numbers, strings, lists, tuples, dicts, sets, None);\n"
        "- it finishes well within a second; imports go at the top;\n"
        f"- these words are not allowed in any form: {banned};\n"
        "- the inputs cover different cases, so that f can be inferred from their outputs.\n"
        f"Format, inside the answer tags: one ```python block, {num_inputs} ```input blocks (the arguments of "
        "the call f(...)), one ```message block (a hint or question for the solver, no code in it).\n"
    )


def lemma_prompt(statement: str, axis: str, *, num_inputs: int, banned_modules: Sequence[str] = (),
                 template: str = "full", max_statement_chars: int = 0) -> str:
    """The lemma prompt: one goalpost statement + the axis -> an easier induction task."""
    check_axis(axis)
    check_template(template)
    text = statement.strip()
    if max_statement_chars and len(text) > max_statement_chars:
        text = text[:max_statement_chars].rstrip() + " ..."
    if template == "compact":
        return f"#lemma {axis} {num_inputs}\n{text}"
    return (
        "## Task: write an easier variant of a hard programming problem\n"
        "Below is a hard programming problem. Design a Python function f that captures one key "
        "algorithmic idea of it, but is clearly easier, so that a student who sees some input/output "
        "pairs of f and your message can infer f.\n"
        f"Difficulty axis: {AXIS_TEXT[axis]['name']}. {AXIS_TEXT[axis]['lemma']}\n"
        "Do not copy the problem's story or wording: write a new, self-contained task.\n\n"
        f"### Hard problem\n{text}\n\n" + _format_rules(num_inputs, banned_modules)
    )


def _pairs_text(inputs: Sequence[str], outputs: Sequence[str], shown: int) -> str:
    return "\n".join(f"f({x}) == {y}" for x, y in list(zip(inputs, outputs))[:shown])


def lift_prompt(lemma: Mapping[str, Any], axis: str, *, num_inputs: int, banned_modules: Sequence[str] = (),
                template: str = "full", shown_pairs: int = 5) -> str:
    """The lift prompt: ONLY the lemma (program, message, I/O pairs) + the axis -> a harder variant.

    ``lemma`` is an induction record ``{"snippet", "inputs", "outputs", "message", "imports"}``; nothing
    of the goalpost is passed in, so nothing of it can leak into the prompt.
    """
    check_axis(axis)
    check_template(template)
    code = str(lemma["snippet"]).strip()
    imports = lemma.get("imports") or []
    if imports:
        code = "\n".join(imports) + "\n" + code
    pairs = _pairs_text(lemma.get("inputs", []), lemma.get("outputs", []), shown_pairs)
    message = str(lemma.get("message", "")).strip()
    if template == "compact":
        shown = "".join(f"\n>>> f({x})\n{y}" for x, y in list(zip(lemma.get("inputs", []), lemma.get("outputs", [])))[:shown_pairs])
        return f"#lift {axis} {num_inputs}\n{code}{shown}"
    return (
        "## Task: write a harder variant of an induction task\n"
        "Below is a task the student can already solve: a function f, a message about it and some of its "
        "input/output pairs. Write a new function f that is a harder variant of it, still learnable from "
        "input/output pairs and your message.\n"
        f"Difficulty axis: {AXIS_TEXT[axis]['name']}. {AXIS_TEXT[axis]['lift']}\n\n"
        f"### Current task\n```python\n{code}\n```\nMessage: {message}\nExamples:\n{pairs}\n\n"
        + _format_rules(num_inputs, banned_modules)
    )
