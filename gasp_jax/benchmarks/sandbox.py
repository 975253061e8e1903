"""Sandbox throughput/latency benchmark: ``python -m gasp_jax.benchmarks.sandbox``.

Measures, in one run and under the same load:

(a) AZR-style small functions (real AZR seed programs): executions/s (one execution = one
    ``f(input)`` in its own limited process) for validation jobs (a deduction program + its
    input run twice for the determinism check, or an induction program with its 10 inputs), and
    for the worst case of one execution per job; per-execution latency p50/p99.
(b) LCB-style problems with 10 tests: a trivial a+b program (pure sandbox overhead) and real
    officially-passing O1-Mini LiveCodeBench solutions with their public tests cycled to 10:
    problems/s, per-problem latency p50/p99 and per-problem sandbox overhead (latency minus the
    time the program itself ran).

Baseline: one fresh ``python3 -I -S`` process per execution with the same rlimits (preexec_fn),
run with the same concurrency. Targets: (a) >= 5x the baseline, (b) overhead <= 15 ms.

``--rootless`` measures the sandbox in rootless mode (user namespaces) next to root
mode: run as root, it alternates runs in this process (root mode) with runs of this benchmark
as an unprivileged uid (``setpriv``), ``--repeats`` times each, and prints one row per mode and
the rootless/root ratios (target: throughput within 10%). Run as an ordinary user it measures
rootless mode only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from gasp_jax.data import paths
from gasp_jax.sandbox import Limits, Sandbox, TestCase
from gasp_jax.sandbox.pool import default_python, site_package_dirs

HEADER_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random",
                  "statistics", "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing")
LCB_HEADER = "".join(f"from {m} import *\n" for m in HEADER_MODULES) + "".join(
    f"import {m}\n" for m in HEADER_MODULES) + "sys.setrecursionlimit(50000)\n"


def pct(xs: Sequence[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


# ------------------------------------------------------------------------------ workloads
def azr_programs(n: int, seed: int = 0) -> tuple[list[tuple[str, list[str]]], list[tuple[str, list[str]]]]:
    """(deduction jobs: program + [input, input] for the determinism check,
    induction jobs: program + its 10 inputs), from the AZR seed files."""
    rng = random.Random(seed)
    ded, ind = [], []
    for name in ("7b_seed_io.jsonl", "14b_coder_seed_io.jsonl"):
        with paths.open_text(paths.azr_seed_file(name)) as fh:
            for line in fh:
                r = json.loads(line)
                code = "\n".join(r.get("imports") or []) + "\n" + r["snippet"]
                ded.append((code, [r["input"], r["input"]]))
    for name in ("7b_code_f_seed_io.jsonl", "14b_coder_code_f_seed_io.jsonl"):
        with paths.open_text(paths.azr_seed_file(name)) as fh:
            for line in fh:
                r = json.loads(line)
                code = "\n".join(r.get("imports") or []) + "\n" + r["snippet"]
                ind.append((code, list(r["inputs"])))
    rng.shuffle(ded)
    rng.shuffle(ind)
    return ded[:n], ind[: max(1, n // 5)]


def lcb_problems(n: int, seed: int = 0) -> list[tuple[str, list[TestCase], str | None]]:
    """Officially passing O1-Mini samples with their public tests cycled to 10 tests."""
    problems = {}
    with paths.open_text(paths.data_file(paths.LCB_PUBLIC_V5)) as fh:
        for line in fh:
            row = json.loads(line)
            problems[row["question_id"]] = row
    official = paths.read_json(paths.data_file(paths.LCB_O1_SUBMISSION))
    out = []
    for row in official:
        p = problems[row["question_id"]]
        if not row["graded_list"][0] or not p["public_test_cases"]:
            continue
        tests = [TestCase(t["input"], t["output"]) for t in json.loads(p["public_test_cases"])]
        tests = [tests[i % len(tests)] for i in range(10)]
        out.append((row["code_list"][0], tests, json.loads(p["metadata"]).get("func_name")))
    random.Random(seed).shuffle(out)
    return out[:n]


# ------------------------------------------------------------------------------ baseline
def _limit_fn(lim: Limits) -> Callable[[], None]:
    w = lim.to_wire()

    def apply() -> None:  # runs in the forked child before exec (benchmark process only)
        R = resource
        R.setrlimit(R.RLIMIT_CPU, (w["cpu_soft"], w["cpu_hard"]))
        R.setrlimit(R.RLIMIT_AS, (w["as"], w["as"]))
        R.setrlimit(R.RLIMIT_STACK, (w["stack"], w["stack"]))
        R.setrlimit(R.RLIMIT_FSIZE, (w["fsize"], w["fsize"]))
        R.setrlimit(R.RLIMIT_NOFILE, (w["nofile"], w["nofile"]))
        R.setrlimit(R.RLIMIT_CORE, (0, 0))

    return apply


def baseline_exec(script: str, stdin: bytes, lim: Limits) -> tuple[int, bytes]:
    """One fresh ``python3 -I -S`` per execution, same rlimits, wall-clock kill, own session."""
    proc = subprocess.Popen([default_python(), "-I", "-S", "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limit_fn(lim),
                            start_new_session=True, env={"PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}, cwd="/tmp")
    try:
        out, _ = proc.communicate(stdin, timeout=lim.wall_deadline_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
    return proc.returncode, out


def azr_script(code: str, inp: str) -> str:
    return f"{code}\nprint(repr(f({inp})))\n"


def lcb_script(code: str, fn_name: str | None) -> str:
    if fn_name is None:
        return LCB_HEADER + code
    return (LCB_HEADER + code + "\nimport json as _j, sys as _s\n"
            f"_a = [_j.loads(l) for l in _s.stdin.read().split('\\n')]\n"
            f"_o = Solution() if 'Solution' in globals() else None\n"
            f"_r = (getattr(_o, {fn_name!r}) if _o else globals()[{fn_name!r}])(*_a)\n"
            "print(_j.dumps(list(_r) if isinstance(_r, tuple) else _r))\n")


# ------------------------------------------------------------------------------ measurements
def _tree_cpu_s(sb: Sandbox) -> float:
    """CPU seconds used so far by the sandbox worker trees: every living process under a worker
    (W, J, the zygote Z, a job's T, a running test) plus everything they reaped."""
    stats: dict[int, list[str]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as fh:
                    stats[int(p)] = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                pass
    children: dict[int, list[int]] = {}
    for pid, f in stats.items():
        children.setdefault(int(f[1]), []).append(pid)
    total = 0
    todo = [w.proc.pid for w in sb._procs if w.proc is not None]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += sum(int(x) for x in stats[pid][11:15])  # utime, stime, cutime, cstime
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time of this process plus either the sandbox worker trees or reaped children: the
    cost per execution, which (unlike wall time) does not depend on how loaded the machine is."""

    def __init__(self, sb: Sandbox | None) -> None:
        self.sb = sb

    def _now(self) -> float:
        own = time.process_time()
        if self.sb is not None:
            return own + _tree_cpu_s(self.sb)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own + ru.ru_utime + ru.ru_stime

    def __enter__(self) -> "CpuMeter":
        self.start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = self._now() - self.start


def run_parallel(fns: list[Callable[[], Any]], workers: int) -> tuple[float, list[Any]]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda f: f(), fns))
    return time.perf_counter() - t0, results


def bench_azr(sb: Sandbox, lim: Limits, n: int, workers: int, baseline: bool = True) -> dict[str, Any]:
    ded, ind = azr_programs(n)
    jobs = ded + ind
    n_exec = sum(len(inputs) for _, inputs in jobs)
    t0 = time.perf_counter()
    with CpuMeter(sb) as cpu_ours:
        futures = [sb.run_function_async(code, inputs, limits=lim) for code, inputs in jobs]
        results = [f.result() for f in futures]
    ours = time.perf_counter() - t0
    ok = sum(r.ok for rs in results for r in rs)
    singles = [(code, [inputs[0]]) for code, inputs in ded]
    t0 = time.perf_counter()
    for f in [sb.run_function_async(code, inputs, limits=lim) for code, inputs in singles]:
        f.result()
    ours_single = time.perf_counter() - t0
    lat = []  # per-execution latency on an otherwise idle pool (one job in flight)
    for code, inputs in singles[:200]:
        t = time.perf_counter()
        sb.run_function(code, inputs, limits=lim)
        lat.append(time.perf_counter() - t)
    out = {
        "jobs": len(jobs), "executions": n_exec, "ok": ok,
        "ours_exec_per_s": n_exec / ours, "ours_single_exec_per_s": len(singles) / ours_single,
        "ours_cpu_ms_per_exec": 1e3 * cpu_ours.seconds / n_exec,
        "latency_ms_p50": 1e3 * pct(lat, 50), "latency_ms_p99": 1e3 * pct(lat, 99),
    }
    if not baseline:
        return out
    execs = [(code, inp) for code, inputs in jobs for inp in inputs]
    base_n = min(len(execs), 600)
    sample = random.Random(1).sample(execs, base_n)
    with CpuMeter(None) as cpu_base:
        base_t, base_res = run_parallel([lambda c=c, i=i: baseline_exec(azr_script(c, i), b"", lim)
                                         for c, i in sample], workers)
    base_lat = []
    for c, i in sample[:100]:
        t = time.perf_counter()
        baseline_exec(azr_script(c, i), b"", lim)
        base_lat.append(time.perf_counter() - t)
    return {
        **out,
        "baseline_exec_per_s": base_n / base_t, "baseline_ok": sum(rc == 0 for rc, _ in base_res),
        "ratio": (n_exec / ours) / (base_n / base_t),
        "ours_cpu_ms_per_exec": 1e3 * cpu_ours.seconds / n_exec,
        "baseline_cpu_ms_per_exec": 1e3 * cpu_base.seconds / base_n,
        "cpu_ratio": (cpu_base.seconds / base_n) / (cpu_ours.seconds / n_exec),
        "ratio_single": (len(singles) / ours_single) / (base_n / base_t),
        "baseline_latency_ms_p50": 1e3 * pct(base_lat, 50), "baseline_latency_ms_p99": 1e3 * pct(base_lat, 99),
    }


def bench_lcb(sb: Sandbox, lim: Limits, n: int, workers: int, baseline: bool = True) -> dict[str, Any]:
    trivial = ("import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)",
               [TestCase(f"{i} {i + 1}\n", f"{2 * i + 1}\n") for i in range(10)], None)
    lat_trivial = []
    for _ in range(100):
        t = time.perf_counter()
        v = sb.grade(*trivial[:2], limits=lim)
        lat_trivial.append(time.perf_counter() - t)
        assert v.passed, v
    real = lcb_problems(n)
    lat_real, overhead = [], []
    statuses: dict[str, int] = {}
    for code, tests, fn in real[: min(len(real), 120)]:
        t = time.perf_counter()
        v = sb.grade(code, tests, fn_name=fn, limits=lim)
        el = time.perf_counter() - t
        statuses[v.status.value] = statuses.get(v.status.value, 0) + 1
        lat_real.append(el)
        overhead.append(el - sum(r.wall_s for r in v.tests))
    t0 = time.perf_counter()
    with CpuMeter(sb) as cpu_ours:
        verdicts = sb.grade_many([(c, ts, fn) for c, ts, fn in real])
    ours = time.perf_counter() - t0
    with CpuMeter(sb) as cpu_trivial:
        for _ in range(30):
            sb.grade(*trivial[:2], limits=lim)
    passed = sum(v.passed for v in verdicts)
    out = {
        "problems": len(real), "passed": passed, "sequential_statuses": statuses,
        "trivial_latency_ms_p50": 1e3 * pct(lat_trivial, 50), "trivial_latency_ms_p99": 1e3 * pct(lat_trivial, 99),
        "real_latency_ms_p50": 1e3 * pct(lat_real, 50), "real_latency_ms_p99": 1e3 * pct(lat_real, 99),
        "real_overhead_ms_p50": 1e3 * pct(overhead, 50), "real_overhead_ms_p99": 1e3 * pct(overhead, 99),
        "ours_problems_per_s": len(real) / ours,
        "ours_cpu_ms_per_problem": 1e3 * cpu_ours.seconds / len(real),
        "trivial_cpu_ms_per_problem": 1e3 * cpu_trivial.seconds / 30,
    }
    if not baseline:
        return out
    base_probs = real[: min(len(real), 60)]

    def base_problem(code: str, tests: list[TestCase], fn: str | None) -> None:
        script = lcb_script(code, fn)
        for tc in tests:
            baseline_exec(script, tc.input.encode(), lim)

    with CpuMeter(None) as cpu_base:
        base_t, _ = run_parallel([lambda p=p: base_problem(*p) for p in base_probs], workers)
    base_lat = []
    for p in base_probs[:20]:
        t = time.perf_counter()
        base_problem(*p)
        base_lat.append(time.perf_counter() - t)
    return {
        **out,
        "baseline_problems_per_s": len(base_probs) / base_t,
        "ratio": (len(real) / ours) / (len(base_probs) / base_t),
        "baseline_cpu_ms_per_problem": 1e3 * cpu_base.seconds / len(base_probs),
        "cpu_ratio": (cpu_base.seconds / len(base_probs)) / (cpu_ours.seconds / len(real)),
        "baseline_latency_ms_p50": 1e3 * pct(base_lat, 50), "baseline_latency_ms_p99": 1e3 * pct(base_lat, 99),
    }


def _privileged() -> bool:
    with open("/proc/self/status") as fh:
        cap = int(next(line for line in fh if line.startswith("CapEff:")).split()[1], 16)
    return bool(cap & (1 << 21))


def measure(workers: int, azr_programs: int, lcb_problems: int, baseline: bool = True) -> dict[str, Any]:
    """One run of (a) and (b) on a fresh sandbox (in whatever mode this process gets)."""
    lim = Limits(cpu_s=2.0)
    info = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
            "workers": workers, "load_avg_before": os.getloadavg()}
    with Sandbox(workers=workers, limits=lim) as sb:
        info["isolation"], info["mode"] = sb.isolation.level, sb.isolation.mode
        for _ in range(20):  # warm-up
            sb.run_function("def f(x):\n    return x", ["1"])
        azr = bench_azr(sb, lim, azr_programs, workers, baseline)
        lcb = bench_lcb(sb, lim, lcb_problems, workers, baseline)
    info["load_avg_after"] = os.getloadavg()
    return {"info": info, "azr": azr, "lcb": lcb}


def _print_report(report: dict[str, Any]) -> None:
    info, azr, lcb = report["info"], report["azr"], report["lcb"]
    print(f"machine: {info['machine']}; workers={info['workers']}; isolation={info['isolation']} ({info['mode']}); "
          f"load avg before/after: {info['load_avg_before'][0]:.1f}/{info['load_avg_after'][0]:.1f}")
    print(f"(a) AZR small functions: {azr['executions']} executions in {azr['jobs']} jobs ({azr['ok']} returned)")
    if "baseline_exec_per_s" not in azr:
        print(f"    ours {azr['ours_exec_per_s']:.0f} exec/s (1 exec/job: {azr['ours_single_exec_per_s']:.0f}/s); "
              f"CPU {azr['ours_cpu_ms_per_exec']:.2f} ms/exec; latency p50/p99 {azr['latency_ms_p50']:.1f}/"
              f"{azr['latency_ms_p99']:.1f} ms")
        print(f"(b) LCB 10-test problems: {lcb['problems']} ({lcb['passed']} PASS): {lcb['ours_problems_per_s']:.1f} "
              f"problems/s; CPU {lcb['ours_cpu_ms_per_problem']:.1f} ms/problem (trivial "
              f"{lcb['trivial_cpu_ms_per_problem']:.1f}); overhead p50/p99 {lcb['real_overhead_ms_p50']:.1f}/"
              f"{lcb['real_overhead_ms_p99']:.1f} ms")
        return
    print(f"    ours {azr['ours_exec_per_s']:.0f} exec/s (1 exec/job: {azr['ours_single_exec_per_s']:.0f}/s) | "
          f"baseline python3 -I -S {azr['baseline_exec_per_s']:.0f} exec/s | ratio {azr['ratio']:.1f}x "
          f"(1 exec/job: {azr['ratio_single']:.1f}x)")
    print(f"    CPU per execution: ours {azr['ours_cpu_ms_per_exec']:.2f} ms | baseline "
          f"{azr['baseline_cpu_ms_per_exec']:.2f} ms | CPU ratio {azr['cpu_ratio']:.1f}x")
    print(f"    latency per 1-exec job p50/p99 {azr['latency_ms_p50']:.1f}/{azr['latency_ms_p99']:.1f} ms | "
          f"baseline p50/p99 {azr['baseline_latency_ms_p50']:.1f}/{azr['baseline_latency_ms_p99']:.1f} ms")
    print(f"(b) LCB 10-test problems: {lcb['problems']} real problems ({lcb['passed']} PASS)")
    print(f"    trivial a+b latency p50/p99 {lcb['trivial_latency_ms_p50']:.1f}/{lcb['trivial_latency_ms_p99']:.1f} ms; "
          f"real: latency p50/p99 {lcb['real_latency_ms_p50']:.1f}/{lcb['real_latency_ms_p99']:.1f} ms, "
          f"overhead p50/p99 {lcb['real_overhead_ms_p50']:.1f}/{lcb['real_overhead_ms_p99']:.1f} ms")
    print(f"    ours {lcb['ours_problems_per_s']:.1f} problems/s | baseline {lcb['baseline_problems_per_s']:.1f} "
          f"problems/s | ratio {lcb['ratio']:.1f}x | baseline latency p50/p99 "
          f"{lcb['baseline_latency_ms_p50']:.0f}/{lcb['baseline_latency_ms_p99']:.0f} ms")
    print(f"    CPU per problem: ours {lcb['ours_cpu_ms_per_problem']:.1f} ms (trivial a+b: "
          f"{lcb['trivial_cpu_ms_per_problem']:.1f} ms = sandbox cost of 10 tests) | baseline "
          f"{lcb['baseline_cpu_ms_per_problem']:.1f} ms | CPU ratio {lcb['cpu_ratio']:.1f}x")


def _measure_unprivileged(args: argparse.Namespace) -> dict[str, Any]:
    """This benchmark's ``measure`` as an unprivileged uid (rootless mode), from root."""
    with tempfile.TemporaryDirectory(prefix="gasp_bench_") as tmp:
        os.chown(tmp, args.uid, args.uid)
        out = os.path.join(tmp, "report.json")
        cmd = ["setpriv", f"--reuid={args.uid}", f"--regid={args.uid}", "--clear-groups", default_python(), "-m",
               "gasp_jax.benchmarks.sandbox", "--measure-only", out, "--workers", str(args.workers),
               "--azr-programs", str(args.azr_programs), "--lcb-problems", str(args.lcb_problems), "--no-baseline"]
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, *site_package_dirs()]), HOME="/nonexistent")
        subprocess.run(cmd, check=True, cwd="/tmp", env=env)
        with open(out) as fh:
            return json.load(fh)


