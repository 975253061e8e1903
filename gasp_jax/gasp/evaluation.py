"""Goalposts solved: a periodic pass@k evaluation of the student on the goalposts, with the LCB grader.

This is the LCB evaluation loop of ``gasp_jax.evaluation`` (``sample_and_grade``: LCB prompt, LCB code
extraction, sandbox grading with LCB verdicts, ``pass_at_k``) driven by the live student ``Policy``
instead of a checkpoint. A goalpost counts as *solved* when at least ``solved_min_correct`` of its
``num_samples`` samples pass every test (the selection criterion was pass@k = 0, i.e. no correct sample,
so one correct sample is the natural opposite).

Each evaluation writes ``<out_dir>/step_<step>/samples.jsonl`` (every completion and verdict) and
``<out_dir>/step_<step>.json`` (the report); the caller logs the report's scalars to TensorBoard.
The report's ``solved_union`` is the paper's "goalposts solved": distinct goalposts solved at this or any
earlier evaluation (``solved_before``, kept by ``GoalpostEvaluation``).

Two users: GASP's source (its active goalposts, then retirement) and, for every method, the periodic
evaluation (``evaluation.periodic.PeriodicEval``), which receives ``GoalpostsSolved`` from the hook table
(``selfplay/sources.py``): the evaluation package never imports GASP.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from gasp_jax import multihost
from gasp_jax.evaluation.common import write_json
from gasp_jax.evaluation.eval_job import usable_ks
from gasp_jax.evaluation.grading import Grader, SandboxGrader
from gasp_jax.evaluation.pass_at_k import pass_at_k, pass_at_k_table
from gasp_jax.evaluation.runner import GenerateFn, SampleStore, policy_generate_fn, sample_and_grade
from gasp_jax.gasp.goalposts import Goalpost, load_goalposts

log = logging.getLogger(__name__)


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


@dataclasses.dataclass(frozen=True)
class GoalpostSettings:
    """How one goalposts-solved evaluation samples and what counts as solved."""

    num_samples: int
    ks: tuple[int, ...]
    temperature: float
    max_new_tokens: int
    batch_problems: int = 4
    solved_min_correct: int = 1


class GoalpostEvaluation:
    """Goalposts solved by the live student at one evaluation, and the running union over evaluations.

    `__call__` samples `num_samples` programs per goalpost, grades them with the LCB grader, adds
    `solved_union` / `solved_union_count` (distinct goalposts solved at this or any earlier evaluation;
    never decreases) to the report, writes `<out_dir>/step_<N>.json` (process 0) and returns process 0's
    report on every process. `scalars` names them `<prefix>/solved_count`, `<prefix>/solved_union`, ...
    """

    def __init__(self, settings: GoalpostSettings, *, prefix: str, per_goalpost_prefix: str | None = None):
        self.settings = settings
        self.prefix = prefix
        self.per_goalpost_prefix = per_goalpost_prefix
        self.solved_union: set[str] = set()

    def __call__(self, ctx: Any, goalposts: Sequence[Goalpost], *, step: int, prompt_fn: Callable[[Any], str],
                 out_dir: str | os.PathLike) -> dict[str, Any]:
        s = self.settings
        generate_fn = policy_generate_fn(ctx.policies["student"], temperature=s.temperature,
                                                   max_new_tokens=s.max_new_tokens, next_key=ctx.next_key)
        out_dir = Path(out_dir)
        if not multihost.is_main():
            out_dir = out_dir / f"p{multihost.process_index()}"
        report = evaluate_goalposts(
            goalposts, step=step, generate_fn=generate_fn, prompt_fn=prompt_fn, grader=SandboxGrader(ctx.sandbox),
            out_dir=out_dir, num_samples=s.num_samples, ks=usable_ks(s.ks, s.num_samples),
            batch_problems=s.batch_problems, solved_min_correct=s.solved_min_correct,
            solved_before=self.solved_union)
        report = multihost.broadcast_object(report)
        self.solved_union.update(report["solved"])
        return report

    def scalars(self, report: dict[str, Any]) -> dict[str, float]:
        return report_scalars(report, prefix=self.prefix, per_goalpost_prefix=self.per_goalpost_prefix)

    def state_dict(self) -> dict:
        return {"solved_union": sorted(self.solved_union)}

    def load_state_dict(self, state: dict) -> None:
        self.solved_union = set(state.get("solved_union", ()))


def goalpost_settings(block: Any) -> GoalpostSettings:
    """`GoalpostSettings` from an `eval.goalposts` block."""
    return GoalpostSettings(num_samples=int(block.n), ks=tuple(int(k) for k in block.ks),
                            temperature=float(block.temperature), max_new_tokens=int(block.max_new_tokens),
                            batch_problems=int(block.batch_problems), solved_min_correct=int(block.solved_min_correct))




class GoalpostsSolved(GoalpostEvaluation):
    """The goalposts of an `eval.goalposts` block (`select`: GASP's goalposts block, loaded at set-up so a
    bad block fails before training) and their evaluation: what `PeriodicEval` reports for every method."""

    def __init__(self, block: Any, *, prefix: str, where: str = "eval.goalposts"):
        super().__init__(goalpost_settings(block), prefix=prefix)
        self.goalposts = load_goalposts(block.select, where=f"{where}.select").goalposts

    def __call__(self, ctx: Any, *, step: int, prompt_fn: Callable[[Any], str],
                 out_dir: str | os.PathLike) -> dict[str, Any]:
        return super().__call__(ctx, self.goalposts, step=step, prompt_fn=prompt_fn, out_dir=out_dir)
