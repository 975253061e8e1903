"""Goalposts solved: a periodic pass@k evaluation of the student on the goalposts, with the LCB grader.

This is the LCB evaluation loop of ``gasp_jax.evaluation`` (``sample_and_grade``: LCB prompt, LCB code
extraction, sandbox grading with LCB verdicts, ``pass_at_k``) driven by the live student ``Policy``
instead of a checkpoint. A goalpost counts as *solved* when at least ``solved_min_correct`` of its
``num_samples`` samples pass every test (the selection criterion was pass@k = 0, i.e. no correct sample,
so one correct sample is the natural opposite).

Each evaluation writes ``<out_dir>/step_<step>/samples.jsonl`` (every completion and verdict) and
``<out_dir>/step_<step>.json`` (the report); the caller logs the report's scalars to TensorBoard.
The report's ``solved_union`` is the paper's "goalposts solved": distinct goalposts solved at this or any
earlier evaluation (``solved_before``, kept by ``evaluation.periodic.GoalpostEvaluation``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from gasp_jax.evaluation.common import write_json
from gasp_jax.evaluation.grading import Grader
from gasp_jax.evaluation.pass_at_k import pass_at_k, pass_at_k_table
from gasp_jax.evaluation.runner import GenerateFn, SampleStore, sample_and_grade
from gasp_jax.gasp.goalposts import Goalpost

log = logging.getLogger(__name__)


def policy_generate_fn(policy: Any, *, temperature: float, max_new_tokens: int, next_key: Callable[[], Any]) -> GenerateFn:
    """``generate_fn(prompts, n)`` for the LCB runner on top of a trainer ``Policy`` (prompt-major rows)."""
    def generate(prompts: list[str], n: int) -> list[list[str]]:
        completions = policy.generate(prompts, num_samples=n, temperature=temperature,
                                      max_new_tokens=max_new_tokens, rng=next_key())
        texts = [c.text for c in completions]
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]

    return generate


def goalpost_report(goalposts: Sequence[Goalpost], records: dict[str, Any], ks: Sequence[int], *,
                    step: int, solved_min_correct: int = 1, solved_before: Iterable[str] = ()) -> dict[str, Any]:
    """Per-goalpost and total pass@k, which goalposts are solved, and the union with ``solved_before``."""
    per: dict[str, dict[str, Any]] = {}
    counts = {}
    for g in goalposts:
        rec = records.get(g.id)
        if rec is None or rec.error:
            per[g.id] = {"title": g.title, "error": rec.error if rec else "not evaluated", "solved": False}
            continue
        counts[g.id] = (rec.n, rec.correct)
        entry = {"title": g.title, "n": rec.n, "correct": rec.correct, "dropped": rec.dropped,
                 "statuses": rec.status_counts(), "solved": rec.correct >= solved_min_correct}
        entry.update({f"pass@{k}": pass_at_k(rec.n, rec.correct, k) for k in ks if 1 <= k <= rec.n})
        per[g.id] = entry
    solved = sorted(gid for gid, e in per.items() if e["solved"])
    union = sorted(set(solved).union(solved_before))
    return {
        "step": step,
        "ks": list(ks),
        "goalposts": len(goalposts),
        "solved": solved,
        "solved_count": len(solved),
        "solved_union": union,
        "solved_union_count": len(union),
        "pass_at_k": pass_at_k_table(counts, ks)["overall"],
        "per_goalpost": per,
    }


def evaluate_goalposts(
    goalposts: Sequence[Goalpost],
    *,
    step: int,
    generate_fn: GenerateFn,
    prompt_fn: Callable[[Any], str],
    grader: Grader,
    out_dir: str | Path,
    num_samples: int,
    ks: Sequence[int],
    batch_problems: int = 4,
    solved_min_correct: int = 1,
    solved_before: Iterable[str] = (),
) -> dict[str, Any]:
    """Sample ``num_samples`` programs per goalpost, grade them with the LCB grader, write the report."""
    out_dir = Path(out_dir)
    store = SampleStore(out_dir / f"step_{step:06d}")
    store.open({"step": step, "num_samples": num_samples}, overwrite=True)
    records = sample_and_grade(
        [g.problem for g in goalposts],
        prompt_fn=prompt_fn,
        generate_fn=generate_fn,
        grader=grader,
        store=store,
        done={},
        num_samples=num_samples,
        batch_problems=batch_problems,
        extraction="lcb",
        label=f"goalposts@{step}",
        keep_samples=0,
    )
    report = goalpost_report(goalposts, records, ks, step=step, solved_min_correct=solved_min_correct,
                             solved_before=solved_before)
    write_json(out_dir / f"step_{step:06d}.json", report)
    log.info("goalposts@%d: %d/%d solved (%d at any evaluation), pass@k %s", step, report["solved_count"],
             len(goalposts), report["solved_union_count"],
             {k: round(v, 4) for k, v in report["pass_at_k"].items() if k.startswith("pass@")})
    return report


def report_scalars(report: dict[str, Any], *, prefix: str = "gasp/goalposts",
                   per_goalpost_prefix: str | None = "gasp/goalpost") -> dict[str, float]:
    """TensorBoard scalars of one evaluation: totals under ``<prefix>/`` (``solved_count`` at this
    evaluation, ``solved_union`` at any so far, ``solved_frac``, ``pass_at_<k>``), per goalpost under
    ``<per_goalpost_prefix>/<id>/`` (None: none)."""
    out = {f"{prefix}/solved_count": float(report["solved_count"]),
           f"{prefix}/solved_union": float(report["solved_union_count"]),
           f"{prefix}/solved_frac": report["solved_count"] / max(1, report["goalposts"])}
    for key, value in report["pass_at_k"].items():
        if key.startswith("pass@"):
            out[f"{prefix}/{key.replace('@', '_at_')}"] = float(value)
    if per_goalpost_prefix:
        for gid, entry in report["per_goalpost"].items():
            for key, value in entry.items():
                if key.startswith("pass@"):
                    out[f"{per_goalpost_prefix}/{gid}/{key.replace('@', '_at_')}"] = float(value)
    return out
