"""Goalpost selection job (job ``lcb_goalposts``): LCB problems no checkpoint ever solves.

GASP's goalposts are the LCB problems dated before 2024-08-01 with pass@100 = 0 for every checkpoint
of the selection RL runs. For each checkpoint in ``config.checkpoints`` this job samples
``config.sampling.n`` (>= k) completions per problem of the date window, grades them, and computes
pass@k per problem (k = ``config.k``, 100 by default). A problem is

  * ``solved``        if any checkpoint produced a correct sample (its pass@k > 0);
  * a ``goalpost``    if every checkpoint has >= k judged samples and none is correct (pass@k = 0);
  * ``undetermined``  otherwise (too few judged samples after infrastructure errors, or bad tests):
                      listed with the reason, never silently counted as a goalpost.

With ``config.skip_solved`` (default) a problem solved by an earlier checkpoint is not sampled again:
it can no longer become a goalpost. Workdir layout:

  checkpoints/<name>/samples.jsonl, run_meta.json   per-checkpoint samples + verdicts (resumable)
  goalposts.json                                    goalposts with per-checkpoint evidence, solved
                                                    and undetermined problems, load report
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gasp_jax import multihost, profiling
from gasp_jax.data.livecodebench import Problem
from gasp_jax.evaluation.common import (
    config_to_dict, load_config_problems, make_prompt_fn, open_sandbox, run_fingerprint, write_json,
)
from gasp_jax.evaluation.generation import build_generate_fn, mesh_for
from gasp_jax.evaluation.grading import Grader, SandboxGrader
from gasp_jax.evaluation.pass_at_k import pass_at_k
from gasp_jax.evaluation.runner import GenerateFn, ProblemRecord, SampleStore, sample_and_grade

log = logging.getLogger(__name__)

GenerateFnFactory = Callable[[Any], tuple[GenerateFn, Any]]
"""``factory(checkpoint_cfg) -> (generate_fn, tokenizer)``; the default builds our sampler."""


def checkpoint_name(ckpt_cfg: Any, index: int) -> str:
    """A filesystem-safe, unique-by-position name for a checkpoint entry."""
    name = ckpt_cfg.get("name") or Path(str(ckpt_cfg.get("hf_path") or ckpt_cfg.get("preset") or "ckpt")).name
    return f"{index:02d}_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _default_factory(config: Any) -> GenerateFnFactory:
    def factory(ckpt_cfg: Any) -> tuple[GenerateFn, Any]:
        return build_generate_fn(ckpt_cfg, config.sampling, mesh=mesh_for(config))

    return factory


def classify(
    problems: Sequence[Problem],
    per_ckpt: Mapping[str, Mapping[str, ProblemRecord]],
    k: int,
) -> tuple[list[str], dict[str, dict[str, Any]], dict[str, str]]:
    """Split problems into (goalpost ids, solved id -> {by, correct, n}, undetermined id -> reason)."""
    goalposts: list[str] = []
    solved: dict[str, dict[str, Any]] = {}
    undetermined: dict[str, str] = {}
    for p in problems:
        reasons = []
        for name, records in per_ckpt.items():
            rec = records.get(p.id)
            if rec is None:
                if p.id not in solved:
                    reasons.append(f"{name}: not sampled")
                continue
            if rec.error:
                reasons.append(f"{name}: {rec.error}")
            elif rec.correct > 0:
                solved.setdefault(p.id, {"by": name, "correct": rec.correct, "n": rec.n})
            elif rec.n < k:
                reasons.append(f"{name}: only {rec.n} judged samples < k={k} ({rec.dropped} dropped)")
        if p.id in solved:
            continue
        if reasons:
            undetermined[p.id] = "; ".join(reasons)
        else:
            goalposts.append(p.id)
    return goalposts, solved, undetermined


def _evidence(p: Problem, per_ckpt: Mapping[str, Mapping[str, ProblemRecord]], k: int, samples_inline: int) -> dict[str, Any]:
    ev = {}
    for name, records in per_ckpt.items():
        rec = records[p.id]
        ev[name] = {
            "n": rec.n,
            "correct": rec.correct,
            f"pass@{k}": pass_at_k(rec.n, rec.correct, k),
            "dropped": rec.dropped,
            "statuses": rec.status_counts(),
            "samples_file": f"checkpoints/{name}/samples.jsonl",
            "sample_codes": rec.codes[:samples_inline],
        }
    return ev


def run(
    config: Any,
    workdir: str,
    *,
    generate_fn_factory: GenerateFnFactory | None = None,
    grader: Grader | None = None,
) -> dict[str, Any]:
    """Select goalposts as configured into ``workdir/goalposts.json``; returns a compact summary."""
    t0 = time.monotonic()
    workdir_path = Path(workdir)
    k = int(config.k)
    n = int(config.sampling.n)
    if n < k:
        raise ValueError(f"goalposts need pass@{k}: config.sampling.n={n} must be >= k")
    checkpoints = list(config.checkpoints)
    if not checkpoints:
        raise ValueError("config.checkpoints is empty")
    names = [checkpoint_name(c, i) for i, c in enumerate(checkpoints)]
    problems, load_report, window = load_config_problems(config.data)
    factory = generate_fn_factory or _default_factory(config)
    skip_solved = bool(config.get("skip_solved", True))
    samples_inline = int(config.get("evidence_samples", 2))

    per_ckpt: dict[str, dict[str, ProblemRecord]] = {}

    def sample_all(grade: Grader) -> None:
        solved_ids: set[str] = set()
        for name, ckpt_cfg in zip(names, checkpoints):
            store = SampleStore(workdir_path / "checkpoints" / name)
            done = store.open(
                run_fingerprint(config, ckpt_cfg), overwrite=bool(config.get("overwrite", False)), keep_samples=samples_inline
            )
            todo = [p for p in problems if not (skip_solved and p.id in solved_ids)]
            if all(p.id in done for p in todo):
                log.info("lcb_goalposts: %s already complete (%d problems), not loading it", name, len(todo))
                records = {p.id: done[p.id] for p in todo}
            else:
                generate_fn, tokenizer = factory(ckpt_cfg)
                if generate_fn_factory is None:  # the sampler: each checkpoint's calls start_step.. traced
                    generate_fn = profiling.profile_calls(generate_fn, config.get("profile"), name="lcb_goalposts",
                                                          logdir=str(workdir_path / "tensorboard"))
                records = sample_and_grade(
                    todo,
                    prompt_fn=make_prompt_fn(config.prompt, tokenizer),
                    generate_fn=generate_fn,
                    grader=grade,
                    store=store,
                    done=done,
                    num_samples=n,
                    batch_problems=int(config.sampling.get("batch_problems", 4)),
                    extraction=config.extraction,
                    label=f"lcb_goalposts[{name}]",
                    keep_samples=samples_inline,
                )
            per_ckpt[name] = records
            solved_ids.update(pid for pid, r in records.items() if r.correct > 0)
            log.info("lcb_goalposts: after %s, %d/%d problems solved by some checkpoint", name, len(solved_ids), len(problems))

    if grader is None:
        with open_sandbox(config.sandbox) as sb:
            sample_all(SandboxGrader(sb, infra_retries=int(config.sandbox.get("infra_retries", 1))))
    else:
        sample_all(grader)

    goal_ids, solved, undetermined = classify(problems, per_ckpt, k)
    by_id = {p.id: p for p in problems}
    result = {
        "k": k,
        "n": n,
        "window": str(window),
        "checkpoints": {name: config_to_dict(c) for name, c in zip(names, checkpoints)},
        "summary": {
            "problems": len(problems),
            "goalposts": len(goal_ids),
            "solved": len(solved),
            "undetermined": len(undetermined),
            "bad_rows_skipped": len(load_report.skipped),
        },
        "goalpost_ids": goal_ids,
        "goalposts": [
            {
                "question_id": pid,
                "title": by_id[pid].title,
                "date": by_id[pid].date.isoformat(),
                "difficulty": by_id[pid].difficulty,
                "platform": by_id[pid].platform,
                "evidence": _evidence(by_id[pid], per_ckpt, k, samples_inline),
            }
            for pid in goal_ids
        ],
        "solved": solved,
        "undetermined": undetermined,
        "load": load_report.to_dict(),
        "elapsed_s": time.monotonic() - t0,
    }
    if multihost.is_main():  # every process holds the same gathered records; one writes
        write_json(workdir_path / "goalposts.json", result)
    log.info(
        "lcb_goalposts: %d goalposts (pass@%d = 0 for all %d checkpoints), %d solved, %d undetermined -> %s",
        len(goal_ids), k, len(names), len(solved), len(undetermined), workdir_path / "goalposts.json",
    )
    return {
        "summary": result["summary"],
        "goalpost_ids": goal_ids,
        "undetermined": undetermined,
        "path": str(workdir_path / "goalposts.json"),
    }
