"""Sandbox worker: runs as ``python -I -S worker.py CONFIG`` in a fresh interpreter.

Never imported by the parent (it is started as a script, by path, stdlib only). Process layout::

    parent (trainer; holds expected outputs; compares)      <- never runs untrusted code
      └─ W  worker supervisor, root: private mount + network + IPC + UTS namespaces,
            private /tmp and /dev/shm tmpfs, project/data paths hidden, optional cgroup
           └─ J  trusted runner = PID 1 of a private PID namespace; serves jobs over W's pipes
                └─ T  one child per test: rlimits, non-root per-worker uid, fresh cwd,
                      stdin = the test input only; runs the untrusted program, then exits
                      (J then SIGKILLs every other process left in the namespace)

Pre-importing the LCB header modules in W and forking T from J costs ~0.5 ms per test instead
of ~20 ms for a cold interpreter plus header.

Memory hygiene: T is a fork of J, so anything J holds is readable by the untrusted program.
J therefore never holds expected outputs (they never leave the parent), and it keeps all user
data (program text, inputs, outputs, stderr) only in ``MADV_DONTFORK`` mappings that it reads
into and writes from without copies, and unmaps after each job. A forked T does not inherit
those mappings, so a later program cannot scan memory for an earlier program's output.
"""

from __future__ import annotations

import ctypes
import errno
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

_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
RESULT_FD = 3

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {dst}")


def _prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), "prctl")


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
    for path, mode in (("/tmp", "755"), ("/dev/shm", "1777"), ("/var/tmp", "755")):
        if os.path.isdir(path):
            try:
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")
            except OSError as exc:
                facts["errors"].append(f"tmpfs {path}: {exc}")
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
# T: the test child (runs the untrusted program; never returns)
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


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError:
            return
        view = view[n:]


