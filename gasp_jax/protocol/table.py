"""Table 1: per method, LCB pass@k (mean +- std over seeds), goalposts solved (unique over seeds and per
seed) and the optional HumanEval / MBPP+ columns, from the evaluation reports on disk.

Goalposts solved comes twice: at the final checkpoint's evaluation, and at any evaluation (the paper's
running union: the final one plus every evaluation during training, `eval/history.jsonl` of the periodic
evaluation and GASP's `goalposts_eval/step_<N>.json`), each restricted to the experiment's goalposts.

Only numbers read from reports enter the table. A cell with no report is "—" and its reason is listed
under the table and in the JSON ("run failed: <the run's last error line>", "evaluation failed: ...",
"no LCB report"); failed runs and evaluations are also listed by name. A cell with fewer seeds than the
experiment asks for says how many it averages ("n=2/3"). Percentages, as in the paper.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gasp_jax.evaluation.common import write_json
from gasp_jax.protocol.experiment import METHODS, Plan

MISSING = "—"
# Goalpost columns -> the per-seed list of solved ids they count.
GOALPOST_COLUMNS = {"goalposts": "goalposts_solved", "goalposts_union": "goalposts_solved_union"}


def _report(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def eval_dir(plan: Plan, method: str, seed: int | None) -> Path:
    if method == "base":
        return plan.workdir / "eval" / "base" / "step_000000"
    run = next(r for r in plan.runs if r.method == method and r.seed == seed)
    return plan.workdir / "eval" / method / f"seed{seed}" / f"step_{int(run.config.steps):06d}"


def training_solved(plan: Plan, method: str, seed: int | None) -> set[str]:
    """Goalposts solved at any evaluation during one run's training (none for the base model)."""
    if method == "base":
        return set()
    run = next(r for r in plan.runs if r.method == method and r.seed == seed)
    solved: set[str] = set()
    history = run.workdir / "eval" / "history.jsonl"
    if history.exists():
        for line in history.read_text().splitlines():
            if line.strip():
                solved.update(json.loads(line).get("goalposts", {}).get("solved", ()))
    for path in sorted((run.workdir / "goalposts_eval").glob("step_*.json")):
        solved.update(json.loads(path.read_text()).get("solved", ()))
    return solved & set(plan.goalpost_ids)


def failures(plan: Plan) -> dict[str, dict[str, str]]:
    """Per row name ("base", "<method>/seed<s>"), from `status.json`: `{"run": "run failed: <last error
    line>"}` and `{<evaluation> or "all": "evaluation failed: <error>"}`."""
    path = plan.workdir / "status.json"
    status = json.loads(path.read_text()) if path.exists() else {}
    out: dict[str, dict[str, str]] = {}
    for name, st in status.items():
        reasons = {e: f"evaluation failed: {err}" for e, err in st.get("eval_errors", {}).items()}
        if st.get("error"):
            reasons["run"] = f"run failed: {st['error']}"
        out[name] = reasons
    return out


def seed_values(plan: Plan, method: str, seed: int | None) -> dict[str, Any]:
    """Every number of one (method, seed) row from its final checkpoint's reports (absent -> missing)."""
    root = eval_dir(plan, method, seed)
    values: dict[str, Any] = {"missing": {}}
    ks = [int(k) for k in plan.experiment.table.ks]
    lcb = _report(root / "lcb" / "report.json") if "lcb" in plan.evals else None
    if "lcb" in plan.evals:
        overall = (lcb or {}).get("pass_at_k", {}).get("overall", {})
        for k in ks:
            if f"pass@{k}" in overall:
                values[f"lcb_pass@{k}"] = 100.0 * overall[f"pass@{k}"]
            else:
                values["missing"][f"lcb_pass@{k}"] = "no LCB report" if lcb is None else f"pass@{k} undefined (n < {k})"
    if "goalposts" in plan.evals:
        gp = _report(root / "goalposts" / "report.json")
        during = training_solved(plan, method, seed)
        if gp is None:
            values["missing"]["goalposts"] = "no goalposts report"
            if during:
                values["goalposts_solved_union"] = sorted(during)
            else:
                values["missing"]["goalposts_union"] = "no goalposts report"
        else:
            per = gp.get("per_problem", {})
            values["goalposts_solved"] = sorted(pid for pid, e in per.items() if e.get("correct", 0) >= 1)
            values["goalposts_solved_union"] = sorted(during.union(values["goalposts_solved"]))
            values["goalposts_evaluated"] = len(per)
            skipped = [s["problem_id"] for s in gp.get("skipped_problems", [])]
            if skipped:
                values["goalposts_skipped"] = skipped
    for name, column in (("humaneval", "humaneval_pass@1"), ("mbpp_plus", "mbpp_plus_pass@1")):
        if name not in plan.evals:
            continue
        rep = _report(root / name / "report.json")
        value = (rep or {}).get("pass_at_k", {}).get("overall", {}).get("pass@1")
        if value is None:
            values["missing"][column] = f"no {name} report" if rep is None else "pass@1 undefined"
        else:
            values[column] = 100.0 * value
    failure = failures(plan).get("base" if method == "base" else f"{method}/seed{seed}", {})
    for key in values["missing"]:  # a failed run or evaluation, not "no report", is why the cell is empty
        reason = failure.get("run") or failure.get(next((e for e in failure if key.startswith(e)), "all"))
        if reason:
            values["missing"][key] = reason
    return values


