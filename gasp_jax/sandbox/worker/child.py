"""C, the test child: runs the untrusted program once (stdin or functional or AZR mode) and
reports its result record; never returns. Also the LiveCodeBench header, pre-imported in W so
that every fork starts warm."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys

from .common import (PR_SET_DUMPABLE, RESULT_FD, SETUP_OK, _compile_program, _enter_sandbox,
    _prctl)

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
# Executed once here and served to programs as their builtins (``_header_builtins``) instead of
# re-running ~1,500 star imports (~1 ms) per test. Names bound to the interpreter's streams/argv
# are re-bound in each test child.
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


# Unblocking every signal in a test child: one libc call on a prebuilt empty set (the signal
# module's pthread_sigmask returns the old mask as a set of Signals members: ~60 enum lookups
# and allocations, i.e. copy-on-write faults, per test).
_libc_sigmask = ctypes.CDLL(None, use_errno=True).pthread_sigmask
_libc_sigmask.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_libc_sigmask.restype = ctypes.c_int
_NO_SIGNALS = ctypes.create_string_buffer(128)  # a zeroed sigset_t (glibc: 1024 bits)


def _test_child(job: dict, prog: dict, fds: list, direct: dict | None = None) -> None:
    """Body of C: wire stdio, set the per-test limits, run the program, report, ``_exit``.

    ``fds``: the test's input memfd (stdin in stdin mode; otherwise the call's arguments, and stdin
    is /dev/null), the stdout, stderr and result pipes, and on the direct path the program memfd.
    ``direct``: C was forked by the zygote Z (root), so it drops to the sandbox identity and compiles
    the program itself; otherwise it was forked by the job's T, which did both once for the job."""
    code = 70
    try:
        lim = job["lim"]
        payload, code_bytes = b"", b""
        if direct is not None:
            size = os.fstat(fds[4]).st_size
            code_bytes = os.pread(fds[4], size, 0) if size else b""
        stdin_fd = fds[0]
        if job["mode"] != "stdin":
            size = os.fstat(fds[0]).st_size
            payload = os.pread(fds[0], size, 0) if size else b""
            stdin_fd = prog["devnull"]
        moved = [os.dup(fd) for fd in (stdin_fd, fds[1], fds[2], fds[3])]  # stdin, stdout, stderr, result
        for target, fd in enumerate(moved):
            os.dup2(fd, target)
        cpu = (lim["cpu_soft"], lim["cpu_hard"])
        if direct is not None:
            _enter_sandbox(direct, lim, cpu)  # (rootless: needs the program namespace's fd)
        os.closerange(RESULT_FD + 1, 1 << 16)
        # setuid (C on the direct path) or T's prctl left us non-dumpable: the program may use
        # /proc/self like any process; only its own descendants share its uid.
        _prctl(PR_SET_DUMPABLE, 1)
        if direct is None:
            if not prog["pidns"]:
                os.setsid()  # its own process group, so T can kill what it leaves behind
            resource.setrlimit(resource.RLIMIT_CPU, cpu)
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim["fsize"], lim["fsize"]))  # T and J write memfds
        if _libc_sigmask(signal.SIG_SETMASK, _NO_SIGNALS, None) != 0:  # the forkers block every signal
            raise OSError("pthread_sigmask")
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
