"""Reading model responses: answers (solver) and proposals (proposer). Never raises on any text.

Response format (AZR's, on by default, ``tags=True``): ``...</think> <answer>...</answer>``; the
answer is the content of the LAST complete ``<answer>`` block, which must come after a
``</think>`` (the opening ``<think>`` may be in the prompt). Inside it, the first fenced block of
the role's kind (```` ```output ````, ```` ```input ````, ```` ```python ````, ```` ```message ````)
if there is one, else the stripped content. ``tags=False`` reads the whole response that way.

Program text is only ever parsed here (``ast.parse``, ``tokenize``), never executed.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import tokenize
from typing import Any

from gasp_jax.tasks.records import IO_KINDS, check_kind, program_text, validate_record

ANSWER_FENCE = {"deduction": "output", "abduction": "input", "induction": "python"}
_PYTHON_TAGS = ("python", "py", "python3")
_MAX_RESPONSE_CHARS = 1 << 20


def answer_content(text: Any, *, tags: bool = True) -> str | None:
    """The content of the last ``<answer>`` block after a ``</think>``, or None (format error)."""
    if not isinstance(text, str) or len(text) > _MAX_RESPONSE_CHARS:
        return None
    if not tags:
        return text
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    if start < 0 or text.rfind("</think>", 0, start) < 0:
        return None
    return text[start + len("<answer>"):end]


def fenced_blocks(content: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block, in order. A fence opens with a line starting
    with three backticks and closes at the next such line (or the end of the text)."""
    blocks: list[tuple[str, str]] = []
    lang: str | None = None
    body: list[str] = []
    for line in content.split("\n"):
        stripped = line.strip()
        if lang is None:
            if stripped.startswith("```"):
                lang = stripped[3:].strip().lower()
                body = []
        elif stripped.startswith("```"):
            blocks.append((lang, "\n".join(body)))
            lang = None
        else:
            body.append(line)
    if lang is not None:
        blocks.append((lang, "\n".join(body)))
    return blocks


def _first_block(blocks: list[tuple[str, str]], langs: tuple[str, ...]) -> str | None:
    for lang, body in blocks:
        if lang in langs:
            return body
    return None


def extract_answer(kind: str, response_text: Any, *, tags: bool = True) -> str | None:
    """The answer text of a solver response (public contract): the output expression
    (deduction), the input arguments (abduction) or the program (induction); None on a format
    error (no ``<answer>`` block after ``</think>``, or an empty answer)."""
    check_kind(kind)
    content = answer_content(response_text, tags=tags)
    if content is None:
        return None
    langs = _PYTHON_TAGS if kind == "induction" else (ANSWER_FENCE[kind],)
    block = _first_block(fenced_blocks(content), langs)
    answer = (block if block is not None else content).strip()
    return answer or None


@dataclasses.dataclass(frozen=True)
class ParsedProposal:
    """A proposal that parsed: program (entry function renamed to ``f``, top-level imports in
    ``imports``), its input(s) (io kinds: exactly one) and, for induction, the message."""

    kind: str
    snippet: str
    imports: tuple[str, ...]
    inputs: tuple[str, ...]
    message: str = ""

    @property
    def program(self) -> str:
        return program_text({"snippet": self.snippet, "imports": list(self.imports)})

    def __bool__(self) -> bool:
        return True


@dataclasses.dataclass(frozen=True)
class ProposalError:
    """Why a proposal did not parse (a format error). Falsy."""

    reason: str

    def __bool__(self) -> bool:
        return False


def _parse_module(src: str) -> ast.Module | None:
    try:
        return ast.parse(src)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None


