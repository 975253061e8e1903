"""Sandbox worker: runs in a fresh ``python -s -S -P`` interpreter, started by ``pool.WORKER_BOOT``
(which passes it its configuration on stdin, as ``sys.argv[1]``).

Never imported by the parent (it is started as a script, by path, stdlib only). Process layout::

    parent (trainer; holds expected outputs; compares)      <- never runs untrusted code
      └─ W  worker supervisor, root: private mount + network + IPC + UTS namespaces,
            private /tmp and /dev/shm tmpfs, project/data paths hidden, optional cgroup
           └─ J  trusted runner = PID 1 of a private PID namespace; serves jobs over W's pipes;
              │  does every test's bookkeeping, never forks per test
              ├─ Z  persistent root fork servers for jobs of 1-2 tests (plain, and one with the
              │  │  warm modules imported)
              │  └─ C  one per test: drops to the per-worker uid and limits, compiles, runs, exits
              └─ T  one per job of >= 3 tests: non-root per-worker uid, rlimits, cwd; compiles
                 │  the program once, then serves forks like Z
                 └─ C  one per test: runs the program, exits

Each test: J writes the input into a memfd and sends "T" to the forker (Z or T); the forker
forks C, reports its pid, waits for it, kills and reaps what it left, and reports the status and
rusage. C writes into per-worker stdout/stderr/result pipes that J drains until empty after that
report. Why the split: after a fork, every page the forking process writes costs a
copy-on-write fault, so the forker runs next to no Python between forks, and J's Python-heavy
bookkeeping runs in a process no child shares pages with.

Pre-importing the LCB header modules and forking from a warm interpreter costs ~1-2 ms per
test instead of ~20 ms for a cold interpreter plus header.

Memory hygiene: Z, T and C are forks of J, so anything J holds on its heap is readable by the
untrusted program. J therefore never holds expected outputs (they never leave the parent), and it
keeps all user data (program text, inputs, outputs, stderr) only in ``MADV_DONTFORK`` mappings
that it reads into and writes from without copies. A forked child does not inherit those
mappings, so a later program cannot scan memory for an earlier program's output. T lives for
one job only; Z holds no user data.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import json
import mmap
import os
import resource
import select
import shutil
import signal
import stat as stat_module
import struct
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

_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]

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
        boot = globals().get("__gasp_boot__")
        if boot is not None:  # started by pool.WORKER_BOOT: the configuration is not on the command line
            fd = os.memfd_create("boot", 0)  # inherited by the new image, which closes it
            os.write(fd, boot)
            os.environ["GASP_SB_BOOT_FD"] = str(fd)
        os.execv(sys.executable, sys.orig_argv)
    os.environ.pop("GASP_SB_REEXEC", None)


USERNS_SETTINGS = (  # (sysctl file, value that forbids unprivileged user namespaces, its name)
    ("/proc/sys/kernel/unprivileged_userns_clone", "0", "kernel.unprivileged_userns_clone = 0"),
    ("/proc/sys/user/max_user_namespaces", "0", "user.max_user_namespaces = 0"),
    ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
     "kernel.apparmor_restrict_unprivileged_userns = 1 (AppArmor)"),
)


def _userns_blocker(err: int) -> str:
    """The host setting that keeps this unprivileged process from creating a user namespace."""
    found = []
    for path, bad, name in USERNS_SETTINGS:
        try:
            with open(path) as fh:
                if fh.read().strip() == bad:
                    found.append(name)
        except OSError:
            continue
    if err == 28:  # ENOSPC
        found.append("the user-namespace limit user.max_user_namespaces (of this or an enclosing "
                     "namespace) is used up")
    if not found:
        found.append("no sysctl forbids it, so a seccomp filter or security module of the container or "
                     "job runtime does (e.g. Docker's default seccomp profile)")
    return "; ".join(found)


def _fresh_session_keyring(facts: dict) -> None:
    """Join a new anonymous session keyring: everything the worker starts inherits it instead of
    the trainer's, so no program can read or search keys the trainer's session holds."""
    if SYS_KEYCTL is None:
        facts["errors"].append(f"keyring: no keyctl syscall number for {os.uname().machine}")
        return
    if _libc.syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None) < 0:
        facts["errors"].append(f"keyring: {os.strerror(ctypes.get_errno())}")
        return
    facts["keyring"] = True


def _enter_user_namespace(facts: dict) -> bool:
    """Rootless mode: a new user namespace in which the caller is uid 0, with every capability
    over the namespaces created from it (and none over the host's)."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    except OSError as exc:
        facts["userns_error"] = f"{exc.strerror}: {_userns_blocker(exc.errno)}"
        facts["errors"].append(f"user namespace: {facts['userns_error']}")
        return False
    try:  # an unprivileged process may map only its own ids, and must deny setgroups first
        _write_file("/proc/self/setgroups", "deny")
        _write_file("/proc/self/uid_map", f"0 {uid} 1")
        _write_file("/proc/self/gid_map", f"0 {gid} 1")
    except OSError as exc:
        facts["userns_error"] = f"writing the id maps failed: {exc}"
        facts["errors"].append(f"user namespace: {facts['userns_error']}")
        return False
    facts["userns"] = True
    return True


def _program_user_namespace(id_map: str) -> int:
    """A nested user namespace for the test programs, in which no further user namespace can be
    created (its own ``user.max_user_namespaces`` is 0, and the kernel checks every ancestor's).

    Rootless mode (``id_map`` "1000 0 1"): its uid/gid ``ROOTLESS_PROGRAM_UID`` map to our uid/gid
    0, so a program is not root and holds no capability over the namespaces that own the mounts,
    the network and the PIDs (it cannot undo a mount). Root mode ("0 0 4294967295", identity):
    the program enters it and then drops to its per-worker uid, so host uids are unchanged; it
    only takes away user-namespace creation (a bind mount of ``/`` in a namespace of its own).
    Returns an fd (>= 64) for ``setns``."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(hold_w)
            _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER) for programs")
            if not id_map.startswith("0 0 "):  # an unprivileged mapping needs setgroups denied
                _write_file("/proc/self/setgroups", "deny")
            # this namespace's own limit: nothing created inside it (fail closed if it cannot be set)
            _write_file("/proc/sys/user/max_user_namespaces", "0")
            os.write(ready_w, b"1")
            os.read(hold_r, 1)  # until W has written the id maps and holds an fd to the namespace
            code = 0
        except OSError as exc:
            os.write(ready_w, str(exc).encode()[:500])
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(hold_r)
    try:
        reply = os.read(ready_r, 512)
        if reply != b"1":
            raise OSError(f"could not set up the program user namespace: {reply.decode(errors='replace')}")
        # Written from here (the parent namespace): only a writer outside the new namespace with
        # CAP_SETUID there may map more than its own id (the identity map of root mode).
        _write_file(f"/proc/{pid}/uid_map", id_map)
        _write_file(f"/proc/{pid}/gid_map", id_map)
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64)  # clear of the stdio/result fds 0-3
        os.close(fd)
        return high
    finally:
        os.close(ready_r)
        os.close(hold_w)
        os.waitpid(pid, 0)


def _mount_flags(path: str) -> int:
    """The flags a read-only bind remount of ``path`` must keep: in a user namespace the kernel
    locks nosuid/nodev/noexec and the atime mode of mounts inherited from the host."""
    f = os.statvfs(path).f_flag
    out = 0
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                   (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)):
        if f & st:
            out |= ms
    return out


def _setup_isolation(cfg: dict, facts: dict) -> None:
    """Namespaces and mounts for W (and so for J and every forker). Records what worked in
    ``facts``. With CAP_SYS_ADMIN (root) the namespaces are created directly; without it, from
    a new user namespace (rootless mode) where that is allowed."""
    facts.update(root=os.geteuid() == 0, privileged=False, userns=False, userns_error=None, netns=False,
                 mountns=False, pidns=False, cgroup=None, hidden=[], ro_mounts=0, errors=[], keyring=False)
    _fresh_session_keyring(facts)
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
    if not cfg.get("isolate", True):
        return
    facts["privileged"] = _has_capability(CAP_SYS_ADMIN)
    if not facts["privileged"] and not _enter_user_namespace(facts):
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
    facts["dev"] = _minimal_dev(facts)
    if facts["dev"]:
        _cover_top_level_files(facts)
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
        if os.path.isdir(path) and path not in cfg.get("hide", []):
            try:
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")
                facts["hidden"].append(path)
            except OSError as exc:
                facts["errors"].append(f"tmpfs {path}: {exc}")
    if facts["userns"] and "/tmp" in facts["hidden"]:
        # Rootless: the program's uid owns these tmpfs roots, so permissions cannot keep it out of
        # /tmp and /var/tmp as in root mode; they become read-only below, and the working
        # directory /tmp/run is a writable tmpfs of its own.
        try:
            os.mkdir("/tmp/run", 0o700)
            _mount("tmpfs", "/tmp/run", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=700")
        except OSError as exc:
            facts["errors"].append(f"tmpfs /tmp/run: {exc}")
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
    # /sys and its submounts too: rootless, a program has the uid of the user's delegated cgroup
    # files (systemd user slices), which it could otherwise write (the trainer's memory.max).
    writable = ("/tmp/run", "/dev/shm") if facts["userns"] else ("/tmp", "/dev/shm", "/var/tmp")
    skip = writable + ("/proc", "/dev", "/dev/pts", "/dev/mqueue")
    try:
        with open("/proc/self/mountinfo") as fh:
            points = [line.split()[4] for line in fh]
    except OSError:
        points = []
    for mp in points:
        if mp in skip or mp.startswith(("/proc/", "/dev/")) or (mp in facts["hidden"] and mp not in
                                                                          ("/tmp", "/var/tmp")):
            continue
        try:
            _mount(None, mp, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _mount_flags(mp), None)
            facts["ro_mounts"] += 1
        except OSError as exc:
            if os.path.ismount(mp) and not os.statvfs(mp).f_flag & os.ST_RDONLY:
                facts["errors"].append(f"ro {mp}: {exc}")
    if facts["dev"]:
        try:  # the device nodes are bind mounts of their own and stay writable
            _mount(None, "/dev", None, MS_REMOUNT | MS_NOSUID | MS_NOEXEC | MS_RDONLY, "size=64k,mode=755")
        except OSError as exc:
            facts["errors"].append(f"ro /dev: {exc}")


def _cover_top_level_files(facts: dict) -> None:
    """Regular files directly in / (container metadata, installers, ...) become empty: /dev/null
    is bound over each (a mount can cover a file, not remove its name), read-only like the rest."""
    try:
        names = os.listdir("/")
    except OSError as exc:
        facts["errors"].append(f"top-level files: {exc}")
        return
    for name in names:
        path = "/" + name
        try:
            if not stat_module.S_ISREG(os.lstat(path).st_mode):
                continue
            _mount("/dev/null", path, None, MS_BIND, None)
        except OSError as exc:
            facts["errors"].append(f"cover {path}: {exc}")


#: The devices a program gets (bound from the host's /dev); GPUs, TPUs, disks, ... are not there.
DEV_NODES = ("null", "zero", "full", "random", "urandom")


def _minimal_dev(facts: dict) -> bool:
    """Replace /dev by a tmpfs holding only ``DEV_NODES`` (bind mounts of the host's nodes: in a
    user namespace new device nodes would not work), the /dev/fd and stdio links and an empty
    /dev/shm (its private tmpfs comes next). Without it a program could open the host's GPU or
    accelerator devices (often mode 0666) and disturb the trainer."""
    fds = {}
    for name in DEV_NODES:
        try:
            fds[name] = os.open(f"/dev/{name}", os.O_PATH)
        except OSError:
            pass
    try:
        _mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
        for name, fd in fds.items():
            with open(f"/dev/{name}", "w"):
                pass
            _mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, MS_BIND, None)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                             ("stderr", "/proc/self/fd/2")):
            os.symlink(target, f"/dev/{name}")
        os.mkdir("/dev/shm", 0o1777)
        return True
    except OSError as exc:
        facts["errors"].append(f"/dev: {exc}")
        return False
    finally:
        for fd in fds.values():
            os.close(fd)


def _private_proc(facts: dict) -> None:
    """A procfs of the current PID namespace on /proc (J, and each forker in its own mount
    namespace). If the kernel refuses (a procfs partly covered by the host, as in some
    containers), J covers /proc with an empty tmpfs in rootless mode rather than show the host's
    processes (same uid: their environment would be readable)."""
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        facts["proc"] = True
        # Read-only sysctls: rootless, the program's uid owns this namespace's IPC, UTS and user
        # limits (kernel.shm*, msg*, sem, user.max_*), which it could otherwise rewrite.
        _mount("/proc/sys", "/proc/sys", None, MS_BIND | MS_REC, None)
        _mount(None, "/proc/sys", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    except OSError as exc:
        facts["proc"] = False
        facts["errors"].append(f"proc: {exc}")
        if facts["userns"]:
            try:
                _mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k,mode=555")
            except OSError as exc2:
                facts["errors"].append(f"hiding /proc: {exc2}")
                raise


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


_sigmask = signal.pthread_sigmask


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
        _sigmask(signal.SIG_SETMASK, ())  # the forkers block every signal; a program gets none blocked
        _forget_frames(sys._getframe(1), 1)  # the forker's loop: its previous test's status and pid
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
# Forkers: the zygotes Z and the per-job runners T (trusted code; T already non-root and limited)
# ----------------------------------------------------------------------------------------------

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
    was forked from (W's ``main`` with the worker configuration, J's job that started a forker,
    the forker's previous test) would tell it where and how it runs. A forker clears them once
    when it starts, a test child the forker's loop frame: neither ever returns into them. The
    values stay allocated (a process that exits with ``os._exit`` frees nothing anyway): freeing
    J's objects in a fork (mappings it does not share) is not safe. Module frames (whose locals
    are the module's globals) are left alone."""
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


def _remove_sysv_objects() -> None:
    """Remove every SysV shared memory segment, message queue and semaphore set (the ids are
    the second column of /proc/sysvipc/*; the files hold only a header line when there are none)."""
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
    capability (uid ``ROOTLESS_PROGRAM_UID`` there). Without isolation: nothing."""
    uid, userns = ctx["uid"], ctx.get("userns")
    if (ctx.get("rootless") or uid is not None) and userns is None:
        raise OSError("no program user namespace")
    if uid is not None:
        if _libc_setns(userns, CLONE_NEWUSER) != 0:
            raise OSError(ctypes.get_errno(), "setns(program user namespace)")
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getresuid() != (uid, uid, uid) or uid == 0 or not _no_capabilities():
            raise OSError("sandbox uid not in effect")
    elif userns is not None:
        if _libc_setns(userns, CLONE_NEWUSER) != 0:
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


# Fork-server protocol. J -> forker: a packet pipe (O_DIRECT: one write, one read) carrying
# b"J" + job JSON (Z only: the next job's mode, limits and cwd) or b"T" (run one test now).
# Forker -> J: a pipe; every message is one write below PIPE_BUF, so atomic: the child's pid
# right after the fork, its wait status and rusage once it and everything it left are dead and
# reaped, or (T only) the program's compile error. The test's input, program and output pipes
# are per-worker channels every forker inherits from J (see ``Runner._open_channels``).
REPORT_PID = struct.Struct("<ci")  # b"P", pid
REPORT_STATUS = struct.Struct("<ciddq")  # b"S", wait status, utime, stime, maxrss (KiB)
REPORT_CE = struct.Struct("<cI")  # b"E", length of the UTF-8 message that follows
REPORT_READY = b"R"  # set up and serving
QUIET_WAIT_S = 0.005  # see Runner._run_test
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
    J, which does the per-test bookkeeping (select, drain, encode, relay), never forks per test."""
    job, fds, pidns, pid_fd = prog.get("job"), prog["fds"], prog["pidns"], prog["pid_fd"]
    read, write, fork, wait4 = os.read, os.write, os.fork, os.wait4
    pack_pid, pack_status = REPORT_PID.pack, REPORT_STATUS.pack
    getrusage, RUSAGE_CHILDREN = resource.getrusage, resource.RUSAGE_CHILDREN
    # CPU of every process a test ran (its children and orphans too, reaped by us as their PID 1
    # and subreaper): the growth of our RUSAGE_CHILDREN over the test.
    before = getrusage(RUSAGE_CHILDREN)
    before = before.ru_utime + before.ru_stime
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
        write(pid_fd, pack_pid(b"P", pid))
        _, status, usage = wait4(pid, 0)
        # Leftovers of the test (daemons, forks, threads, unreaped zombies): kill and reap them.
        # The raw libc call reports "nothing left" as -1/ESRCH instead of raising, so the common
        # case allocates nothing.
        if not pidns:  # no namespace: the test's process group (C called setsid)
            if _libc_kill(-pid, 9) == 0:
                _reap_group(pid)
            _reap_all(block=False)  # zombies of processes that left the group
        elif _libc_kill(-1, 9) == 0:  # we are PID 1 of a namespace that holds only this test's processes
            _reap_all(block=True)
        after = getrusage(RUSAGE_CHILDREN)
        after = after.ru_utime + after.ru_stime
        write(report_fd, pack_status(b"S", status, after - before, 0.0, usage.ru_maxrss))
        before = after


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
                else:  # the forker died: the program killed its T, or an infrastructure fault
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
        """Run test ``i`` through ``forker`` and relay its facts to the parent.

        Returns "ran", "ce" (T could not compile the program; reported as test ``i``) or "died"
        (the forker is gone: everything in the sandbox was killed)."""
        lim = job["lim"]
        out_map, res_map, err_map = maps
        out_r, err_r, res_r = self.out_r, self.err_r, self.res_r
        _fill_memfd(self.pay_w, payload)
        os.lseek(self.pay_r, 0, os.SEEK_SET)  # the description the child's stdin shares
        start = time.monotonic()
        try:
            os.write(forker.ctl_w, b"T")
        except OSError:
            pass  # the forker is gone: its report pipe says so below
        out_cap, err_cap = lim["out"], lim["err"]
        out_mv, res_mv, err_mv = memoryview(out_map), memoryview(res_map), memoryview(err_map)
        scratch = self.scratch
        state = {out_r: 0, res_r: 0, "err": 0, "wrapped": False}
        kill_reason = pid = status = usage = ce = None
        died = killed_sent = False
        deadline = start + float(lim["wall"])
        grace = None  # after a kill: how long the forker may take to report the exit

        def drain(fd: int) -> bool:
            """Read what is available straight into the DONTFORK maps; False when nothing is."""
            nonlocal kill_reason
            try:
                if fd == err_r:  # ring buffer keeps the tail
                    pos = state["err"]
                    k = os.readv(fd, [err_mv[pos:err_cap], err_mv[0:pos]])
                    if k:
                        state["wrapped"] = state["wrapped"] or pos + k >= err_cap
                        state["err"] = (pos + k) % err_cap
                    return k > 0
                pos = state[fd]
                if pos > out_cap:  # over the cap: read and drop
                    return os.readv(fd, [scratch]) > 0
                k = os.readv(fd, [(out_mv if fd == out_r else res_mv)[pos:out_cap + 1]])
                state[fd] = pos + k
                if pos + k > out_cap and kill_reason is None:
                    kill_reason = "ole"
                return k > 0
            except BlockingIOError:
                return False

        def take_pid() -> None:
            """The child's pid, if the forker has forked it yet (consumes its message)."""
            nonlocal pid
            if pid is None:
                try:
                    msg = os.read(forker.pid_r, REPORT_PID.size)
                except BlockingIOError:
                    return
                if len(msg) == REPORT_PID.size:
                    pid = REPORT_PID.unpack(msg)[1]

        def parse_reports() -> None:
            nonlocal status, usage, ce, died
            buf = forker.buf
            while buf:
                kind = buf[:1]
                if kind == b"S" and len(buf) >= REPORT_STATUS.size:
                    _, status, utime, stime, maxrss = REPORT_STATUS.unpack_from(buf)
                    usage = (utime + stime, maxrss)
                    del buf[:REPORT_STATUS.size]
                elif kind == b"E" and len(buf) >= REPORT_CE.size:
                    n = REPORT_CE.unpack_from(buf)[1]
                    if len(buf) < REPORT_CE.size + n:
                        return
                    ce = bytes(buf[REPORT_CE.size:REPORT_CE.size + n]).decode("utf-8", "replace")
                    del buf[:REPORT_CE.size + n]
                elif kind in (b"S", b"E"):
                    return  # partial (cannot happen: every report is one atomic write)
                else:
                    died = True  # garbage: treat the forker as broken
                    return

        def read_reports() -> None:
            nonlocal died
            chunk = os.read(forker.report_r, 4096)
            if not chunk:
                died = True
                return
            forker.buf += chunk
            parse_reports()

        parse_reports()  # what arrived while the forker was starting (a compile error)
        watch_all = [forker.report_r, out_r, err_r, res_r]
        # Most tests end within a few ms and print less than a pipe holds: until QUIET_WAIT_S, J
        # waits for the exit report alone instead of waking for every write of the child.
        quiet_until = start + QUIET_WAIT_S
        try:
            while status is None and ce is None and not died:
                now = time.monotonic()
                if kill_reason is None and now >= deadline:
                    kill_reason = "wall"
                quiet = kill_reason is None and now < quiet_until
                if kill_reason is not None:
                    if grace is None:
                        grace = now + 5.0
                    take_pid()
                    if pid is not None and not killed_sent:
                        self._kill_test(forker, pid)  # the forker then kills the rest
                        killed_sent = True
                    if now >= grace:
                        died = True  # the forker does not report: broken
                        break
                if kill_reason is not None:
                    left = min(grace - now, 0.01 if pid is None else grace - now)
                else:
                    left = min(deadline, quiet_until) - now if quiet else deadline - now
                watch = watch_all[:1] if quiet else watch_all
                ready, _, _ = select.select(watch if self.stop_pending else watch + [self.cmd], [], [], left)
                for fd in ready:
                    if fd == forker.report_r:
                        read_reports()
                    elif fd == self.cmd:  # a STOP (kept for later), or the parent died
                        try:
                            self._handle_cmd(job["id"])
                        except _ParentGone:
                            self._kill_all()
                            raise
                    else:
                        drain(fd)
            wall = time.monotonic() - start
            take_pid()  # consume its message (P always precedes S)
            if died:
                if pid is not None and not self.facts["pidns"]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self._kill_all()  # every process in the sandbox, the forker included
                if forker.direct and any(z is forker for z in self.zygotes.values()):  # no PID namespace
                    forker.reap(self.reaped)
                    forker.close()
                    self.zygotes = {k: z for k, z in self.zygotes.items() if z is not forker}
                self._discard_output()
                return "died"
            for fd in (out_r, err_r, res_r):  # every writer is dead (the forker killed the rest)
                while drain(fd):
                    pass
        finally:
            self._wipe_after_test(self.work_cwd)
        if ce is not None:
            record = _json_mod.dumps({"k": "ce", "msg": ce}).encode()
            self._send({"t": "test", "id": job["id"], "i": i, "exit": 0, "sig": None, "cpu": 0.0, "wall": 0.0,
                        "rss_kb": 0, "kill": None, "out_over": False, "res_over": False, "setup_ok": True},
                       [b"", record, b""])
            return "ce"
        n_out, n_res = min(state[out_r], out_cap), min(state[res_r], out_cap)
        setup_ok = n_res > 0 and res_mv[0] == SETUP_OK[0]
        err_blobs = ([err_mv[state["err"]:err_cap], err_mv[0:state["err"]]] if state["wrapped"]
                     else [err_mv[0:state["err"]]])
        header = {"t": "test", "id": job["id"], "i": i,
                  "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                  "sig": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                  "cpu": usage[0], "wall": wall, "rss_kb": usage[1],
                  "kill": kill_reason, "out_over": state[out_r] > out_cap, "res_over": state[res_r] > out_cap,
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
        for m, n in ((out_map, min(state[out_r], out_cap + 1)), (res_map, min(state[res_r], out_cap + 1))):
            if n:
                m.madvise(mmap.MADV_DONTNEED, 0, (n + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE)
        if state["err"] or state["wrapped"]:
            err_map.madvise(mmap.MADV_DONTNEED)
        return "ran"

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



def main() -> None:
    cfg = json.loads(sys.argv[1])
    _ensure_stack(int(cfg["stack"]))
    for name in ("__gasp_boot__", "__file__", "_here"):  # the configuration and host paths, out of reach
        globals().pop(name, None)
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


def _load_protocol():
    """``protocol.py`` (stdlib only), loaded by path under a neutral code file name: like this
    script's, its code objects (reachable from any frame) name no host path."""
    module = types.ModuleType("_gasp_sandbox_protocol")
    sys.modules[module.__name__] = module  # dataclasses look their module up here
    with open(os.path.join(_here, "protocol.py"), "rb") as fh:
        exec(compile(fh.read(), "<gasp-sandbox-protocol>", "exec", dont_inherit=True), module.__dict__)
    return module


_proto = _load_protocol()
PREFIX, MAX_HEADER, write_all = _proto.PREFIX, _proto.MAX_HEADER, _proto.write_all
encode_flat_frame = _proto.encode_flat_frame

if __name__ == "__main__":
    main()
