"""HumanEval / MBPP+ evaluation (job ``code_eval``): the LCB job's loop on function benchmarks.

    python -m gasp_jax.main --config=configs/code_eval.py:humaneval --workdir=/tmp/he \
        --config.model.hf_path=/ckpt/model
    python -m gasp_jax.main --config=configs/code_eval.py:mbpp_plus --workdir=/tmp/mbpp

The same resumable sample -> extract -> grade runner as ``lcb_eval`` (``samples.jsonl``,
``run_meta.json``; a rerun reuses every finished problem), the same sampler and sandbox; prompts,
extraction, sanitising and the oracle are EvalPlus's (``function_tests``). Writes ``report.json``
(pass@k; MBPP+ has ``base`` = base inputs only and ``plus`` = base and plus inputs, the number
AZR reports as MBPP+), ``mbpp_plus_expected.json`` (the canonical outputs, computed once) and
TensorBoard scalars ``<benchmark>/pass_at_k`` (+ ``mbpp_plus/base/pass_at_k``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gasp_jax import multihost, profiling
from gasp_jax.data.humaneval import load_humaneval
from gasp_jax.data.livecodebench import LoadReport
from gasp_jax.data.mbpp import load_mbpp_plus
from gasp_jax.evaluation import function_tests as ft
from gasp_jax.evaluation.common import config_to_dict, limit_fields, open_sandbox, sandbox_limits, write_json
from gasp_jax.evaluation.eval_job import usable_ks
from gasp_jax.evaluation.generation import build_generate_fn, mesh_for
from gasp_jax.evaluation.pass_at_k import pass_at_k_table
from gasp_jax.evaluation.runner import GenerateFn, ProblemRecord, SampleStore, sample_and_grade

log = logging.getLogger(__name__)

BENCHMARKS = ("humaneval", "mbpp_plus")


def load_benchmark(data_cfg: Any, benchmark: str) -> tuple[list[ft.FunctionProblem], LoadReport]:
    """The problems of ``config.data`` (``path``, optional ``problem_ids`` / ``max_problems``)."""
    report = LoadReport()
    if benchmark == "humaneval":
        problems: list[Any] = load_humaneval(data_cfg.path, report=report)
    elif benchmark == "mbpp_plus":
        problems = load_mbpp_plus(data_cfg.path, report=report)
    else:
        raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {BENCHMARKS}")
    ids = tuple(data_cfg.get("problem_ids", ()) or ())
    if ids:
        missing = set(ids) - {p.id for p in problems}
        if missing:
            raise ValueError(f"problem ids not in {data_cfg.path}: {sorted(missing)}")
        problems = [p for p in problems if p.id in set(ids)]
    limit = int(data_cfg.get("max_problems", 0) or 0)
    if limit:
        problems = problems[:limit]
    log.info("%s: %d problems (%d rows read, %d skipped as bad)", benchmark, len(problems), report.rows_read, len(report.skipped))
    return problems, report


def fingerprint(config: Any) -> dict[str, Any]:
    """Settings that change the samples or their grades; a resumed run must match them."""
    path = Path(config.data.path)
    return {
        "benchmark": config.benchmark,
        "model": config_to_dict(config.model),
        "prompt": config_to_dict(config.prompt),
        "sampling": {k: v for k, v in config_to_dict(config.sampling).items() if k not in ("batch_problems", "max_rows")},
        "sandbox_limits": limit_fields(config_to_dict(config.sandbox).get("limits", {})),
        "data_file": [path.name, path.stat().st_size],
    }


def build_report(
    benchmark: str, problems: Sequence[ft.FunctionProblem], records: dict[str, ProblemRecord], ks: Sequence[int],
    *, load_report: LoadReport, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    graded = [p for p in problems if p.id in records and records[p.id].error is None]
    skipped = [{"problem_id": p.id, "reason": records[p.id].error} for p in problems if p.id in records and records[p.id].error]
    counts = {p.id: (records[p.id].n, records[p.id].correct) for p in graded}
    statuses: Counter[str] = Counter(g.status for p in graded for g in records[p.id].grades)
    report: dict[str, Any] = {
        "benchmark": benchmark,
        "ks": list(ks),
        "problems": {"selected": len(problems), "graded": len(graded), "skipped": len(skipped)},
        "pass_at_k": pass_at_k_table(counts, ks),
        "samples": {
            "judged": sum(n for n, _ in counts.values()),
            "correct": sum(c for _, c in counts.values()),
            "dropped_infra": sum(records[p.id].dropped for p in graded),
            "statuses": dict(sorted(statuses.items())),
        },
        "skipped_problems": skipped,
        "load": load_report.to_dict(),
        "per_problem": {p.id: {"n": records[p.id].n, "correct": records[p.id].correct, "statuses": records[p.id].status_counts()} for p in graded},
    }
    if benchmark == "mbpp_plus":
        base_counts = {}
        for p in graded:
            flags = [ft.base_passed(g) for g in records[p.id].grades]
            base_counts[p.id] = (sum(f is not None for f in flags), sum(f is True for f in flags))
            report["per_problem"][p.id]["base_correct"] = base_counts[p.id][1]
        report["base_pass_at_k"] = pass_at_k_table(base_counts, ks)
    report.update(extra or {})
    return report


def write_tensorboard(logdir: str | Path, report: dict[str, Any], step: int) -> None:
    from tensorboardX import SummaryWriter  # heavy (protobuf): loaded only when a report is written

    name = report["benchmark"]
    with SummaryWriter(str(logdir)) as writer:
        for table, prefix in (("pass_at_k", name), ("base_pass_at_k", f"{name}/base")):
            for key, value in report.get(table, {}).get("overall", {}).items():
                if key.startswith("pass@"):
                    writer.add_scalar(f"{prefix}/{key.replace('@', '_at_')}", value, step)


@contextlib.contextmanager
def _sandbox(config: Any, sandbox: Any) -> Iterator[Any]:
    if sandbox is not None:
        yield sandbox
    else:
        with open_sandbox(config.sandbox) as sb:
            yield sb


def run(config: Any, workdir: str, *, generate_fn: GenerateFn | None = None, tokenizer: Any = None,
        sandbox: Any = None) -> dict[str, Any]:
    """Evaluate ``config.benchmark`` as configured into ``workdir``; returns the report without
    per-problem entries (the full one is ``workdir/report.json``). ``generate_fn`` / ``tokenizer``
    replace the model from the config and ``sandbox`` an open ``Sandbox`` (shared by the protocol)."""
    t0 = time.monotonic()
    benchmark = config.benchmark
    workdir_path = Path(workdir)
    problems, load_report = load_benchmark(config.data, benchmark)
    n = int(config.sampling.n)
    ks = usable_ks(config.ks, n)
    style = config.prompt.style
    if generate_fn is None:
        generate_fn, tokenizer = build_generate_fn(config.model, config.sampling, mesh=mesh_for(config))
        generate_fn = profiling.profile_calls(generate_fn, config.get("profile"), name="code_eval",
                                              logdir=str(workdir_path / "tensorboard"))
    store = SampleStore(workdir_path)
    done = store.open(fingerprint(config), overwrite=bool(config.get("overwrite", False)), keep_samples=0)
    limits = sandbox_limits(config.sandbox.get("limits", {}) or {})
    with _sandbox(config, sandbox) as sb:
        expected = None
        if benchmark == "mbpp_plus":
            expected = ft.expected_outputs_cached(workdir_path / "mbpp_plus_expected.json", sb, problems, limits=limits)
        grader = ft.FunctionTestGrader(sb, style, expected=expected, limits=limits,
                                       infra_retries=int(config.sandbox.get("infra_retries", 1)))
        records = sample_and_grade(
            problems,
            prompt_fn=lambda p: ft.render_prompt(p, style, tokenizer=tokenizer),
            generate_fn=generate_fn,
            grader=grader,
            store=store,
            done=done,
            num_samples=n,
            batch_problems=int(config.sampling.get("batch_problems", 8)),
            extraction=ft.extractor(style, benchmark),
            label=benchmark,
            keep_samples=0,
        )
    report = build_report(benchmark, problems, records, ks, load_report=load_report,
                          extra={"n": n, "config": config_to_dict(config), "elapsed_s": time.monotonic() - t0})
    if multihost.is_main():  # every process holds the same gathered records; one writes
        write_json(workdir_path / "report.json", report)
        write_tensorboard(workdir_path / "tensorboard", report, int(config.get("step", 0)))
    overall = report["pass_at_k"]["overall"]
    log.info("%s: %s over %d problems -> %s", benchmark,
             ", ".join(f"{k}={v:.4f}" for k, v in overall.items() if k.startswith("pass@")) or "no pass@k defined",
             report["problems"]["graded"], workdir_path / "report.json")
    out = {k: v for k, v in report.items() if k not in ("per_problem", "config", "load")}
    out["report_path"] = str(workdir_path / "report.json")
    return out
