"""Tasks-layer throughput: ``python -m gasp_jax.benchmarks.tasks``.

Measures, on real AZR seed tasks with mixed kinds, under the same load:

(a) validated proposals/s: ``tasks.validate_records`` on deduction/abduction and induction
    records (two runs each, in separate jobs);
(b) judged answers/s: ``tasks.judge_many`` on a shuffled mix of deduction (correct and wrong
    outputs), abduction (correct inputs) and induction (correct programs) answers.

Baseline: the same checks with one fresh ``python -I -S`` process per check (same rlimits, run
with the same concurrency, ``benchmarks.sandbox.baseline_exec``), each running the very same
request through the same wrapper (``tasks/child.py``) and compared the same way in the parent;
validation takes two processes per proposal (cross-process determinism), an abduction check one
(the naive single-process check; ours takes two). Target: >= 5x. CPU time per check (this process
plus the sandbox worker trees, or the reaped baseline processes) is reported too: unlike wall
time it does not depend on how busy the shared machine is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from typing import Any

from gasp_jax import tasks
from gasp_jax.benchmarks.sandbox import CpuMeter, baseline_exec, run_parallel
from gasp_jax.data import paths
from gasp_jax.sandbox import Limits, Sandbox
from gasp_jax.tasks.execution import WRAPPER, _call_request, canonical_inputs, dict_order_free
from gasp_jax.tasks.plain import (NotPlain, args_text, canonical, encoded_json, encoding_repr, literal_args_encoding,
                                  literal_encoding, parse_reply)

IO_FILES = ("7b_seed_io.jsonl", "14b_coder_seed_io.jsonl", "qwen3_4b_seed_io.jsonl")
INDUCTION_FILES = ("7b_code_f_seed_io.jsonl", "14b_coder_code_f_seed_io.jsonl")
BASELINE_SCRIPT = WRAPPER + "\nimport sys\nprint(__gasp_run__(sys.stdin.read()))\n"


def load_workload(n_io: int, n_induction: int, seed: int) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    io = [r for f in IO_FILES for r in tasks.load_seed_file(paths.azr_seed_file(f))]
    ind = [r for f in INDUCTION_FILES for r in tasks.load_seed_file(paths.azr_seed_file(f))]
    rng.shuffle(io)
    rng.shuffle(ind)
    kinds = [("deduction", "abduction")[k % 2] for k in range(n_io)]
    return list(zip(kinds, io[:n_io])) + [("induction", r) for r in ind[:n_induction]]


def judge_items(valid: list[tuple[str, dict]], seed: int) -> list[tuple[str, dict, str]]:
    items = []
    for kind, rec in valid:
        if kind == "induction":
            items.append(("induction", rec, tasks.program_text(rec)))
        else:
            items += [("deduction", rec, rec["output"]), ("deduction", rec, "0"), ("abduction", rec, rec["input"])]
    random.Random(seed).shuffle(items)
    return items


def _baseline_reply(request: dict, lim: Limits) -> dict | None:
    code, out = baseline_exec(BASELINE_SCRIPT, json.dumps(request).encode(), lim)
    if code != 0:
        return {"ok": False, "error": f"exit {code}"}
    lines = out.decode("ascii", "replace").strip().split("\n")  # the program may print before the reply
    return parse_reply(repr(lines[-1]), lim.stdout_bytes)


def _baseline_judge(item: tuple[str, dict, str], lim: Limits, cfg: tasks.JudgeConfig) -> bool:
    """The judge's rules, one fresh process per check: literal answers compared here, calls run."""
    kind, rec, answer = item
    golds = [canonical(g) for g in (rec["gold"] if kind == "induction" else [rec["gold"]])]
    if kind == "deduction":
        ok, enc = literal_encoding(answer, cfg.max_value_bytes)
        return ok and canonical(enc) == golds[0]
    if kind == "abduction":
        ok, enc = literal_args_encoding(answer, cfg.max_value_bytes)
        if not ok:
            return False
        req = _call_request(tasks.program_text(rec), [args_text(enc)])
    else:
        k = tasks.n_visible_pairs(len(rec["inputs"]), cfg.n_visible)
        hidden = canonical_inputs(rec["inputs"][k:])
        req = _call_request(answer, rec["inputs"][k:] if isinstance(hidden, str) else hidden)
        golds = golds[k:]
    reply = _baseline_reply(req, lim)
    if not reply or not reply.get("ok") or len(reply["values"]) != len(golds):
        return False
    try:
        return all(canonical(v) == g for v, g in zip(reply["values"], golds))
    except NotPlain:
        return False


def _baseline_validate(kind: str, rec: dict, lim: Limits, cfg: tasks.ValidationConfig) -> bool:
    texts = canonical_inputs(list(rec["inputs"]) if kind == "induction" else [rec["input"]])
    if isinstance(texts, str):
        return False
    n = len(texts)
    replies = [_baseline_reply(_call_request(tasks.program_text(rec), texts, order, cfg.heap_pad * r), lim)
               for r, order in enumerate((list(range(n)), list(range(n))[::-1]))]
    if not all(r and r.get("ok") for r in replies):
        return False
    first, second = replies[0]["values"], replies[1]["values"][::-1]
    try:  # the same output size rule as ours: the canonical repr within max_output_chars
        small = all(len(encoding_repr(v)) <= cfg.max_output_chars for v in first)
    except NotPlain:
        return False
    return small and all(encoded_json(dict_order_free(a)) == encoded_json(dict_order_free(b))
                         for a, b in zip(first, second))


