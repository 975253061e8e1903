"""Sandbox worker: runs as ``python -I -S worker.py CONFIG`` in a fresh interpreter.

Never imported by the parent (it is started as a script, by path, stdlib only). Process layout::

    parent (trainer; holds expected outputs; compares)      <- never runs untrusted code
      └─ W  worker supervisor, root: private mount + network + IPC + UTS namespaces,
            private /tmp and /dev/shm tmpfs, project/data paths hidden, optional cgroup
           └─ J  trusted runner = PID 1 of a private PID namespace; serves jobs over W's pipes
                └─ T  one per job of >= 3 tests: non-root per-worker uid, rlimits, fresh cwd;
                      compiles the program once, forks one C per test, reports raw facts
                     └─ C  one per test: stdin = this test's input only; runs the program, exits
                (jobs of 1-2 tests: J forks each C directly and C drops privileges itself)

After every test everything the program left is SIGKILLed (``kill(-1)`` in the namespace); after
every job J kills everything left in the namespace.

Pre-importing the LCB header modules in W and forking from a warm interpreter costs ~1-2 ms per
test instead of ~20 ms for a cold interpreter plus header.

Memory hygiene: T and C are forks of J, so anything J holds is readable by the untrusted
program. J therefore never holds expected outputs (they never leave the parent), and it keeps all
user data (program text, inputs, outputs, stderr) only in ``MADV_DONTFORK`` mappings that it
reads into and writes from without copies, and unmaps after each job. A forked child does not
inherit those mappings, so a later program cannot scan memory for an earlier program's output.
T lives for one job only.
"""

from __future__ import annotations

import ctypes
import gc
import json
import mmap
import os
import resource
import select
import shutil
import signal
import sys
import time

# --- stdlib modules of the LiveCodeBench import header, pre-imported so forks start warm ---
import string, re, datetime, collections, heapq, bisect, copy, math, random, statistics  # noqa: E401,F401
import itertools, functools, operator, io, json as _json_mod, builtins, typing  # noqa: E401,F401
import traceback, atexit, types, decimal, fractions, array, _thread  # noqa: E401,F401

HEADER_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math",
                  "random", "statistics", "itertools", "functools", "operator", "io", "sys", "json",
                  "builtins", "typing")
LCB_HEADER = "".join(f"from {m} import *\n" for m in HEADER_MODULES) + "".join(
    f"import {m}\n" for m in HEADER_MODULES) + "sys.setrecursionlimit(50000)\n"
HEADER_CODE = compile(LCB_HEADER, "<lcb-header>", "exec")
# Executed once here; T copies the resulting names (~30 us) instead of re-running ~1,500 star
# imports (~1 ms). Names bound to the interpreter's streams/argv are re-bound in T.
HEADER_NS: dict = {"__name__": "__lcb_header__"}
exec(HEADER_CODE, HEADER_NS)
for _k in ("__name__", "__builtins__", "__doc__", "__loader__", "__spec__", "__package__"):
    HEADER_NS.pop(_k, None)
sys.setrecursionlimit(1000)


def _header_builtins() -> dict:
    """The header's names served as the program's *builtins* namespace (a dict built once, in W).

    Copying ~1,500 names into every test's globals would touch ~300 copy-on-write pages per
    fork (~0.6 ms); a lookup that misses the module's globals falls back to this dict instead,
    so only the names a program actually uses are touched. Precedence is the header's own (it
    was executed in LCB order, ``from builtins import *`` included)."""
    merged = dict(builtins.__dict__)
    merged.update(HEADER_NS)
    return merged

_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
RESULT_FD = 3
# Jobs with at most this many tests skip the per-job runner T (its fork and setup cost more than
# compiling the program once saves): J forks each test child directly.
DIRECT_MAX_TESTS = 2
SETUP_OK = b"\x01"

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {dst}")


# Prebound with argtypes: every test child calls prctl, and an untyped ctypes call (argument
# conversion objects, per-call setup) writes to ~20-50 more copy-on-write pages than this one.
_libc_prctl = _libc.prctl
_libc_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_libc_prctl.restype = ctypes.c_int


def _prctl(option: int, arg: int) -> None:
    _check(_libc_prctl(option, arg, 0, 0, 0), "prctl")


# ----------------------------------------------------------------------------------------------
# W: isolation setup
# ----------------------------------------------------------------------------------------------

def _ensure_stack(stack_bytes: int) -> None:
    """Re-exec once with a large RLIMIT_STACK: the main-thread stack gap is fixed at exec time."""
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft != resource.RLIM_INFINITY and soft < stack_bytes and os.environ.get("GASP_SB_REEXEC") != "1":
        try:
            new_hard = hard if hard == resource.RLIM_INFINITY or hard >= stack_bytes else stack_bytes
            resource.setrlimit(resource.RLIMIT_STACK, (stack_bytes, new_hard))
        except (ValueError, OSError):
            return
        os.environ["GASP_SB_REEXEC"] = "1"
        os.execv(sys.executable, sys.orig_argv)
    os.environ.pop("GASP_SB_REEXEC", None)


