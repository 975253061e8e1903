"""Config sweeps: one file in configs/sweeps/ -> named runs under one directory, launched and tracked.

A sweep file names a base config and either a grid or a list of overrides (dotted config keys):

    # configs/sweeps/azr_tiny_lr.py
    base = "configs/azr.py:tiny"
    grid = {"rl.optimizer.learning_rate": [1e-4, 3e-4], "seed": [0, 1]}    # the product: 4 runs
    # or: runs = [{"seed": 0}, {"seed": 1, "sampling.temperature": 0.8}]   # exactly these
    # optional: fixed = {"steps": 50} (every run), short = {"rl.optimizer.learning_rate": "lr"}

    python -m gasp_jax.sweep expand configs/sweeps/azr_tiny_lr.py              # validate + table, launches nothing
    python -m gasp_jax.sweep launch configs/sweeps/azr_tiny_lr.py --parallel=2 # local, 2 runs at a time
    python -m gasp_jax.sweep launch ... --launcher=xpk --launcher_args="--cluster=c --docker_image=i --tpu_type=v5p-128"
    python -m gasp_jax.sweep status runs/sweeps/azr_tiny_lr                    # table of runs and their state
    tensorboard --logdir runs/sweeps/azr_tiny_lr                               # every run, by name

Each run gets a readable unique name (`03_lr=0.0003,seed=1`), its own workdir `<sweep_dir>/<name>` and
runs `python -m gasp_jax.main --config=<base> --workdir=<workdir> --config.<key>=<value> ...`. Every
override is checked against the base config before anything launches (unknown key or wrong type ->
one error naming it). `<sweep_dir>/sweep.json` records the runs; each local run writes `run.log` and
`state.json` (running / done / failed with its exit code) in its workdir.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections

from gasp_jax import config_files
from gasp_jax.overrides import apply_overrides

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = {"tpu_vm": "launch/tpu_vm.sh", "xpk": "launch/xpk.sh", "slurm": "launch/slurm.sh", "gpu": "launch/gpu.sh"}


class SweepError(ValueError):
    """A sweep file or one of its overrides is invalid (raised before anything launches)."""


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    workdir: str
    overrides: dict[str, Any]
    argv: tuple[str, ...]  # the gasp_jax.main arguments (after `python -m gasp_jax.main`)


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    base: str  # "configs/x.py[:arg]"
    overrides: list[dict[str, Any]]
    short: dict[str, str]


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Reads a sweep file: `base` plus `grid` (product) or `runs` (list), optional `fixed` and `short`."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: sweep file not found")
    spec = importlib.util.spec_from_file_location(f"gasp_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base = getattr(module, "base", None)
    if not isinstance(base, str) or not base:
        raise SweepError(f"{path}: needs `base = \"configs/<file>.py[:arg]\"`")
    grid, runs = getattr(module, "grid", None), getattr(module, "runs", None)
    if (grid is None) == (runs is None):
        raise SweepError(f"{path}: define exactly one of `grid` (dict of key -> values) or `runs` (list of dicts)")
    if grid is not None:
        if not isinstance(grid, Mapping) or not grid or any(not isinstance(v, (list, tuple)) or not v for v in grid.values()):
            raise SweepError(f"{path}: `grid` must map config keys to non-empty lists of values")
        keys = list(grid)
        overrides = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    else:
        if not isinstance(runs, (list, tuple)) or not runs or not all(isinstance(r, Mapping) for r in runs):
            raise SweepError(f"{path}: `runs` must be a non-empty list of dicts of overrides")
        overrides = [dict(r) for r in runs]
    fixed = dict(getattr(module, "fixed", {}) or {})
    overrides = [{**fixed, **o} for o in overrides]
    return Sweep(path.stem, base, overrides, dict(getattr(module, "short", {}) or {}))


def load_base_config(base: str) -> ml_collections.ConfigDict:
    """The base config exactly as `--config=<base>` builds it."""
    try:
        return config_files.load(base)
    except config_files.ConfigFileError as e:
        raise SweepError(f"base config: {e}") from None


def check_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any], where: str) -> None:
    """Every key must name an existing field and every value fit its type (as `--config.<key>=` would)."""
    config = ml_collections.ConfigDict(config.to_dict())  # a scratch copy (locked fields stay typed)
    try:
        apply_overrides(config, overrides, where=where)
    except ValueError as e:
        raise SweepError(str(e)) from None


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def _short_names(keys: Sequence[str], short: Mapping[str, str]) -> dict[str, str]:
    """Readable labels: the last key component, or more of it when that is ambiguous."""
    out = {}
    for key in keys:
        if key in short:
            out[key] = short[key]
            continue
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            label = ".".join(parts[-n:])
            if sum(1 for k in keys if k.split(".")[-n:] == parts[-n:]) == 1:
                break
        out[key] = label
    return out


def expand(sweep: Sweep, sweep_dir: str | os.PathLike) -> list[Run]:
    """The sweep's runs, each validated against the base config; raises SweepError before any launch."""
    config = load_base_config(sweep.base)
    varying = [k for k in dict.fromkeys(k for o in sweep.overrides for k in o) if len({json.dumps(o.get(k), default=str) for o in sweep.overrides}) > 1]
    labels = _short_names(varying, sweep.short)
    width = len(str(len(sweep.overrides) - 1))
    runs, names = [], set()
    for i, overrides in enumerate(sweep.overrides):
        check_overrides(config, overrides, f"sweep {sweep.name} run {i}")
        label = ",".join(f"{labels[k]}={_format_value(overrides[k])}" for k in varying if k in overrides)
        name = f"{i:0{width}d}_" + re.sub(r"[^A-Za-z0-9_.,=+-]+", "-", label or "run")
        if name in names:
            raise SweepError(f"sweep {sweep.name}: two runs are named {name!r}")
        names.add(name)
        workdir = str(Path(sweep_dir) / name)
        argv = (f"--config={sweep.base}", f"--workdir={workdir}") + tuple(
            f"--config.{k}={_format_value(v)}" for k, v in overrides.items()
        )
        runs.append(Run(name, workdir, dict(overrides), argv))
    return runs


