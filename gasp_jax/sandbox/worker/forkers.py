"""Z and T, the fork servers: the zygotes Z (persistent, for jobs of 1-2 tests or direct jobs)
and the per-job runners T (program compiled once) fork one test child C per request, wait for
it, kill and reap what it left and report its status and CPU."""

from __future__ import annotations

import json
import os
import resource
import struct
import sys

from .common import (_forget_frames, _libc_kill)
from .child import _test_child


def _reap_all(block: bool) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
            if pid == 0:
                return
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _reap_group(pgid: int) -> None:
    """Wait for every child of ours in process group ``pgid`` (just SIGKILLed) to be gone."""
    while True:
        try:
            os.waitpid(-pgid, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


# Fork-server protocol. J -> forker: a packet pipe (O_DIRECT: one write, one read) carrying
# b"J" + job JSON (Z only: the next job's mode, limits and cwd) or b"T" (run one test now).
# Forker -> J: a pipe; every message is one write below PIPE_BUF, so atomic: the child's pid
# right after the fork, its wait status and rusage once it and everything it left are dead and
# reaped, or (T only) the program's compile error. The test's input, program and output pipes
# are per-worker channels every forker inherits from J (see ``Runner._open_channels``).
REPORT_PID = struct.Struct("<ci")  # b"P", pid
REPORT_STATUS = struct.Struct("<ciddq")  # b"S", wait status, CPU total of the forker's reaped children, 0, maxrss (KiB)
REPORT_CE = struct.Struct("<cI")  # b"E", length of the UTF-8 message that follows
REPORT_READY = b"R"  # set up and serving
QUIET_WAIT_S = 0.005  # see runner.TestRun.wait
F_SETPIPE_SZ, PIPE_BYTES = 1031, 1 << 20
FORKER_START_TIMEOUT_S = 60.0


def _serve_cleanly(ctl_fd: int, report_fd: int, prog: dict, direct: dict | None) -> None:
    """``_serve_forks`` with every frame below this one cleared first (see ``_forget_frames``)."""
    _forget_frames(sys._getframe(1))
    _serve_forks(ctl_fd, report_fd, prog, direct)


def _serve_forks(ctl_fd: int, report_fd: int, prog: dict, direct: dict | None) -> None:
    """The loop of a forker: Z (persistent, root; C drops privileges and compiles the program
    itself) or T (one per job, already the sandbox uid, program compiled once).

    A forker runs as little Python as possible between forks: after every ``fork`` all of its
    pages are copy-on-write shared with the child, so each page it then writes costs a fault.
    J, which does the per-test bookkeeping (select, drain, encode, relay), never forks per test.
    What a test leaves (its status, CPU, pid) lives in ``_finish_test``'s frame, gone before the
    next fork: a test child sees nothing of an earlier test on its stack."""
    job, fds = prog.get("job"), prog["fds"]
    read, fork = os.read, os.fork
    while True:
        try:
            data = read(ctl_fd, 1 << 16)
        except InterruptedError:
            continue
        if not data:  # J closed its end: the job (T) or the worker (Z) is over
            return
        if data[:1] == b"J":
            job = json.loads(data[1:])
            prog = dict(prog, file=os.path.join(job["cwd"], "solution.py"))
            direct = dict(direct, cwd=job["cwd"])
            continue
        pid = fork()
        if pid == 0:  # C
            try:
                _test_child(job, prog, fds, direct)
            finally:
                os._exit(72)
        _finish_test(pid, prog["pidns"], prog["pid_fd"], report_fd)


def _finish_test(pid: int, pidns: bool, pid_fd: int, report_fd: int) -> None:
    """Report the test child's pid, wait for it, kill and reap whatever it left, and report its
    wait status, max RSS and the CPU time of every process the test ran: the forker's
    RUSAGE_CHILDREN total (it reaps them all, as their PID 1 and subreaper); J takes the growth."""
    os.write(pid_fd, REPORT_PID.pack(b"P", pid))
    _, status, usage = os.wait4(pid, 0)
    # Leftovers of the test (daemons, forks, threads, unreaped zombies): kill and reap them.
    # The raw libc call reports "nothing left" as -1/ESRCH instead of raising, so the common
    # case allocates nothing.
    if not pidns:  # no namespace: the test's process group (C called setsid)
        if _libc_kill(-pid, 9) == 0:
            _reap_group(pid)
        _reap_all(block=False)  # zombies of processes that left the group
    elif _libc_kill(-1, 9) == 0:  # we are PID 1 of a namespace that holds only this test's processes
        _reap_all(block=True)
    total = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.write(report_fd, REPORT_STATUS.pack(b"S", status, total.ru_utime + total.ru_stime, 0.0, usage.ru_maxrss))


def _forker_fds(keep: set, devnull: int) -> None:
    """A new forker holds only what it needs: J's stdio are the parent's pipes (EOF detection)."""
    for fd in range(0, 3):
        os.dup2(devnull, fd)
    prev = 2
    for fd in sorted(keep | {devnull}):
        os.closerange(prev + 1, fd)
        prev = fd
    os.closerange(prev + 1, 1 << 16)


class Forker:
    """J's handle on a forker process: its control pipe, its report pipe and what it reported."""

    def __init__(self, pid: int, ctl_w: int, report_r: int, pid_r: int, direct: bool) -> None:
        self.pid, self.ctl_w, self.report_r, self.pid_r, self.direct = pid, ctl_w, report_r, pid_r, direct
        self.buf = bytearray()
        self.status: int | None = None  # its wait status once reaped
        self.job_message = b""  # Z: the job settings it was last sent
        self.cpu_seen = 0.0  # the CPU total of its reaped children at its last report

    def close(self) -> None:
        os.close(self.ctl_w)
        os.close(self.report_r)
        os.close(self.pid_r)

    def reap(self, reaped: dict) -> None:
        """Wait for the forker (or take its status from ``reaped``, if J's kill-all got it)."""
        if self.pid in reaped:
            self.status = reaped.pop(self.pid)
            return
        try:
            _, self.status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _import_quietly(modules) -> None:
    """Import what is installed of ``modules`` (a missing one only means a slower first use)."""
    for name in modules:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - ImportError or a broken install: not our concern here
            pass
