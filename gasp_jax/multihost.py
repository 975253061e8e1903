"""Multi-controller helpers: which process am I, my share of host work, and host-object collectives.

JAX runs one Python process per host; every process executes the same program and holds the devices of
its own host. Host-side work (sandbox judging, data loading, prompt building) is split with
`shard_for_process` and merged back with `all_gather_objects`, so that every process feeds identical
values into the next jitted step. Everything here is the identity when there is one process, so
single-host code paths need no special case.

`maybe_initialize` starts `jax.distributed` only when the environment describes several processes; it
is called once from `runtime.initialize` (never on import).
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger("gasp_jax")

T = TypeVar("T")

# Environment variables that say "this is process i of n" (set by launch/ scripts and tests).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def process_count() -> int:
    return jax.process_count()


def process_index() -> int:
    return jax.process_index()


def is_main() -> bool:
    """Process 0: the only one that writes logs, TensorBoard events and reports."""
    return jax.process_index() == 0


def process_bounds(n: int, index: int | None = None, count: int | None = None) -> tuple[int, int]:
    """`[start, stop)` of process `index`'s contiguous share of `n` items (the first `n % count` get one more)."""
    index = process_index() if index is None else index
    count = process_count() if count is None else count
    base, extra = divmod(n, count)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def shard_for_process(seq: Sequence[T]) -> list[T]:
    """This process's contiguous slice of `seq`; `all_gather_objects` of the slices gives back `seq`."""
    start, stop = process_bounds(len(seq))
    return list(seq[start:stop])


def _gather_bytes(payload: bytes) -> list[bytes]:
    """Every process's `payload`, in process order (lengths first, then one padded uint8 all-gather)."""
    lengths = multihost_utils.process_allgather(np.asarray([len(payload)], np.int64))
    lengths = [int(x) for x in np.asarray(lengths).reshape(-1)]
    buf = np.zeros((max(lengths),), np.uint8)
    buf[: len(payload)] = np.frombuffer(payload, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(lengths), -1)
    return [rows[i, :n].tobytes() for i, n in enumerate(lengths)]


def all_gather_objects(objs: Sequence[T]) -> list[T]:
    """Concatenation, in process order, of every process's list of picklable host objects.

    Collective: every process must call it at the same point. Objects travel pickled (all processes
    run the same trusted program), so numpy arrays and dataclasses survive the round trip.
    """
    objs = list(objs)
    if process_count() == 1:
        return objs
    out: list[T] = []
    for payload in _gather_bytes(pickle.dumps(objs, protocol=pickle.HIGHEST_PROTOCOL)):
        out.extend(pickle.loads(payload))
    return out


def broadcast_object(obj: T) -> T:
    """Process 0's `obj` on every process (a picklable host object). Collective."""
    if process_count() == 1:
        return obj
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if is_main() else b""
    size = int(multihost_utils.broadcast_one_to_all(np.asarray(len(payload), np.int64)))
    buf = np.zeros((size,), np.uint8)
    if is_main():
        buf[:] = np.frombuffer(payload, np.uint8)
    buf = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    return pickle.loads(buf.tobytes())


def assert_same_across_processes(value: Any, what: str) -> None:
    """Fails on every process when host values that must agree (configs, seeds, task lists) differ."""
    if process_count() == 1:
        return
    values = all_gather_objects([value])
    if any(v != values[0] for v in values[1:]):
        raise RuntimeError(f"{what} differs across processes: {values!r}")


