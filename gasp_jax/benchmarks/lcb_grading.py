"""Benchmark: grade the official O1-Mini LiveCodeBench samples with our sandbox on public tests.

    python -m gasp_jax.benchmarks.lcb_grading [--workers N] [--limit N] [--out report.json]

Reports problems/s on this machine (sandbox start-up excluded and reported apart) and the agreement
with the official LCB verdicts. Every officially passing sample must pass ours (the official run used
public + private tests, a superset of ours); officially failing samples that pass ours are split into
"failed officially on a public test" (a real disagreement, listed) and "failed on a private test or
unknown" (expected: private tests are not in the shipped sample).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from typing import Any

from gasp_jax.data.livecodebench import LoadReport, load_problems
from gasp_jax.data import paths
from gasp_jax.evaluation.common import open_sandbox, write_json
from gasp_jax.evaluation.grading import SampleGrade, SandboxGrader
from gasp_jax.evaluation.official import compare, load_official

log = logging.getLogger("gasp_jax.benchmarks.lcb_grading")



def machine() -> str:
    return f"{platform.node() or 'host'}: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def grade_official(
    official_path: str, problems_path: str, *, workers: int, limit: int = 0, chunk: int = 64, sandbox_limits: dict | None = None
) -> dict[str, Any]:
    """Grade the official samples on the problems' tests; timing and agreement in one dict."""
    report = LoadReport()
    problems = {p.id: p for p in load_problems(problems_path, report=report)}
    samples = load_official(official_path)
    if limit:
        samples = samples[:limit]
    by_problem: dict[str, list] = {}
    for s in samples:
        if s.question_id in problems:
            by_problem.setdefault(s.question_id, []).append(s)
    items = [(problems[qid], problems[qid].tests, [s.code for s in ss]) for qid, ss in by_problem.items()]
    grades: dict[tuple[str, int], SampleGrade] = {}
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    with open_sandbox({"workers": workers, "limits": sandbox_limits or {}}) as sb:
        startup_s = time.perf_counter() - t_start
        grader = SandboxGrader(sb, infra_retries=1)
        t0 = time.perf_counter()
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            for (problem, _, _), result in zip(part, grader.grade_batch(part)):
                if isinstance(result, Exception):
                    log.warning("%s: not graded: %s", problem.id, result)
                    continue
                for s, g in zip(by_problem[problem.id], result):
                    grades[s.question_id, s.index] = g
            done = min(start + chunk, len(items))
            log.info("graded %d/%d problems (%.1f problems/s)", done, len(items), done / (time.perf_counter() - t0))
        grade_s = time.perf_counter() - t0
    result = compare(samples, problems, grades)
    n_tests = sum(len(t) for _, t, _ in items)
    by_cpu = sorted(((g.cpu_s, qid, g.status) for (qid, _), g in grades.items()), reverse=True)
    return {
        "machine": machine(),
        "workers": workers,
        "problems_graded": len(items),
        "samples_graded": len(grades),
        "tests_run_max": n_tests,
        "sandbox_startup_s": startup_s,
        "grading_s": grade_s,
        "problems_per_s": len(items) / grade_s if grade_s else None,
        "samples_per_s": len(grades) / grade_s if grade_s else None,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "program_cpu_s_total": sum(c for c, _, _ in by_cpu),
        "program_cpu_s_top5": [[qid, status, round(c, 2)] for c, qid, status in by_cpu[:5]],
        "skipped_rows": [s.problem_id for s in report.skipped],
        **result,
    }


def summary(r: dict[str, Any]) -> str:
    lines = [
        f"machine: {r['machine']} (sandbox workers: {r['workers']}; 1-min load average before/after: "
        f"{r['load_average_1min']})",
        f"graded {r['samples_graded']} samples of {r['problems_graded']} problems in {r['grading_s']:.1f} s "
        f"-> {r['problems_per_s']:.2f} problems/s (sandbox start-up {r['sandbox_startup_s']:.2f} s excluded)",
        f"CPU used by the programs themselves: {r['program_cpu_s_total']:.1f} s "
        f"(slowest: {r['program_cpu_s_top5']}) of {r['workers']} x {r['grading_s']:.1f} s worker time",
        f"skipped rows (no tests): {r['skipped_rows']}",
        f"agreement with the official verdicts: {r['agreement']:.4f} over {r['graded']} samples; on the "
        f"{r['decidable_on_public_tests']} samples decidable on public tests: {r['agreement_decidable']:.4f} "
        f"({r['agreement_decidable_after_harness_false_negatives']:.4f} counting known official-harness false negatives)",
        f"confusion: {json.dumps(r['confusion'])}",
        f"official PASS, ours not ({len(r['official_pass_we_fail'])}): "
        + json.dumps([(e["question_id"], e["ours"], e["message"][:120]) for e in r["official_pass_we_fail"]]),
        f"official FAIL on a public test, ours PASS ({len(r['official_fail_we_pass_on_public_test'])}):",
        *(
            f"  {e['question_id']} (official {e['official_code']}): {e['likely_harness_false_negative'] or 'UNEXPLAINED'}"
            for e in r["official_fail_we_pass_on_public_test"]
        ),
        f"official FAIL on a private/unknown test, ours PASS: {len(r['official_fail_we_pass_private_or_unknown'])}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", default="", help="an eval_all file (default: the shipped O1-Mini submission)")
    ap.add_argument("--problems", default="", help="LCB problems (default: the shipped release_v5 public tests)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--limit", type=int, default=0, help="grade only the first N official samples")
    ap.add_argument("--chunk", type=int, default=64, help="problems per grade_many call")
    ap.add_argument("--out", default="", help="write the full JSON report here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s] %(message)s", stream=sys.stdout)
    official = args.official or str(paths.data_file(paths.LCB_O1_SUBMISSION))
    problems = args.problems or str(paths.data_file(paths.LCB_PUBLIC_V5))
    result = grade_official(official, problems, workers=args.workers, limit=args.limit, chunk=args.chunk)
    print(summary(result))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
