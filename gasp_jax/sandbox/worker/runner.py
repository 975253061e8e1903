"""J, the trusted runner (PID 1 of the worker's PID namespace): reads jobs from the parent,
runs each test through a forker, drains the test's output pipes into DONTFORK maps, enforces
wall-clock deadlines and relays one frame per test."""

from __future__ import annotations

import ctypes
import fcntl
import gc
import io
import json
import mmap
import os
import select
import shutil
import signal
import time
import stat as stat_module

from .common import (ARENA_KEEP_BYTES, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, DIRECT_MAX_TESTS, PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE, PR_SET_PDEATHSIG, SETUP_OK, _check, _compile_program, _enter_sandbox, _libc,
    _libc_setns, _libc_unshare, _prctl, _write_file)
from .isolation import _private_proc
from .child import _header_builtins
from .forkers import (FORKER_START_TIMEOUT_S, F_SETPIPE_SZ, Forker, PIPE_BYTES, QUIET_WAIT_S, REPORT_CE,
    REPORT_PID, REPORT_READY, REPORT_STATUS, _forker_fds, _import_quietly, _serve_cleanly)
from .wire import MAX_HEADER, PREFIX, encode_flat_frame, write_all

def _reopen_read_only(fd: int) -> int:
    """A read-only open file description of memfd ``fd`` (its own file offset), for test children."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    except OSError:
        return os.dup(fd)


def _fill_memfd(fd: int, data) -> None:
    view, off = memoryview(data), 0
    while off < view.nbytes:
        off += os.pwrite(fd, view[off:], off)
    os.ftruncate(fd, view.nbytes)
    view.release()


def _fresh_streams() -> tuple:
    """Unused stdio objects for fds 0/1/2, built once in J; each C gets pristine copies by fork
    (building them in every child costs ~0.2 ms). Like CPython's own: UTF-8, no newline translation."""
    stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "rb", closefd=False)), encoding="utf-8",
                             errors="strict", newline="\n")
    stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "wb", closefd=False)), encoding="utf-8",
                              errors="strict", newline="\n")
    stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "wb", closefd=False)), encoding="utf-8",
                              errors="backslashreplace", newline="\n", line_buffering=True)
    return stdin, stdout, stderr



def _wipe_dir(path: str) -> None:
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        full = os.path.join(path, name)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                os.unlink(full)
        except OSError:
            pass


IPC_RMID = 0
#: /proc/sysvipc file -> remover of one id. The objects of the worker's IPC namespace all come
#: from test programs; J (root, or uid 0 of the worker's user namespace) may remove any.
_SYSV = (("/proc/sysvipc/shm", lambda i: _libc.shmctl(i, IPC_RMID, None)),
         ("/proc/sysvipc/msg", lambda i: _libc.msgctl(i, IPC_RMID, None)),
         ("/proc/sysvipc/sem", lambda i: _libc.semctl(i, 0, IPC_RMID)))


# How many objects of each kind exist, one syscall each (the first int of struct shm_info /
# msginfo, the eighth of seminfo): after most tests none does, and no file needs reading.
IPC_SHM_INFO, IPC_MSG_INFO, IPC_SEM_INFO = 14, 12, 19
_ipc_info = (ctypes.c_int * 32)()


def _sysv_objects_exist() -> bool:
    for count, index in ((lambda: _libc.shmctl(0, IPC_SHM_INFO, _ipc_info), 0),
                         (lambda: _libc.msgctl(0, IPC_MSG_INFO, _ipc_info), 0),
                         (lambda: _libc.semctl(0, 0, IPC_SEM_INFO, _ipc_info), 7)):
        _ipc_info[index] = -1
        if count() < 0 or _ipc_info[index] != 0:  # on any doubt, look
            return True
    return False


def _remove_sysv_objects() -> None:
    """Remove every SysV shared memory segment, message queue and semaphore set (the ids are
    the second column of /proc/sysvipc/*; the files hold only a header line when there are none)."""
    if not _sysv_objects_exist():
        return
    for path, remove in _SYSV:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            data = chunk = os.read(fd, 1 << 16)
            while chunk:  # usually one read: the header line alone
                chunk = os.read(fd, 1 << 16)
                data += chunk
        finally:
            os.close(fd)
        for line in data.split(b"\n")[1:]:
            fields = line.split()
            if len(fields) > 1 and fields[1].isdigit():
                remove(int(fields[1]))


def _dontfork_map(size: int) -> mmap.mmap:
    m = mmap.mmap(-1, max(size, 1))
    m.madvise(mmap.MADV_DONTFORK)
    return m


class _Timeout(Exception):
    pass


class _ParentGone(Exception):
    """EOF on the command pipe: the parent died. Kill everything and exit at once."""