def sync(name: str) -> None:
    """A named barrier across processes (no-op for one process)."""
    if process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def _env_says_multiprocess() -> bool:
    """True when the launcher environment describes more than one process (or asks: GASP_DISTRIBUTED=1,
    set by launch/tpu_vm.sh and launch/xpk.sh, where JAX's own cluster detection fills in the rest)."""
    if os.environ.get("GASP_DISTRIBUTED") == "1":
        return True
    if (_env_int(ENV_NUM_PROCESSES) or 1) > 1:
        return True
    if (_env_int("SLURM_NTASKS") or 1) > 1 and "SLURM_JOB_ID" in os.environ:
        return True
    if (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return True
    # Cloud TPU VMs: one process per worker host; a multi-host slice lists several workers.
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([h for h in hosts.split(",") if h]) > 1:
        return True
    return (_env_int("MEGASCALE_NUM_SLICES") or 1) > 1


def maybe_initialize(mode: Any = "auto") -> bool:
    """Starts `jax.distributed` when running multi-process; returns whether it is initialised.

    `mode`: "auto" (initialise when the environment describes several processes), True/"on" (always;
    JAX's cluster auto-detection fills what the environment leaves unset) or False/"off" (never).
    Explicit `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` win over auto-detection
    (that is how the local multi-process launcher and the tests run several processes on one machine).
    Must run before anything touches a JAX backend.
    """
    if jax.distributed.is_initialized():
        return True
    mode = {"auto": "auto", "on": True, "true": True, "off": False, "false": False}.get(
        str(mode).lower() if isinstance(mode, str) else mode, mode
    )
    if mode not in ("auto", True, False):
        raise ValueError(f"runtime.distributed must be 'auto', True or False, got {mode!r}")
    if mode is False or (mode == "auto" and not _env_says_multiprocess()):
        return False
    kwargs = {}
    if os.environ.get(ENV_COORDINATOR):
        kwargs["coordinator_address"] = os.environ[ENV_COORDINATOR]
    if _env_int(ENV_NUM_PROCESSES) is not None:
        kwargs["num_processes"] = _env_int(ENV_NUM_PROCESSES)
    if _env_int(ENV_PROCESS_ID) is not None:
        kwargs["process_id"] = _env_int(ENV_PROCESS_ID)
    log.info("jax.distributed.initialize(%s)", kwargs or "auto-detect")
    jax.distributed.initialize(**kwargs)
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def local_process_env(index: int, count: int, port: int, devices_per_process: int | None = None) -> dict[str, str]:
    """Environment for process `index` of `count` on this machine (coordinator on localhost:`port`).

    With `devices_per_process`, each process fakes that many CPU devices (multi-host rehearsal on CPU).
    """
    env = {ENV_COORDINATOR: f"localhost:{port}", ENV_NUM_PROCESSES: str(count), ENV_PROCESS_ID: str(index)}
    if devices_per_process:
        flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f)
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices_per_process}".strip()
        env["JAX_PLATFORMS"] = "cpu"
    return env


def run_local_processes(
    argv: Sequence[str],
    num_processes: int,
    *,
    devices_per_process: int | None = None,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    capture: bool = True,
) -> list[tuple[int, str]]:
    """Runs `argv` as `num_processes` cooperating JAX processes on this machine; `(returncode, output)` each.

    With `capture=False` the processes write to this process's stdout/stderr (output is then "").

    If one process fails the others are stopped (they would otherwise wait on the coordinator until its
    timeout), so a failure surfaces quickly with every process's output.
    """
    port = free_port()
    procs, logs = [], []
    for i in range(num_processes):
        penv = dict(os.environ, **(env or {}), **local_process_env(i, num_processes, port, devices_per_process))
        logf = tempfile.TemporaryFile(mode="w+") if capture else None
        procs.append(subprocess.Popen(list(argv), env=penv, cwd=cwd, stdout=logf, stderr=subprocess.STDOUT if capture else None))
        logs.append(logf)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs) or (deadline and time.monotonic() > deadline):
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    out = []
    for p, logf in zip(procs, logs):
        if logf is None:
            out.append((p.returncode, ""))
            continue
        logf.seek(0)
        out.append((p.returncode, logf.read()))
        logf.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gasp_jax.multihost --processes=2 --devices_per_process=4 -- python -m gasp_jax.main ...`"""
    parser = argparse.ArgumentParser(description="Run a command as N cooperating JAX processes on this machine.")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=0, help="fake this many CPU devices each")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    results = run_local_processes(command, args.processes, devices_per_process=args.devices_per_process or None, capture=False)
    codes = [rc for rc, _ in results]
    if any(codes):
        print(f"process exit codes: {codes}", file=sys.stderr)
    return max(codes, key=abs)


if __name__ == "__main__":
    raise SystemExit(main())
