"""Evaluation during training, one path for every method: LCB pass@k on a held-out window and goalposts solved.

Two users, one machinery:

* `PeriodicEval`, a trainer hook (`config.hooks = ("gasp_jax.evaluation.periodic:PeriodicEval",)` with an
  `eval` block, `default_config()`), for any method (AZR, RLVR, GASP, GASP + RLVR);
* GASP's own goalpost evaluation (`sources.gasp.eval`), which adds only goalpost retirement on top
  (`gasp/source.py`: `GaspSource.after_step`).

The goalposts-solved measure is GASP's (`gasp.evaluation.GoalpostsSolved`); the hook table
(`selfplay/sources.py`) passes it in as `goalposts=`, so this package never imports `gasp/`.

Both run after the update of every `every`-th iteration and after the last one (`is_due`, counted in
completed iterations), with the live student policy; both sample, extract and grade with the LCB runner
(`gasp.evaluation.evaluate_goalposts`); process 0's report is broadcast, so every process sees (and
retires) the same goalposts; both keep the running union of goalposts solved at any evaluation so far
(`gasp.evaluation.GoalpostEvaluation.solved_union`, checkpointed), which is the paper's "goalposts solved".

Outputs of `PeriodicEval`: TensorBoard `eval/lcb/pass_at_<k>`, `eval/goalposts/solved_count`,
`eval/goalposts/solved_union`, `eval/goalposts/pass_at_<k>`; reports `WORKDIR/eval/lcb/step_<N>.json`,
`WORKDIR/eval/goalposts/step_<N>.json` and one line per evaluation in `WORKDIR/eval/history.jsonl`
(what the protocol and plots read). GASP's: `gasp/goalposts/*` and `WORKDIR/goalposts_eval/step_<N>.json`.
Samples of each evaluation are kept next to its report (`step_<N>/samples.jsonl`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import ml_collections

from gasp_jax import multihost
from gasp_jax.data import paths
from gasp_jax.data.livecodebench import HUB_DATASET, LCB_CUTOFF, Problem
from gasp_jax.evaluation import prompts as lcb_prompts
from gasp_jax.evaluation.common import load_config_problems, make_prompt_fn, write_json
from gasp_jax.evaluation.eval_job import build_report, usable_ks
from gasp_jax.evaluation.grading import SandboxGrader
from gasp_jax.evaluation.runner import SampleStore, policy_generate_fn, sample_and_grade

log = logging.getLogger(__name__)

HOOK = "gasp_jax.evaluation.periodic:PeriodicEval"
# "question" (one of LCB's styles here): LCB's user message alone (no system text, no chat turn), for
# short-context models.
PROMPT_STYLES = ("auto", *lcb_prompts.PROMPT_STYLES)


def default_config() -> ml_collections.ConfigDict:
    """The run's `eval` block (read by `PeriodicEval`)."""
    c = ml_collections.ConfigDict()
    c.every = 50  # iterations between evaluations (and after the last iteration); 0 = off
    c.prompt_style = "auto"
    c.lcb = ml_collections.ConfigDict()
    c.lcb.enabled = True
    c.lcb.data = ml_collections.ConfigDict(dict(
        sources=(), release="", loader="stream", start=LCB_CUTOFF, end="", problem_ids=(), max_problems=0,
        max_private_mb=512, hub=False, hub_repo=HUB_DATASET))  # hub: the full release through `datasets`
    c.lcb.n = 20
    c.lcb.ks = (1, 5, 10, 20)
    c.lcb.temperature = 0.2
    c.lcb.max_new_tokens = 4096
    c.lcb.batch_problems = 8
    c.lcb.extraction = "lcb"
    c.goalposts = ml_collections.ConfigDict()
    c.goalposts.enabled = True
    c.goalposts.select = ml_collections.ConfigDict(dict(  # GASP's goalposts block (gasp.load_goalposts)
        report="", sources=(), release="", start="", end=LCB_CUTOFF, ids=(), max_goalposts=0, decode_tests=True,
        dynamic=False, promote="hardest", hub=False, hub_repo=HUB_DATASET))
    c.goalposts.n = 100
    c.goalposts.ks = (1, 10, 100)
    c.goalposts.temperature = 1.0
    c.goalposts.max_new_tokens = 4096
    c.goalposts.batch_problems = 4
    c.goalposts.solved_min_correct = 1
    return c