def _rename(src: str, old: str, new: str) -> str | None:
    """``src`` with every name token ``old`` (not attribute names) replaced by ``new``."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError, RecursionError):
        return None
    lines = src.split("\n")
    hits = []
    prev = None
    for tok in toks:
        if tok.type == tokenize.NAME and tok.string == old and not (prev is not None and prev.string == "."):
            hits.append(tok.start)
        if tok.type not in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
            prev = tok
    for row, col in reversed(hits):
        line = lines[row - 1]
        lines[row - 1] = line[:col] + new + line[col + len(old):]
    return "\n".join(lines)


def split_program(src: str) -> tuple[str, tuple[str, ...]] | ProposalError:
    """``(snippet, imports)``: whole-line top-level imports move to ``imports``; the entry function
    (a top-level ``def f``, else the last top-level ``def``) is renamed to ``f``."""
    tree = _parse_module(src)
    if tree is None:
        return ProposalError("program has a syntax error")
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not defs:
        return ProposalError("program defines no function")
    entry = next((d for d in defs if d.name == "f"), defs[-1])
    if isinstance(entry, ast.AsyncFunctionDef):
        return ProposalError("the entry function is async")
    lines = src.split("\n")
    imports: list[str] = []
    drop: set[int] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node.col_offset == 0:
            first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
            segment = ast.get_source_segment(src, node) or ""
            if "\n".join(lines[first:last + 1]).strip() == segment.strip():
                imports.append(segment.strip())
                drop.update(range(first, last + 1))
    snippet = "\n".join(line for i, line in enumerate(lines) if i not in drop).strip("\n")
    if entry.name != "f":
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
            a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs}
        if "f" in names or any(d.name == "f" for d in defs):
            return ProposalError(f"cannot rename {entry.name} to f: the name f is taken")
        renamed = _rename(snippet, entry.name, "f")
        if renamed is None or _parse_module(renamed) is None:
            return ProposalError("program could not be renamed")
        snippet = renamed
    return snippet, tuple(imports)


def check_input(text: str) -> str | None:
    """Reason the text is not usable as call arguments ``f(<text>)``, or None. Parsed only."""
    try:
        tree = ast.parse("f(\n" + text + "\n)", mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return "input is not valid call arguments"
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f"):
        return "input is not valid call arguments"
    return None


def parse_proposal(kind: str, text: Any, *, program: dict | None = None, num_inputs: int = 10,
                   tags: bool = True, allow_helpers: bool = True) -> ParsedProposal | ProposalError:
    """Parse a proposer response.

    deduction / abduction: the first ```` ```python ```` block (a program defining the entry
    function) and the first ```` ```input ```` block. induction: with ``program`` (a record; AZR:
    the proposer is given a program) the response needs ``num_inputs`` distinct ```` ```input ````
    blocks (extra ones are ignored) and a ```` ```message ```` block; without it (GASP: the teacher
    writes the whole task) a ```` ```python ```` block as well. ``allow_helpers=False`` rejects
    programs with more than one top-level function (AZR's ``reject_multiple_functions``)."""
    check_kind(kind)
    content = answer_content(text, tags=tags)
    if content is None:
        return ProposalError("no <answer> block after </think>")
    blocks = fenced_blocks(content)
    if kind == "induction" and program is not None:
        rec = validate_record("induction" if "inputs" in program else "deduction", program)
        snippet, imports = rec["snippet"], tuple(rec["imports"])
    else:
        src = _first_block(blocks, _PYTHON_TAGS)
        if src is None or not src.strip():
            return ProposalError("no ```python block")
        split = split_program(src)
        if isinstance(split, ProposalError):
            return split
        snippet, imports = split
        if not allow_helpers:
            tree = _parse_module(snippet)
            if tree is not None and sum(isinstance(n, ast.FunctionDef) for n in tree.body) > 1:
                return ProposalError("program defines more than one function")
    raw_inputs = [body.strip() for lang, body in blocks if lang == "input"]
    raw_inputs = [x for x in raw_inputs if x]
    if kind in IO_KINDS:
        if not raw_inputs:
            return ProposalError("no ```input block")
        inputs = (raw_inputs[0],)
        message = ""
    else:
        inputs = tuple(dict.fromkeys(raw_inputs))[:num_inputs]
        if len(inputs) < num_inputs:
            return ProposalError(f"{len(inputs)} distinct ```input blocks, need {num_inputs}")
        message = (_first_block(blocks, ("message",)) or "").strip()
        if not message:
            return ProposalError("no ```message block")
    for x in inputs:
        reason = check_input(x)
        if reason:
            return ProposalError(reason)
    return ParsedProposal(kind, snippet, imports, inputs, message)


def proposal_from_record(kind: str, rec: dict) -> ParsedProposal:
    """The proposal a stored record corresponds to (to re-validate seed files and buffers)."""
    rec = validate_record(kind, rec)
    inputs = tuple(rec["inputs"]) if kind == "induction" else (rec["input"],)
    return ParsedProposal(kind, rec["snippet"], tuple(rec["imports"]), inputs, rec.get("message", ""))
