"""GASP teacher rows: lemma / lift prompts (GASP's own builder) -> short validated induction tasks as gold."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Sequence

import ml_collections
import numpy as np

from gasp_jax import tasks
from gasp_jax.data.livecodebench import DateWindow, load_problems
from gasp_jax.gasp.prompts import AXES, TeacherPrompts
from gasp_jax.sandbox import Limits, Sandbox
from gasp_jax.warmstart.config import LCB_CUTOFF, cache_root
from gasp_jax.warmstart.rows import Row, SeedTasks, cut_induction, is_short, solve_row

log = logging.getLogger(__name__)

GOLD_POOL_VERSION = 2  # bump when the validated pool's content or order changes (its cache file name)


def gasp_candidates(ws, seed: SeedTasks) -> list[dict]:
    """Short induction tasks that can be the gold of a GASP row, before validation: AZR induction seeds
    cut to `induction_inputs` pairs, short program/values/message, de-duplicated by program, none of the
    warm start's held-out programs, whose gold answer parses back as the same task."""
    g, n = ws.data.gasp, int(ws.data.induction_inputs)
    held = {tasks.program_text(r) for recs in seed.holdout.values() for r in recs}
    limits = ml_collections.ConfigDict(dict(max_snippet_chars=g.max_snippet_chars, max_value_chars=g.max_value_chars,
                                            max_message_chars=g.cut_message_chars))
    out, programs = [], set()
    for path in g.induction_seed_files:
        for rec in tasks.load_seed_file(path):
            if len(rec["inputs"]) < n:
                continue
            rec = cut_induction(rec, n)
            rec["message"] = _cut_words(rec["message"].strip(), int(g.cut_message_chars))
            prog = tasks.program_text(rec)
            if prog in programs or prog in held or not is_short(rec, limits):
                continue
            # The gold answer must read back as this task (a message holding "</answer>" would not).
            text = tasks.format_proposal("induction", rec, template=ws.template, with_program=True)
            back = tasks.parse_proposal("induction", text, program=None, num_inputs=n)
            if not back or back.snippet.strip() != rec["snippet"].strip() or list(back.inputs) != rec["inputs"]:
                continue
            programs.add(prog)
            out.append(rec)
    return out


def _cut_words(text: str, limit: int) -> str:
    """`text` cut to at most `limit` chars at a word boundary (unchanged when short enough or limit 0)."""
    if not limit or len(text) <= limit:
        return text
    return text[: limit + 1].rsplit(" ", 1)[0].rstrip(" ,;:") or text[:limit]


def gasp_gold_tasks(ws, seed: SeedTasks) -> list[dict]:
    """The validated gold pool (the `max_records` shortest answers): every candidate goes through
    `tasks.validate_records` once (outputs recomputed in the sandbox; invalid ones dropped). The result is
    cached next to the checkpoints under a hash of the candidates, so later calls start no sandbox."""
    cands = gasp_candidates(ws, seed)
    spec = [GOLD_POOL_VERSION, ws.template] + [tasks.record_key("induction", r) for r in cands]
    digest = hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]
    path = os.path.join(cache_root(ws), f"gasp_gold-{digest}.json")
    if os.path.isfile(path):
        with open(path) as f:
            valid = json.load(f)
    else:
        config = tasks.ValidationConfig(limits=Limits(cpu_s=2.0))
        with Sandbox(workers=2, allow_unsafe=bool(ws.data.gasp.allow_unsafe)) as sb:
            results = tasks.validate_records(sb, [("induction", r) for r in cands], config=config)
        if any(v.ok is None for v in results):  # infrastructure failure: never cache a partial pool
            raise RuntimeError(f"warmstart: the sandbox failed on {sum(v.ok is None for v in results)} gold tasks")
        valid = [v.record for v in results if v.ok]
        # Shortest answers first (stable): `max_records` keeps the ones a tiny model learns fastest.
        valid.sort(key=lambda r: len(tasks.format_proposal("induction", r, template=ws.template, with_program=True)))
        os.makedirs(cache_root(ws), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(valid, f)
        os.replace(tmp, path)
        log.info("warmstart: %d of %d GASP gold tasks valid -> %s", len(valid), len(cands), path)
    return valid[: int(ws.data.gasp.max_records)]


def lcb_statements(ws) -> list[tuple[str, str]]:
    """`(problem id, statement)` of the LCB problems before LCB_CUTOFF (GASP's goalpost window), by date."""
    problems = load_problems(ws.data.gasp.problems_file, window=DateWindow.of(end=LCB_CUTOFF))
    return [(p.id, p.statement) for p in problems]


def gasp_rows(ws, gold: Sequence[dict], statements: Sequence[tuple[str, str]], tokenizer=None) -> list[Row]:
    """GASP teacher rows, built with GASP's own prompt builders and the tasks layer's proposal format:
    lemma = lemma prompt of a drawn pre-cutoff statement -> a gold task; lift = lift prompt of a gold task
    -> another gold task. Axes alternate. The gold is not a real lemma of the statement (a tiny model
    learns the format and the shape of a short induction task, not the reduction)."""
    rng = np.random.default_rng([int(ws.seed), 13])
    builder = teacher_prompts(ws)

    def answer(rec: dict) -> str:
        return tasks.format_proposal("induction", rec, template=ws.template, chat=bool(ws.chat), with_program=True)

    rows = []
    picks = rng.choice(len(statements), size=min(int(ws.data.gasp.lemma_rows), len(statements)), replace=False)
    for i, j in enumerate(picks):
        pid, text = statements[int(j)]
        rec = gold[i % len(gold)]
        prompt = builder.lemma(text, AXES[i % len(AXES)], tokenizer)
        rows.append(Row("lemma", "induction", f"{rec['id']}@lcb:{pid}", prompt, answer(rec)))
    for i in range(int(ws.data.gasp.lift_rows)):
        a = i % len(gold)
        b = (a + 1 + int(rng.integers(len(gold) - 1))) % len(gold)  # another task: a lift changes the program
        prompt = builder.lift(gold[a], AXES[i % len(AXES)], tokenizer)
        rows.append(Row("lift", "induction", gold[b]["id"], prompt, answer(gold[b])))
    if ws.data.gasp.get("solve_rows", False):
        for rec in gold:
            pair = dict(tasks.io_record_from_induction(rec, 0), id=rec["id"])
            rows += [solve_row("induction", rec, ws, tokenizer), solve_row("deduction", pair, ws, tokenizer),
                     solve_row("abduction", pair, ws, tokenizer)]
    return rows


def teacher_prompts(ws) -> TeacherPrompts:
    """GaspSource's prompt builder for this block: the same template, statement cut, shown pairs and
    banned modules (configs/gasp.py:tiny's `prompt.*` equal `data.gasp.*`; tests check it)."""
    return TeacherPrompts(num_inputs=int(ws.data.induction_inputs), template=ws.template, chat=bool(ws.chat),
                          max_statement_chars=int(ws.data.gasp.max_statement_chars),
                          lift_shown_pairs=int(ws.data.gasp.lift_shown_pairs))