def add_evaluation(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Turns on the periodic evaluation in any self-play run config: the `eval` block (both windows on the
    shipped LCB problems until a release is given) and the `PeriodicEval` hook, once."""
    config.eval = default_config()
    sample = str(paths.data_file(paths.LCB_PUBLIC_V5))
    config.eval.lcb.data.sources = (sample,)
    config.eval.goalposts.select.sources = (sample,)
    config.hooks = tuple(h for h in config.get("hooks", ()) if h != HOOK) + (HOOK,)
    return config


def is_due(every: int, completed: int, total: int) -> bool:
    """Evaluate after `completed` iterations? Every `every` iterations and after the last (`total`); 0 = off."""
    return every > 0 and completed > 0 and (completed % every == 0 or completed == total)


def policy_prompt_fn(style: str, tokenizer: Any, *, run_config: Any = None) -> Callable[[Problem], str]:
    """`problem -> prompt text` in LCB's format for a live policy with `tokenizer`.

    `auto`: when the run's sampler applies the chat template itself (`sampling.chat_template`), the policy
    gets LCB's user message (system text folded in); otherwise LCB's `chat` prompt rendered with the
    tokenizer's template, or LCB's few-shot `base` prompt for a tokenizer without one. `question`: LCB's
    user message alone (no system text, no chat turn).
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown LCB prompt style {style!r}; expected one of {PROMPT_STYLES}")
    if style == "question":
        return lambda p: lcb_prompts.question_prompt(p.statement, p.starter_code)
    if style == "auto":
        chat_in_policy = bool((run_config or {}).get("sampling", {}).get("chat_template", False))
        if chat_in_policy:
            return lambda p: lcb_prompts.chat_messages(p, system_role=False)[0]["content"]
        style = "chat" if getattr(tokenizer, "chat_template", None) else "base"
    return make_prompt_fn({"style": style}, tokenizer)


def _tag(key: str) -> str:
    return key.replace("@", "_at_")


class GoalpostMeasure(Protocol):
    """Goalposts solved by the live student at one evaluation and over all so far (checkpointed)."""

    def __call__(self, ctx: Any, *, step: int, prompt_fn: Callable[[Problem], str],
                 out_dir: str | os.PathLike) -> dict[str, Any]: ...

    def scalars(self, report: dict[str, Any]) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class PeriodicEval:
    """Trainer hook (`Cls(run_config, workdir)`, `after_step(step, ctx)`, `state_dict`); see the module
    docstring. `goalposts(block, prefix=)` builds the goalposts-solved measure from the `eval.goalposts`
    block (`gasp.evaluation.GoalpostsSolved`, passed in by the hook table); needed when that block is on."""

    def __init__(self, run_config: ml_collections.ConfigDict, workdir: str, *,
                 goalposts: Callable[..., GoalpostMeasure] | None = None):
        if "eval" not in run_config:
            raise ValueError("hooks: PeriodicEval needs an `eval` block (gasp_jax.evaluation.periodic.default_config())")
        self.config = run_config.eval
        self.run_config = run_config
        self.workdir = Path(workdir)
        self.steps = int(run_config.steps)
        self._lcb = None
        self.goalpost_eval: GoalpostMeasure | None = None
        if self.config.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"eval.prompt_style: unknown LCB prompt style {self.config.prompt_style!r}; "
                             f"expected one of {PROMPT_STYLES}")
        if self.config.lcb.enabled:
            self._lcb = load_config_problems(self.config.lcb.data, where="config.eval.lcb.data")  # fail before training
            if not self._lcb[0]:
                raise ValueError(f"eval.lcb.data: no LCB problem in {self._lcb[2]}")
        if self.config.goalposts.enabled:
            if goalposts is None:
                raise ValueError("eval.goalposts.enabled: PeriodicEval needs the goalposts measure "
                                 "(goalposts=gasp_jax.gasp.evaluation.GoalpostsSolved; the hook table passes it)")
            self.goalpost_eval = goalposts(self.config.goalposts, prefix="eval/goalposts")

    def due(self, step: int) -> bool:
        return is_due(int(self.config.every), step, self.steps)

    def state_dict(self) -> dict:
        return {"goalposts": self.goalpost_eval.state_dict() if self.goalpost_eval else {}}

    def load_state_dict(self, state: dict) -> None:
        if self.goalpost_eval is not None:
            self.goalpost_eval.load_state_dict(state.get("goalposts", {}))

    def after_step(self, step: int, ctx: Any) -> dict[str, float]:
        if not self.due(step):
            return {}
        policy = ctx.policies["student"]
        prompt_fn = policy_prompt_fn(self.config.prompt_style, policy.tokenizer, run_config=self.run_config)
        scalars: dict[str, float] = {}
        entry: dict[str, Any] = {"step": step}
        with ctx.timers.phase("eval"):
            if self._lcb is not None:
                report = self.lcb(step, ctx, policy, prompt_fn, SandboxGrader(ctx.sandbox))
                overall = report["pass_at_k"]["overall"]
                scalars.update({f"eval/lcb/{_tag(k)}": float(v) for k, v in overall.items() if k.startswith("pass@")})
                entry["lcb"] = {k: v for k, v in overall.items() if k.startswith("pass@")} | {"problems": report["problems"]}
            if self.goalpost_eval is not None:
                report = self.goalpost_eval(ctx, step=step, prompt_fn=prompt_fn,
                                            out_dir=self.workdir / "eval" / "goalposts")
                scalars.update(self.goalpost_eval.scalars(report))
                entry["goalposts"] = {k: report[k] for k in ("solved", "solved_count", "solved_union",
                                                             "solved_union_count", "goalposts")}
        if multihost.is_main():
            os.makedirs(self.workdir / "eval", exist_ok=True)
            with open(self.workdir / "eval" / "history.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")
        log.info("eval@%d: %s", step, {k: round(v, 4) for k, v in scalars.items()})
        return scalars

    def lcb(self, step: int, ctx: Any, policy: Any, prompt_fn: Any, grader: Any) -> dict[str, Any]:
        problems, load_report, window = self._lcb
        c = self.config.lcb
        n = int(c.n)
        ks = usable_ks(c.ks, n)
        generate_fn = policy_generate_fn(policy, temperature=float(c.temperature),
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

