"""Evaluation during training: a trainer hook for LCB pass@k on a held-out window and goalposts solved.

`config.hooks = ("gasp_jax.rlvr.evaluation:PeriodicEval",)` with an `eval` block (`default_config()`)
runs, every `eval.every` iterations and after the last one, with the live student policy:

* `lcb`: `n` samples per problem of the held-out window (default: contest date >= 2024-08-01), LCB
  prompt, LCB extraction, the LCB sandbox grader, pass@k (the `lcb_eval` job's report);
* `goalposts`: `n` samples per goalpost (GASP's goalpost loader: an `lcb_goalposts` report, ids or a
  window), solved = at least `solved_min_correct` correct samples (GASP's `evaluate_goalposts`).

Outputs: TensorBoard scalars `eval/lcb/pass_at_<k>`, `eval/goalposts/solved_count`,
`eval/goalposts/pass_at_<k>` (returned to the trainer, which logs them at the step), and JSON reports
`WORKDIR/eval/lcb/step_<N>.json`, `WORKDIR/eval/goalposts/step_<N>.json` plus one line per evaluation
in `WORKDIR/eval/history.jsonl` (what the protocol runner and plots read). Samples of each evaluation
are kept next to its report (`step_<N>/samples.jsonl`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import ml_collections

from gasp_jax import multihost
from gasp_jax.evaluation.common import load_config_problems, write_json
from gasp_jax.evaluation.eval_job import build_report, usable_ks
from gasp_jax.evaluation.grading import SandboxGrader
from gasp_jax.evaluation.runner import SampleStore, sample_and_grade
from gasp_jax.rlvr.prompts import lcb_prompt_fn

log = logging.getLogger(__name__)


def default_config() -> ml_collections.ConfigDict:
    """The run's `eval` block (read by `PeriodicEval`)."""
    c = ml_collections.ConfigDict()
    c.every = 50  # iterations between evaluations (and after the last iteration); 0 = off
    c.prompt_style = "auto"
    c.lcb = ml_collections.ConfigDict()
    c.lcb.enabled = True
    c.lcb.data = ml_collections.ConfigDict(dict(
        sources=(), release="", loader="stream", start="2024-08-01", end="", problem_ids=(), max_problems=0,
        max_private_mb=512))
    c.lcb.n = 20
    c.lcb.ks = (1, 5, 10, 20)
    c.lcb.temperature = 0.2
    c.lcb.max_new_tokens = 4096
    c.lcb.batch_problems = 8
    c.lcb.extraction = "lcb"
    c.goalposts = ml_collections.ConfigDict()
    c.goalposts.enabled = True
    c.goalposts.select = ml_collections.ConfigDict(dict(  # GASP's goalposts block (gasp.load_goalposts)
        report="", sources=(), release="", start="", end="2024-08-01", ids=(), max_goalposts=0, decode_tests=True,
        dynamic=False, promote="hardest"))
    c.goalposts.n = 100
    c.goalposts.ks = (1, 10, 100)
    c.goalposts.temperature = 1.0
    c.goalposts.max_new_tokens = 4096
    c.goalposts.batch_problems = 4
    c.goalposts.solved_min_correct = 1
    return c


def _tag(key: str) -> str:
    return key.replace("@", "_at_")