class Runner:
    """J: reads jobs from the parent, runs each test through a forker (a zygote Z, or the job's
    T), reads the test's output pipes, enforces wall-clock deadlines and the job's budget, and
    relays one frame per test to the parent.

    Hygiene: all user data J touches (program, inputs, relayed outputs) lives in DONTFORK maps
    that it reads into and writes from without copies, so no later child inherits it."""

    def __init__(self, cmd_fd: int, res_fd: int, facts: dict, uid: int | None, warm_modules=(),
                 userns_fd: int | None = None) -> None:
        self.cmd, self.res, self.facts, self.uid, self.userns_fd = cmd_fd, res_fd, facts, uid, userns_fd
        self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY) if facts["pidns"] else None
        self.owner = int(facts.get("owner", 0))
        self.devnull = os.open(os.devnull, os.O_RDONLY)
        self.work_root = "/tmp" if facts["mountns"] else None
        self.streams = _fresh_streams()
        self.header_builtins = _header_builtins()
        self.zygotes: dict[bool, Forker] = {}  # Z by whether it pre-imported the warm modules
        self.kill_forker_in_next_test = False  # test hook: a forker dying under a running program
        self.warm = [m for m in warm_modules if m.isidentifier()]
        self.oom_fd: int | None = None
        self.spare_arena: mmap.mmap | None = None
        self._open_channels()
        self.reaped: dict[int, int] = {}  # wait statuses of forkers reaped by _kill_all
        self.work_cwd = ""
        os.environ.pop("GASP_SB_REEXEC", None)
        if self.work_root:
            os.environ["HOME"] = os.environ["TMPDIR"] = os.path.join(self.work_root, "run")

    # -- protocol -------------------------------------------------------------------------
    @staticmethod
    def _read_exact(fd: int, n: int, into=None, deadline: float | None = None):
        buf = into if into is not None else memoryview(bytearray(n))
        got = 0
        while got < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise _Timeout
            k = os.readv(fd, [buf[got:n]])
            if k == 0:
                raise EOFError
            got += k
        return buf

    def _read_frame(self, fd: int, deadline: float | None = None):
        """Read one frame; blobs go straight into a DONTFORK arena (no heap copies). The arena of
        a job frame is kept for the next one (``_release``), growing when a frame needs more."""
        hlen, total = PREFIX.unpack(bytes(self._read_exact(fd, PREFIX.size, deadline=deadline)))
        if hlen > MAX_HEADER:
            raise EOFError
        header = json.loads(bytes(self._read_exact(fd, hlen, deadline=deadline)))
        arena = self.spare_arena if self.spare_arena is not None and len(self.spare_arena) >= total else None
        if arena is None:
            arena = _dontfork_map(total)
        else:
            self.spare_arena = None
        view = memoryview(arena)
        if total:
            self._read_exact(fd, total, view, deadline)
        blobs, off = [], 0
        for s in header["b"]:
            blobs.append(view[off:off + s])
            off += s
        return header, arena, view, blobs, total

    def _release(self, frame) -> None:
        _, arena, view, blobs, _ = frame
        for b in blobs:
            b.release()
        view.release()
        if len(arena) <= ARENA_KEEP_BYTES and (self.spare_arena is None or len(arena) > len(self.spare_arena)):
            if self.spare_arena is not None:
                self.spare_arena.close()
            self.spare_arena = arena
        else:
            arena.close()

    def _send(self, header: dict, blobs=()) -> None:
        write_all(self.res, encode_flat_frame(header, blobs))

    # -- serving --------------------------------------------------------------------------
    def serve(self) -> None:
        gc.collect()
        gc.freeze()
        self._send({"t": "ready", "facts": self.facts, "pid": os.getpid()})
        while True:
            try:
                frame = self._read_frame(self.cmd)
            except EOFError:
                return
            header, arena, _, blobs, _ = frame
            try:
                if header.get("t") == "job":
                    try:
                        self._run_job(header, blobs, arena)
                    except _ParentGone:
                        return
                elif header.get("t") == "ping":
                    self._send({"t": "pong", "id": header.get("id")})
                elif header.get("t") == "break_isolation":  # tests only: see _break_isolation
                    self._break_isolation()
                    self._send({"t": "pong", "id": header.get("id")})
                elif header.get("t") == "kill_forker_in_next_test":  # tests only: see TestRun.wait
                    self.kill_forker_in_next_test = True
                    self._send({"t": "pong", "id": header.get("id")})
            finally:
                self._release(frame)

    def _run_job(self, job: dict, blobs: list, arena: mmap.mmap) -> None:
        """One job: a forker per the job's size, then each test in turn (stopping early on a
        STOP from the parent), then a ``done`` frame."""
        job_id, lim = job["id"], job["lim"]
        self.oom_seen = self._oom_kills()
        self.stop_pending = False
        code_blob, inputs = blobs[0], blobs[1:]
        maps = self._maps_for(lim)
        cwd = self.work_cwd = self._make_cwd()
        ran, killed, forker, died = 0, None, None, False
        deadline = time.monotonic() + len(inputs) * (float(lim["wall"]) + 1.0) + 10.0
        try:
            _fill_memfd(self.code_w, code_blob)
            warm = any(arena.find(m.encode(), 0, code_blob.nbytes) >= 0 for m in self.warm)
            if len(inputs) <= DIRECT_MAX_TESTS or job.get("direct"):
                forker = self._zygote_for(job, cwd, warm)
            else:
                forker = self._start_program_runner(job, cwd, len(inputs), warm, deadline)
            for i, payload in enumerate(inputs):
                if i and self._stop_requested(job_id):
                    break
                if time.monotonic() > deadline:
                    killed = "budget"
                    break
                outcome = self._run_test(job, i, forker, payload, maps)
                if outcome == "ran":
                    ran += 1
                elif outcome == "ce":  # reported as test 0; the parent marks the rest CE
                    ran += 1
                    break
                elif outcome == "forker_died":
                    # The forker died while the program ran (reported as that test's failure):
                    # everything in the sandbox was killed; the rest of the job gets a new forker.
                    ran += 1
                    if forker.direct:
                        forker = self._zygote_for(job, cwd, warm)
                    else:
                        forker.close()
                        forker.reap(self.reaped)
                        forker = self._start_program_runner(job, cwd, len(inputs), warm, deadline)
                else:  # the forker died before the program ran: an infrastructure fault
                    died = True
                    break
        finally:
            if forker is not None and not forker.direct:
                forker.close()  # EOF on its control pipe: T exits
                forker.reap(self.reaped)
            self._clean(cwd)
        # T's own exit status tells the parent whether the program killed it (RE for the rest) or
        # it failed to start (INFRA_ERROR). Z is root: a test cannot kill it, so its death is ours.
        if forker is None or (forker.direct and died):
            status = 73 << 8
        elif forker.direct:
            status = 0
        else:
            status = forker.status if forker.status is not None else 73 << 8
        self._send({"t": "done", "id": job_id, "ran": ran, "killed": killed,
                    "runner_exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                    "runner_sig": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None})

    # -- per-worker channels -------------------------------------------------------------------
    def _open_channels(self) -> None:
        """The test's input and program memfds and its stdout/stderr/result pipes, made once per
        worker and inherited by every forker (per-test pipes and memfds would cost syscalls, and
        handing them to a forker would cost it page faults). Test children get read-only
        descriptions of the memfds. J drains the pipes until empty after every test (every
        writer is dead by then), so nothing carries over to the next test."""
        self.pay_w = os.memfd_create("input", 0)
        self.code_w = os.memfd_create("program", 0)
        self.pay_r, self.code_r = _reopen_read_only(self.pay_w), _reopen_read_only(self.code_w)
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        self.res_r, self.res_w = os.pipe()
        for fd in (self.out_r, self.err_r, self.res_r):
            os.set_blocking(fd, False)
            try:  # room for a typical test's whole output: the child never waits for J to read
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
            except OSError:
                pass
        self.child_fds = [self.pay_r, self.out_w, self.err_w, self.res_w, self.code_r]
        self.scratch = _dontfork_map(1 << 16)  # where output past the cap is read and dropped
        self.maps, self.maps_size = None, (0, 0)

    def _maps_for(self, lim: dict) -> tuple:
        """DONTFORK buffers for one test's stdout, result and stderr tail, kept across jobs."""
        size = (lim["out"], lim["err"])
        if self.maps is None or self.maps_size != size:
            if self.maps is not None:
                for m in self.maps:
                    m.close()
            self.maps = (_dontfork_map(size[0] + 1), _dontfork_map(size[0] + 1), _dontfork_map(size[1]))
            self.maps_size = size
        return self.maps

    def _discard_output(self) -> None:
        """Empty the output pipes (after a forker died, or leftovers of an unsafe-mode test)."""
        for fd in (self.out_r, self.err_r, self.res_r):
            while True:
                try:
                    if not os.readv(fd, [self.scratch]):
                        break
                except BlockingIOError:
                    break

    # -- forkers ----------------------------------------------------------------------------
    def _spawn_forker(self, setup, direct: bool, ready_by: float | None = None) -> Forker:
        """Fork a forker process; ``setup(keep_fds)`` runs in it and returns (prog, ctx).

        With a PID namespace, the forker is PID 1 of a namespace of its own (nested in J's), with
        its own /proc: a test cannot signal it (the kernel drops signals to a namespace's init from
        inside it), cannot see J or the other forkers, everything a test leaves is exactly what a
        ``kill(-1)`` of the forker reaches, and the forker's death kills all of it.

        Pipes: J -> forker requests (``ctl``); forker -> J readiness, exit statuses and compile
        errors (``report``, which J waits on); the pid of each test child (``pid``, which J reads
        only when it must kill the child: a message J does not wait for does not wake it)."""
        ctl_r, ctl_w = os.pipe2(os.O_DIRECT)  # packet mode: one request per read
        report_r, report_w = os.pipe()
        pid_r, pid_w = os.pipe()
        os.set_blocking(pid_r, False)
        gc.collect()
        _libc.malloc_trim(0)  # free heap pages go back to the kernel: every fork copies fewer
        own_ns = self.facts["pidns"]
        if own_ns:
            _check(_libc_unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID) for a forker")
        try:
            pid = os.fork()
        finally:
            if own_ns and pid != 0:  # J's later children (forkers) get namespaces of their own again
                _check(_libc_setns(self.pidns_fd, CLONE_NEWPID), "setns(J's PID namespace)")
        if pid == 0:
            code = 73
            try:
                os.close(ctl_w)
                os.close(report_r)
                os.close(pid_r)
                if own_ns:
                    # A session of its own: a test's killpg(0) reaches its own processes only (in
                    # rootless mode W and J have the test's uid on the host).
                    os.setsid()
                    if self.facts.get("proc"):
                        _check(_libc_unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS) for a forker")
                        _private_proc(self.facts)
                try:  # the OOM killer picks a test over the worker and the trainer
                    _write_file("/proc/self/oom_score_adj", "1000")
                    _write_file("/proc/self/comm", "gasp-zygote" if direct else "gasp-job")
                except OSError:
                    pass
                prog, ctx = setup({ctl_r, report_w, pid_w}, report_w)
                prog = dict(prog, pid_fd=pid_w)
                code = 74
                gc.freeze()  # a collection in a test child would otherwise write to (and copy) our pages
                os.write(report_w, REPORT_READY)
                _serve_cleanly(ctl_r, report_w, prog, ctx)
                code = 0
            finally:
                os._exit(code)
        os.close(ctl_r)
        os.close(report_w)
        os.close(pid_w)
        forker = Forker(pid, ctl_w, report_r, pid_r, direct)
        # Wait until it is set up (imports, compile), so no test's wall clock pays for that. A
        # compile error or its death is left in the pipe for the first test to find.
        deadline = ready_by if ready_by is not None else time.monotonic() + FORKER_START_TIMEOUT_S
        while time.monotonic() < deadline and select.select([report_r], [], [], deadline - time.monotonic())[0]:
            chunk = os.read(report_r, 4096)
            if chunk[:1] == REPORT_READY:
                forker.buf += chunk[1:]
                break
            forker.buf += chunk
            if not chunk or chunk[:1] == b"E":
                break
        return forker

    def _base_prog(self) -> dict:
        return {"streams": self.streams, "pidns": self.facts["pidns"], "header_builtins": self.header_builtins,
                "devnull": self.devnull, "fds": self.child_fds}

    def _zygote_for(self, job: dict, cwd: str, warm: bool) -> Forker:
        """Z, the persistent root forker of the direct path (started on first use and after it
        died), told the job's mode, limits and cwd. With ``warm`` the one that imported the warm
        modules (numpy: ~100 ms to import per test otherwise; every other test forks the leaner
        Z, since a bigger address space costs each fork more)."""
        zygote = self.zygotes.get(warm)
        if zygote is None:
            def setup(keep, report_w):
                userns = {self.userns_fd} if self.userns_fd is not None else set()
                _forker_fds(keep | set(self.child_fds) | userns, self.devnull)
                if not self.facts["pidns"]:
                    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of a test are ours to kill and reap
                # Rootless mode: a test has our uid on the host; non-dumpable, it cannot ptrace us.
                _prctl(PR_SET_DUMPABLE, 0)
                if warm:
                    _import_quietly(self.warm)
                ctx = {"uid": self.uid, "userns": self.userns_fd, "rootless": self.facts["userns"],
                       "pidns": self.facts["pidns"], "devnull": self.devnull}
                if self.userns_fd is not None:
                    # Z itself enters the program user namespace (with every capability in it, none
                    # outside): a test child then only drops its identity, and saves a setns per
                    # test (~0.2 ms of CPU). Failing this, Z fails to start: fail closed.
                    _check(_libc_setns(self.userns_fd, CLONE_NEWUSER), "setns(program user namespace) for a zygote")
                    ctx["userns_entered"] = True
                return self._base_prog(), ctx

            zygote = self.zygotes[warm] = self._spawn_forker(setup, direct=True)
        info = {k: job[k] for k in ("mode", "fn", "header", "lim") if k in job}
        message = b"J" + json.dumps(dict(info, cwd=cwd), sort_keys=True).encode()
        if message != zygote.job_message:  # most jobs in a batch share mode and limits
            try:
                os.write(zygote.ctl_w, message)
                zygote.job_message = message
            except OSError:
                pass  # Z is gone: the first test finds out from its report pipe
        return zygote

    def _start_program_runner(self, job: dict, cwd: str, n_tests: int, warm: bool, ready_by: float) -> Forker:
        """T, the per-job forker of jobs of 3+ tests: drops to the sandbox identity and limits and
        compiles the program once (a compile error is reported instead of forking anything)."""
        lim = job["lim"]

        def setup(keep, report_w):
            userns = {self.userns_fd} if self.userns_fd is not None else set()
            _forker_fds(keep | set(self.child_fds) | userns, self.devnull)
            total = lim["cpu_hard"] * max(1, n_tests) + 10  # T's own budget; each C gets the per-test limit
            _enter_sandbox({"cwd": cwd, "uid": self.uid, "userns": self.userns_fd, "rootless": self.facts["userns"],
                            "pidns": self.facts["pidns"]}, lim, (total, total))
            for fd in userns:
                os.close(fd)
            _prctl(PR_SET_DUMPABLE, 0)  # a test child (same uid) cannot ptrace us or open our fds
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
            if warm:  # once per job instead of once per test
                _import_quietly(self.warm)
            size = os.fstat(self.code_r).st_size
            code_bytes = os.pread(self.code_r, size, 0) if size else b""
            program, ce = _compile_program(code_bytes)
            del code_bytes
            if program is None:
                msg = ce.encode("utf-8", "replace")[:2000]
                os.write(report_w, REPORT_CE.pack(b"E", len(msg)) + msg)
                os._exit(0)
            prog = dict(self._base_prog(), code=program, job=job, file=os.path.join(cwd, "solution.py"))
            return prog, None

        return self._spawn_forker(setup, direct=False, ready_by=ready_by)  # its compile counts against the job

    def _oom_moved(self, status, kill_reason) -> bool:
        """After a SIGKILL we did not send: did the worker cgroup's OOM-kill counter move since
        the last look (job start or previous such kill)? Read lazily: a file read per test costs."""
        if status is not None and not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
                                       and kill_reason is None):
            return False
        now = self._oom_kills()
        moved, self.oom_seen = now > self.oom_seen, now
        return moved

    def _oom_kills(self) -> int:
        """The worker cgroup's OOM-kill counter (0 without a cgroup): an unexplained SIGKILL of a
        test is MLE only if this counter moved; otherwise the program killed itself (RE)."""
        if self.oom_fd is None:
            cg = self.facts.get("cgroup")
            for name in ("memory.oom_control", "memory.events") if cg else ():
                try:
                    self.oom_fd = os.open(os.path.join(cg, name), os.O_RDONLY)
                    break
                except OSError:
                    continue
            else:
                self.oom_fd = -1
        if self.oom_fd < 0:
            return 0
        try:
            for line in os.pread(self.oom_fd, 4096, 0).split(b"\n"):
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    # -- STOP frames during a job ---------------------------------------------------------
    def _stop_requested(self, job_id: int) -> bool:
        """Non-blocking check for a STOP frame for this job (early exit on first failure)."""
        while not self.stop_pending and select.select([self.cmd], [], [], 0)[0]:
            self._handle_cmd(job_id)
        return self.stop_pending

    def _handle_cmd(self, job_id: int) -> None:
        """Read one frame from the parent during a job: a STOP, or EOF when the parent died."""
        try:
            frame = self._read_frame(self.cmd)
        except EOFError:
            raise _ParentGone from None
        kind, fid = frame[0].get("t"), frame[0].get("id")
        self._release(frame)
        if kind == "stop" and fid == job_id:
            self.stop_pending = True
        elif kind != "stop":
            raise RuntimeError(f"unexpected frame {kind!r} during a job")

    def _run_test(self, job: dict, i: int, forker: Forker, payload, maps) -> str:
        """Run test ``i`` through ``forker`` and relay its facts to the parent: "ran", "ce" (T
        could not compile the program; reported as test ``i``) or "died" (the forker is gone:
        everything in the sandbox was killed)."""
        return TestRun(self, job, i, forker, maps).run(payload)

    def _break_isolation(self) -> None:
        """Test hook (``Sandbox._break_isolation_for_test``): lose the program identity as a worker
        whose namespace setup broke would, so the next test child's identity drop fails and its
        check catches it (root mode: the uid becomes 0; rootless mode: the program namespace fd
        becomes J's own user namespace, which setns refuses). The zygotes are restarted with it."""
        if self.userns_fd is not None:
            os.dup2(os.open("/proc/self/ns/user", os.O_RDONLY), self.userns_fd)
        elif self.uid is not None:
            self.uid = 0
        self._kill_all()

    def _kill_test(self, forker: Forker, pid: int) -> None:
        """SIGKILL a running test (its wall deadline passed, or it floods its output). Without a
        PID namespace ``pid`` is the test's pid. Otherwise it is the test's pid in the forker's
        own namespace: J kills every child of the forker as J's /proc shows them (the test, and
        what it left that was re-parented to the forker); the forker's ``kill(-1)`` then gets
        the rest. Rare (a TLE or OLE), so J's /proc is scanned only here."""
        if not self.facts["pidns"]:
            targets = [pid]
        elif self.facts.get("proc"):
            targets, parent = [], f"PPid:\t{forker.pid}\n"
            for name in os.listdir("/proc"):
                if name.isdigit():
                    try:
                        with open(f"/proc/{name}/status") as fh:
                            if parent in fh.read():
                                targets.append(int(name))
                    except OSError:
                        continue
        else:  # no procfs of our namespace to look in: the forker goes, and its namespace with it
            targets = [forker.pid]
        for target in targets:
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _make_cwd(self) -> str:
        """The job's empty working directory, owned by the sandbox uid. In the private /tmp it is
        one directory reused by every job (emptied after every test, recreated only if a program
        changed it); without a mount namespace, a fresh host temp dir per job."""
        if not self.work_root:
            import tempfile
            cwd = tempfile.mkdtemp(prefix=f"gasp_sb_{self.owner}_")  # named after the trainer's pid
            if self.uid is not None:
                os.chown(cwd, self.uid, self.uid)
            return cwd
        cwd = os.path.join(self.work_root, "run")
        uid = self.uid if self.uid is not None else os.getuid()
        try:
            st = os.lstat(cwd)
            if stat_module.S_ISDIR(st.st_mode) and st.st_uid == uid and stat_module.S_IMODE(st.st_mode) == 0o700:
                return cwd
        except FileNotFoundError:
            pass
        if self.facts["userns"] and os.path.ismount(cwd):  # rootless: its own tmpfs; the program owns it
            os.chown(cwd, uid, uid)
            os.chmod(cwd, 0o700)
            return cwd
        if os.path.lexists(cwd):
            shutil.rmtree(cwd, ignore_errors=True)
            if os.path.lexists(cwd):
                os.unlink(cwd)
        os.mkdir(cwd, 0o700)
        os.chmod(cwd, 0o700)  # whatever the umask
        if self.uid is not None:
            os.chown(cwd, self.uid, self.uid)
        return cwd

    def _kill_all(self) -> None:
        """SIGKILL every process left in the sandbox, forkers included, and reap them (J is PID 1:
        they are ours). Forker exit statuses are kept for their ``reap``."""
        if self.facts["pidns"]:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        block = self.facts["pidns"]
        while True:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == 0:
                break
            self.reaped[pid] = status
        for warm, zygote in list(self.zygotes.items()):
            if zygote.pid in self.reaped:
                zygote.reap(self.reaped)
                zygote.close()
                del self.zygotes[warm]

    def _wipe_after_test(self, cwd: str) -> None:
        """Empty the test's cwd and /dev/shm (the only places a program may write) and remove every
        SysV IPC object (they outlive processes: a channel to later tests, pinned memory)."""
        _wipe_dir(cwd)
        if self.facts["mountns"]:
            _wipe_dir("/dev/shm")
        if self.facts["netns"]:  # a private IPC namespace (created with the network one)
            _remove_sysv_objects()

    def _clean(self, cwd: str) -> None:
        if self.work_root:
            self._wipe_after_test(cwd)  # cwd kept for the next job
        else:
            shutil.rmtree(cwd, ignore_errors=True)
            if self.facts["mountns"]:
                _wipe_dir("/dev/shm")


class TestRun:
    """One test in J: start it on its forker, watch the forker's reports and the test's output
    pipes until the forker reports the exit (or a deadline passes), then relay one frame.

    The output pipes are drained straight into the runner's DONTFORK maps: stdout and the result
    record up to the cap (the byte past it marks an overflow), stderr as a ring buffer that keeps
    the tail."""

    def __init__(self, runner: "Runner", job: dict, i: int, forker: Forker, maps) -> None:
        self.runner, self.job, self.i, self.forker = runner, job, i, forker
        self.out_map, self.res_map, self.err_map = maps
        lim = job["lim"]
        self.out_cap, self.err_cap = lim["out"], lim["err"]
        self.wall_s = float(lim["wall"])
        self.out_mv, self.res_mv, self.err_mv = (memoryview(m) for m in maps)
        self.pos = {runner.out_r: 0, runner.res_r: 0}  # bytes read of stdout / the result record
        self.err_pos, self.err_wrapped = 0, False
        self.kill_reason: str | None = None  # "wall" or "ole" once J decided to kill the test
        self.pid: int | None = None  # the test child's pid (in the forker's namespace)
        self.status: int | None = None  # its wait status, once the forker reported it
        self.usage: tuple | None = None  # (CPU seconds of the test's processes, max RSS KiB)
        self.ce: str | None = None  # T's compile error
        self.died = self.killed_sent = False
        self.grace: float | None = None  # after a kill: how long the forker may take to report

    # -- reading --------------------------------------------------------------------------
    def drain(self, fd: int) -> bool:
        """Read what is available straight into the DONTFORK maps; False when nothing is."""
        r = self.runner
        try:
            if fd == r.err_r:  # ring buffer keeps the tail
                pos, cap = self.err_pos, self.err_cap
                k = os.readv(fd, [self.err_mv[pos:cap], self.err_mv[0:pos]])
                if k:
                    self.err_wrapped = self.err_wrapped or pos + k >= cap
                    self.err_pos = (pos + k) % cap
                return k > 0
            pos = self.pos[fd]
            if pos > self.out_cap:  # over the cap: read and drop
                return os.readv(fd, [r.scratch]) > 0
            k = os.readv(fd, [(self.out_mv if fd == r.out_r else self.res_mv)[pos:self.out_cap + 1]])
            self.pos[fd] = pos + k
            if pos + k > self.out_cap and self.kill_reason is None:
                self.kill_reason = "ole"
            return k > 0
        except BlockingIOError:
            return False

    def take_pid(self) -> None:
        """The child's pid, if the forker has forked it yet (consumes its message)."""
        if self.pid is None:
            try:
                msg = os.read(self.forker.pid_r, REPORT_PID.size)
            except BlockingIOError:
                return
            if len(msg) == REPORT_PID.size:
                self.pid = REPORT_PID.unpack(msg)[1]

    def parse_reports(self) -> None:
        buf = self.forker.buf
        while buf:
            kind = buf[:1]
            if kind == b"S" and len(buf) >= REPORT_STATUS.size:
                _, self.status, cpu_total, _, maxrss = REPORT_STATUS.unpack_from(buf)
                self.usage = (cpu_total - self.forker.cpu_seen, maxrss)
                self.forker.cpu_seen = cpu_total
                del buf[:REPORT_STATUS.size]
            elif kind == b"E" and len(buf) >= REPORT_CE.size:
                n = REPORT_CE.unpack_from(buf)[1]
                if len(buf) < REPORT_CE.size + n:
                    return
                self.ce = bytes(buf[REPORT_CE.size:REPORT_CE.size + n]).decode("utf-8", "replace")
                del buf[:REPORT_CE.size + n]
            elif kind in (b"S", b"E"):
                return  # partial (cannot happen: every report is one atomic write)
            else:
                self.died = True  # garbage: treat the forker as broken
                return

    def read_reports(self) -> None:
        chunk = os.read(self.forker.report_r, 4096)
        if not chunk:
            self.died = True
            return
        self.forker.buf += chunk
        self.parse_reports()

    # -- the test -----------------------------------------------------------------------------
    def run(self, payload) -> str:
        r, forker = self.runner, self.forker
        _fill_memfd(r.pay_w, payload)
        os.lseek(r.pay_r, 0, os.SEEK_SET)  # the description the child's stdin shares
        start = time.monotonic()
        try:
            os.write(forker.ctl_w, b"T")
        except OSError:
            pass  # the forker is gone: its report pipe says so below
        try:
            self.wait(start)
            wall = time.monotonic() - start
            self.take_pid()  # consume its message (P always precedes S)
            if self.died:
                for fd in (r.out_r, r.err_r, r.res_r):  # what the test wrote before it went
                    while self.drain(fd):
                        pass
                program_ran = self.pos[r.res_r] > 0 and self.res_mv[0] == SETUP_OK[0]
                self.clean_up_after_forker_death()
                if not program_ran:
                    return "died"
                # Something the program did took its forker down: its failure (RE), not the job's.
                self.status, self.usage, self.kill_reason = signal.SIGKILL, (0.0, 0), "forker"
                self.relay(time.monotonic() - start)
                return "forker_died"
            for fd in (r.out_r, r.err_r, r.res_r):  # every writer is dead (the forker killed the rest)
                while self.drain(fd):
                    pass
        finally:
            r._wipe_after_test(r.work_cwd)
        if self.ce is not None:
            record = json.dumps({"k": "ce", "msg": self.ce}).encode()
            r._send({"t": "test", "id": self.job["id"], "i": self.i, "exit": 0, "sig": None, "cpu": 0.0, "wall": 0.0,
                     "rss_kb": 0, "kill": None, "out_over": False, "res_over": False, "setup_ok": True},
                    [b"", record, b""])
            return "ce"
        self.relay(wall)
        return "ran"

    def wait(self, start: float) -> None:
        """Until the forker reports the test's exit or a compile error, or is found broken: relay
        STOP frames, drain output, kill the test at its wall deadline or on an output flood."""
        r, forker = self.runner, self.forker
        deadline = start + self.wall_s
        self.parse_reports()  # what arrived while the forker was starting (a compile error)
        watch_all = [forker.report_r, r.out_r, r.err_r, r.res_r]
        # Most tests end within a few ms and print less than a pipe holds: until QUIET_WAIT_S, J
        # waits for the exit report alone instead of waking for every write of the child.
        quiet_until = start + QUIET_WAIT_S
        while self.status is None and self.ce is None and not self.died:
            now = time.monotonic()
            if self.kill_reason is None and now >= deadline:
                self.kill_reason = "wall"
            quiet = self.kill_reason is None and now < quiet_until
            if self.kill_reason is not None:
                if self.grace is None:
                    self.grace = now + 5.0
                self.take_pid()
                if self.pid is not None and not self.killed_sent:
                    r._kill_test(forker, self.pid)  # the forker then kills the rest
                    self.killed_sent = True
                if now >= self.grace:
                    self.died = True  # the forker does not report: broken
                    return
                left = min(self.grace - now, 0.01 if self.pid is None else self.grace - now)
            else:
                left = min(deadline, quiet_until) - now if quiet else deadline - now
            watch = watch_all[:1] if quiet else watch_all
            ready, _, _ = select.select(watch if r.stop_pending else watch + [r.cmd], [], [], left)
            for fd in ready:
                if fd == forker.report_r:
                    self.read_reports()
                elif fd == r.cmd:  # a STOP (kept for later), or the parent died
                    try:
                        r._handle_cmd(self.job["id"])
                    except _ParentGone:
                        r._kill_all()
                        raise
                else:
                    self.drain(fd)
                    if r.kill_forker_in_next_test and self.pos[r.res_r] > 0:  # the program runs
                        r.kill_forker_in_next_test = False
                        os.kill(forker.pid, signal.SIGKILL)

    def clean_up_after_forker_death(self) -> None:
        r, forker = self.runner, self.forker
        if self.pid is not None and not r.facts["pidns"]:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        r._kill_all()  # every process in the sandbox, the forker included
        if forker.direct and any(z is forker for z in r.zygotes.values()):  # no PID namespace
            forker.reap(r.reaped)
            forker.close()
            r.zygotes = {k: z for k, z in r.zygotes.items() if z is not forker}
        r._discard_output()

    def relay(self, wall: float) -> None:
        """Send the test's frame (facts, stdout, result record, stderr tail) and clear the maps."""
        r, out_cap = self.runner, self.out_cap
        n_out, n_res = min(self.pos[r.out_r], out_cap), min(self.pos[r.res_r], out_cap)
        setup_ok = n_res > 0 and self.res_mv[0] == SETUP_OK[0]
        err_mv, err_pos = self.err_mv, self.err_pos
        err_blobs = ([err_mv[err_pos:self.err_cap], err_mv[0:err_pos]] if self.err_wrapped else [err_mv[0:err_pos]])
        status = self.status
        header = {"t": "test", "id": self.job["id"], "i": self.i,
                  "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                  "sig": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                  "cpu": self.usage[0], "wall": wall, "rss_kb": self.usage[1],
                  "kill": self.kill_reason, "out_over": self.pos[r.out_r] > out_cap,
                  "res_over": self.pos[r.res_r] > out_cap,
                  "setup_ok": setup_ok, "oom": r._oom_moved(status, self.kill_reason)}
        try:
            r._send(header, [self.out_mv[:n_out], self.res_mv[1 if setup_ok else 0:n_res], *err_blobs])
        finally:
            for v in err_blobs:
                v.release()
            self.out_mv.release()
            self.res_mv.release()
            err_mv.release()
        # Zero what this test wrote (the maps are DONTFORK anyway; this also frees the pages).
        for m, n in ((self.out_map, min(self.pos[r.out_r], out_cap + 1)), (self.res_map, min(self.pos[r.res_r], out_cap + 1))):
            if n:
                m.madvise(mmap.MADV_DONTNEED, 0, (n + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE)
        if err_pos or self.err_wrapped:
            self.err_map.madvise(mmap.MADV_DONTNEED)
