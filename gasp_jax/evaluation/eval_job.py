"""LCB evaluation job: sample n completions per problem, grade, report pass@k (job ``lcb_eval``).

    python -m gasp_jax.main --config=configs/lcb_eval.py --workdir=/tmp/lcb_eval \
        --config.model.hf_path=/ckpt/Qwen2.5-Coder-1.5B-Instruct

Writes into ``workdir``:
  * ``samples.jsonl``  one line per problem: completions, extracted code, verdicts (resume state);
  * ``run_meta.json``  the settings the samples were drawn with (a resumed run must match);
  * ``report.json``    pass@k overall / per difficulty / per platform, per-problem counts, skipped
                       rows and problems, verdict histogram;
  * ``lcb_eval_all.json`` the samples in LCB's ``eval_all`` layout (graded_list, metadata error codes),
                       for LCB's own scoring scripts;
  * ``tensorboard/``   the pass@k scalars (tensorboardX; tags lcb/pass_at_k, ...), at step ``config.step``.
Re-running with the same workdir reuses every finished problem and samples only the rest.

Multi-host (one process per host, ``jax.distributed``): every process samples the same global batches
on the shared mesh, grades its share of each batch in its own sandbox, and receives everyone's grades
(``runner.sample_and_grade``); only process 0 writes the files above.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gasp_jax import multihost, profiling
from gasp_jax.data.livecodebench import DateWindow, LoadReport, Problem
from gasp_jax.evaluation.common import (
    config_to_dict, load_config_problems, make_prompt_fn, open_sandbox, run_fingerprint, write_json,
)
from gasp_jax.evaluation.generation import build_generate_fn, mesh_for
from gasp_jax.evaluation.grading import Grader, SandboxGrader
from gasp_jax.evaluation.pass_at_k import pass_at_k, pass_at_k_table
from gasp_jax.evaluation.runner import GenerateFn, ProblemRecord, SampleStore, sample_and_grade

log = logging.getLogger(__name__)


def usable_ks(ks: Sequence[int], n: int) -> list[int]:
    """The requested k values that pass@k is defined for with n samples (k <= n)."""
    ks = sorted({int(k) for k in ks})
    dropped = [k for k in ks if k > n or k < 1]
    if dropped:
        log.warning("pass@k not reported for k=%s: needs 1 <= k <= n=%d", dropped, n)
    return [k for k in ks if 1 <= k <= n]


def eval_fingerprint(config: Any) -> dict[str, Any]:
    """Settings that change the samples or their grades; a resumed run must match them."""
    return run_fingerprint(config, config.model)


def build_report(
    problems: Sequence[Problem],
    records: dict[str, ProblemRecord],
    ks: Sequence[int],
    *,
    load_report: LoadReport,
    window: DateWindow,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report: pass@k tables, per-problem results, everything skipped and why."""
    graded = [p for p in problems if p.id in records and records[p.id].error is None]
    skipped = [{"problem_id": p.id, "reason": records[p.id].error} for p in problems if p.id in records and records[p.id].error]
    counts = {p.id: (records[p.id].n, records[p.id].correct) for p in graded}
    # Problems whose every sample was dropped (n == 0) cannot enter pass@k; they count as excluded.
    table = pass_at_k_table(
        counts,
        ks,
        groups={"difficulty": {p.id: p.difficulty for p in graded}, "platform": {p.id: p.platform for p in graded}},
    )
    statuses: Counter[str] = Counter()
    lcb_codes: Counter[str] = Counter()
    for p in graded:
        statuses.update(g.status for g in records[p.id].grades)
        lcb_codes.update("True" if g.passed else str(g.lcb_code) for g in records[p.id].grades)
    per_problem = {}
    for p in graded:
        r = records[p.id]
        entry = {
            "difficulty": p.difficulty,
            "platform": p.platform,
            "date": p.date.isoformat(),
            "n": r.n,
            "correct": r.correct,
            "dropped": r.dropped,
            "statuses": r.status_counts(),
        }
        entry.update({f"pass@{k}": pass_at_k(r.n, r.correct, k) for k in ks if r.n >= k})
        per_problem[p.id] = entry
    return {
        "window": str(window),
        "ks": list(ks),
        "problems": {"selected": len(problems), "graded": len(graded), "skipped": len(skipped)},
        "pass_at_k": table,
        "samples": {
            "judged": sum(r[0] for r in counts.values()),
            "correct": sum(r[1] for r in counts.values()),
            "dropped_infra": sum(records[p.id].dropped for p in graded),
            "statuses": dict(sorted(statuses.items())),
            "lcb_codes": dict(sorted(lcb_codes.items())),  # LCB's result codes (True, -2 WA, -3 TLE, -4 RE, -5)
        },
        "skipped_problems": skipped,
        "load": load_report.to_dict(),
        "per_problem": per_problem,
        **(extra or {}),
    }


