"""RLVR benchmarks: grading throughput inside the LCB source vs standalone, and a run's phase breakdown.

    python -m gasp_jax.rlvr.benchmark grading [--problems 24] [--samples 4] [--steps 3] [--workers 2] [--exclude=id,...]
    python -m gasp_jax.rlvr.benchmark phases --workdir=runs/rlvr_tiny

`grading`: the official O1-Mini LCB programs of the first `--problems` training-window problems, graded
(a) inside training, through `LcbSource.collect` driven by a scripted policy that answers each problem
with its official program `--samples` times (extraction, the process-sharded host thread, episodes), and
(b) standalone, through `SandboxGrader.grade_batch` on the same programs (what
`gasp_jax.benchmarks.lcb_grading` measures), on one sandbox. Reports programs/s of both.

`phases`: mean seconds per iteration of an RLVR run's phases (generation, sandbox wait, update,
evaluation, checkpoint), first iteration (compilation) apart, from its `tb/metrics.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from gasp_jax import config_files
from gasp_jax.data import paths
from gasp_jax.evaluation.grading import SandboxGrader
from gasp_jax.rlvr.source import LcbSource
from gasp_jax.sandbox import Limits, Sandbox
from gasp_jax.selfplay.policy import ScriptedPolicy
from gasp_jax.selfplay.types import RolloutContext, Timers
from gasp_jax.tokenizer import build_byte_tokenizer


def grading(problems: int, samples: int, steps: int, workers: int, exclude: tuple[str, ...] = (), *,
            config_path: str = "configs/rlvr.py:tiny") -> dict:
    official = {r["question_id"]: r["code_list"][0] for r in paths.read_json(paths.data_file(paths.LCB_O1_SUBMISSION))}
    config = config_files.load(config_path)
    config.init.warmstart.enabled = False
    config.sampling.max_cache_length = 0  # scripted answers: no KV cache bound on the prompts
    s = config.sources.lcb
    s.data.problem_ids = ()
    s.data.max_problems = problems + len(exclude)
    s.problems_per_step = problems
    s.samples_per_problem = samples
    s.max_prompt_tokens = 0
    s.limits.cpu_s = 6.0
    source = LcbSource("lcb", s, config)
    for pid in exclude:  # e.g. a problem whose official program times out: its wall-clock kills dominate
        source.problems.pop(pid, None)
    source.problems = dict(sorted(source.problems.items())[:problems])
    statements = {pid: p.statement[:200] for pid, p in source.problems.items()}

    def answer(prompt: str, j: int) -> str:
        pid = next(p for p, text in statements.items() if text in prompt)
        return f"```python\n{official[pid]}\n```"

    policy = ScriptedPolicy(build_byte_tokenizer(), answer, max_new_tokens=1 << 20)
    load = [round(os.getloadavg()[0], 2)]
    with Sandbox(workers=workers, limits=Limits(cpu_s=6.0)) as sb:
        inside = []
        for step in range(steps):
            source.epoch, source.cursor = 0, 0  # the same problems every step
            timers = Timers()
            ctx = RolloutContext(step=step, rng=np.random.default_rng(step), key=jax.random.key(step),
                                 policies={"teacher": policy, "student": policy}, sandbox=sb, timers=timers,
                                 config=config, source_config=s)
            t0 = time.perf_counter()
            result = source.collect(ctx)
            wall = time.perf_counter() - t0
            inside.append({"collect_s": wall, "grade_s": result.scalars["lcb/grade_s"],
                           "programs_per_s": result.scalars["lcb/grade_programs_per_s"],
                           "pass_rate": result.scalars["lcb/solve/pass_rate"]})
        grader = SandboxGrader(sb)
        items = [(p, p.tests, [official[pid]] * samples) for pid, p in sorted(source.problems.items())]
        standalone = []
        for _ in range(steps):
            t0 = time.perf_counter()
            grades = grader.grade_batch(items)
            wall = time.perf_counter() - t0
            standalone.append({"grade_s": wall, "programs_per_s": problems * samples / wall,
                               "pass_rate": float(np.mean([g.passed for gs in grades for g in gs]))})
    load.append(round(os.getloadavg()[0], 2))
    return {"problems": problems, "samples": samples, "programs_per_step": problems * samples, "workers": workers,
            "load_average_1min": load, "inside_training": inside, "standalone": standalone,
            "inside_programs_per_s_median": float(np.median([r["programs_per_s"] for r in inside])),
            "standalone_programs_per_s_median": float(np.median([r["programs_per_s"] for r in standalone]))}


PHASES = ("time/student_generate_s", "time/sandbox_wait_s", "lcb/grade_s", "time/update_s", "time/reshard_s",
          "time/eval_s", "time/checkpoint_s", "time/iteration_s", "time/compile_s")


def phases(workdir: str) -> dict:
    rows = [json.loads(line) for line in open(Path(workdir) / "tb" / "metrics.jsonl")]
    if not rows:
        raise ValueError(f"{workdir}: no metrics")
    out = {"iterations": len(rows), "first": {k: rows[0].get(k) for k in PHASES if k in rows[0]}}
    rest = rows[1:]
    if rest:
        out["mean_after_first"] = {k: float(np.mean([r.get(k, 0.0) for r in rest])) for k in PHASES
                                   if any(k in r for r in rest)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("grading", "phases"))
    ap.add_argument("--problems", type=int, default=24)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", default="")
    ap.add_argument("--exclude", default="", help="comma-separated problem ids left out (grading mode)")
    ap.add_argument("--config", default="configs/rlvr.py:tiny", help="the RLVR config measured (grading mode)")
    args = ap.parse_args(argv)
    if args.mode == "grading":
        out = grading(args.problems, args.samples, args.steps, args.workers,
                      tuple(x for x in args.exclude.split(",") if x), config_path=args.config)
    else:
        out = phases(args.workdir)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
