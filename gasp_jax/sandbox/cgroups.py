"""Optional per-worker memory cgroup (v1 ``memory`` controller or v2 ``memory.max``).

RLIMIT_AS bounds one process; a program that forks up to RLIMIT_NPROC children could still use
``nproc * RLIMIT_AS`` in total. A cgroup caps the whole worker. It needs a writable cgroup
hierarchy: root, or without root a delegated cgroup v2 subtree (a systemd user scope or
service with ``Delegate=yes``, a container's cgroup namespace). It is best effort: ``create``
returns None when unavailable, and the sandbox then relies on the rlimits alone.
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
    for root in V2_ROOTS:
        if own2 is None or not os.path.isfile(os.path.join(root, "cgroup.controllers")):
            continue
        parent = root + _without_leaf(own2).rstrip("/")
        if not enable_memory_v2(parent):
            continue
        path = os.path.join(parent, name)
        try:
            os.mkdir(path)
            _write(os.path.join(path, "memory.max"), str(limit_bytes))
            try:
                _write(os.path.join(path, "memory.swap.max"), "0")
            except OSError:
                pass
            return path
        except OSError as exc:
            log.debug("cgroup v2 memory unavailable under %s: %s", parent, exc)
            remove(path, wait_s=0)
    return None


V2_ROOTS = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
TRAINER_LEAF = "gasp_trainer"


def _without_leaf(own: str) -> str:
    """Our cgroup, or the one above if we moved into the trainer leaf (``enable_memory_v2``)."""
    return own[: -len("/" + TRAINER_LEAF)] if own.endswith("/" + TRAINER_LEAF) else own


def _words(path: str) -> list[str]:
    try:
        with open(path) as fh:
            return fh.read().split()
    except OSError:
        return []


def enable_memory_v2(parent: str) -> bool:
    """Make the memory controller available to new children of cgroup v2 ``parent`` (our own).

    Already enabled (root's hierarchy, or a delegation that enabled it): nothing to do.
    Otherwise we may enable it only where we may write ``cgroup.subtree_control`` (root, or a
    delegated subtree), and the kernel allows it only while ``parent`` holds no process itself
    ("no internal processes"); in a delegated subtree the trainer usually sits in ``parent``, so
    it moves into a leaf ``gasp_trainer`` first (moved back if that is not enough)."""
    control = os.path.join(parent, "cgroup.subtree_control")
    if "memory" in _words(control):
        return True
    if "memory" not in _words(os.path.join(parent, "cgroup.controllers")) or not os.access(control, os.W_OK):
        return False
    try:
        _write(control, "+memory")
        return True
    except OSError:
        pass
    leaf = os.path.join(parent, TRAINER_LEAF)
    try:
        os.makedirs(leaf, exist_ok=True)
        _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    except OSError as exc:
        log.debug("cannot move the trainer into %s: %s", leaf, exc)
        return False
    try:
        _write(control, "+memory")
        log.info("sandbox: moved this process into cgroup leaf %s to enable the memory controller", leaf)
        return True
    except OSError as exc:  # other processes share the cgroup: leave everything as it was
        log.debug("cannot enable memory under %s: %s", parent, exc)
        try:
            _write(os.path.join(parent, "cgroup.procs"), str(os.getpid()))
        except OSError:
            pass
        remove(leaf, wait_s=0)
        return False


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
    if own2 is not None:  # (our own cgroup, or the parent of the leaf we moved into)
        parents += [root + _without_leaf(own2) for root in V2_ROOTS]
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