class PeriodicEval:
    """Trainer hook (`Cls(run_config, workdir)`, `after_step(step, ctx)`); see the module docstring."""

    def __init__(self, run_config: ml_collections.ConfigDict, workdir: str):
        if "eval" not in run_config:
            raise ValueError("hooks: PeriodicEval needs an `eval` block (gasp_jax.rlvr.evaluation.default_config())")
        self.config = run_config.eval
        self.run_config = run_config
        self.workdir = Path(workdir)
        self.steps = int(run_config.steps)
        self._lcb = None
        self._goalposts = None
        if self.config.lcb.enabled:
            self._lcb = load_config_problems(self.config.lcb.data)  # fail before training if the data is bad
            if not self._lcb[0]:
                raise ValueError(f"eval.lcb.data: no LCB problem in {self._lcb[2]}")
        if self.config.goalposts.enabled:
            from gasp_jax.gasp.goalposts import load_goalposts

            self._goalposts = load_goalposts(self.config.goalposts.select).goalposts

    def due(self, step: int) -> bool:
        every = int(self.config.every)
        return every > 0 and (step % every == 0 or step == self.steps)

    def after_step(self, step: int, ctx: Any) -> dict[str, float]:
        if not self.due(step):
            return {}
        policy = ctx.policies["student"]
        prompt_fn = lcb_prompt_fn(self.config.prompt_style, policy.tokenizer, run_config=self.run_config)
        grader = SandboxGrader(ctx.sandbox)
        scalars: dict[str, float] = {}
        entry: dict[str, Any] = {"step": step}
        with ctx.timers.phase("eval"):
            if self._lcb is not None:
                report = self.lcb(step, ctx, policy, prompt_fn, grader)
                overall = report["pass_at_k"]["overall"]
                scalars.update({f"eval/lcb/{_tag(k)}": float(v) for k, v in overall.items() if k.startswith("pass@")})
                entry["lcb"] = {k: v for k, v in overall.items() if k.startswith("pass@")} | {"problems": report["problems"]}
            if self._goalposts is not None:
                from gasp_jax.gasp import evaluation as gasp_eval

                g = self.config.goalposts
                generate_fn = gasp_eval.policy_generate_fn(policy, temperature=float(g.temperature),
                                                           max_new_tokens=int(g.max_new_tokens), next_key=ctx.next_key)
                out_dir = self.workdir / "eval" / "goalposts"
                if not multihost.is_main():
                    out_dir = out_dir / f"p{multihost.process_index()}"
                report = gasp_eval.evaluate_goalposts(
                    self._goalposts, step=step, generate_fn=generate_fn, prompt_fn=prompt_fn, grader=grader,
                    out_dir=out_dir, num_samples=int(g.n), ks=usable_ks(g.ks, int(g.n)),
                    batch_problems=int(g.batch_problems), solved_min_correct=int(g.solved_min_correct))
                scalars["eval/goalposts/solved_count"] = float(report["solved_count"])
                scalars.update({f"eval/goalposts/{_tag(k)}": float(v) for k, v in report["pass_at_k"].items()
                                if k.startswith("pass@")})
                entry["goalposts"] = {"solved": report["solved"], "solved_count": report["solved_count"],
                                      "goalposts": report["goalposts"]}
        if multihost.is_main():
            os.makedirs(self.workdir / "eval", exist_ok=True)
            with open(self.workdir / "eval" / "history.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")
        log.info("eval@%d: %s", step, {k: round(v, 4) for k, v in scalars.items()})
        return scalars

    def lcb(self, step: int, ctx: Any, policy: Any, prompt_fn: Any, grader: Any) -> dict[str, Any]:
        from gasp_jax.gasp import evaluation as gasp_eval

        problems, load_report, window = self._lcb
        c = self.config.lcb
        n = int(c.n)
        ks = usable_ks(c.ks, n)
        generate_fn = gasp_eval.policy_generate_fn(policy, temperature=float(c.temperature),
                                                   max_new_tokens=int(c.max_new_tokens), next_key=ctx.next_key)
        out_dir = self.workdir / "eval" / "lcb"
        store = SampleStore(out_dir / f"step_{step:06d}")
        store.open({"step": step, "n": n}, overwrite=True)
        records = sample_and_grade(problems, prompt_fn=prompt_fn, generate_fn=generate_fn, grader=grader, store=store,
                                   done={}, num_samples=n, batch_problems=int(c.batch_problems), extraction=c.extraction,
                                   label=f"eval_lcb@{step}", keep_samples=0)
        report = build_report(problems, records, ks, load_report=load_report, window=window, extra={"step": step, "n": n})
        if multihost.is_main():
            write_json(out_dir / f"step_{step:06d}.json", report)
        return report