# ------------------------------------------------------------------------------------------ state


def _state_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "state.json"


def read_state(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = _state_path(run_dir)
    if not path.exists():
        return {"state": "pending"}
    state = json.loads(path.read_text())
    if state.get("state") == "running" and state.get("pid") and not _alive(int(state["pid"])):
        state["state"] = "lost"  # the launcher died without recording an exit code
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_state(run_dir: str | os.PathLike, **state: Any) -> None:
    path = _state_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def status_table(sweep_dir: str | os.PathLike) -> str:
    """One line per run: name, state, exit code, seconds, overrides."""
    meta = json.loads((Path(sweep_dir) / "sweep.json").read_text())
    rows = [("run", "state", "rc", "time_s", "overrides")]
    for run in meta["runs"]:
        st = read_state(run["workdir"])
        took = st.get("ended", time.time()) - st["started"] if "started" in st else None
        rows.append((
            run["name"], st["state"], "" if st.get("rc") is None else str(st["rc"]),
            "" if took is None else f"{took:.0f}", " ".join(f"{k}={_format_value(v)}" for k, v in run["overrides"].items()),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


# ----------------------------------------------------------------------------------------- launch


def _write_sweep_json(sweep: Sweep, sweep_dir: Path, runs: Sequence[Run], launcher: str) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.json").write_text(json.dumps({
        "sweep": sweep.name, "base": sweep.base, "launcher": launcher,
        "runs": [{"name": r.name, "workdir": r.workdir, "overrides": r.overrides, "argv": list(r.argv)} for r in runs],
    }, indent=1, default=str))