def write_lcb_eval_all(path: Path, problems: Sequence[Problem], store: SampleStore) -> int:
    """Write the samples in LCB's ``*_eval_all.json`` layout (for LCB's own scoring scripts).

    One row per graded problem: the problem fields, ``output_list``, ``code_list``, ``graded_list``,
    ``pass@1`` and per-sample ``metadata`` JSON strings (``{"error_code": c, "status": s}`` on a
    failure, ``{}`` on a pass). Dropped samples (infrastructure errors) are left out, as in our
    pass@k. Streams ``samples.jsonl``, so memory stays bounded. Returns the number of rows.
    """
    by_id = {p.id: p for p in problems}
    latest: dict[str, int] = {}
    for end, rec in store.iter_records():
        latest[rec.question_id] = end
    tmp = path.with_suffix(".tmp")
    rows = 0
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("[")
        for end, rec in store.iter_records():
            p = by_id.get(rec.question_id)
            if p is None or rec.error or latest[rec.question_id] != end or rec.n == 0:
                continue
            keep = [i for i, g in enumerate(rec.grades) if g.passed is not None]
            graded = [bool(rec.grades[i].passed) for i in keep]
            row = {
                "question_title": p.title,
                "question_content": p.statement,
                "platform": p.platform,
                "question_id": p.id,
                "contest_id": p.contest_id,
                "contest_date": p.date.isoformat(),
                "starter_code": p.starter_code,
                "difficulty": p.difficulty,
                "output_list": [rec.completions[i] for i in keep],
                "code_list": [rec.codes[i] for i in keep],
                "graded_list": graded,
                "pass@1": sum(graded) / len(graded),
                "metadata": [
                    "{}" if rec.grades[i].passed else json.dumps({"error_code": rec.grades[i].lcb_code, "status": rec.grades[i].status})
                    for i in keep
                ],
            }
            f.write((",\n" if rows else "\n") + json.dumps(row, ensure_ascii=False))
            rows += 1
        f.write("\n]\n")
    os.replace(tmp, path)
    return rows


def write_tensorboard(logdir: str | Path, table: dict[str, Any], step: int, prefix: str = "lcb") -> None:
    """pass@k scalars ``lcb/pass_at_k``, ``lcb/difficulty/<d>/pass_at_k``, ``lcb/platform/<p>/pass_at_k``.

    ('@' is not a legal TensorBoard tag character.)
    """
    from tensorboardX import SummaryWriter  # heavy (protobuf): loaded only when a report is written

    def scalars(leaf: dict[str, Any]) -> list[tuple[str, float]]:
        return [(key.replace("@", "_at_"), value) for key, value in leaf.items() if key.startswith("pass@")]

    with SummaryWriter(str(logdir)) as writer:
        for tag, value in scalars(table["overall"]):
            writer.add_scalar(f"{prefix}/{tag}", value, step)
        for group in ("difficulty", "platform"):
            for name, leaf in table.get(group, {}).items():
                for tag, value in scalars(leaf):
                    writer.add_scalar(f"{prefix}/{group}/{name}/{tag}", value, step)


def _summary_line(table: dict[str, Any]) -> str:
    overall = table["overall"]
    return ", ".join(f"{k}={v:.4f}" for k, v in overall.items() if k.startswith("pass@")) or "no pass@k defined"


def run(
    config: Any,
    workdir: str,
    *,
    generate_fn: GenerateFn | None = None,
    tokenizer: Any = None,
    grader: Grader | None = None,
) -> dict[str, Any]:
    """Run the evaluation described by ``config`` into ``workdir``.

    Returns a compact summary (the report without per-problem entries and config); the full
    report is ``workdir/report.json``.

    ``generate_fn`` / ``tokenizer`` / ``grader`` replace the model and sandbox built from the config
    (tests use a fake generator).
    """
    t0 = time.monotonic()
    workdir_path = Path(workdir)
    problems, load_report, window = load_config_problems(config.data)
    n = int(config.sampling.n)
    ks = usable_ks(config.ks, n)
    if generate_fn is None:
        generate_fn, tokenizer = build_generate_fn(config.model, config.sampling, mesh=mesh_for(config))
        generate_fn = profiling.profile_calls(generate_fn, config.get("profile"), name="lcb_eval",
                                              logdir=str(workdir_path / "tensorboard"))
    prompt_fn = make_prompt_fn(config.prompt, tokenizer)
    store = SampleStore(workdir_path)
    # The report needs counts only; completions stay on disk (samples.jsonl).
    done = store.open(eval_fingerprint(config), overwrite=bool(config.get("overwrite", False)), keep_samples=0)

    def go(grade: Grader) -> dict[str, ProblemRecord]:
        return sample_and_grade(
            problems,
            prompt_fn=prompt_fn,
            generate_fn=generate_fn,
            grader=grade,
            store=store,
            done=done,
            num_samples=n,
            batch_problems=int(config.sampling.get("batch_problems", 8)),
            extraction=config.extraction,
            label="lcb_eval",
            keep_samples=0,
        )

    if grader is None:
        with open_sandbox(config.sandbox) as sb:
            records = go(SandboxGrader(sb, infra_retries=int(config.sandbox.get("infra_retries", 1))))
    else:
        records = go(grader)

    report = build_report(
        problems,
        records,
        ks,
        load_report=load_report,
        window=window,
        extra={"n": n, "config": config_to_dict(config), "elapsed_s": time.monotonic() - t0},
    )
    if multihost.is_main():  # every process holds the same gathered records; one writes
        write_json(workdir_path / "report.json", report)
        write_lcb_eval_all(workdir_path / "lcb_eval_all.json", problems, store)
        write_tensorboard(workdir_path / "tensorboard", report["pass_at_k"], int(config.get("step", 0)))
    log.info("lcb_eval: %s over %d problems -> %s", _summary_line(report["pass_at_k"]), report["problems"]["graded"], workdir_path / "report.json")
    return summarize(report, workdir_path / "report.json")


def summarize(report: dict[str, Any], path: Path) -> dict[str, Any]:
    """The report without its bulky parts (what the entry point logs)."""
    out = {k: v for k, v in report.items() if k not in ("per_problem", "config", "load")}
    out["load"] = {k: v for k, v in report["load"].items() if k != "skipped_rows"}
    out["report_path"] = str(path)
    return out
