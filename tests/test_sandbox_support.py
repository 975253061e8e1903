"""Host-side postcondition checks shared by the sandbox tests (helpers only; no tests here)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

SANDBOX_UID_MIN = 1_000_000  # per-worker uids are 1_000_000 + worker pid (see worker.py)


def _status(pid: int) -> dict[str, str]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        st = _status(pid)
        if "PPid" in st:
            children.setdefault(int(st["PPid"]), []).append(pid)
    out, todo = set(), [root]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def sandbox_uids(sb) -> set[int]:
    return {SANDBOX_UID_MIN + w.proc.pid for w in sb._procs if w.proc is not None}


def sandbox_uid_processes(uids: set[int] | None = None) -> list[int]:
    """Processes running as one of ``uids`` (default: any sandbox uid) anywhere on the host."""
    found = []
    for pid in all_pids():
        uid = _status(pid).get("Uid", "0").split()[0]
        if uid.isdigit() and (int(uid) in uids if uids is not None else int(uid) >= SANDBOX_UID_MIN):
            found.append(pid)
    return found


def worker_extra_processes(sb) -> int:
    """Processes under the workers beyond the expected W, J and zygote Z per worker."""
    extra = 0
    for w in sb._procs:
        if w.proc is None or w.proc.poll() is not None:
            continue
        below = descendants(w.proc.pid)
        runners = {p for p in below if _status(p).get("PPid") == str(w.proc.pid)}  # J
        # Z, J's persistent fork server: a root child of J (test processes run as a sandbox uid).
        zygotes = {p for p in below if _status(p).get("PPid") in {str(j) for j in runners}
                   and _status(p).get("Uid", "").split()[:1] == ["0"]}
        extra += len(below - runners - zygotes) + max(0, len(zygotes) - 1)
    return extra


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def host_tmp_entries() -> set[str]:
    return {e for e in os.listdir(tempfile.gettempdir()) if e.startswith("gasp_sb_")}


@dataclass
class HostSnapshot:
    fds: int
    tmp: set[str]
    uid_procs: int

    @classmethod
    def take(cls) -> "HostSnapshot":
        return cls(open_fds(), host_tmp_entries(), 0)


def assert_host_clean(sb, before: HostSnapshot) -> None:
    """Postconditions after a verdict: nothing survives, no fd/tmp leaks, workers healthy."""
    import time

    deadline = time.monotonic() + 3.0
    while True:  # processes killed at the end of a job may take a moment to be reaped
        extra, uid_procs = worker_extra_processes(sb), sandbox_uid_processes(sandbox_uids(sb))
        if (extra == 0 and not uid_procs) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert extra == 0, f"{extra} leftover processes under the sandbox workers"
    assert not uid_procs, f"processes still running as a sandbox uid: {uid_procs}"
    assert open_fds() == before.fds, "file descriptors leaked in the parent"
    assert host_tmp_entries() == before.tmp, "temporary directories left on the host"
    assert os.getppid() > 1


def _can_isolate() -> bool:
    """Root with CAP_SYS_ADMIN (namespaces, mounts): what this project's machines provide."""
    try:
        with open("/proc/self/status") as fh:
            cap = int(next(line for line in fh if line.startswith("CapEff:")).split()[1], 16)
    except (OSError, StopIteration, ValueError):
        return False
    return os.geteuid() == 0 and bool(cap & (1 << 21))


# Where namespaces are unavailable the sandbox only runs with allow_unsafe (level "none"): the
# tests still run, and those whose programs would harm an unisolated host skip, naming the level.
CAN_ISOLATE = _can_isolate()
