"""The paper's protocol from one command: train every (method, seed), evaluate every checkpoint the same
way, write Table 1.

    python -m gasp_jax.protocol --experiment=configs/experiments/tiny_cpu.py --workdir=runs/table1_tiny

  experiment  experiment files -> a validated `Plan` (every run config and evaluation config)
  training    run / resume / skip each training run (a normal `gasp_jax.main` job in its own directory)
  evaluation  export checkpoints, LCB pass@k + goalposts solved (+ HumanEval / MBPP+) per checkpoint
  table       table1.md + table1.json from the reports (missing cells marked, never invented)

Re-running the same command resumes: finished runs and finished evaluations are not redone, a crashed
run is resumed from its last checkpoint. A run that still fails after its attempts (or a failed
evaluation) leaves its cells missing with the reason ("run failed: <its last error line>") in
table1.md / table1.json and makes the command exit non-zero. See docs/protocol.md.
"""

from __future__ import annotations

import logging
from typing import Any

import ml_collections

from gasp_jax.evaluation.common import write_json
from gasp_jax.protocol import evaluation, table, training
from gasp_jax.protocol.experiment import METHODS, ExperimentError, Plan, build_plan

log = logging.getLogger(__name__)

STAGES = ("train", "eval", "table")


def run(experiment: ml_collections.ConfigDict, workdir: str, *, stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
    """Validates the experiment, then trains, evaluates and tabulates (the stages asked for)."""
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ExperimentError(f"unknown stage(s) {bad}; known: {', '.join(STAGES)}")
    plan = build_plan(experiment, workdir)  # every check happens here, before anything runs
    plan.workdir.mkdir(parents=True, exist_ok=True)
    (plan.workdir / "experiment.json").write_text(experiment.to_json_best_effort(indent=1, sort_keys=True))
    log.info("protocol %s: %d training runs (%s x seeds %s, %d steps), evaluations %s -> %s", experiment.name,
             len(plan.runs), ", ".join(experiment.methods), list(experiment.seeds), int(experiment.budget.steps),
             ", ".join(plan.evals), plan.workdir)
    for spec in plan.runs:
        training.prepare(spec)  # a workdir of another experiment is refused before anything runs
    statuses: dict[str, Any] = {}
    for spec in plan.runs:
        if "train" in stages:
            statuses[spec.name] = training.train(spec, executor=str(experiment.get("executor", "subprocess")),
                                                 max_attempts=int(experiment.get("max_attempts", 2)))
        else:
            statuses[spec.name] = training.status(spec)
    _write_status(plan, statuses)
    try:
        evaluated = evaluation.evaluate_all(plan, statuses) if "eval" in stages else {}
    except Exception as e:  # noqa: BLE001 - e.g. no sandbox: every evaluation fails alike, the table says why
        log.exception("protocol: the evaluation stage failed")
        error = {"error": f"{type(e).__name__}: {e}"}
        evaluated = {**({"base": error} if "base" in experiment.methods else {}),
                     **{spec.name: {int(spec.config.steps): error} for spec in plan.runs}}
    failures = {name: f"run failed: {st['error']}" for name, st in statuses.items() if st.get("error")}
    for name, result in evaluated.items():
        if name != "base" and not statuses.get(name, {}).get("finished", False):
            continue  # nothing to evaluate: the run's own failure (if any) is the reason
        for eval_name, error in _eval_errors(name, result).items():
            statuses.setdefault(name, {}).setdefault("eval_errors", {})[eval_name] = error
            failures.setdefault(name, f"evaluation {eval_name} failed: {error}")
    if evaluated:
        _write_status(plan, statuses)
    out = {"workdir": str(plan.workdir), "runs": {k: {"finished": v["finished"], "final_step": v["final_step"]}
                                                  for k, v in statuses.items() if k != "base"},
           "evaluations": evaluated, "failures": failures}
    if "table" in stages:
        t = table.write_table(plan)
        out["table"] = str(plan.workdir / "table1.md")
        log.info("protocol: table written to %s\n%s", plan.workdir / "table1.md", table.render_markdown(t))
    for name, reason in failures.items():
        log.error("protocol: %s: %s", name, reason)
    return out


def _eval_errors(name: str, result: dict[str, Any]) -> dict[str, str]:
    """`{evaluation name or "all": error}` of one row's evaluation results (base: one checkpoint; a run:
    per step)."""
    errors: dict[str, str] = {}
    for checkpoint in [result] if name == "base" else result.values():
        if "error" in checkpoint:  # the checkpoint as a whole (export, model loading)
            errors["all"] = str(checkpoint["error"])
            continue
        errors.update({e: str(r["error"]) for e, r in checkpoint.items() if isinstance(r, dict) and "error" in r})
    return errors


def _write_status(plan: Plan, statuses: dict[str, Any]) -> None:
    write_json(plan.workdir / "status.json", {k: {kk: vv for kk, vv in v.items() if kk != "summary"}
                                              for k, v in statuses.items()})


__all__ = ["METHODS", "STAGES", "ExperimentError", "Plan", "build_plan", "run"]