def _setup_isolation(cfg: dict, facts: dict) -> None:
    """Namespaces and mounts for W (and so for J and every T). Records what worked in ``facts``."""
    facts.update(root=os.geteuid() == 0, netns=False, mountns=False, pidns=False, cgroup=None,
                 hidden=[], ro_mounts=0, errors=[])
    if cfg.get("cgroup"):
        try:
            with open(os.path.join(cfg["cgroup"], "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
            facts["cgroup"] = cfg["cgroup"]
        except OSError as exc:
            facts["errors"].append(f"cgroup: {exc}")
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("-1000")
    except OSError:
        pass
    if not cfg.get("isolate", True) or not facts["root"]:
        return
    try:
        _check(_libc.unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare(net)")
        facts["netns"] = True
    except OSError as exc:
        facts["errors"].append(str(exc))
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(mount)")
        _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    except OSError as exc:
        facts["errors"].append(str(exc))
        return
    facts["mountns"] = True
    size = int(cfg["tmpfs"])
    # Directories that must stay visible inside hidden trees (site-packages for numpy etc.).
    keep = []
    for path in cfg.get("keep", []):
        try:
            keep.append((path, os.open(path, os.O_PATH | os.O_DIRECTORY)))
        except OSError as exc:
            facts["errors"].append(f"keep {path}: {exc}")
    # Private temp dirs first: a checkout or venv under /tmp is hidden by them, and the kept binds
    # below (site-packages of a venv under /tmp) are then mounted on top, not shadowed.
    for path, mode in (("/tmp", "755"), ("/dev/shm", "1777"), ("/var/tmp", "755")):
        if os.path.isdir(path):
            try:
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")
                facts["hidden"].append(path)
            except OSError as exc:
                facts["errors"].append(f"tmpfs {path}: {exc}")
    for path in cfg.get("hide", []):
        try:
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
            facts["hidden"].append(path)
        except OSError as exc:
            facts["errors"].append(f"hide {path}: {exc}")
    for path, fd in keep:
        try:
            os.makedirs(path, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None)
        except OSError as exc:
            facts["errors"].append(f"keep {path}: {exc}")
        finally:
            os.close(fd)
    for path in cfg.get("hide", []):
        if path in facts["hidden"]:
            try:  # read-only after the kept binds are in place
                _mount(None, path, None, MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_RDONLY, "size=1m,mode=755")
            except OSError as exc:
                facts["errors"].append(f"ro {path}: {exc}")
    # Everything else read-only (defence in depth; the program also runs as a non-root uid).
    skip = ("/tmp", "/dev/shm", "/var/tmp", "/proc", "/sys", "/dev", "/dev/pts", "/dev/mqueue")
    try:
        with open("/proc/self/mountinfo") as fh:
            points = [line.split()[4] for line in fh]
    except OSError:
        points = []
    for mp in points:
        if mp in skip or mp.startswith(("/proc/", "/sys/", "/dev/")) or mp in facts["hidden"]:
            continue
        try:
            flags = os.statvfs(mp).f_flag
            extra = (MS_NOSUID if flags & os.ST_NOSUID else 0) | (MS_NODEV if flags & os.ST_NODEV else 0) | (
                MS_NOEXEC if flags & os.ST_NOEXEC else 0)
            _mount(None, mp, None, MS_REMOUNT | MS_BIND | MS_RDONLY | extra, None)
            facts["ro_mounts"] += 1
        except OSError:
            pass


# ----------------------------------------------------------------------------------------------
# C: the test child (runs the untrusted program once; never returns)
# ----------------------------------------------------------------------------------------------

class _Unserializable(Exception):
    pass


def _plain(x, depth=0):
    """Strict JSON-able copy: exact builtin types only; tuples become lists; NaN/Inf rejected."""
    t = type(x)
    if x is None or t is bool or t is str or t is int:
        return x
    if t is float:
        if x != x or x in (math.inf, -math.inf):
            raise _Unserializable("NaN/Inf is not valid JSON")
        return x
    if depth > 2000:
        raise _Unserializable("value nested too deeply")
    if t is list or t is tuple:
        return [_plain(v, depth + 1) for v in x]
    if t is dict:
        out = {}
        for k, v in x.items():
            if type(k) is not str:
                raise _Unserializable(f"dict key of type {type(k).__name__}")
            out[k] = _plain(v, depth + 1)
        return out
    raise _Unserializable(f"return value of type {t.__name__} is not plain JSON data")


def _write_fd(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError:
            return
        view = view[n:]


def _test_child(job: dict, prog: dict, payload: bytes, fds: tuple, cpu: tuple, fsize: int,
                direct: dict | None = None) -> None:
    """Body of C: wire stdio, set the per-test limits, run the program, report, ``_exit``.

    ``direct``: C was forked by J itself (jobs of one or two tests, where a per-job T would cost
    more than it saves); then C also drops to the sandbox identity and compiles the program."""
    code = 70
    try:
        code_bytes = b""
        if direct is not None:
            code_bytes = os.pread(direct["code_fd"], direct["code_len"], 0) if direct["code_len"] else b""
            if job["mode"] != "stdin":
                payload = os.pread(fds[0], direct["payload_len"], 0) if direct["payload_len"] else b""
                fds = (direct["devnull"],) + tuple(fds[1:])
        moved = [os.dup(fd) for fd in fds]  # stdin, stdout, stderr, result
        for target, fd in enumerate(moved):
            os.dup2(fd, target)
        os.closerange(RESULT_FD + 1, 1 << 16)
        if direct is not None:
            _enter_sandbox(direct, job["lim"], cpu)
        # setuid (C on the direct path) or T's prctl left us non-dumpable: the program may use
        # /proc/self like any process; only its own descendants share its uid.
        _prctl(PR_SET_DUMPABLE, 1)
        if direct is None:
            if not prog["pidns"]:
                os.setsid()  # its own process group, so T can kill what it leaves behind
            resource.setrlimit(resource.RLIMIT_CPU, cpu)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))  # not in T: it writes stdin memfds
        # Setup done: a first byte on the result pipe that the program cannot take back.
        os.write(RESULT_FD, SETUP_OK)
    except BaseException:  # noqa: BLE001 - setup failure is an infrastructure fault
        os._exit(71)
    if direct is not None:
        program, ce = _compile_program(code_bytes)
        del code_bytes
        if program is None:
            _write_fd(RESULT_FD, _json_mod.dumps({"k": "ce", "msg": ce}).encode())
            os._exit(0)
        prog = dict(prog, code=program)
    stdin, stdout, stderr = prog["streams"]
    sys.stdin = sys.__stdin__ = stdin
    sys.stdout = sys.__stdout__ = stdout
    sys.stderr = sys.__stderr__ = stderr
    sys.argv = ["solution.py"]
    mode = job["mode"]
    record: dict = {"k": "ok"}
    module = types.ModuleType("__main__" if mode == "stdin" else "solution")
    module.__file__ = prog["file"]
    module.__builtins__ = builtins
    sys.modules[module.__name__] = module
    ns = module.__dict__
    try:
        if job.get("header"):
            hb = prog["header_builtins"]
            hb.update(stdin=stdin, stdout=stdout, stderr=stderr, __stdin__=stdin, __stdout__=stdout,
                      __stderr__=stderr, argv=sys.argv)
            module.__builtins__ = hb
            sys.setrecursionlimit(50000)
        exec(prog["code"], ns)
        if mode != "stdin":
            fn_name = job["fn"]
            sol = ns.get("Solution")
            if isinstance(sol, type) and hasattr(sol, fn_name):
                fn = getattr(sol(), fn_name)  # a fresh Solution() per test
            elif fn_name in ns:
                fn = ns[fn_name]
            else:
                raise NameError(f"function {fn_name!r} not found")
            arg_text = payload.decode("utf-8")
            if mode == "functional":
                args = [_json_mod.loads(line) for line in arg_text.split("\n")]
                value = fn(*args)
                try:
                    record = {"k": "ok", "v": _json_mod.dumps(_plain(value), allow_nan=False)}
                except (_Unserializable, RecursionError, ValueError) as exc:
                    record = {"k": "bad", "msg": str(exc)}
            else:  # azr: f(<input expression>) -> repr
                call = compile(f"__gasp_fn__({arg_text})", "<input>", "eval", dont_inherit=True)
                ns["__gasp_fn__"] = fn
                value = eval(call, ns)
                record = {"k": "ok", "v": repr(value)}
        code = 0
    except SystemExit as exc:
        arg = exc.code
        if arg is None:
            code = 0
        elif isinstance(arg, int):
            code = arg & 0xFF
        else:
            try:
                print(arg, file=sys.stderr)
            except BaseException:  # noqa: BLE001
                pass
            code = 1
        record = {"k": "exit", "code": code}
    except MemoryError:
        record = {"k": "mle"}
        code = 1
    except BaseException as exc:  # noqa: BLE001 - any program failure is a runtime error
        try:
            record = {"k": "exc", "etype": type(exc).__name__, "msg": str(exc)[:2000]}
        except BaseException:  # noqa: BLE001
            record = {"k": "exc", "etype": "Exception", "msg": ""}
        try:
            traceback.print_exception(exc)
        except BaseException:  # noqa: BLE001
            pass
        code = 1
    # Interpreter-shutdown semantics of a real script: wait for non-daemon threads, run atexit.
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        atexit._run_exitfuncs()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001
        pass
    for stream in (sys.stdout, sys.stderr, stdout, stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            if stream is stdout and code == 0:
                code = 120  # like CPython when flushing stdout at exit fails
    try:
        _write_fd(RESULT_FD, _json_mod.dumps(record).encode())
    except BaseException:  # noqa: BLE001
        pass
    os._exit(code)


# ----------------------------------------------------------------------------------------------
# T: the per-job program runner (trusted code, but already non-root and limited)
# ----------------------------------------------------------------------------------------------

def _kill_others(pidns: bool, pid: int | None) -> None:
    """SIGKILL every process this uid may signal except ourselves (in our PID namespace that is
    exactly the program's leftovers), or the child's process group without a namespace."""
    try:
        if pidns:
            os.kill(-1, signal.SIGKILL)
        elif pid is not None:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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


def _wipe_dir(path: str, keep_root: bool = True) -> None:
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


def _enter_sandbox(ctx: dict, lim: dict, cpu: tuple) -> None:
    """Drop to the sandbox identity: fresh cwd, rlimits, non-root per-worker uid (T, or C on the
    direct path). RLIMIT_FSIZE is set per test child (T itself writes stdin memfds)."""
    os.chdir(ctx["cwd"])
    if not ctx["pidns"]:
        os.setsid()
    R = resource
    R.setrlimit(R.RLIMIT_CORE, (0, 0))
    R.setrlimit(R.RLIMIT_CPU, cpu)
    R.setrlimit(R.RLIMIT_NOFILE, (lim["nofile"], lim["nofile"]))
    R.setrlimit(R.RLIMIT_STACK, (lim["stack"], lim["stack"]))
    R.setrlimit(R.RLIMIT_AS, (lim["as"], lim["as"]))
    R.setrlimit(R.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
    if ctx["uid"] is not None:
        os.setgroups([])
        os.setresgid(ctx["uid"], ctx["uid"], ctx["uid"])
        os.setresuid(ctx["uid"], ctx["uid"], ctx["uid"])
    if not ctx["pidns"]:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.environ.get("TMPDIR") != ctx["cwd"]:
        os.environ["HOME"] = os.environ["TMPDIR"] = ctx["cwd"]


def _compile_program(code_bytes: bytes):
    """(code object, None) or (None, CE message). Untrusted text is only ever compiled in T or C."""
    try:
        return compile(code_bytes.decode("utf-8"), "solution.py", "exec", dont_inherit=True), None
    except (SyntaxError, ValueError, UnicodeDecodeError, OverflowError, MemoryError, RecursionError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:2000]


class ProgramRunner:
    """T: one per (program, job). Sets the sandbox identity and limits once, compiles the program
    once, then forks one child C per test and judges nothing: it reports raw facts (exit status,
    signal, CPU from ``wait4``, wall time, capped stdout, stderr tail, result record) to J.

    T never runs program code itself, is non-dumpable (a child of the same uid cannot ptrace it
    or open its fds via /proc) and is a child subreaper, so it reaps everything the test left.
    The worst a test can do to T is kill or stop it, which only fails the program's own tests.
    """

    def __init__(self, job: dict, ctx: dict) -> None:
        self.job, self.ctx = job, ctx
        self.lim = job["lim"]

    def setup(self) -> None:
        ctx, lim = self.ctx, self.lim
        keep = {ctx["res_w"], ctx["ctl_r"], ctx["code_fd"], ctx["inputs_fd"], ctx["devnull"]}
        for fd in range(0, 3):  # J's 0/1 are the parent's pipes: T must not hold them
            os.dup2(ctx["devnull"], fd)
        prev = 2
        for fd in sorted(keep):
            os.closerange(prev + 1, fd)
            prev = fd
        os.closerange(prev + 1, 1 << 16)
        total = lim["cpu_hard"] * max(1, ctx["n"]) + 10  # T's own budget; each C gets the per-test limit
        _enter_sandbox(ctx, lim, (total, total))
        _prctl(PR_SET_DUMPABLE, 0)
        _prctl(PR_SET_CHILD_SUBREAPER, 1)

    def _send(self, header: dict, blobs=()) -> None:
        write_all(self.ctx["res_w"], encode_flat_frame(header, blobs))

    def run(self) -> None:
        ctx = self.ctx
        code_bytes = os.pread(ctx["code_fd"], ctx["code_len"], 0) if ctx["code_len"] else b""
        os.close(ctx["code_fd"])
        program, ce = _compile_program(code_bytes)
        if program is None:
            rec = _json_mod.dumps({"k": "ce", "msg": ce}).encode()
            self._send({"t": "test", "i": 0, "exit": 0, "sig": None, "cpu": 0.0, "wall": 0.0, "rss_kb": 0,
                        "kill": None, "out_over": False, "res_over": False, "setup_ok": True}, [b"", rec, b""])
            return
        del code_bytes
        prog = {"code": program, "streams": ctx["streams"], "file": os.path.join(ctx["cwd"], "solution.py"),
                "pidns": ctx["pidns"], "header_builtins": ctx["header_builtins"]}
        offsets = ctx["offsets"]
        gc.freeze()  # a collection in a test child would otherwise write to (and copy) T's pages
        for i, (off, size) in enumerate(offsets):
            if i and self._stop_requested():
                return
            payload = os.pread(ctx["inputs_fd"], size, off) if size else b""
            self._run_test(i, prog, payload)

    def _stop_requested(self) -> bool:
        try:
            return bool(os.read(self.ctx["ctl_r"], 64))
        except BlockingIOError:
            return False

    def _run_test(self, i: int, prog: dict, payload: bytes) -> None:
        job, ctx, lim = self.job, self.ctx, self.lim
        stdin_fd = ctx["devnull"]
        memfd = None
        if job["mode"] == "stdin":
            memfd = stdin_fd = os.memfd_create("stdin", 0)
            _write_fd(memfd, payload)
            os.lseek(memfd, 0, os.SEEK_SET)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                _test_child(job, prog, payload, (stdin_fd, out_w, err_w, res_w), (lim["cpu_soft"], lim["cpu_hard"]),
                            lim["fsize"])
            finally:
                os._exit(72)
        for fd in (out_w, err_w, res_w):
            os.close(fd)
        if memfd is not None:
            os.close(memfd)
        pidfd = os.pidfd_open(pid)
        cap, err_cap = lim["out"], lim["err"]
        bufs = {out_r: bytearray(), res_r: bytearray()}
        over = {out_r: False, res_r: False}
        err_tail = bytearray()
        kill_reason = None
        deadline = start + float(lim["wall"])
        open_fds = [out_r, err_r, res_r]
        for fd in open_fds:
            os.set_blocking(fd, False)

        def drain(fd: int) -> bool:
            """Read what is available; False on EOF or when nothing is pending."""
            nonlocal kill_reason, err_tail
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return False
            if not chunk:
                return False
            if fd == err_r:
                err_tail += chunk
                if len(err_tail) > 2 * err_cap:
                    err_tail = err_tail[-err_cap:]
            elif not over[fd]:
                buf = bufs[fd]
                buf += chunk
                if len(buf) > cap:
                    del buf[cap:]
                    over[fd] = True
                    kill_reason = kill_reason or "ole"
            return True

        status = usage = None
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    kill_reason = kill_reason or "wall"
                if kill_reason:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    _kill_others(ctx["pidns"], pid)
                    break
                ready, _, _ = select.select(open_fds + [pidfd], [], [], left)
                for fd in ready:
                    if fd != pidfd and not drain(fd):
                        # EOF (a BlockingIOError right after select cannot happen on a pipe)
                        open_fds.remove(fd)
                if pidfd in ready:
                    break
            _, status, usage = os.wait4(pid, 0)
            wall = time.monotonic() - start
            _kill_others(ctx["pidns"], pid)  # leftovers of the test (daemons, forks, threads)
            _reap_all(block=ctx["pidns"])
            for fd in list(open_fds):  # every writer is dead: drain to EOF (bounded by the caps)
                while drain(fd) and not (kill_reason == "ole" and fd == out_r):
                    pass
        finally:
            for fd in (out_r, err_r, res_r, pidfd):
                os.close(fd)
        _wipe_dir(ctx["cwd"])
        if ctx["pidns"]:
            _wipe_dir("/dev/shm")
        res = bufs[res_r]
        setup_ok = bool(res) and res[0] == SETUP_OK[0]
        header = {"t": "test", "i": i, "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                  "sig": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                  "cpu": usage.ru_utime + usage.ru_stime, "wall": wall, "rss_kb": usage.ru_maxrss,
                  "kill": kill_reason, "out_over": over[out_r], "res_over": over[res_r], "setup_ok": setup_ok}
        self._send(header, [bufs[out_r], memoryview(res)[1 if setup_ok else 0:], err_tail[-err_cap:]])


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


# ----------------------------------------------------------------------------------------------
# J: trusted runner (root, PID 1 of the sandbox PID namespace)
# ----------------------------------------------------------------------------------------------

def _dontfork_map(size: int) -> mmap.mmap:
    m = mmap.mmap(-1, max(size, 1))
    m.madvise(mmap.MADV_DONTFORK)
    return m


class _Timeout(Exception):
    pass


class _ParentGone(Exception):
    """EOF on the command pipe: the parent died. Kill everything and exit at once."""


class Runner:
    """J: reads jobs from the parent, forks one ProgramRunner per job, relays its per-test frames
    to the parent, enforces the job's total wall-clock budget and kills every leftover process.

    Hygiene: all user data J touches (program, inputs, relayed outputs) lives in DONTFORK maps
    that it reads into and writes from without copies, so no later child inherits it."""

    def __init__(self, cmd_fd: int, res_fd: int, facts: dict, uid: int | None) -> None:
        self.cmd, self.res, self.facts, self.uid = cmd_fd, res_fd, facts, uid
        self.devnull = os.open(os.devnull, os.O_RDONLY)
        self.work_root = "/tmp" if facts["mountns"] else None
        self.streams = _fresh_streams()
        self.header_builtins = _header_builtins()
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
        """Read one frame; blobs go straight into a DONTFORK arena (no heap copies)."""
        hlen, total = PREFIX.unpack(bytes(self._read_exact(fd, PREFIX.size, deadline=deadline)))
        if hlen > MAX_HEADER:
            raise EOFError
        header = json.loads(bytes(self._read_exact(fd, hlen, deadline=deadline)))
        arena = _dontfork_map(total)
        view = memoryview(arena)
        if total:
            self._read_exact(fd, total, view, deadline)
        blobs, off = [], 0
        for s in header["b"]:
            blobs.append(view[off:off + s])
            off += s
        return header, arena, view, blobs

    @staticmethod
    def _release(frame) -> None:
        _, arena, view, blobs = frame
        for b in blobs:
            b.release()
        view.release()
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
            header, _, _, blobs = frame
            try:
                if header.get("t") == "job":
                    try:
                        self._run_job(header, blobs)
                    except _ParentGone:
                        return
                elif header.get("t") == "ping":
                    self._send({"t": "pong", "id": header.get("id")})
            finally:
                self._release(frame)

    def _run_job(self, job: dict, blobs: list) -> None:
        self.oom_seen = self._oom_kills()
        if len(blobs) - 1 <= DIRECT_MAX_TESTS:
            return self._run_direct(job, blobs)
        job_id = job["id"]
        code_blob, inputs = blobs[0], blobs[1:]
        lim = job["lim"]
        code_fd = os.memfd_create("program", 0)
        inputs_fd = os.memfd_create("inputs", 0)
        write_all(code_fd, [code_blob])
        write_all(inputs_fd, list(inputs))
        offsets, off = [], 0
        for b in inputs:
            offsets.append((off, b.nbytes))
            off += b.nbytes
        res_r, res_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        os.set_blocking(ctl_r, False)
        cwd = self._make_cwd()
        ctx = {"code_fd": code_fd, "code_len": code_blob.nbytes, "inputs_fd": inputs_fd, "offsets": offsets,
               "n": len(offsets), "cwd": cwd, "uid": self.uid, "devnull": self.devnull,
               "pidns": self.facts["pidns"], "streams": self.streams, "res_w": res_w, "ctl_r": ctl_r,
               "header_builtins": self.header_builtins}
        pid = os.fork()
        if pid == 0:  # T
            code = 73
            try:
                runner = ProgramRunner(job, ctx)
                runner.setup()
                code = 74
                runner.run()
                code = 0
            finally:
                os._exit(code)
        for fd in (res_w, ctl_r, code_fd, inputs_fd):
            os.close(fd)
        budget = len(offsets) * (float(lim["wall"]) + 1.0) + 10.0
        deadline = time.monotonic() + budget
        ran, killed, stopped = 0, None, False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    killed = "budget"
                    break
                ready, _, _ = select.select([res_r, self.cmd], [], [], left)
                if self.cmd in ready:
                    try:
                        frame = self._read_frame(self.cmd)
                    except EOFError:
                        raise _ParentGone from None
                    kind, fid = frame[0].get("t"), frame[0].get("id")
                    self._release(frame)
                    if kind == "stop" and fid == job_id and not stopped:
                        stopped = True
                        try:
                            os.write(ctl_w, b"s")
                        except OSError:
                            pass
                    elif kind != "stop":
                        raise RuntimeError(f"unexpected frame {kind!r} during a job")
                if res_r in ready:
                    try:
                        frame = self._read_frame(res_r, deadline)
                    except EOFError:
                        break
                    except (_Timeout, ValueError, KeyError):
                        killed = "budget"
                        break
                    try:
                        header, _, _, fblobs = frame
                        if header.get("t") != "test" or len(fblobs) != 3:
                            killed = "protocol"
                            break
                        header["id"] = job_id
                        header["oom"] = (header.get("sig") == signal.SIGKILL and not header.get("kill")
                                         and self._oom_moved(None, None))
                        self._send(header, fblobs)
                        ran += 1
                    finally:
                        self._release(frame)
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(pid, 0)
            self._kill_all()
            for fd in (res_r, ctl_w):
                os.close(fd)
            self._clean(cwd)
        self._send({"t": "done", "id": job_id, "ran": ran, "killed": killed,
                    "runner_exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                    "runner_sig": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None})

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
        cg = self.facts.get("cgroup")
        if not cg:
            return 0
        for name in ("memory.oom_control", "memory.events"):
            try:
                with open(os.path.join(cg, name)) as fh:
                    for line in fh:
                        if line.startswith("oom_kill "):
                            return int(line.split()[1])
            except (OSError, ValueError):
                continue
        return 0

    # -- direct path: J forks the test child itself (jobs of at most DIRECT_MAX_TESTS tests) --
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

    def _run_direct(self, job: dict, blobs: list) -> None:
        job_id = job["id"]
        self.stop_pending = False
        code_blob, inputs = blobs[0], blobs[1:]
        lim = job["lim"]
        maps = (_dontfork_map(lim["out"] + 1), _dontfork_map(lim["out"] + 1), _dontfork_map(lim["err"]))
        code_fd = os.memfd_create("program", 0)
        cwd = self._make_cwd()
        ran = 0
        try:
            write_all(code_fd, [code_blob])
            for i, payload in enumerate(inputs):
                if i and self._stop_requested(job_id):
                    break
                self._direct_test(job, i, code_fd, code_blob.nbytes, payload, cwd, maps)
                ran += 1
        finally:
            os.close(code_fd)
            for m in maps:
                m.close()
            self._clean(cwd)
        self._send({"t": "done", "id": job_id, "ran": ran, "killed": None, "runner_exit": 0, "runner_sig": None})

    def _direct_test(self, job, i, code_fd, code_len, payload, cwd, maps) -> None:
        lim = job["lim"]
        out_map, res_map, err_map = maps
        payload_fd = os.memfd_create("input", 0)
        write_all(payload_fd, [payload])
        os.lseek(payload_fd, 0, os.SEEK_SET)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        ctx = {"code_fd": code_fd, "code_len": code_len, "payload_len": payload.nbytes, "cwd": cwd,
               "uid": self.uid, "devnull": self.devnull, "pidns": self.facts["pidns"]}
        prog = {"streams": self.streams, "file": os.path.join(cwd, "solution.py"), "pidns": self.facts["pidns"],
                "header_builtins": self.header_builtins}
        gc.freeze()  # see ProgramRunner.run
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:  # C
            try:
                _test_child(job, prog, b"", (payload_fd, out_w, err_w, res_w), (lim["cpu_soft"], lim["cpu_hard"]),
                            lim["fsize"], direct=ctx)
            finally:
                os._exit(72)
        for fd in (out_w, err_w, res_w, payload_fd):
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        out_cap, err_cap = lim["out"], lim["err"]
        out_mv, res_mv, err_mv = memoryview(out_map), memoryview(res_map), memoryview(err_map)
        state = {"out": 0, "res": 0, "err": 0, "wrapped": False}
        kill_reason = None
        deadline = start + float(lim["wall"])
        open_fds = [out_r, err_r, res_r]
        for fd in open_fds:
            os.set_blocking(fd, False)

        def drain(fd: int) -> bool:
            """Read what is available straight into the DONTFORK maps; False on EOF / nothing."""
            nonlocal kill_reason
            try:
                if fd == err_r:  # ring buffer keeps the tail
                    pos = state["err"]
                    k = os.readv(fd, [err_mv[pos:err_cap], err_mv[0:pos]])
                    if k:
                        state["wrapped"] = state["wrapped"] or pos + k >= err_cap
                        state["err"] = (pos + k) % err_cap
                    return k > 0
                key, mv = ("out", out_mv) if fd == out_r else ("res", res_mv)
                pos = state[key]
                k = os.readv(fd, [mv[out_cap:out_cap + 1]] if pos > out_cap else [mv[pos:out_cap + 1]])
                if pos <= out_cap:
                    state[key] = pos + k
                if state[key] > out_cap and kill_reason is None:
                    kill_reason = "ole"
                return k > 0
            except BlockingIOError:
                return False

        status = usage = None
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    kill_reason = kill_reason or "wall"
                if kill_reason:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    break
                watch = open_fds + [pidfd] + ([] if self.stop_pending else [self.cmd])
                ready, _, _ = select.select(watch, [], [], left)
                if self.cmd in ready:  # a STOP (kept for later), or the parent died
                    try:
                        self._handle_cmd(job["id"])
                    except _ParentGone:
                        os.kill(pid, signal.SIGKILL)
                        os.wait4(pid, 0)
                        raise
                for fd in ready:
                    if fd not in (pidfd, self.cmd) and not drain(fd):
                        open_fds.remove(fd)
                if pidfd in ready:
                    break
            _, status, usage = os.wait4(pid, 0)
            wall = time.monotonic() - start
            self._kill_all()
            for fd in list(open_fds):
                while drain(fd) and not (kill_reason == "ole" and fd == out_r):
                    pass
        finally:
            for fd in (out_r, err_r, res_r, pidfd):
                os.close(fd)
            _wipe_dir(cwd)
            if self.facts["mountns"]:
                _wipe_dir("/dev/shm")
        n_out, n_res = min(state["out"], out_cap), min(state["res"], out_cap)
        setup_ok = n_res > 0 and res_mv[0] == SETUP_OK[0]
        err_blobs = ([err_mv[state["err"]:err_cap], err_mv[0:state["err"]]] if state["wrapped"]
                     else [err_mv[0:state["err"]]])
        header = {"t": "test", "id": job["id"], "i": i,
                  "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                  "sig": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                  "cpu": usage.ru_utime + usage.ru_stime, "wall": wall, "rss_kb": usage.ru_maxrss,
                  "kill": kill_reason, "out_over": state["out"] > out_cap, "res_over": state["res"] > out_cap,
                  "setup_ok": setup_ok, "oom": self._oom_moved(status, kill_reason)}
        try:
            self._send(header, [out_mv[:n_out], res_mv[1 if setup_ok else 0:n_res], *err_blobs])
        finally:
            for v in err_blobs:
                v.release()
            out_mv.release()
            res_mv.release()
            err_mv.release()
        # Zero what this test wrote (the maps are DONTFORK anyway; this also frees the pages).
        for m, n in ((out_map, min(state["out"], out_cap + 1)), (res_map, min(state["res"], out_cap + 1))):
            if n:
                m.madvise(mmap.MADV_DONTNEED, 0, (n + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE)
        err_map.madvise(mmap.MADV_DONTNEED)

    def _make_cwd(self) -> str:
        if self.work_root:
            cwd = os.path.join(self.work_root, "run")
            if os.path.lexists(cwd):
                shutil.rmtree(cwd, ignore_errors=True)
            os.mkdir(cwd, 0o700)
        else:
            import tempfile
            cwd = tempfile.mkdtemp(prefix="gasp_sb_")
        if self.uid is not None:
            os.chown(cwd, self.uid, self.uid)
        return cwd

    def _kill_all(self) -> None:
        """SIGKILL every process left in the sandbox and reap them (J is PID 1: they are ours)."""
        if self.facts["pidns"]:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap_all(block=self.facts["pidns"])

    def _clean(self, cwd: str) -> None:
        shutil.rmtree(cwd, ignore_errors=True)
        if self.facts["mountns"]:
            _wipe_dir("/dev/shm")



def main() -> None:
    cfg = json.loads(sys.argv[1])
    _ensure_stack(int(cfg["stack"]))
    cmd_fd, res_fd = 0, 1
    # Our stdin/stdout are the protocol pipes; user-visible streams are rebuilt in T.
    sys.set_int_max_str_digits(0)
    # ``python -S`` has no site-installed exit/quit; programs call them after printing.
    builtins.exit = builtins.quit = sys.exit
    _thread.stack_size(16 << 20)  # glibc would otherwise default threads to RLIMIT_STACK (512 MiB)
    for p in cfg.get("site_paths", []):
        if p not in sys.path:
            sys.path.append(p)
    facts: dict = {}
    _setup_isolation(cfg, facts)
    uid = None
    if facts["root"] and cfg.get("isolate", True):
        uid = int(cfg.get("uid_base", 1_000_000)) + os.getpid()
    facts["uid"] = uid
    facts["pidns"] = False
    if facts["root"] and cfg.get("isolate", True):
        try:
            _check(_libc.unshare(CLONE_NEWPID), "unshare(pid)")
            facts["pidns"] = True
        except OSError as exc:
            facts["errors"].append(str(exc))
    pid = os.fork()
    if pid == 0:  # J
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            _prctl(PR_SET_NO_NEW_PRIVS, 1)  # inherited by every T: no setuid-binary escalation
            try:  # W is OOM-exempt; J and the T's are ordinary, so the OOM killer picks the hog
                with open("/proc/self/oom_score_adj", "w") as fh:
                    fh.write("0")
            except OSError:
                pass
            if facts["pidns"] and facts["mountns"]:
                try:
                    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
                    facts["proc"] = True
                except OSError as exc:
                    facts["errors"].append(f"proc: {exc}")
            Runner(cmd_fd, res_fd, facts, uid).serve()
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


def _load_protocol():
    import importlib.util
    spec = importlib.util.spec_from_file_location("_gasp_sandbox_protocol", os.path.join(_here, "protocol.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_proto = _load_protocol()
PREFIX, MAX_HEADER, encode_frame, write_all = _proto.PREFIX, _proto.MAX_HEADER, _proto.encode_frame, _proto.write_all
encode_flat_frame = _proto.encode_flat_frame

if __name__ == "__main__":
    main()
