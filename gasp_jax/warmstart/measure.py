"""What a warm-started checkpoint does with the self-play prompts: format, correct and valid rates."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import numpy as np

from gasp_jax import models, sampling, tasks
from gasp_jax.gasp.prompts import AXES
from gasp_jax.warmstart.gasp_rows import lcb_statements, teacher_prompts
from gasp_jax.warmstart.rows import propose_row, solve_row
from gasp_jax.warmstart.training import Prepared, local_mesh, prepare



def _rate(xs: Sequence[bool]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def measure(path: str, ws, sandbox, *, samples: int = 4, temperature: float = 1.0, max_new_tokens: int = 128,
            max_tasks: int = 24, seed: int = 0, validation_config=None, judge_config=None,
            gasp_max_new_tokens: int = 416) -> dict:
    """What the warm-started model at `path` does at `temperature` with the self-play prompts.

    Solve: `samples` answers per (kind, task) for the training tasks and the held-out programs ->
    `format_rate` (the answer parses) and `correct_rate` (judged correct). Propose: `samples` proposals
    per (kind, training record, fresh reference draw) -> `parse_rate` and `valid_rate` (validated in the
    sandbox: runs, deterministic, plain data) and `novel_rate` (valid and not a training task). At most
    `max_tasks` tasks / records per (split, kind), the first ones. With GASP rows: `gasp/*` rates the
    same way for the lemma / lift prompts (`gasp_max_new_tokens`: their gold is up to ~400 tokens).
    """
    prep = prepare(ws)
    mesh = local_mesh(ws)
    model, params = models.load_hf(path, dtype=ws.model.dtype, mesh=mesh)
    tokenizer = models.load_tokenizer(path)
    key = jax.random.key(seed)

    def generate(prompts: list[str], k: int, bucket: int = int(ws.max_length), new: int = max_new_tokens) -> list[str]:
        nonlocal key
        key, sub = jax.random.split(key)
        texts = sampling.generate_text(model, params, tokenizer, prompts, num_samples=k, temperature=temperature,
                                       max_new_tokens=new, rng=sub, mesh=mesh,
                                       prompt_buckets=(bucket,), max_cache_length=bucket + new)
        return [t for row in texts for t in row]

    def fits(text: str, limit: int = int(ws.max_length)) -> bool:
        return len(tokenizer.encode(text, add_special_tokens=False)) <= limit

    out: dict[str, Any] = {"path": path, "temperature": temperature, "samples": samples}
    for split, recs_by_kind in (("train", prep.seed.train), ("holdout", prep.seed.holdout)):
        for kind in tasks.KINDS:
            rows = [(r, solve_row(kind, r, ws, tokenizer if ws.chat else None)) for r in recs_by_kind[kind][:max_tasks]]
            rows = [(r, row) for r, row in rows if fits(row.prompt)]
            if not rows:
                continue
            texts = generate([row.prompt for _, row in rows], samples)
            answers = [tasks.extract_answer(kind, t) for t in texts]
            items = [(kind, r, a) for (r, _), a in zip([x for x in rows for _ in range(samples)], answers)]
            verdicts = tasks.judge_many(sandbox, items, config=judge_config)
            scored = [v for v in verdicts if v is not None]
            out[f"solve/{split}/{kind}"] = {
                "tasks": len(rows), "answers": len(texts), "format_rate": _rate([a is not None for a in answers]),
                "correct_rate": _rate([bool(v) for v in scored]), "infra_errors": len(verdicts) - len(scored),
                "example": texts[0][:200]}
    rng = np.random.default_rng([seed, 3])
    train_keys = {k: {tasks.record_key(k, r) for r in v} for k, v in prep.seed.train.items()}
    for kind in tasks.KINDS:
        recs = prep.seed.train[kind]
        if not recs:
            continue
        rows = []
        for rec in recs[:max_tasks]:
            others = [r for r in recs if r is not rec]
            k = min(int(ws.data.references), len(others))
            refs = [others[j] for j in rng.choice(len(others), size=k, replace=False)] if k else []
            rows.append((rec, propose_row(kind, rec, refs, ws, tokenizer if ws.chat else None)))
        rows = [(r, row) for r, row in rows if fits(row.prompt)]
        texts = generate([row.prompt for _, row in rows], samples)
        progs = [r for r, _ in rows for _ in range(samples)]
        n = int(ws.data.induction_inputs)
        parsed = [tasks.parse_proposal(kind, t, program=p if kind == "induction" else None, num_inputs=n)
                  for t, p in zip(texts, progs)]
        ok = [(kind, p) for p in parsed if p]
        results = tasks.validate_proposals(sandbox, ok, config=validation_config) if ok else []
        valid = [v.record for v in results if v.ok]
        out[f"propose/{kind}"] = {
            "prompts": len(rows), "proposals": len(texts), "parse_rate": _rate([bool(p) for p in parsed]),
            "valid_rate": len(valid) / max(len(texts), 1),
            "novel_rate": sum(tasks.record_key(kind, r) not in train_keys[kind] for r in valid) / max(len(texts), 1),
            "infra_errors": sum(v.ok is None for v in results),
            "reasons": _top_reasons([v.reason for v in results if not v.ok]), "example": texts[0][:200]}
    if "gasp" in ws.data.roles:
        out.update(_measure_gasp(prep, ws, sandbox, functools.partial(generate, new=gasp_max_new_tokens), fits,
                                 samples=samples, max_tasks=max_tasks, validation_config=validation_config,
                                 tokenizer=tokenizer if ws.chat else None))
    return out


def _measure_gasp(prep: Prepared, ws, sandbox, generate, fits, *, samples, max_tasks, validation_config,
                  tokenizer) -> dict:
    """GASP teacher rates, parsed exactly as GaspSource parses (induction, program written, N inputs):
    `gasp/lemma` on the trained lemma prompts, `gasp/lemma_unseen` on lemma prompts of pre-cutoff LCB
    statements the warm start never saw, `gasp/lift` on the trained lift prompts."""
    # Prompts only (lemma ~270, lift ~320 byte tokens): + the answer budget stays within a tiny model's 1024.
    limit, n = int(ws.data.gasp.max_length), int(ws.data.induction_inputs)
    seen = {r.record_id.split("@lcb:")[-1] for r in prep.rows if r.role == "lemma"}
    unseen = [(pid, text) for pid, text in lcb_statements(ws) if pid not in seen][:max_tasks]
    builder = teacher_prompts(ws)
    gold_keys = {tasks.record_key("induction", r) for r in prep.gasp_gold}
    sets = {
        "lemma": [r.prompt for r in prep.rows if r.role == "lemma"][:max_tasks],
        "lemma_unseen": [builder.lemma(text, AXES[i % 2], tokenizer)
                         for i, (_, text) in enumerate(unseen)],
        "lift": [r.prompt for r in prep.rows if r.role == "lift"][:max_tasks],
    }
    out = {}
    for name, prompts in sets.items():
        prompts = [p for p in prompts if fits(p, limit)]
        if not prompts:
            continue
        texts = generate(prompts, samples, limit)
        parsed = [tasks.parse_proposal("induction", t, program=None, num_inputs=n) for t in texts]
        ok = [("induction", p) for p in parsed if p]
        results = tasks.validate_proposals(sandbox, ok, config=validation_config) if ok else []
        valid = [v.record for v in results if v.ok]
        out[f"gasp/{name}"] = {
            "prompts": len(prompts), "proposals": len(texts), "parse_rate": _rate([bool(p) for p in parsed]),
            "valid_rate": len(valid) / len(texts),
            "novel_rate": sum(tasks.record_key("induction", r) not in gold_keys for r in valid) / len(texts),
            "infra_errors": sum(v.ok is None for v in results),
            "reasons": _top_reasons([v.reason for v in results if not v.ok]), "example": texts[0][:200]}
    return out


def _top_reasons(reasons: Sequence[str], k: int = 4) -> dict[str, int]:
    heads = [r.split(":")[0] for r in reasons]
    vals, counts = np.unique(heads, return_counts=True) if heads else ([], [])
    order = np.argsort(-np.asarray(counts))[:k] if heads else []
    return {str(vals[i]): int(counts[i]) for i in order}
