"""W's set-up: a fresh session keyring, the user namespace (rootless), network/IPC/UTS/mount
namespaces, a fresh root (or, where the kernel refuses one, hidden paths in the old root) with a
minimal /dev and private temp dirs, read-only mounts, the program user namespace and the private
procfs of J and each forker."""

from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import sys
import stat as stat_module

from .common import (CAP_SYS_ADMIN, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWUTS,
    KEYCTL_JOIN_SESSION_KEYRING, MS_BIND, MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID,
    MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME, MS_REMOUNT, SYS_KEYCTL, _check, _has_capability, _libc,
    _mount, _write_file)


def _ensure_stack(stack_bytes: int, boot: bytes) -> None:
    """Re-exec once with a large RLIMIT_STACK: the main-thread stack gap is fixed at exec time.
    ``boot`` (what ``pool.WORKER_BOOT`` read on stdin) goes to the new image in a memfd."""
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft != resource.RLIM_INFINITY and soft < stack_bytes and os.environ.get("GASP_SB_REEXEC") != "1":
        try:
            new_hard = hard if hard == resource.RLIM_INFINITY or hard >= stack_bytes else stack_bytes
            resource.setrlimit(resource.RLIMIT_STACK, (stack_bytes, new_hard))
        except (ValueError, OSError):
            return
        os.environ["GASP_SB_REEXEC"] = "1"
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
                 mountns=False, pidns=False, cgroup=None, hidden=[], ro_mounts=0, errors=[], keyring=False,
                 fresh_root=False, fresh_root_error=None)
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
    if not (cfg.get("fresh_root", True) and _fresh_root(cfg, facts, size)):
        _hide_in_place(cfg, facts, size)
    _read_only_mounts(facts)


SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}.get(os.uname().machine)
MNT_DETACH = 2