def launch_local(runs: Sequence[Run], *, parallel: int = 1, python: str = sys.executable, dry_run: bool = False) -> dict[str, int]:
    """Runs `python -m gasp_jax.main` per run, `parallel` at a time; returns exit codes by run name.

    Finished runs (state done) are skipped, so relaunching a sweep resumes it.
    """
    todo = [r for r in runs if read_state(r.workdir).get("state") != "done"]
    codes: dict[str, int] = {}
    if dry_run:
        for r in todo:
            print("+ " + shlex.join([python, "-m", "gasp_jax.main", *r.argv]))
        return codes
    active: list[tuple[Run, subprocess.Popen, Any, float]] = []
    queue = list(todo)
    try:
        while queue or active:
            while queue and len(active) < max(1, parallel):
                r = queue.pop(0)
                Path(r.workdir).mkdir(parents=True, exist_ok=True)
                log = open(Path(r.workdir) / "run.log", "w")
                proc = subprocess.Popen([python, "-m", "gasp_jax.main", *r.argv], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
                started = time.time()
                _write_state(r.workdir, state="running", pid=proc.pid, started=started)
                print(f"[sweep] started {r.name} (pid {proc.pid}) -> {r.workdir}/run.log", flush=True)
                active.append((r, proc, log, started))
            time.sleep(0.2)
            for item in list(active):
                r, proc, log, started = item
                if proc.poll() is None:
                    continue
                log.close()
                codes[r.name] = proc.returncode
                _write_state(r.workdir, state="done" if proc.returncode == 0 else "failed", rc=proc.returncode,
                             started=started, ended=time.time())
                print(f"[sweep] {r.name}: {'done' if proc.returncode == 0 else f'FAILED (exit {proc.returncode}), see run.log'}", flush=True)
                active.remove(item)
    finally:
        for r, proc, log, started in active:  # interrupted: stop what we started, record it
            proc.terminate()
            proc.wait()
            log.close()
            _write_state(r.workdir, state="failed", rc=proc.returncode, started=started, ended=time.time())
    return codes


def workload_name(sweep_name: str, run_name: str) -> str:
    """A Kubernetes-safe name (lowercase, digits, dashes; starts with a letter; <= 40 chars)."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{sweep_name}-{run_name}".lower()).strip("-")
    name = name if name[:1].isalpha() else "s-" + name
    return name[:40].rstrip("-")


def launch_remote(
    runs: Sequence[Run], launcher: str, launcher_args: Sequence[str], *, sweep_name: str = "sweep", dry_run: bool = False
) -> dict[str, int]:
    """One launcher invocation per run (an xpk workload, a SLURM job, a run on a TPU VM slice)."""
    script = REPO / LAUNCHERS[launcher]
    codes = {}
    for r in runs:
        extra = [f"--workload={workload_name(sweep_name, r.name)}"] if launcher == "xpk" else []
        cmd = ["bash", str(script), *launcher_args, *extra, *(["--dry_run"] if dry_run else []), "--", *r.argv]
        if launcher == "tpu_vm" and "run" not in launcher_args:
            cmd[2:2] = ["run"]  # the slice exists and is set up: only run (sequentially)
        print("+ " + shlex.join(cmd), flush=True)
        codes[r.name] = subprocess.call(cmd, cwd=REPO)
        if not dry_run:
            _write_state(r.workdir, state="submitted" if codes[r.name] == 0 else "failed", rc=codes[r.name], launcher=launcher,
                         started=time.time(), ended=time.time())
    return codes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gasp_jax.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("expand", "launch"):
        p = sub.add_parser(name)
        p.add_argument("sweep_file")
        p.add_argument("--sweep_dir", default="", help="default: runs/sweeps/<sweep file name>")
        if name == "launch":
            p.add_argument("--parallel", type=int, default=1, help="local runs at a time")
            p.add_argument("--launcher", default="local", choices=["local", *LAUNCHERS])
            p.add_argument("--launcher_args", default="", help="arguments for launch/<launcher>.sh (one string)")
            p.add_argument("--dry_run", action="store_true", help="print the commands, launch nothing")
    p = sub.add_parser("status")
    p.add_argument("sweep_dir")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "status":
            print(status_table(args.sweep_dir))
            return 0
        sweep = load_sweep(args.sweep_file)
        sweep_dir = Path(args.sweep_dir or REPO / "runs" / "sweeps" / sweep.name).resolve()
        runs = expand(sweep, sweep_dir)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"sweep {sweep.name}: {len(runs)} runs of {sweep.base} under {sweep_dir}")
    for r in runs:
        print(f"  {r.name}  {' '.join(r.argv[2:])}")
    if args.cmd == "expand":
        return 0
    if not args.dry_run:
        _write_sweep_json(sweep, sweep_dir, runs, args.launcher)
    if args.launcher == "local":
        codes = launch_local(runs, parallel=args.parallel, dry_run=args.dry_run)
    else:
        codes = launch_remote(runs, args.launcher, shlex.split(args.launcher_args), sweep_name=sweep.name, dry_run=args.dry_run)
    if not args.dry_run:
        print(status_table(sweep_dir))
        print(f"compare: tensorboard --logdir {sweep_dir}")
    return 1 if any(codes.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