def _child(job: dict, ctx: dict, payload_fd: int, out_w: int, err_w: int, res_w: int, ok_w: int) -> None:
    """Body of T. Sets up limits and identity, runs the program, reports, ``_exit``s."""
    code = 70
    report_fd = res_w
    try:
        code_bytes = os.pread(ctx["code_fd"], ctx["code_len"], 0) if ctx["code_len"] else b""
        payload = b""
        if job["mode"] != "stdin":
            payload = os.pread(payload_fd, ctx["payload_len"], 0) if ctx["payload_len"] else b""
        # Move our pipe ends above the target numbers first so no dup2 clobbers another one.
        stdin_src = payload_fd if job["mode"] == "stdin" else ctx["devnull"]
        moved = [os.dup(fd) for fd in (stdin_src, out_w, err_w, res_w, ok_w)]
        for target, fd in enumerate(moved):
            os.dup2(fd, target)
        report_fd = RESULT_FD
        os.closerange(RESULT_FD + 2, 1 << 16)
        lim = job["lim"]
        try:
            with open("/proc/self/oom_score_adj", "w") as fh:
                fh.write("1000")
        except OSError:
            pass
        os.chdir(ctx["cwd"])
        if not ctx["pidns"]:
            os.setsid()
        R = resource
        R.setrlimit(R.RLIMIT_CORE, (0, 0))
        R.setrlimit(R.RLIMIT_CPU, (lim["cpu_soft"], lim["cpu_hard"]))
        R.setrlimit(R.RLIMIT_FSIZE, (lim["fsize"], lim["fsize"]))
        R.setrlimit(R.RLIMIT_NOFILE, (lim["nofile"], lim["nofile"]))
        R.setrlimit(R.RLIMIT_STACK, (lim["stack"], lim["stack"]))
        R.setrlimit(R.RLIMIT_AS, (lim["as"], lim["as"]))
        R.setrlimit(R.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
        if ctx["uid"] is not None:
            os.setgroups([])
            os.setresgid(ctx["uid"], ctx["uid"], ctx["uid"])
            os.setresuid(ctx["uid"], ctx["uid"], ctx["uid"])
        try:
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass
        os.environ["HOME"] = os.environ["TMPDIR"] = ctx["cwd"]
        os.environ.pop("GASP_SB_REEXEC", None)
        # Tell J that setup succeeded, on a pipe the program can no longer reach: anything that
        # goes wrong from here on is the program's doing, not an infrastructure fault.
        os.write(RESULT_FD + 1, b"1")
        os.close(RESULT_FD + 1)
    except BaseException as exc:  # noqa: BLE001 - setup failure is an infrastructure fault
        try:
            _write_fd(report_fd, _json_mod.dumps({"k": "setup", "msg": f"{type(exc).__name__}: {exc}"}).encode())
        finally:
            os._exit(71)

    stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "rb", closefd=False)), encoding="utf-8",
                             errors="strict", newline="\n")
    stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "wb", closefd=False)), encoding="utf-8",
                              errors="strict", newline="\n")
    stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "wb", closefd=False)), encoding="utf-8",
                              errors="backslashreplace", newline="\n", line_buffering=True)
    sys.stdin = sys.__stdin__ = stdin
    sys.stdout = sys.__stdout__ = stdout
    sys.stderr = sys.__stderr__ = stderr
    sys.argv = ["solution.py"]
    mode = job["mode"]
    record: dict = {"k": "ok"}
    module = types.ModuleType("__main__" if mode == "stdin" else "solution")
    module.__file__ = os.path.join(ctx["cwd"], "solution.py")
    module.__builtins__ = builtins
    sys.modules[module.__name__] = module
    ns = module.__dict__
    try:
        if job.get("header"):
            exec(HEADER_CODE, ns)
        try:
            text = code_bytes.decode("utf-8")
            del code_bytes
            program = compile(text, "solution.py", "exec", dont_inherit=True)
        except (SyntaxError, ValueError, UnicodeDecodeError, OverflowError, MemoryError, RecursionError) as exc:
            record = {"k": "ce", "msg": f"{type(exc).__name__}: {exc}"}
            program = None
        if program is not None:
            exec(program, ns)
            if mode != "stdin":
                fn_name = job["fn"]
                sol = ns.get("Solution")
                if isinstance(sol, type) and hasattr(sol, fn_name):
                    fn = getattr(sol(), fn_name)
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
# J: trusted runner
# ----------------------------------------------------------------------------------------------

def _dontfork_map(size: int) -> mmap.mmap:
    m = mmap.mmap(-1, max(size, 1))
    m.madvise(mmap.MADV_DONTFORK)
    return m


