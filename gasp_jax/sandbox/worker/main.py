"""Entry point: W sets up the isolation, then forks J (``Runner``) and waits for it."""

from __future__ import annotations

import _thread
import builtins
import json
import os
import signal
import sys
import traceback

from .common import (CATCHABLE_SIGNALS, CLONE_NEWPID, PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG,
    ROOTLESS_PROGRAM_UID, _check, _libc, _prctl)
from .isolation import (_ensure_stack, _private_proc, _program_user_namespace, _setup_isolation)
from .runner import Runner


def main(boot: bytes) -> None:
    """W: ``boot`` is what ``pool.WORKER_BOOT`` read (this package's directory, then the worker
    configuration as JSON)."""
    cfg = json.loads(boot[8:].decode().split("\n", 1)[1])
    _ensure_stack(int(cfg["stack"]), boot)
    del boot
    sys.argv = ["gasp-sandbox-worker"]
    cmd_fd, res_fd = 0, 1
    # Our stdin/stdout are the protocol pipes; user-visible streams are rebuilt in T.
    sys.set_int_max_str_digits(0)
    # ``python -S`` has no site-installed exit/quit; programs call them after printing.
    builtins.exit = builtins.quit = sys.exit
    _thread.stack_size(16 << 20)  # glibc would otherwise default threads to RLIMIT_STACK (512 MiB)
    for p in cfg.get("site_paths", []):
        if p not in sys.path:
            sys.path.append(p)
    facts: dict = {"owner": cfg.get("owner", 0)}
    _setup_isolation(cfg, facts)
    isolated = cfg.get("isolate", True) and (facts["privileged"] or facts["userns"])
    uid = userns_fd = None
    if isolated and facts["privileged"]:
        uid = int(cfg.get("uid_base", 1_000_000)) + os.getpid()
    if isolated:
        id_map = "0 0 4294967295" if uid is not None else f"{ROOTLESS_PROGRAM_UID} 0 1"
        try:
            userns_fd = _program_user_namespace(id_map)
        except OSError as exc:  # fail closed: every test's identity drop fails (INFRA_ERROR)
            facts["errors"].append(f"program user namespace: {exc}")
            uid = None
    facts["uid"] = uid
    facts["identity"] = "uid" if uid is not None else ("userns" if userns_fd is not None else None)
    facts["pidns"] = False
    if isolated:
        try:
            _check(_libc.unshare(CLONE_NEWPID), "unshare(pid)")
            facts["pidns"] = True
        except OSError as exc:
            facts["errors"].append(str(exc))
    pid = os.fork()
    if pid == 0:  # J
        try:
            # J and the forkers (which inherit this mask) are each PID 1 of a namespace; the kernel
            # drops signals to such an init from inside only while it has no handler, and Python
            # has one (SIGINT). Blocked, a signal stays pending forever; test children unblock.
            signal.pthread_sigmask(signal.SIG_BLOCK, CATCHABLE_SIGNALS)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            _prctl(PR_SET_NO_NEW_PRIVS, 1)  # inherited by every T: no setuid-binary escalation
            try:  # W is OOM-exempt; J and the T's are ordinary, so the OOM killer picks the hog
                with open("/proc/self/oom_score_adj", "w") as fh:
                    fh.write("0")
            except OSError:
                pass
            if facts["pidns"] and facts["mountns"]:
                _private_proc(facts)
            try:
                facts["pidns_inode"] = os.stat("/proc/self/ns/pid").st_ino
            except OSError:
                pass
            Runner(cmd_fd, res_fd, facts, uid, cfg.get("warm", ()), userns_fd).serve()
            os._exit(0)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            os._exit(3)
    os.close(cmd_fd)
    os.close(res_fd)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
