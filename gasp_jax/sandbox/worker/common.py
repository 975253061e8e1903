"""What every process of the sandbox worker shares: kernel constants, libc calls (mount, prctl,
setns, capabilities), the identity drop of test processes and the clearing of inherited frames."""

from __future__ import annotations

import ctypes
import os
import resource
import signal


CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NAME, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 15, 36, 38
CAP_SYS_ADMIN = 21
KEYCTL_JOIN_SESSION_KEYRING = 1
# keyctl(2) has no libc wrapper in glibc; its syscall number per architecture.
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "ppc64le": 283, "s390x": 280}.get(os.uname().machine)
# Rootless mode: test programs run as this uid/gid of a second, nested user namespace (mapped to
# the worker's uid 0, i.e. the caller's uid on the host), with no capability in the namespaces
# that own the sandbox's mounts, network and PIDs.
ROOTLESS_PROGRAM_UID = 1000
RESULT_FD = 3
# Jobs with at most this many tests skip the per-job runner T (its fork and setup cost more than
# compiling the program once saves): a zygote Z forks each test child, which compiles the program.
DIRECT_MAX_TESTS = 2
SETUP_OK = b"\x01"
CATCHABLE_SIGNALS = sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})
# J keeps one frame arena up to this size for the next job (bigger ones are unmapped after use).
ARENA_KEEP_BYTES = 4 << 20

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


_libc_kill = _libc.kill
_libc_kill.argtypes = (ctypes.c_int, ctypes.c_int)
_libc_kill.restype = ctypes.c_int


def _prctl(option: int, arg: int) -> None:
    _check(_libc_prctl(option, arg, 0, 0, 0), "prctl")


_libc_setns = _libc.setns
_libc_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc_setns.restype = ctypes.c_int
_libc_unshare = _libc.unshare
_libc_unshare.argtypes = (ctypes.c_int,)
_libc_unshare.restype = ctypes.c_int
# capget/capset (version 3: two 32-bit words per set). Buffers are made once, so a test child
# that drops its capabilities allocates nothing.
_CAP_VERSION_3 = 0x20080522
_cap_header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
_cap_zero = (ctypes.c_uint32 * 6)()
_cap_seen = (ctypes.c_uint32 * 6)()
_libc_capset = _libc.capset
_libc_capset.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
_libc_capset.restype = ctypes.c_int
_libc_capget = _libc.capget
_libc_capget.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
_libc_capget.restype = ctypes.c_int


def _has_capability(cap: int) -> bool:
    """Whether this process holds ``cap`` in its effective set (of its own user namespace)."""
    _cap_header[0], _cap_header[1] = _CAP_VERSION_3, 0
    if _libc_capget(_cap_header, _cap_seen) != 0:
        return False
    return bool(_cap_seen[cap // 32 * 3] & (1 << (cap % 32)))


def _no_capabilities() -> bool:
    _cap_header[0], _cap_header[1] = _CAP_VERSION_3, 0
    return _libc_capget(_cap_header, _cap_seen) == 0 and not any(_cap_seen)


def _write_file(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)



_locals_to_fast = getattr(ctypes.pythonapi, "PyFrame_LocalsToFast", None)
if _locals_to_fast is not None:
    _locals_to_fast.argtypes = (ctypes.py_object, ctypes.c_int)
    _locals_to_fast.restype = None
_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = (ctypes.py_object,)
_incref.restype = None


def _forget_frames(frame, depth: int | None = None) -> None:
    """Clear the local variables of ``frame`` and the frames below it (``depth`` of them, or all).

    A program can walk up its stack (``sys._getframe().f_back``); the frames of the processes it
    was forked from (W's ``main`` with the worker configuration, J's job that started a forker)
    would tell it where and how it runs. A forker clears them once, when it starts serving: it
    never returns into them. The values stay allocated (a process that exits with ``os._exit``
    frees nothing anyway): freeing J's objects in a fork (mappings it does not share) is not
    safe. Module frames (whose locals are the module's globals) are left alone."""
    while frame is not None and depth != 0:
        if frame.f_code.co_name != "<module>":
            local = frame.f_locals
            for value in local.values():  # kept alive: no destructor of J's state runs here
                _incref(value)
            if _locals_to_fast is not None:  # CPython < 3.13: a snapshot, written back here
                local.clear()
                _locals_to_fast(frame, 1)
            else:  # CPython >= 3.13: a write-through proxy
                for name in list(local):
                    local[name] = None
        frame = frame.f_back
        depth = None if depth is None else depth - 1


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
    R.setrlimit(R.RLIMIT_DATA, (lim["as"], lim["as"]))  # the heap too (an RLIMIT_AS-only kernel gap)
    R.setrlimit(R.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
    _drop_identity(ctx)
    if not ctx["pidns"]:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.environ.get("TMPDIR") != ctx["cwd"]:
        os.environ["HOME"] = os.environ["TMPDIR"] = ctx["cwd"]


def _drop_identity(ctx: dict) -> None:
    """Become the sandbox identity, and check it (fail closed: on any doubt the caller exits
    before the program runs, which J reports as an infrastructure error).

    Root mode: enter the program user namespace (identity-mapped), then the per-worker uid (no
    groups, so no capability). Rootless mode: enter the program user namespace and drop every
    capability (uid ``ROOTLESS_PROGRAM_UID`` there). A zygote's children are in that namespace
    already (``userns_entered``). Without isolation: nothing."""
    uid, userns = ctx["uid"], ctx.get("userns")
    if (ctx.get("rootless") or uid is not None) and userns is None:
        raise OSError("no program user namespace")
    enter = not ctx.get("userns_entered")
    if uid is not None:
        if enter and _libc_setns(userns, CLONE_NEWUSER) != 0:
            raise OSError(ctypes.get_errno(), "setns(program user namespace)")
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getresuid() != (uid, uid, uid) or uid == 0 or not _no_capabilities():
            raise OSError("sandbox uid not in effect")
    elif userns is not None:
        if enter and _libc_setns(userns, CLONE_NEWUSER) != 0:
            raise OSError(ctypes.get_errno(), "setns(program user namespace)")
        if _libc_capset(_cap_header, _cap_zero) != 0:
            raise OSError(ctypes.get_errno(), "capset")
        if os.getuid() != ROOTLESS_PROGRAM_UID or not _no_capabilities():
            raise OSError("program identity not in effect")


def _compile_program(code_bytes: bytes):
    """(code object, None) or (None, CE message). Untrusted text is only ever compiled in T or C."""
    try:
        return compile(code_bytes.decode("utf-8"), "solution.py", "exec", dont_inherit=True), None
    except (SyntaxError, ValueError, UnicodeDecodeError, OverflowError, MemoryError, RecursionError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:2000]
