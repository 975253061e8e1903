"""Training runs of a plan: each is a normal `python -m gasp_jax.main` job, run or resumed, never redone.

A run's directory holds `run_config.json` (the resolved config) and `run_config.py` (a config file that
loads it), so every run can be repeated by hand with
`python -m gasp_jax.main --config=RUNDIR/run_config.py --workdir=RUNDIR`. A run is finished when the
trainer's `summary.json` says it reached `steps` (the trainer force-saves the last step). An unfinished
run (crashed, killed, preempted) is started again in the same directory, where the trainer resumes from
its latest checkpoint. A directory whose `run_config.json` differs from the experiment's is an error:
results of two different experiments never mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import subprocess
import sys
import time
from typing import Any

import ml_collections

from gasp_jax import main as entry
from gasp_jax.protocol.experiment import REPO, ExperimentError, RunSpec

log = logging.getLogger(__name__)

RUN_CONFIG_PY = '''"""The resolved config of one protocol run (written by gasp_jax.protocol; data in run_config.json)."""

import json
import os

import ml_collections


def get_config(arg=None):
    del arg
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_config.json")) as f:
        return ml_collections.ConfigDict(json.load(f))
'''


def config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json_best_effort(sort_keys=True))


def prepare(spec: RunSpec) -> None:
    """Writes the run's config files (or checks that the existing ones are this experiment's)."""
    spec.workdir.mkdir(parents=True, exist_ok=True)
    path = spec.workdir / "run_config.json"
    resolved = config_json(spec.config)
    if path.exists():
        stored = json.loads(path.read_text())
        old = upgrade_run_config(json.loads(path.read_text()))
        if old != resolved:
            keys = sorted(k for k in set(_flat(old)) | set(_flat(resolved)) if _flat(old).get(k) != _flat(resolved).get(k))
            raise ExperimentError(f"{spec.workdir} holds run {spec.name} of a different experiment (changed: "
                                  f"{', '.join(keys[:8])}); use a new --workdir")
        if old == stored:
            return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(resolved, indent=1, sort_keys=True))
    os.replace(tmp, path)
    (spec.workdir / "run_config.py").write_text(RUN_CONFIG_PY)


def upgrade_run_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stored run config in today's form: LCB sources wrote 0 for "the run's sampling value" in
    `temperature` / `max_new_tokens`, which is None now (0 is greedy). Same experiment, same run."""
    for block in (config.get("sources") or {}).values():
        if isinstance(block, dict) and block.get("type") == "lcb_rlvr":
            for key in ("temperature", "max_new_tokens"):
                if block.get(key) == 0:
                    block[key] = None
    return config


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def status(spec: RunSpec) -> dict[str, Any]:
    """`{"finished": bool, "final_step": int | None, ...}` from the trainer's summary.json."""
    path = spec.workdir / "summary.json"
    if not path.exists():
        return {"finished": False, "final_step": None}
    summary = json.loads(path.read_text())
    final = summary.get("final_step")
    finished = final == int(spec.config.steps) and not summary.get("preempted", False)
    return {"finished": finished, "final_step": final, "summary": summary}


def launch(spec: RunSpec, executor: str) -> int:
    """Runs (or resumes) the training job; returns its exit status (0 = success)."""
    if executor == "inprocess":
        try:
            entry.run_job(spec.config, str(spec.workdir))
            return 0
        except (Exception, SystemExit) as e:  # noqa: BLE001 - a failed run is recorded and retried, the protocol goes on
            log.exception("protocol: run %s failed", spec.name)
            with open(spec.workdir / "train.log", "a") as out:  # where last_error finds it, as for a subprocess
                out.write(f"{type(e).__name__}: {e}\n" if not isinstance(e, SystemExit) else f"{e}\n")
            return 1
    cmd = [sys.executable, "-m", "gasp_jax.protocol.child", f"--config={spec.workdir / 'run_config.py'}",
           f"--workdir={spec.workdir}"]
    with run_lock(spec) as lock_fd:
        if status(spec)["finished"]:  # an earlier invocation's job finished while we waited for the lock
            return 0
        return _run_logged(cmd, spec, lock_fd)


def _run_logged(cmd: list[str], spec: RunSpec, lock_fd: int) -> int:
    with open(spec.workdir / "train.log", "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        out.flush()
        # The job inherits the run lock: a job orphaned by a killed protocol keeps it until it has
        # saved and exited (it gets SIGTERM when its parent dies), so a new invocation never runs a
        # second copy of the same run in the same directory.
        return subprocess.call(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, pass_fds=(lock_fd,))


@contextlib.contextmanager
def run_lock(spec: RunSpec):
    """An exclusive lock on the run directory (waits while a previous job of this run still runs)."""
    fd = os.open(spec.workdir / ".run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("protocol: %s is still running from an earlier invocation; waiting for it to stop", spec.name)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def train(spec: RunSpec, *, executor: str, max_attempts: int) -> dict[str, Any]:
    """Makes sure `spec` is finished: skips it when it is, else runs / resumes it (up to `max_attempts`)."""
    prepare(spec)
    st = status(spec)
    if st["finished"]:
        log.info("protocol: %s finished earlier (step %s), not run again", spec.name, st["final_step"])
        return {**st, "attempts": 0}
    attempts, rc = 0, None
    while attempts < max_attempts:
        attempts += 1
        log.info("protocol: %s %s (attempt %d/%d) -> %s", "resuming" if st["final_step"] or
                 (spec.workdir / "checkpoints").exists() else "starting", spec.name, attempts, max_attempts, spec.workdir)
        t0 = time.monotonic()
        rc = launch(spec, executor)
        st = status(spec)
        log.info("protocol: %s exited with %d after %.0f s (finished: %s)", spec.name, rc, time.monotonic() - t0, st["finished"])
        if st["finished"]:
            return {**st, "attempts": attempts}
    error = last_error(spec.workdir / "train.log") or f"exit status {rc}, no error line in train.log"
    log.error("protocol: run %s failed (not finished after %d attempts): %s; its cells stay empty (see %s/train.log)",
              spec.name, attempts, error, spec.workdir)
    return {**st, "attempts": attempts, "error": error}


# An exception's last line ("ValueError: ...") or a job's one-line error ("error: config: ...").
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)|error|FATAL)\b:?\s.*")


def last_error(log_path) -> str | None:
    """The last error line of a run's log (its latest attempt), or None."""
    try:
        text = open(log_path, errors="replace").read()
    except FileNotFoundError:
        return None
    attempt = text.rsplit("\n=== ", 1)[-1]
    lines = [line.strip() for line in attempt.splitlines() if _ERROR_LINE.match(line.strip())]
    return lines[-1][:500] if lines else None