def _fresh_root(cfg: dict, facts: dict, size: int) -> bool:
    """Make a new, empty root (a tmpfs) holding only what programs need and pivot into it: the
    host's top-level ``cfg["system"]`` entries (``pool.SYSTEM_DIRS``), /proc, a minimal /dev,
    private /tmp and /dev/shm, and the kept paths (the interpreter prefix, site-packages) below
    directories that hold nothing else. The old root is detached, so no name of the host's other
    top-level files and directories stays visible. False (and nothing changed) where the kernel
    refuses; the caller then hides in place."""
    n_errors = len(facts["errors"])
    if SYS_PIVOT_ROOT is None:
        facts["fresh_root_error"] = f"no pivot_root syscall number for {os.uname().machine}"
        return False
    keep = _open_kept(cfg, facts)  # the staging tmpfs below may cover one of them (a venv under /tmp)
    stage = next((d for d in ("/tmp", "/mnt", "/dev") if os.path.isdir(d) and not os.path.islink(d)), None)
    try:
        if stage is None:
            raise OSError("no directory to build it on (/tmp, /mnt, /dev)")
        _mount("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    except OSError as exc:
        facts["fresh_root_error"] = str(exc)
        del facts["errors"][n_errors:]
        for _, fd in keep:
            os.close(fd)
        return False
    try:
        for name in [*cfg["system"], "proc"]:
            host, new = "/" + name, stage + "/" + name
            if os.path.islink(host):
                os.symlink(os.readlink(host), new)
            elif os.path.isdir(host):
                os.mkdir(new, 0o755)
                _mount(host, new, None, MS_BIND | MS_REC, None)
        facts["dev"] = _minimal_dev(facts, stage + "/dev")
        os.mkdir(stage + "/tmp", 0o755)
        _private_temp_dirs(facts, size, stage, ("/tmp", "/dev/shm") if facts["dev"] else ("/tmp",))
        for path in cfg.get("hide", []):  # the host's hidden trees are absent; cover any inside a kept one
            if os.path.isdir(stage + path):
                _mount("tmpfs", stage + path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
            facts["hidden"].append(path)
        _bind_kept(keep, stage, facts)
        os.chdir(stage)
        # pivot_root(".", "."): the old root ends up stacked on the new one, detached below
        _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    except OSError as exc:  # nothing runs yet: drop the new root, undo its side effects, hide in place
        os.chdir("/")
        facts["fresh_root_error"] = str(exc)
        del facts["errors"][n_errors:]
        facts["hidden"].clear()
        facts["dev"] = False
        if _libc.umount2(stage.encode(), MNT_DETACH) != 0:
            facts["errors"].append(f"removing the unused new root on {stage}: {os.strerror(ctypes.get_errno())}")
        return False
    finally:
        for _, fd in keep:
            os.close(fd)
    # Past the pivot there is no way back: a failure here stops the worker (fail closed).
    _check(_libc.umount2(b".", MNT_DETACH), "detaching the old root")
    os.chdir("/")
    facts["fresh_root"] = True
    return True


def _open_kept(cfg: dict, facts: dict) -> list:
    """(path, O_PATH fd) of each kept directory (the interpreter prefix, site-packages), opened
    before anything is mounted over the way to them."""
    keep = []
    for path in cfg.get("keep", []):
        try:
            keep.append((path, os.open(path, os.O_PATH | os.O_DIRECTORY)))
        except OSError as exc:
            facts["errors"].append(f"keep {path}: {exc}")
    return keep


def _bind_kept(keep: list, root: str, facts: dict) -> None:
    """Bind each kept directory back at its own path under ``root`` (its parents created empty)."""
    for path, fd in keep:
        try:
            os.makedirs(root + path, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", root + path, None, MS_BIND | MS_REC, None)
        except OSError as exc:
            facts["errors"].append(f"keep {path}: {exc}")


def _private_temp_dirs(facts: dict, size: int, root: str, paths) -> None:
    """A private tmpfs on each of ``paths`` (under ``root``); rootless, /tmp/run as well."""
    for path, mode in (("/tmp", "755"), ("/dev/shm", "1777"), ("/var/tmp", "755")):
        if path in paths and os.path.isdir(root + path):
            try:
                _mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")
                facts["hidden"].append(path)
            except OSError as exc:
                facts["errors"].append(f"tmpfs {path}: {exc}")
    if facts["userns"] and "/tmp" in facts["hidden"]:
        # Rootless: the program's uid owns these tmpfs roots, so permissions cannot keep it out of
        # /tmp and /var/tmp as in root mode; they become read-only below, and the working
        # directory /tmp/run is a writable tmpfs of its own.
        try:
            os.mkdir(root + "/tmp/run", 0o700)
            _mount("tmpfs", root + "/tmp/run", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=700")
        except OSError as exc:
            facts["errors"].append(f"tmpfs /tmp/run: {exc}")


def _hide_in_place(cfg: dict, facts: dict, size: int) -> None:
    """Where no fresh root can be made: hide the host's trees in the old root. Every hidden
    directory becomes an empty read-only tmpfs (the interpreter prefix and site-packages bound
    back) and every regular file directly in / reads empty; their names stay visible."""
    facts["dev"] = _minimal_dev(facts, "/dev")
    if facts["dev"]:
        _cover_top_level_files(facts)
    keep = _open_kept(cfg, facts)
    # Private temp dirs first: a checkout or venv under /tmp is hidden by them, and the kept binds
    # below (site-packages of a venv under /tmp) are then mounted on top, not shadowed.
    _private_temp_dirs(facts, size, "", [p for p in ("/tmp", "/dev/shm", "/var/tmp") if p not in cfg.get("hide", [])])
    for path in cfg.get("hide", []):
        try:
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
            facts["hidden"].append(path)
        except OSError as exc:
            facts["errors"].append(f"hide {path}: {exc}")
    _bind_kept(keep, "", facts)
    for _, fd in keep:
        os.close(fd)


def _read_only_mounts(facts: dict) -> None:
    """Every mount read-only but the private temp dirs (defence in depth; the program also runs as
    a non-root uid). /sys and its submounts too: rootless, a program has the uid of the user's
    delegated cgroup files (systemd user slices), which it could otherwise write (the trainer's
    memory.max)."""
    writable = ("/tmp/run", "/dev/shm") if facts["userns"] else ("/tmp", "/dev/shm", "/var/tmp")
    skip = writable + ("/proc", "/dev", "/dev/pts", "/dev/mqueue")
    try:
        with open("/proc/self/mountinfo") as fh:
            points = [line.split()[4] for line in fh]
    except OSError:
        points = []
    for mp in points:
        if mp in skip or mp.startswith(("/proc/", "/dev/")):
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


def _minimal_dev(facts: dict, dev: str) -> bool:
    """Make ``dev`` (/dev, or the new root's) a tmpfs holding only ``DEV_NODES`` (bind mounts of
    the host's nodes: in a user namespace new device nodes would not work), the /dev/fd and stdio
    links and an empty /dev/shm (its private tmpfs comes next). Without it a program could open
    the host's GPU or accelerator devices (often mode 0666) and disturb the trainer."""
    fds = {}
    for name in DEV_NODES:
        try:
            fds[name] = os.open(f"/dev/{name}", os.O_PATH)
        except OSError:
            pass
    try:
        os.makedirs(dev, 0o755, exist_ok=True)
        _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
        for name, fd in fds.items():
            with open(f"{dev}/{name}", "w"):
                pass
            _mount(f"/proc/self/fd/{fd}", f"{dev}/{name}", None, MS_BIND, None)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                             ("stderr", "/proc/self/fd/2")):
            os.symlink(target, f"{dev}/{name}")
        os.mkdir(f"{dev}/shm", 0o1777)
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
