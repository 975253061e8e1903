"""Evaluating checkpoints with the same protocol: export -> LCB pass@k, goalposts solved, HumanEval, MBPP+.

Every checkpoint (a run's final one, optionally every saved one, and the base model) goes through the
same evaluations: the plan's job configs (`lcb_eval`, `code_eval`) with the checkpoint as the model.
The model is loaded once per checkpoint; each evaluation gets its own generate function (its own n,
temperature, token budget) and all share one sandbox. Outputs go to
`WORKDIR/eval/<method>/seed<s>/step_<N>/<evaluation>/` (`report.json` + the resumable `samples.jsonl`),
so an interrupted evaluation continues where it stopped and a finished one is not redone.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections

from gasp_jax import warmstart
from gasp_jax.evaluation import code_eval, eval_job
from gasp_jax.evaluation.common import open_sandbox, sandbox_limits
from gasp_jax.evaluation.generation import eos_ids_for, load_model_and_tokenizer, mesh_for, sampler_generate_fn
from gasp_jax.evaluation.grading import SandboxGrader
from gasp_jax.protocol.experiment import Plan, RunSpec
from gasp_jax.protocol.training import config_json
from gasp_jax.rlvr.source import LimitedSandbox
from gasp_jax.sandbox import Limits
from gasp_jax.selfplay import trainer

log = logging.getLogger(__name__)


def saved_steps(spec: RunSpec) -> list[int]:
    """Steps with a complete checkpoint in the run's directory (orbax step folders)."""
    root = spec.workdir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def export(spec: RunSpec, step: int) -> Path:
    """The run's student policy at `step` as a HF directory (written once, atomically)."""
    out = spec.workdir / "export" / f"step_{step:06d}"
    if (out / "config.json").exists():
        return out

    tmp = out.with_name(out.name + ".tmp")
    trainer.export_policy(spec.config, str(spec.workdir), str(tmp), step=step)
    tmp.rename(out)
    return out


def base_checkpoint(plan: Plan) -> str:
    """The base model's HF directory (with base.warmstart: the cached warm start, trained if missing)."""
    if plan.base_hf_path:
        return plan.base_hf_path

    return warmstart.ensure_warmstart(plan.warmstart)


def _finished(out: Path, config: ml_collections.ConfigDict) -> bool:
    path = out / "report.json"
    if not path.exists():
        return False
    return json.loads(path.read_text()).get("config") == config_json(config)


def _generate_fn(model: Any, params: Any, tokenizer: Any, config: ml_collections.ConfigDict, hf_path: str):
    """The eval job's `generate_fn` on an already loaded model (as `generation.build_generate_fn` builds it)."""
    s = config.sampling
    max_new = int(s.max_new_tokens)
    max_prompt = int(s.get("max_prompt_tokens", 0) or 0)
    context = int(model.config.max_position_embeddings)
    return sampler_generate_fn(
        model, params, tokenizer, max_new_tokens=max_new, temperature=float(s.temperature),
        top_k=int(s.get("top_k", 0)), top_p=float(s.get("top_p", 1.0)),
        eos_ids=eos_ids_for(tokenizer, hf_path, s.get("extra_eos_ids", ())), seed=int(s.get("seed", 0)),
        max_rows=int(s.get("max_rows", 256)), max_cache_length=min(context, max_prompt + max_new) if max_prompt else None)


def evaluate_checkpoint(plan: Plan, hf_path: str, out_dir: Path, sandbox: Any, *, step: int = 0) -> dict[str, Any]:
    """Runs every evaluation of the plan on one checkpoint; returns {name: summary or {"error": ...}}."""
    configs = {}
    for name, base in plan.evals.items():
        c = base.copy_and_resolve_references()
        c.model.hf_path = hf_path
        c.model.preset = ""
        dtype = plan.experiment.eval.get("model", {}).get("dtype", "")
        if dtype:
            c.model.dtype = dtype
        c.use_mesh = bool(plan.experiment.eval.get("model", {}).get("use_mesh", c.use_mesh))
        c.step = step
        configs[name] = c
    todo = {n: c for n, c in configs.items() if not _finished(out_dir / n, c)}
    results: dict[str, Any] = {n: {"report": str(out_dir / n / "report.json")} for n in configs if n not in todo}
    if not todo:
        log.info("protocol: %s already evaluated", out_dir)
        return results

    first = next(iter(todo.values()))
    model, params, tokenizer = load_model_and_tokenizer(first.model, mesh=mesh_for(first))
    for name, c in todo.items():
        log.info("protocol: evaluating %s on %s", name, hf_path)
        generate_fn = _generate_fn(model, params, tokenizer, c, hf_path)
        try:
            if c.job == "code_eval":
                code_eval.run(c, str(out_dir / name), generate_fn=generate_fn, tokenizer=tokenizer, sandbox=sandbox)
            else:
                limits = sandbox_limits(c.sandbox.get("limits", {}) or {}) or Limits()  # this evaluation's, on the shared pool
                eval_job.run(c, str(out_dir / name), generate_fn=generate_fn, tokenizer=tokenizer,
                             grader=SandboxGrader(LimitedSandbox(sandbox, limits),
                                                  infra_retries=int(c.sandbox.get("infra_retries", 1))))
            results[name] = {"report": str(out_dir / name / "report.json")}
        except Exception as e:  # noqa: BLE001 - one failed evaluation leaves its cell empty, the rest goes on
            log.exception("protocol: evaluation %s of %s failed", name, hf_path)
            results[name] = {"error": f"{type(e).__name__}: {e}"}
    return results


@contextlib.contextmanager
def shared_sandbox(plan: Plan) -> Iterator[Any]:
    """One sandbox for every evaluation (workers / limits of the first evaluation config)."""
    first = next(iter(plan.evals.values()))
    with open_sandbox(first.sandbox) as sb:
        yield sb


def evaluate_all(plan: Plan, statuses: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Evaluates the base model (when it is a row) and every finished run's checkpoints."""
    mode = plan.experiment.eval.get("checkpoints", "final")
    out: dict[str, Any] = {}
    with shared_sandbox(plan) as sb:
        if "base" in plan.experiment.methods:
            try:
                hf = base_checkpoint(plan)
                out["base"] = evaluate_checkpoint(plan, hf, plan.workdir / "eval" / "base" / "step_000000", sb)
            except Exception as e:  # noqa: BLE001
                log.exception("protocol: evaluating the base model failed")
                out["base"] = {"error": f"{type(e).__name__}: {e}"}
        for spec in plan.runs:
            if not statuses.get(spec.name, {}).get("finished", False):
                out[spec.name] = {"error": statuses.get(spec.name, {}).get("error", "run not finished")}
                continue
            steps = saved_steps(spec)
            final = int(spec.config.steps)
            chosen = [s for s in steps if s != final] + [final] if mode == "all" else [final]
            per_step = {}
            for step in chosen:
                try:
                    hf = export(spec, step)
                    per_step[step] = evaluate_checkpoint(
                        plan, str(hf), plan.workdir / "eval" / spec.method / f"seed{spec.seed}" / f"step_{step:06d}", sb, step=step)
                except Exception as e:  # noqa: BLE001
                    log.exception("protocol: evaluating %s step %d failed", spec.name, step)
                    per_step[step] = {"error": f"{type(e).__name__}: {e}"}
            out[spec.name] = per_step
    return out