def _mean_std(xs: Sequence[float]) -> tuple[float, float | None]:
    mean = math.fsum(xs) / len(xs)
    return mean, (statistics.stdev(xs) if len(xs) > 1 else None)


def columns(plan: Plan) -> list[tuple[str, str]]:
    """(key, header) of the numeric columns, in the paper's order."""
    cols = []
    if "lcb" in plan.evals:
        cols += [(f"lcb_pass@{k}", f"pass@{k}") for k in plan.experiment.table.ks]
    if "goalposts" in plan.evals:
        cols.append(("goalposts", f"goalposts solved (of {len(plan.goalpost_ids)})"))
        cols.append(("goalposts_union", f"goalposts solved at any evaluation (of {len(plan.goalpost_ids)})"))
    if "humaneval" in plan.evals:
        cols.append(("humaneval_pass@1", "HumanEval pass@1"))
    if "mbpp_plus" in plan.evals:
        cols.append(("mbpp_plus_pass@1", "MBPP+ pass@1"))
    return cols


def build_table(plan: Plan) -> dict[str, Any]:
    """The table as JSON: per method and column the per-seed values, mean, std, and reasons for gaps."""
    seeds = [int(s) for s in plan.experiment.seeds]
    rows = []
    for method in plan.experiment.methods:
        m = METHODS[method]
        per_seed = {s: seed_values(plan, method, s) for s in ([None] if method == "base" else seeds)}
        wanted = len(per_seed)
        row: dict[str, Any] = {"method": method, "label": m.label, "real_data": m.real_data, "guidance": m.guidance,
                               "seeds": [s for s in per_seed if s is not None], "cells": {}}
        for key, _ in columns(plan):
            if key in GOALPOST_COLUMNS:
                field = GOALPOST_COLUMNS[key]
                solved = {s: v[field] for s, v in per_seed.items() if field in v}
                cell: dict[str, Any] = {"per_seed": {str(s): len(v) for s, v in solved.items()},
                                        "solved_ids": {str(s): v for s, v in solved.items()}}
                if solved:
                    cell["unique"] = len(set().union(*solved.values()))
                missing = {str(s): v["missing"][key] for s, v in per_seed.items() if key in v["missing"]}
            else:
                vals = {s: v[key] for s, v in per_seed.items() if key in v}
                cell = {"per_seed": {str(s): v for s, v in vals.items()}}
                if vals:
                    cell["mean"], cell["std"] = _mean_std(list(vals.values()))
                missing = {str(s): v["missing"][key] for s, v in per_seed.items() if key in v["missing"]}
            cell["n"], cell["of"] = len(cell["per_seed"]), wanted
            if missing:
                cell["missing"] = missing
            row["cells"][key] = cell
        rows.append(row)
    return {"name": plan.experiment.name, "seeds": seeds, "steps": int(plan.experiment.budget.steps),
            "goalposts": list(plan.goalpost_ids), "columns": [{"key": k, "header": h} for k, h in columns(plan)],
            "rows": rows, "failures": {name: sorted(set(r.values())) for name, r in failures(plan).items() if r}}


def _format(key: str, cell: dict[str, Any]) -> str:
    if cell["n"] == 0:
        return MISSING
    partial = f" (n={cell['n']}/{cell['of']})" if cell["n"] < cell["of"] else ""
    if key in GOALPOST_COLUMNS:
        per = " / ".join(str(cell["per_seed"][s]) for s in sorted(cell["per_seed"], key=int)) if cell["of"] > 1 else ""
        return f"{cell['unique']}" + (f" ({per} per seed)" if per else "") + partial
    text = f"{cell['mean']:.2f}"
    if cell.get("std") is not None:
        text += f" ± {cell['std']:.2f}"
    return text + partial


def render_markdown(table: dict[str, Any]) -> str:
    headers = ["Method", "Real-data training", "Goalpost guidance"] + [c["header"] for c in table["columns"]]
    lines = [f"# {table['name']}", "",
             f"LCB pass@k in %, mean ± std over seeds {table['seeds']} ({table['steps']} training iterations); "
             "goalposts solved: unique over seeds (per seed), at the final checkpoint and at any evaluation "
             "(during training or final: the paper's running union).", "",
             "| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + [":-:"] * 2 + ["---"] * len(table["columns"])) + "|"]
    notes = []
    for row in table["rows"]:
        cells = [_format(c["key"], row["cells"][c["key"]]) for c in table["columns"]]
        flags = ["✓" if row["real_data"] else "✗", "✓" if row["guidance"] else "✗"]
        if row["method"] == "base":
            flags = ["—", "—"]
        lines.append("| " + " | ".join([row["label"], *flags, *cells]) + " |")
        for c in table["columns"]:
            for seed, reason in row["cells"][c["key"]].get("missing", {}).items():
                notes.append(f"- {row['label']}, {c['header']}, seed {seed}: {reason}")
    if notes:
        lines += ["", "Missing cells (never filled in):", *notes]
    failed = [f"- {name}: {reason}" for name, reasons in table.get("failures", {}).items() for reason in reasons]
    if failed:
        lines += ["", "Failed (the command exited non-zero):", *failed]
    return "\n".join(lines) + "\n"


def write_table(plan: Plan) -> dict[str, Any]:
    table = build_table(plan)

    write_json(plan.workdir / "table1.json", table)
    (plan.workdir / "table1.md").write_text(render_markdown(table))
    return table