def bench(n_io: int, n_induction: int, workers: int, seed: int) -> dict[str, Any]:
    lim = Limits(cpu_s=2.0, memory_bytes=1 << 30, stdout_bytes=4 << 20)
    vcfg = tasks.ValidationConfig(limits=lim)
    jcfg = tasks.JudgeConfig(limits=lim)
    workload = load_workload(n_io, n_induction, seed)
    out: dict[str, Any] = {"proposals": len(workload)}
    with Sandbox(workers=workers, limits=lim) as sb:
        out["isolation"] = sb.isolation.level
        tasks.judge_many(sb, [("deduction", {"snippet": "def f(x):\n    return x", "input": "1", "output": "1"}, "1")] * 8)
        t0 = time.perf_counter()
        with CpuMeter(sb) as cpu:
            results = tasks.validate_records(sb, workload, config=vcfg)
        out["ours_validate_s"] = time.perf_counter() - t0
        out["ours_validate_cpu_ms"] = 1e3 * cpu.seconds / len(workload)
        valid = [(kind, v.record) for (kind, _), v in zip(workload, results) if v.ok]
        out["valid"] = len(valid)
        items = judge_items(valid, seed)
        out["judged"] = len(items)
        out["kinds"] = {k: sum(i[0] == k for i in items) for k in tasks.KINDS}
        tasks.gold_cache_clear()
        t0 = time.perf_counter()
        with CpuMeter(sb) as cpu:
            verdicts = tasks.judge_many(sb, items, config=jcfg)
        out["ours_judge_s"] = time.perf_counter() - t0
        out["ours_judge_cpu_ms"] = 1e3 * cpu.seconds / len(items)
    out["correct"] = sum(v is True for v in verdicts)
    with CpuMeter(None) as cpu:
        base_validate_s, base_valid = run_parallel(
            [lambda k=k, r=r: _baseline_validate(k, r, lim, vcfg) for k, r in workload], workers)
    out["baseline_validate_s"] = base_validate_s
    out["baseline_validate_cpu_ms"] = 1e3 * cpu.seconds / len(workload)
    with CpuMeter(None) as cpu:
        base_judge_s, base_verdicts = run_parallel([lambda it=it: _baseline_judge(it, lim, jcfg) for it in items], workers)
    out["baseline_judge_s"] = base_judge_s
    out["baseline_judge_cpu_ms"] = 1e3 * cpu.seconds / len(items)
    out["verdict_agreement"] = sum(a == b for a, b in zip(verdicts, base_verdicts)) / max(1, len(items))
    # Disagreements come from programs whose output depends on the str-hash seed (it differs
    # between the baseline's processes, and between sandbox workers until they share one).
    out["verdict_disagreements"] = [(it[0], it[1]["id"], a, b) for it, a, b in zip(items, verdicts, base_verdicts) if a != b]
    out["validity_disagreements"] = [(k, r["id"], v.reason) for (k, r), v, b in zip(workload, results, base_valid)
                                     if bool(v) != b]
    out["validity_agreement"] = sum(bool(a) == b for a, b in zip(results, base_valid)) / max(1, len(workload))
    out["ours_judge_per_s"] = len(items) / out["ours_judge_s"]
    out["baseline_judge_per_s"] = len(items) / base_judge_s
    out["ours_validate_per_s"] = len(workload) / out["ours_validate_s"]
    out["baseline_validate_per_s"] = len(workload) / base_validate_s
    out["judge_ratio"] = out["ours_judge_per_s"] / out["baseline_judge_per_s"]
    out["validate_ratio"] = out["ours_validate_per_s"] / out["baseline_validate_per_s"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--io", type=int, default=160, help="deduction/abduction seed records")
    ap.add_argument("--induction", type=int, default=40, help="induction seed records")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    info = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
            "workers": args.workers, "load_avg_before": os.getloadavg()}
    r = bench(args.io, args.induction, args.workers, args.seed)
    info["load_avg_after"] = os.getloadavg()
    print(f"machine: {info['machine']}; workers={args.workers}; isolation={r['isolation']}; "
          f"load avg before/after: {info['load_avg_before'][0]:.1f}/{info['load_avg_after'][0]:.1f}")
    print(f"(a) validation: {r['proposals']} proposals ({r['valid']} valid): ours {r['ours_validate_per_s']:.1f}/s | "
          f"baseline python -I -S {r['baseline_validate_per_s']:.1f}/s | ratio {r['validate_ratio']:.1f}x | CPU per "
          f"proposal {r['ours_validate_cpu_ms']:.1f} ms vs {r['baseline_validate_cpu_ms']:.1f} ms "
          f"({r['baseline_validate_cpu_ms'] / r['ours_validate_cpu_ms']:.1f}x) | same validity {r['validity_agreement']:.3f}")
    print(f"(b) judge: {r['judged']} answers {r['kinds']} ({r['correct']} correct): ours {r['ours_judge_per_s']:.1f}/s | "
          f"baseline {r['baseline_judge_per_s']:.1f}/s | ratio {r['judge_ratio']:.1f}x | CPU per answer "
          f"{r['ours_judge_cpu_ms']:.1f} ms vs {r['baseline_judge_cpu_ms']:.1f} ms "
          f"({r['baseline_judge_cpu_ms'] / r['ours_judge_cpu_ms']:.1f}x) | same verdicts {r['verdict_agreement']:.3f}")
    for d in r["verdict_disagreements"] + r["validity_disagreements"]:
        print("    differs from the baseline:", d)
    report = {"info": info, "results": r}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return report


if __name__ == "__main__":
    main()
