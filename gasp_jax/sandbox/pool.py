"""Parent side of one sandbox worker: start it (a fresh interpreter, never a fork of the
trainer), send jobs, stream per-test results back, stop or kill it."""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from gasp_jax.sandbox import cgroups
from gasp_jax.sandbox.wire import FrameReader, ProtocolError, encode_frame, wait_fd

log = logging.getLogger("gasp_jax.sandbox")

WORKER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker")
# W's command line (which every process of the sandbox inherits: a program reads it as its own
# /proc/self/cmdline or its forker's /proc/1/cmdline) holds no configuration and no host path but
# the interpreter's. This boot line reads an 8-byte length and "sources JSON\nconfiguration JSON"
# from stdin (after W re-execs itself: from the memfd named by GASP_SB_BOOT_FD), imports the
# worker's standard-library modules from those sources as the package ``gasp_sandbox_worker``
# and calls ``main.main`` with what it read. The modules are compiled under neutral file names
# (``<sandbox-worker>/runner.py``): no code object, frame or module a program can reach names a
# host path, and nothing is read from the checkout once the worker runs.
WORKER_BOOT = (
    "import importlib.machinery, json, os, sys, types\n"
    "def _read(n):\n"
    "    b = b''\n"
    "    while len(b) < n:\n"
    "        c = os.read(0, n - len(b))\n"
    "        if not c:\n"
    "            raise SystemExit(3)\n"
    "        b += c\n"
    "    return b\n"
    "_fd = int(os.environ.pop('GASP_SB_BOOT_FD', '-1'))\n"
    "if _fd >= 0:\n"
    "    _boot = [os.pread(_fd, os.fstat(_fd).st_size, 0)]\n"
    "    os.close(_fd)\n"
    "else:\n"
    "    _boot = [_read(8)]\n"
    "    _boot[0] += _read(int.from_bytes(_boot[0], 'little'))\n"
    "_src = json.loads(_boot[0][8:].split(b'\\n', 1)[0])\n"
    "class _Sources:\n"
    "    @staticmethod\n"
    "    def find_spec(name, path=None, target=None):\n"
    "        pkg, _, short = name.rpartition('.')\n"
    "        if pkg != 'gasp_sandbox_worker' or short not in _src:\n"
    "            return None\n"
    "        spec = importlib.machinery.ModuleSpec(name, _Sources, origin=f'<sandbox-worker>/{short}.py')\n"
    "        spec.has_location = True\n"
    "        return spec\n"
    "    @staticmethod\n"
    "    def create_module(spec):\n"
    "        return None\n"
    "    @staticmethod\n"
    "    def exec_module(module):\n"
    "        short = module.__name__.rpartition('.')[2]\n"
    "        exec(compile(_src[short], module.__spec__.origin, 'exec', dont_inherit=True), module.__dict__)\n"
    "sys.meta_path.insert(0, _Sources)\n"
    "_pkg = types.ModuleType('gasp_sandbox_worker')\n"
    "_pkg.__path__ = []\n"
    "sys.modules[_pkg.__name__] = _pkg\n"
    "from gasp_sandbox_worker.main import main as _main\n"
    "sys.meta_path.remove(_Sources)\n"
    "del _read, _fd, _pkg, _src, _Sources\n"
    "_main(_boot.pop())\n")


@functools.lru_cache(maxsize=1)
def worker_sources() -> str:
    """The worker's modules (``worker/*.py`` and ``wire.py``) as one JSON line {module: source}."""
    files = {name[:-3]: os.path.join(WORKER_DIR, name) for name in sorted(os.listdir(WORKER_DIR))
             if name.endswith(".py") and name != "__init__.py"}
    files["wire"] = os.path.join(os.path.dirname(WORKER_DIR), "wire.py")
    sources = {}
    for name, path in files.items():
        with open(path, encoding="utf-8") as fh:
            sources[name] = fh.read()
    return json.dumps(sources)


def boot_blob(config: dict) -> bytes:
    """What W reads on stdin before anything else (see ``WORKER_BOOT``)."""
    body = (worker_sources() + "\n" + json.dumps(config)).encode()
    return len(body).to_bytes(8, "little") + body

#: The only environment the sandbox ever sees (no tokens, keys or caches of the trainer).
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


class WorkerDied(RuntimeError):
    """The worker process is gone or stopped answering (an infrastructure error)."""