def compare_modes(args: argparse.Namespace) -> dict[str, Any]:
    """Root and rootless runs alternated ``args.repeats`` times; medians per mode and ratios."""
    runs: dict[str, list[dict[str, Any]]] = {"root": [], "rootless": []}
    for _ in range(args.repeats):
        if _privileged():
            runs["root"].append(measure(args.workers, args.azr_programs, args.lcb_problems, baseline=False))
            runs["rootless"].append(_measure_unprivileged(args))
        else:
            runs["rootless"].append(measure(args.workers, args.azr_programs, args.lcb_problems, baseline=False))
    keys = {"azr": ("ours_exec_per_s", "ours_cpu_ms_per_exec", "latency_ms_p50"),
            "lcb": ("ours_problems_per_s", "ours_cpu_ms_per_problem", "real_overhead_ms_p50")}
    rows: dict[str, dict[str, float]] = {}
    for mode, reports in runs.items():
        if reports:
            assert all(r["info"]["mode"] == mode for r in reports), [r["info"] for r in reports]
            rows[mode] = {f"{part}.{k}": sorted(r[part][k] for r in reports)[len(reports) // 2]
                          for part, ks in keys.items() for k in ks}
            rows[mode]["load_avg"] = sum(r["info"]["load_avg_before"][0] for r in reports) / len(reports)
    print(f"{'mode':9} | (a) exec/s | (a) CPU ms/exec | (a) latency p50 ms | (b) problems/s | "
          f"(b) CPU ms/problem | (b) overhead p50 ms | load avg")
    for mode, r in rows.items():
        print(f"{mode:9} | {r['azr.ours_exec_per_s']:10.0f} | {r['azr.ours_cpu_ms_per_exec']:15.2f} | "
              f"{r['azr.latency_ms_p50']:18.1f} | {r['lcb.ours_problems_per_s']:14.1f} | "
              f"{r['lcb.ours_cpu_ms_per_problem']:18.1f} | {r['lcb.real_overhead_ms_p50']:19.1f} | {r['load_avg']:.1f}")
    if len(rows) == 2:
        ratio = {k: rows["rootless"][k] / rows["root"][k] for k in rows["root"] if k != "load_avg"}
        print("rootless / root: " + ", ".join(f"{k} {v:.3f}" for k, v in ratio.items()))
        rows["ratio"] = ratio
    return {"runs": runs, "medians": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--azr-programs", type=int, default=400)
    ap.add_argument("--lcb-problems", type=int, default=300)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--rootless", action="store_true", help="rootless mode, next to root mode when run as root")
    ap.add_argument("--repeats", type=int, default=2, help="--rootless: runs per mode (alternated)")
    ap.add_argument("--uid", type=int, default=65534, help="--rootless as root: the unprivileged uid")
    ap.add_argument("--no-baseline", action="store_true", help="skip the python3 -I -S baseline")
    ap.add_argument("--measure-only", metavar="JSON", help=argparse.SUPPRESS)  # one run, figures to JSON
    args = ap.parse_args(argv)
    if args.measure_only:
        report = measure(args.workers, args.azr_programs, args.lcb_problems, baseline=not args.no_baseline)
        with open(args.measure_only, "w") as fh:
            json.dump(report, fh)
        return report
    if args.rootless:
        report = compare_modes(args)
    else:
        report = measure(args.workers, args.azr_programs, args.lcb_problems, baseline=not args.no_baseline)
        _print_report(report)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return report


if __name__ == "__main__":
    main()