class Runner:
    """PID 1 of the sandbox PID namespace: reads jobs, forks one child per test, reports."""

    def __init__(self, cmd_fd: int, res_fd: int, facts: dict, uid: int | None) -> None:
        self.cmd, self.res, self.facts, self.uid = cmd_fd, res_fd, facts, uid
        self.devnull = os.open(os.devnull, os.O_RDONLY)
        self.work_root = "/tmp" if facts["mountns"] else None

    # -- protocol -------------------------------------------------------------------------
    def _read_exact(self, n: int, into=None):
        buf = into if into is not None else memoryview(bytearray(n))
        got = 0
        while got < n:
            k = os.readv(self.cmd, [buf[got:n]])
            if k == 0:
                raise EOFError
            got += k
        return buf

    def _read_frame(self):
        """Read one frame; blobs go straight into a DONTFORK arena (no heap copies)."""
        hlen, total = PREFIX.unpack(bytes(self._read_exact(PREFIX.size)))
        header = json.loads(bytes(self._read_exact(hlen)))
        arena = _dontfork_map(total)
        view = memoryview(arena)
        if total:
            self._read_exact(total, view)
        blobs, off = [], 0
        for s in header["b"]:
            blobs.append(view[off:off + s])
            off += s
        return header, arena, view, blobs

    def _send(self, header: dict, blobs=()) -> None:
        write_all(self.res, encode_frame(header, blobs))

    def _stop_requested(self, job_id: int) -> bool:
        """Non-blocking check for a STOP frame for this job (early exit on first failure)."""
        while select.select([self.cmd], [], [], 0)[0]:
            header, arena, view, blobs = self._read_frame()
            for b in blobs:
                b.release()
            view.release()
            arena.close()
            if header.get("t") == "stop" and header.get("id") == job_id:
                return True
            if header.get("t") != "stop":
                raise RuntimeError(f"unexpected frame {header.get('t')!r} during a job")
        return False

    # -- serving --------------------------------------------------------------------------
    def serve(self) -> None:
        gc.collect()
        gc.freeze()
        self._send({"t": "ready", "facts": self.facts, "pid": os.getpid()})
        while True:
            try:
                header, arena, view, blobs = self._read_frame()
            except EOFError:
                return
            try:
                if header.get("t") == "job":
                    self._run_job(header, blobs)
                elif header.get("t") == "ping":
                    self._send({"t": "pong", "id": header.get("id")})
            finally:
                for b in blobs:
                    b.release()
                view.release()
                arena.close()

    def _run_job(self, job: dict, blobs: list) -> None:
        job_id = job["id"]
        code_blob, inputs = blobs[0], blobs[1:]
        lim = job["lim"]
        out_map = _dontfork_map(lim["out"] + 1)
        res_map = _dontfork_map(lim["out"] + 1)
        err_map = _dontfork_map(lim["err"])
        code_fd = os.memfd_create("program", 0)
        try:
            write_all(code_fd, [code_blob])
            ran = 0
            for i, payload in enumerate(inputs):
                if i and self._stop_requested(job_id):
                    break
                self._run_test(job, i, code_fd, code_blob.nbytes, payload, out_map, res_map, err_map)
                ran += 1
            self._send({"t": "done", "id": job_id, "ran": ran})
        finally:
            os.close(code_fd)
            for m in (out_map, res_map, err_map):
                m.close()

    def _run_test(self, job, i, code_fd, code_len, payload, out_map, res_map, err_map) -> None:
        lim = job["lim"]
        payload_fd = os.memfd_create("input", 0)
        write_all(payload_fd, [payload])
        os.lseek(payload_fd, 0, os.SEEK_SET)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        ok_r, ok_w = os.pipe()
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
        ctx = {"code_fd": code_fd, "code_len": code_len, "payload_len": payload.nbytes, "cwd": cwd,
               "uid": self.uid, "devnull": self.devnull, "pidns": self.facts["pidns"]}
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:  # T
            try:
                _child(job, ctx, payload_fd, out_w, err_w, res_w, ok_w)
            finally:
                os._exit(72)
        for fd in (out_w, err_w, res_w, payload_fd, ok_w):
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        out_cap, err_cap = lim["out"], lim["err"]
        out_mv, res_mv, err_mv = memoryview(out_map), memoryview(res_map), memoryview(err_map)
        state = {"out": 0, "res": 0, "err": 0, "err_wrapped": False}
        kill_reason = None
        deadline = start + float(lim["wall"])
        open_fds = {out_r, err_r, res_r}
        status = None

        for fd in open_fds:
            os.set_blocking(fd, False)

        def drain(fd: int) -> bool:
            """Read what is available from fd into its arena; False on EOF or nothing pending."""
            try:
                return _drain(fd)
            except BlockingIOError:
                return False

        def _drain(fd: int) -> bool:
            nonlocal kill_reason
            if fd == out_r or fd == res_r:
                key, mv = ("out", out_mv) if fd == out_r else ("res", res_mv)
                pos = state[key]
                if pos > out_cap:  # already over the cap: discard into the last byte
                    k = os.readv(fd, [mv[out_cap:out_cap + 1]])
                else:
                    k = os.readv(fd, [mv[pos:out_cap + 1]])
                    state[key] = pos + k
                if state[key] > out_cap and kill_reason is None:
                    kill_reason = "ole"
                return k > 0
            pos = state["err"]  # ring buffer keeps the stderr tail
            k = os.readv(fd, [err_mv[pos:err_cap], err_mv[0:pos]])
            if k:
                new = pos + k
                if new >= err_cap:
                    state["err_wrapped"] = True
                state["err"] = new % err_cap
            return k > 0

        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    kill_reason = kill_reason or "wall"
                if kill_reason:
                    self._kill_all(pid)
                    break
                ready, _, _ = select.select(list(open_fds) + [pidfd], [], [], left)
                for fd in ready:
                    if fd == pidfd:
                        continue
                    try:
                        if not _drain(fd):
                            open_fds.discard(fd)
                    except BlockingIOError:
                        pass
                if pidfd in ready:
                    break
            _, status, usage = os.wait4(pid, 0)
            wall = time.monotonic() - start
            os.set_blocking(ok_r, False)
            try:
                setup_ok = os.read(ok_r, 1) == b"1"
            except BlockingIOError:
                setup_ok = False
            self._kill_all(None)
            # Everything that could write is dead now: drain to EOF (bounded by the caps).
            for fd in list(open_fds):
                while drain(fd):
                    if kill_reason == "ole":
                        break
        finally:
            for fd in (out_r, err_r, res_r, pidfd, ok_r):
                os.close(fd)
            self._reap()
            self._clean(cwd)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        if state["err_wrapped"]:
            err_blobs = [err_mv[state["err"]:err_cap], err_mv[0:state["err"]]]
        else:
            err_blobs = [err_mv[0:state["err"]]]
        n_out = min(state["out"], out_cap)
        n_res = min(state["res"], out_cap)
        header = {"t": "test", "id": job["id"], "i": i, "exit": exit_code, "sig": sig,
                  "cpu": usage.ru_utime + usage.ru_stime, "wall": wall, "rss_kb": usage.ru_maxrss,
                  "kill": kill_reason, "out_over": state["out"] > out_cap, "res_over": state["res"] > out_cap,
                  "err_parts": len(err_blobs), "setup_ok": setup_ok}
        try:
            self._send(header, [out_mv[:n_out], res_mv[:n_res], *err_blobs])
        finally:
            for v in err_blobs:
                v.release()
            out_mv.release()
            res_mv.release()
            err_mv.release()
        # Hygiene: zero what this test wrote before the next test (the maps are DONTFORK anyway).
        for m, n in ((out_map, min(state["out"], out_cap + 1)), (res_map, min(state["res"], out_cap + 1))):
            if n:
                m.madvise(mmap.MADV_DONTNEED, 0, (n + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE)
        err_map.madvise(mmap.MADV_DONTNEED)

    def _kill_all(self, pid: int | None) -> None:
        """SIGKILL the test child and every other process in the sandbox."""
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.facts["pidns"]:
            try:  # as PID 1: every process in the namespace except ourselves
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _reap(self) -> None:
        if self.facts["pidns"]:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                pid, _ = os.waitpid(-1, 0 if self.facts["pidns"] else os.WNOHANG)
                if pid == 0:
                    return
            except ChildProcessError:
                return
            except InterruptedError:
                continue

    def _clean(self, cwd: str) -> None:
        shutil.rmtree(cwd, ignore_errors=True)
        if self.facts["mountns"]:
            for d in ("/dev/shm",):
                try:
                    with os.scandir(d) as it:
                        for entry in it:
                            if entry.is_dir(follow_symlinks=False):
                                shutil.rmtree(entry.path, ignore_errors=True)
                            else:
                                try:
                                    os.unlink(entry.path)
                                except OSError:
                                    pass
                except OSError:
                    pass


def main() -> None:
    cfg = json.loads(sys.argv[1])
    _ensure_stack(int(cfg["stack"]))
    cmd_fd, res_fd = 0, 1
    # Our stdin/stdout are the protocol pipes; user-visible streams are rebuilt in T.
    sys.set_int_max_str_digits(0)
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
            if os.getppid() == 0 and not facts["pidns"]:
                os._exit(1)
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
PREFIX, encode_frame, write_all = _proto.PREFIX, _proto.encode_frame, _proto.write_all

if __name__ == "__main__":
    main()
