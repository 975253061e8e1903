"""Optional per-worker memory cgroup (v1 ``memory`` controller or v2 ``memory.max``).

RLIMIT_AS bounds one process; a program that forks up to RLIMIT_NPROC children could still use
``nproc * RLIMIT_AS`` in total. A cgroup caps the whole worker. It needs root and a writable
cgroup hierarchy, so it is best effort: ``create`` returns None when unavailable.
"""

from __future__ import annotations

import logging
import os
import re
import time

log = logging.getLogger("gasp_jax.sandbox")


def _own_cgroup(controller: str | None) -> str | None:
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                if controller is None and ctrls == "":
                    return path
                if controller is not None and controller in ctrls.split(","):
                    return path
    except OSError:
        return None
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def create(name: str, limit_bytes: int) -> str | None:
    """Create a memory cgroup capped at ``limit_bytes``; return its directory or None."""
    v1_root = "/sys/fs/cgroup/memory"
    own = _own_cgroup("memory")
    if own is not None and os.path.isfile(os.path.join(v1_root, "memory.limit_in_bytes")):
        path = os.path.join(v1_root + own, name)
        try:
            os.mkdir(path)
            _write(os.path.join(path, "memory.limit_in_bytes"), str(limit_bytes))
            swap = os.path.join(path, "memory.memsw.limit_in_bytes")
            if os.path.exists(swap):
                try:
                    _write(swap, str(limit_bytes))
                except OSError:
                    pass
            return path
        except OSError as exc:
            log.debug("cgroup v1 memory unavailable: %s", exc)
            remove(path, wait_s=0)
    own2 = _own_cgroup(None)
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if own2 is None or not os.path.isfile(os.path.join(root, "cgroup.controllers")):
            continue
        path = os.path.join(root + own2, name)
        try:
            os.mkdir(path)
            _write(os.path.join(path, "memory.max"), str(limit_bytes))
            return path
        except OSError as exc:
            log.debug("cgroup v2 memory unavailable under %s: %s", root, exc)
            remove(path, wait_s=0)
    return None


def remove(path: str, wait_s: float = 2.0) -> None:
    """Remove a cgroup directory (retrying while its last processes finish dying)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if time.monotonic() >= deadline:
                log.warning("could not remove cgroup %s: %s", path, exc)
                return
            time.sleep(0.01)


def remove_stale(prefix: str = "gasp_sandbox_") -> int:
    """Remove leftover empty cgroups of sandboxes whose parent process died without cleaning up
    (named ``<prefix><parent pid>_...``). Returns how many were removed."""
    removed = 0
    parents = []
    own = _own_cgroup("memory")
    if own is not None:
        parents.append("/sys/fs/cgroup/memory" + own)
    own2 = _own_cgroup(None)
    if own2 is not None:
        parents += ["/sys/fs/cgroup" + own2, "/sys/fs/cgroup/unified" + own2]
    pattern = re.compile(re.escape(prefix) + r"(\d+)_")
    for parent in parents:
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            m = pattern.match(name)
            if m and not os.path.exists(f"/proc/{m.group(1)}"):
                try:
                    os.rmdir(os.path.join(parent, name))
                    removed += 1
                except OSError:
                    pass
    return removed