@dataclass
class WorkerConfig:
    """Static configuration of a worker process (fixed for its lifetime)."""

    python: str
    stack_bytes: int
    tmpfs_bytes: int
    cgroup_bytes: int | None
    hide: Sequence[str] = ()
    keep: Sequence[str] = ()
    site_paths: Sequence[str] = ()
    warm_modules: Sequence[str] = ()
    isolate: bool = True
    fresh_root: bool = True  # False: hide in the old root (what a kernel refusing pivot_root gets)
    start_timeout_s: float = 30.0
    debug: bool = False


@dataclass
class WorkerProcess:
    """One worker: W (namespaces) -> J (PID 1, trusted runner) -> one T per test."""

    slot: int
    config: WorkerConfig
    proc: subprocess.Popen | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    jobs_done: int = 0
    cgroup_path: str | None = None
    reader: FrameReader | None = None
    _next_id: int = 0

    def start(self) -> None:
        cfg = self.config
        if cfg.cgroup_bytes and cfg.isolate:  # root, or a delegated cgroup v2 subtree
            self.cgroup_path = cgroups.create(f"gasp_sandbox_{os.getpid()}_{self.slot}_{time.monotonic_ns()}",
                                              cfg.cgroup_bytes)
        wcfg = {"stack": cfg.stack_bytes, "tmpfs": cfg.tmpfs_bytes, "hide": list(cfg.hide),
                "keep": list(cfg.keep), "system": list(SYSTEM_DIRS), "site_paths": list(cfg.site_paths),
                "isolate": cfg.isolate, "fresh_root": cfg.fresh_root, "cgroup": self.cgroup_path,
                "warm": list(cfg.warm_modules), "owner": os.getpid()}
        # subprocess uses vfork/exec here (no preexec_fn): the trainer process is never forked.
        # Not `-I`: it implies -E, which ignores PYTHONHASHSEED, and every worker would hash strings with
        # its own secret (set order, hence a program's output, would differ between workers). The
        # environment is already scrubbed (SANDBOX_ENV); -s -P keep user site dirs and the script dir out.
        self.proc = subprocess.Popen(
            [cfg.python, "-s", "-S", "-P", "-c", WORKER_BOOT],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None if cfg.debug else subprocess.DEVNULL,
            env=dict(SANDBOX_ENV, LD_BIND_NOW="1"), cwd="/", close_fds=True, start_new_session=True, bufsize=0)
        self.reader = FrameReader(self.proc.stdout.fileno())
        try:
            self._write([boot_blob(wcfg)], time.monotonic() + cfg.start_timeout_s)
            header, _ = self.reader.read_frame(time.monotonic() + cfg.start_timeout_s)
        except (ProtocolError, OSError) as exc:
            self.kill()
            raise WorkerDied(f"sandbox worker {self.slot} failed to start: {exc}") from None
        if header.get("t") != "ready":
            self.kill()
            raise WorkerDied(f"sandbox worker {self.slot} sent {header.get('t')!r} instead of ready")
        self.facts = header.get("facts", {})
        self.jobs_done = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _write(self, buffers: list, deadline: float) -> None:
        fd = self.proc.stdin.fileno()
        views = [memoryview(b).cast("B") for b in buffers if len(b)]
        while views:
            left = deadline - time.monotonic()
            if left <= 0 or not wait_fd(fd, select.POLLOUT, left):
                raise WorkerDied("timed out sending a job to the sandbox worker")
            try:
                n = os.writev(fd, views[:64])
            except BlockingIOError:
                continue
            except OSError as exc:
                raise WorkerDied(f"sandbox worker pipe closed: {exc}") from None
            while n and views:
                if n >= views[0].nbytes:
                    n -= views[0].nbytes
                    views.pop(0)
                else:
                    views[0] = views[0][n:]
                    n = 0

    def execute(self, header: dict[str, Any], blobs: Sequence[bytes], deadline: float,
                on_test: Callable[[dict[str, Any], list[bytes]], bool]) -> dict[str, Any]:
        """Run one job. ``on_test`` gets every per-test frame and returns False to stop early
        (a STOP frame is then sent; the runner skips the remaining tests). Returns the final
        ``done`` frame: tests run, whether the job was stopped/killed, the runner's exit status."""
        if not self.alive:
            raise WorkerDied("sandbox worker is not running")
        self._next_id += 1
        job_id = self._next_id
        self._write(encode_frame({"t": "job", **header, "id": job_id}, blobs), deadline)  # or a control frame
        stopped = False
        try:
            while True:
                frame, data = self.reader.read_frame(deadline)
                kind = frame.get("t")
                if frame.get("id") != job_id:
                    raise ProtocolError(f"frame for job {frame.get('id')} while running job {job_id}")
                if kind == "test":
                    if not on_test(frame, data) and not stopped:
                        stopped = True
                        self._write(encode_frame({"t": "stop", "id": job_id}), deadline)
                elif kind == "pong":  # answer to a control frame
                    return frame
                elif kind == "done":
                    self.jobs_done += 1
                    frame["stopped"] = stopped
                    return frame
                else:
                    raise ProtocolError(f"unexpected frame {kind!r}")
        except (ProtocolError, OSError) as exc:
            raise WorkerDied(f"sandbox worker {self.slot}: {exc}") from None

    def stop(self, timeout: float = 2.0) -> None:
        """Graceful stop: EOF on the command pipe ends J, then W; kill if it lingers."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL the worker's whole session (J and every T die with W: PDEATHSIG/PID namespace)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    proc.kill()
                except OSError:
                    pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                log.error("sandbox worker %d (pid %d) did not die after SIGKILL", self.slot, proc.pid)
            for stream in (proc.stdin, proc.stdout):
                try:
                    if stream:
                        stream.close()
                except OSError:
                    pass
        if self.cgroup_path:
            cgroups.remove(self.cgroup_path)
            self.cgroup_path = None


def default_python() -> str:
    """The real interpreter binary (a venv's ``bin/python`` may live in a hidden directory); if
    this user may not execute it (an interpreter under another user's home, found through a
    world-readable venv), the same ``pythonX.Y`` from ``PATH``."""
    real = os.path.realpath(sys.executable)
    if os.access(real, os.X_OK):
        return real
    same = shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}", path=SANDBOX_ENV["PATH"])
    return os.path.realpath(same) if same else real


def site_package_dirs() -> list[str]:
    return [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


#: The host's top-level entries a program's root holds, read-only (a directory bound, a symlink
#: copied: /bin -> usr/bin): the system it needs to run (libraries, /etc's configuration, /sys).
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "sys")
#: Top-level directories a sandboxed program sees (/dev minimal, /proc its own, /tmp private).
#: Every other one (/home, /root, /work, /scratch, /opt, /var, /run with the sockets of the
#: trainer's user, ...) is hidden; the interpreter and its site-packages are bound back.
VISIBLE_TOP_LEVEL = frozenset(SYSTEM_DIRS) | {"dev", "proc", "tmp"}


def default_hidden_paths() -> list[str]:
    """Directories hidden from sandboxed programs: every top-level directory not in
    ``VISIBLE_TOP_LEVEL`` (checkouts, data, homes, caches, sockets), plus the checkout, home,
    cwd and caches of the trainer wherever they are."""
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    home = os.path.expanduser("~")
    candidates = [repo_root, home, os.getcwd(), os.environ.get("HF_HOME", ""), os.environ.get("XDG_CACHE_HOME", ""),
                  os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))]
    try:
        with os.scandir("/") as it:
            candidates += [e.path for e in it if e.name not in VISIBLE_TOP_LEVEL and e.is_dir(follow_symlinks=False)]
    except OSError:
        candidates += ["/work", "/home", "/mnt", "/media", "/srv", "/root", "/run", "/var", "/opt"]
    out: list[str] = []
    for path in candidates:
        if not path:
            continue
        path = os.path.realpath(path)
        if path == "/" or not os.path.isdir(path) or path.startswith(("/usr", "/proc", "/sys", "/dev", "/etc",
                                                                      "/lib", "/bin", "/sbin", "/tmp")):
            continue
        if any(path == p or path.startswith(p + "/") for p in out):
            continue
        out = [p for p in out if not p.startswith(path + "/")] + [path]
    return sorted(out)


def default_kept_paths() -> list[str]:
    """Inside hidden directories, keep the interpreter's prefix and site-packages visible."""
    keep = {os.path.realpath(sys.base_prefix)}
    keep.update(os.path.realpath(p) for p in site_package_dirs())
    return sorted(p for p in keep if os.path.isdir(p))

