"""Solver and proposer rows from the shipped AZR seed tasks (every prompt built by the tasks layer)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from gasp_jax import tasks

@dataclasses.dataclass(frozen=True)
class SeedTasks:
    """The warm start's task records by kind: `train` (trained on) and `holdout` (programs never seen)."""

    train: dict[str, list[dict]]
    holdout: dict[str, list[dict]]


def is_short(rec: dict, data) -> bool:
    values = [rec["input"], rec["output"]] if "input" in rec else list(rec["inputs"]) + list(rec["outputs"])
    if len(tasks.program_text(rec)) > int(data.max_snippet_chars):
        return False
    if any(len(v) > int(data.max_value_chars) for v in values):
        return False
    # An induction task needs a message: the proposer's gold must carry one that parses.
    return "message" not in rec or 0 < len(rec["message"].strip()) <= int(data.max_message_chars)


def cut_induction(rec: dict, n: int) -> dict:
    """The first `n` pairs of an induction record: the shape a tiny-run induction proposal has."""
    out = dict(rec, inputs=list(rec["inputs"][:n]), outputs=list(rec["outputs"][:n]))
    out.pop("gold", None)
    return out


def seed_tasks(data) -> SeedTasks:
    """Short seed records, deterministic: file order, filtered, de-duplicated by task content; the
    holdout is the last `holdout_programs` distinct programs (all their records)."""
    io: list[dict] = []
    induction: list[dict] = []
    if data.seed_file:
        io += tasks.load_seed_file(data.seed_file)
    if data.induction_seed_file:
        for rec in tasks.load_seed_file(data.induction_seed_file):
            if len(rec["inputs"]) < int(data.induction_inputs):
                continue  # too few inputs to serve as a gold induction proposal
            induction.append(rec)
            if data.pairs_as_io:
                io += [tasks.io_record_from_induction(rec, i) for i in range(len(rec["inputs"]))]
    io = _dedupe([r for r in io if is_short(r, data)], "deduction")
    induction = _dedupe([r for r in induction if is_short(r, data)], "induction")
    programs = list(dict.fromkeys(tasks.program_text(r) for r in io + induction))
    held = set(programs[len(programs) - int(data.holdout_programs):]) if int(data.holdout_programs) else set()

    def split(recs: list[dict], limit: int):
        train = [r for r in recs if tasks.program_text(r) not in held]
        return train[: limit or None], [r for r in recs if tasks.program_text(r) in held]

    io_train, io_held = split(io, int(data.max_io_records))
    ind_train, ind_held = split(induction, int(data.max_induction_records))
    return SeedTasks(train={"deduction": io_train, "abduction": io_train, "induction": ind_train},
                     holdout={"deduction": io_held, "abduction": io_held, "induction": ind_held})


def _dedupe(records: list[dict], kind: str) -> list[dict]:
    seen, out = set(), []
    for r in records:
        key = tasks.record_key(kind, r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


@dataclasses.dataclass(frozen=True)
class Row:
    """One training example: the prompt text and the gold response text (no stop token)."""

    role: str
    kind: str
    record_id: str
    prompt: str
    response: str


def solve_row(kind: str, rec: dict, ws, tokenizer=None) -> Row:
    p = tasks.solve_prompt(kind, rec, template=ws.template, chat=bool(ws.chat), tokenizer=tokenizer)
    return Row("solve", kind, rec["id"], p.text, tasks.format_answer(kind, rec, template=ws.template, chat=bool(ws.chat)))


def propose_row(kind: str, rec: dict, references: Sequence[dict], ws, tokenizer=None) -> Row:
    """The proposer prompt with `references` and `rec` as the gold proposal. Induction follows AZR: the
    prompt gives `rec`'s program, the gold writes its first `induction_inputs` inputs and its message."""
    n = int(ws.data.induction_inputs)
    if kind == "induction":
        gold = cut_induction(rec, n)
        p = tasks.propose_prompt(kind, references, program=rec, num_inputs=n, template=ws.template,
                                 chat=bool(ws.chat), tokenizer=tokenizer)
        response = tasks.format_proposal(kind, gold, template=ws.template, chat=bool(ws.chat), with_program=False)
    else:
        p = tasks.propose_prompt(kind, references, num_inputs=n, template=ws.template, chat=bool(ws.chat),
                                 tokenizer=tokenizer)
        response = tasks.format_proposal(kind, rec, template=ws.template, chat=bool(ws.chat))
    return Row("propose", kind, rec["id"], p.text, response)


def build_rows(seed: SeedTasks, ws, tokenizer=None) -> list[Row]:
    """Every training row, in a deterministic order (shuffled per epoch by the trainer). Proposer rows
    draw `references` other training records of the kind, `proposal_draws` times per record."""
    rng = np.random.default_rng([int(ws.seed), 7])
    rows: list[Row] = []
    for kind in tasks.KINDS:
        recs = seed.train[kind]
        for i, rec in enumerate(recs):
            if "solve" in ws.data.roles:
                rows.append(solve_row(kind, rec, ws, tokenizer))
            if "propose" in ws.data.roles:
                others = [r for j, r in enumerate(recs) if j != i and tasks.program_text(r) != tasks.program_text(rec)]
                # An AZR induction prompt shows the given program, no references: one row is enough.
                for _ in range(1 if kind == "induction" else int(ws.data.proposal_draws)):
                    k = min(int(ws.data.references), len(others))
                    refs = [others[j] for j in rng.choice(len(others), size=k, replace=False)] if k else []
                    rows.append(propose_row(kind, rec, refs, ws, tokenizer))
    return rows


def row_limit(row: Row, ws) -> int:
    """A row's token limit: GASP rows (long statements) have their own."""
    return int(ws.data.gasp.max_length) if row.role in ("lemma", "lift") else int(ws.max_length)


def encode_rows(rows: Sequence[Row], tokenizer, max_length: int | Sequence[int]) -> tuple[list[tuple[list[int], list[int]]], int]:
    """`(prompt ids, response ids + stop)` per row that fits `max_length` (one limit, or one per row), and
    how many did not."""
    eos = int(tokenizer.eos_token_id)
    limits = [int(max_length)] * len(rows) if isinstance(max_length, int) else [int(x) for x in max_length]
    out, dropped = [], 0
    for r, limit in zip(rows, limits, strict=True):
        p = list(tokenizer.encode(r.prompt, add_special_tokens=False))
        t = list(tokenizer.encode(r.response, add_special_tokens=False)) + [eos]
        if len(p) + len(t) > limit:
            dropped += 1
            continue
        out.append((p, t))
    return out, dropped
