"""Host-side postcondition checks shared by the sandbox tests (helpers only; no tests here)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

SANDBOX_UID_MIN = 1_000_000  # per-worker uids are 1_000_000 + worker pid (see worker/main.py)


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
    """Root mode: the per-worker uids of ``sb``'s programs (rootless mode: empty, see below)."""
    return {SANDBOX_UID_MIN + w.proc.pid for w in sb._procs if w.proc is not None} if not ROOTLESS else set()


def _ns_depth(pid: int | str) -> int:
    return len(_status(pid).get("NSpid", "").split())


def sandbox_uid_processes(uids: set[int] | None = None) -> list[int]:
    """Sandbox processes that escaped their worker. Root mode: processes running as one of
    ``uids`` (default: any sandbox uid) anywhere on the host. Rootless mode (programs have our
    uid on the host): processes of our uid in a nested PID namespace that do not descend from
    this process, i.e. outlived their worker (a live worker's processes all descend from it)."""
    found = []
    if ROOTLESS:
        mine, own = descendants(os.getpid()), _ns_depth("self")
        for pid in all_pids():
            st = _status(pid)
            if (st.get("Uid", "").split()[:1] == [str(os.getuid())] and len(st.get("NSpid", "").split()) > own
                    and pid not in mine):
                found.append(pid)
        return found
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
        zygotes = {p for p in below if _is_zygote(p, runners)}
        extra += len(below - runners - zygotes) + max(0, len(zygotes) - 1)
    return extra


def _is_zygote(pid: int, runners: set[int]) -> bool:
    """Z, J's persistent fork server: a child of J named gasp-zygote (root mode: also uid 0;
    test processes run as a sandbox uid)."""
    st = _status(pid)
    return (st.get("PPid") in {str(j) for j in runners} and st.get("Name") == "gasp-zygote"
            and (ROOTLESS or st.get("Uid", "").split()[:1] == ["0"]))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def host_tmp_entries() -> set[str]:
    """Temporary directories of this process's unisolated sandboxes (other test runs may have theirs)."""
    return {e for e in os.listdir(tempfile.gettempdir()) if e.startswith(f"gasp_sb_{os.getpid()}_")}


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


def _privileged() -> bool:
    """CAP_SYS_ADMIN: the sandbox creates its namespaces directly (root mode)."""
    try:
        with open("/proc/self/status") as fh:
            cap = int(next(line for line in fh if line.startswith("CapEff:")).split()[1], 16)
    except (OSError, StopIteration, ValueError):
        return False
    return bool(cap & (1 << 21))


def _user_namespaces_allowed() -> bool:
    """Whether this process may create a user namespace (rootless mode), tried in a child."""
    import ctypes

    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0 else 1)
        finally:
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


# The sandbox's mode in this test process: root (CAP_SYS_ADMIN) or rootless (user namespaces).
ROOTLESS = not _privileged()
# Where no namespaces are available the sandbox only runs with allow_unsafe (level "none"): the
# tests still run, and those whose programs would harm an unisolated host skip, naming the level.
CAN_ISOLATE = not ROOTLESS or _user_namespaces_allowed()
