"""``Sandbox``: the public entry point. Grades untrusted programs in a pool of isolated workers.

The caller's process (the trainer) only ever holds plain data: it sends program text and test
inputs to workers, receives stdout bytes / strict JSON / repr strings back, and compares them
with the expected outputs, which never leave this process.
"""

from __future__ import annotations

import ast
import logging
import os
import queue
import signal as _signal
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from gasp_jax.sandbox import cgroups, policy
from gasp_jax.sandbox.compare import COMPARE_MODES, compare_json, compare_stdout, loads_json
from gasp_jax.sandbox.limits import DEFAULT_LIMITS, Limits
from gasp_jax.sandbox.pool import (WorkerConfig, WorkerDied, WorkerProcess, default_hidden_paths,
                                   default_kept_paths, default_python, site_package_dirs)
from gasp_jax.sandbox.verdict import DeterminismReport, Result, Status, TestCase, TestResult, Verdict

log = logging.getLogger("gasp_jax.sandbox")

PREVIEW_CHARS = 2048
_SETUP_FAILED = "sandbox child setup failed"


def _sentinel_files(paths: Sequence[str], per_path: int = 2) -> list[str]:
    """A few real files inside each hidden directory (at most two levels down): the self-test
    checks that a sandboxed program cannot see them."""
    out: list[str] = []
    for root in paths:
        found: list[str] = []
        try:
            with os.scandir(root) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)[:50]
            for e in entries:
                if e.is_file(follow_symlinks=False):
                    found.append(e.path)
            for e in entries:
                if len(found) >= per_path:
                    break
                if e.is_dir(follow_symlinks=False):
                    with os.scandir(e.path) as sub:
                        found += [f.path for f in sorted(sub, key=lambda f: f.name)[:50]
                                  if not f.name.startswith(".") and f.is_file(follow_symlinks=False)
                                  ][: per_path - len(found)]
        except OSError:
            continue
        out += found[:per_path]
    return out


#: Installed modules that are slow to import (numpy: ~100 ms) and that model-written programs use:
#: a program whose text mentions one runs in forks of a worker process that imported it already.
DEFAULT_WARM_MODULES = ("numpy",)


class SandboxUnavailable(RuntimeError):
    """Isolation below the required level (``min_isolation`` / ``allow_unsafe``), or the workers
    cannot start. The message names the missing properties, why and what to do."""


#: Isolation levels, weakest first. ``full``: network, PID and mount namespaces and an
#: unprivileged identity; ``partial``: some of them; ``none``: rlimits and a process group only.
LEVELS = ("none", "partial", "full")

PROPERTY_NAMES = {
    "network_namespace": "network namespace (no network)",
    "pid_namespace": "PID namespace (nothing survives a test; no other process visible)",
    "mount_namespace": "mount namespace (hidden paths, private /tmp, read-only system)",
    "non_root_uid": "unprivileged identity (not root, no capabilities: cannot undo the mounts)",
}

REFUSAL_OPTIONS = (
    "Options: (1) allow unprivileged user namespaces on this host (sysctl user.max_user_namespaces=15000, "
    "kernel.unprivileged_userns_clone=1 on Debian/Ubuntu kernels, kernel.apparmor_restrict_unprivileged_userns=0 "
    "or an AppArmor profile allowing userns for this interpreter on Ubuntu >= 23.10; in a container: a "
    "seccomp profile that allows unshare/clone with CLONE_NEWUSER); (2) run the trainer as root in a "
    "container (CAP_SYS_ADMIN, e.g. `docker run --cap-add SYS_ADMIN --security-opt seccomp=unconfined`); "
    "(3) accept weaker isolation explicitly: Sandbox(min_isolation='partial') or, for tests on trusted "
    "code only, Sandbox(allow_unsafe=True). See docs/sandbox.md, 'Running without root'.")


@dataclass(frozen=True)
class IsolationReport:
    """What the startup self-test found. ``level``: ``full`` (network + PID + mount namespaces and
    an unprivileged identity), ``partial`` (some of them) or ``none`` (rlimits and a process group
    only). ``mode``: ``root`` (namespaces created with CAP_SYS_ADMIN; programs run as a per-worker
    uid), ``rootless`` (from a user namespace; programs run as an unprivileged uid of a nested
    one) or ``none``. ``memory_cgroup``: the whole worker is capped by a memory cgroup (else only
    RLIMIT_AS per process and RLIMIT_NPROC bound a test's memory). ``fresh_root``: programs see
    a root of their own (only the system directories, /dev, /proc, /tmp and the path down to the
    interpreter prefix and site-packages); False where the kernel refused one (``pivot_root``):
    then the other top-level entries of the host's root are empty but their names visible."""

    level: str
    network_namespace: bool
    pid_namespace: bool
    mount_namespace: bool
    non_root_uid: bool
    memory_cgroup: bool
    hidden_paths: tuple[str, ...]
    details: str = ""
    mode: str = "none"
    read_only_system: bool = False
    fresh_root: bool = False

    @property
    def missing(self) -> tuple[str, ...]:
        """The properties of level ``full`` that are missing (names of this class's fields)."""
        return tuple(k for k in PROPERTY_NAMES if not getattr(self, k))


def _level(props: Mapping[str, bool]) -> str:
    on = [bool(props[k]) for k in PROPERTY_NAMES]
    return "full" if all(on) else ("partial" if any(on) else "none")


def _facts_properties(facts: Mapping[str, Any]) -> dict[str, bool]:
    """What a worker set up, before any program runs (the self-test's probe then confirms it)."""
    return {"network_namespace": bool(facts.get("netns")), "pid_namespace": bool(facts.get("pidns")),
            "mount_namespace": bool(facts.get("mountns")),
            "non_root_uid": facts.get("identity") is not None}


def _refusal(level: str, required: str, missing: Sequence[str], facts: Mapping[str, Any], probed: bool,
             isolate: bool = True) -> str:
    """The error for isolation below ``required``: what is missing, the host setting behind it,
    and the options."""
    why = []
    if facts.get("userns_error"):
        why.append(f"not root (no CAP_SYS_ADMIN) and no user namespace can be created: {facts['userns_error']}")
    elif not facts.get("privileged") and not facts.get("userns"):
        why.append("namespaces were not requested (isolate=False)" if not isolate else "no namespace could be created")
    why += [e for e in facts.get("errors", []) if not e.startswith("user namespace:")]
    return (f"sandbox isolation level {level} is below the required {required!r}: missing "
            + "; ".join(PROPERTY_NAMES[m] for m in missing) + ". Why: " + ("; ".join(why) or "unknown") + ". "
            + REFUSAL_OPTIONS + (" The self-test program ran." if probed else " No program was run."))


@dataclass(frozen=True)
class GradeJob:
    """One item for ``grade_many``; a ``(code, tests)`` / ``(code, tests, fn_name)`` tuple or a
    mapping with these keys is accepted as well."""

    code: Any
    tests: Sequence[Any]
    fn_name: str | None = None
    compare: str | None = None
    limits: Limits | None = None
    stop_on_failure: bool | None = None


@dataclass
class _Task:
    """A job ready for a worker: wire header + blobs + the parent-side judge."""

    header: dict[str, Any]
    blobs: list[bytes]
    limits: Limits
    kind: str  # "grade" | "run" | "reference"
    future: Future
    expected: list[Any] | None = None
    compare: str = "lcb"
    stop_on_failure: bool = True
    n: int = 0


class _DataError(ValueError):
    pass


def _coerce_test(t: Any) -> TestCase:
    if isinstance(t, TestCase):
        inp, out = t.input, t.output
    elif isinstance(t, Mapping):
        if "input" not in t or "output" not in t:
            raise _DataError("test mapping needs 'input' and 'output'")
        inp, out = t["input"], t["output"]
    elif isinstance(t, (tuple, list)) and len(t) == 2:
        inp, out = t
    else:
        raise _DataError(f"cannot use {type(t).__name__} as a test case")
    if inp is None or out is None:
        raise _DataError("test input/output is None")
    if isinstance(inp, bytes) or isinstance(out, bytes):
        try:
            inp = inp.decode("utf-8") if isinstance(inp, bytes) else inp
            out = out.decode("utf-8") if isinstance(out, bytes) else out
        except UnicodeDecodeError:
            raise _DataError("test data is not valid UTF-8") from None
    if not isinstance(inp, str) or not isinstance(out, str):
        raise _DataError("test input and output must be strings")
    return TestCase(inp, out)


class Sandbox:
    """Pool of isolated workers executing untrusted Python. Use as a context manager.

    Example::

        with Sandbox(workers=2, limits=Limits(cpu_s=2)) as sb:
            v = sb.grade("print(int(input())*2)", [TestCase("2\\n", "4\\n")])
            assert v.passed and v.reward == 1.0

    ``grade`` / ``grade_many`` / ``submit`` never raise for any program text: bad programs get a
    verdict, bad test data gets ``INFRA_ERROR`` with ``data_error=True`` and ``reward=None``.
    """

    def __init__(self, workers: int | None = None, limits: Limits | None = None, *,
                 allow_unsafe: bool = False, compare: str = "lcb", lcb_header: bool = True,
                 lcb_exit_parity: bool = False, site_packages: bool = True,
                 hide_paths: Sequence[str] | None = None, recycle_after: int = 5000,
                 max_program_bytes: int = policy.MAX_PROGRAM_BYTES, python: str | None = None,
                 isolate: bool = True, debug: bool = False,
                 warm_modules: Sequence[str] = DEFAULT_WARM_MODULES, min_isolation: str | None = None) -> None:
        if compare not in COMPARE_MODES:
            raise ValueError(f"compare must be one of {COMPARE_MODES}")
        if min_isolation is not None and min_isolation not in LEVELS:
            raise ValueError(f"min_isolation must be one of {LEVELS}, got {min_isolation!r}")
        # The weakest level the caller accepts: full unless lowered explicitly.
        self.min_isolation = "none" if allow_unsafe else (min_isolation or "full")
        self.limits = limits or DEFAULT_LIMITS
        self.workers = max(1, int(workers if workers is not None else (os.cpu_count() or 1)))
        self.compare = compare
        self.lcb_header = lcb_header
        self.lcb_exit_parity = lcb_exit_parity
        self.recycle_after = recycle_after
        self.max_program_bytes = max_program_bytes
        hidden = list(hide_paths) if hide_paths is not None else default_hidden_paths()
        self._config = WorkerConfig(
            python=python or default_python(), stack_bytes=self.limits.stack_bytes,
            tmpfs_bytes=self.limits.tmpfs_bytes, cgroup_bytes=self.limits.cgroup_bytes, hide=hidden,
            keep=default_kept_paths(), site_paths=site_package_dirs() if site_packages else (),
            warm_modules=tuple(warm_modules) if site_packages else (), isolate=isolate, debug=debug)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._procs: list[WorkerProcess] = []
        self._closed = False
        self._lock = threading.Lock()
        self.stats = {"jobs": 0, "tests": 0, "infra_errors": 0, "restarts": 0}
        self._stats_lock = threading.Lock()
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle
    def _start(self) -> None:
        cgroups.remove_stale()  # left by sandboxes whose process was SIGKILLed
        procs = [WorkerProcess(slot=i, config=self._config) for i in range(self.workers)]
        errors: list[BaseException] = []

        def boot(w: WorkerProcess) -> None:
            try:
                w.start()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        starters = [threading.Thread(target=boot, args=(w,)) for w in procs]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        self._procs = procs
        if errors:
            raise SandboxUnavailable(f"sandbox workers failed to start: {errors[0]}")
        for w in procs:  # refuse before any program runs when a worker could not set up enough
            self._check_worker_level(w, probed=False)
        for w in procs:
            t = threading.Thread(target=self._serve, args=(w,), name=f"gasp-sandbox-{w.slot}", daemon=True)
            t.start()
            self._threads.append(t)
        self.isolation = iso = self._self_test()
        msg = (f"sandbox isolation level={iso.level} mode={iso.mode} net_ns={iso.network_namespace} "
               f"pid_ns={iso.pid_namespace} mount_ns={iso.mount_namespace} non_root_uid={iso.non_root_uid} "
               f"read_only_system={iso.read_only_system} fresh_root={iso.fresh_root} memory_cgroup={iso.memory_cgroup} workers={self.workers}")
        if LEVELS.index(iso.level) < LEVELS.index(self.min_isolation):
            raise SandboxUnavailable(_refusal(iso.level, self.min_isolation, iso.missing, self._procs[0].facts,
                                              probed=True, isolate=self._config.isolate))
        if iso.level == "none":
            log.warning(msg + f" (UNSAFE, accepted by the caller: min_isolation={self.min_isolation!r})")
        elif iso.level == "partial":
            log.warning(msg + f" (accepted by the caller: min_isolation={self.min_isolation!r}) " + iso.details)
        else:
            log.info(msg)

    def _check_worker_level(self, w: WorkerProcess, probed: bool) -> None:
        """Raise ``SandboxUnavailable`` if worker ``w`` set up less than ``min_isolation`` (at
        start-up, and for every replacement worker: the pool never runs weaker than asked)."""
        props = _facts_properties(w.facts)
        level = _level(props)
        if LEVELS.index(level) < LEVELS.index(self.min_isolation):
            missing = [k for k, v in props.items() if not v]
            raise SandboxUnavailable(_refusal(level, self.min_isolation, missing, w.facts, probed,
                                              isolate=self._config.isolate))

    def _self_test(self) -> IsolationReport:
        facts = self._procs[0].facts
        probe = (
            "def probe():\n"
            "    import os, socket\n"
            "    r = {'uid': os.getuid(), 'pid': os.getpid()}\n"
            "    with open('/proc/self/status') as fh:\n"
            "        r['caps'] = [int(l.split()[1], 16) for l in fh if l.startswith(('CapEff', 'CapPrm'))]\n"
            "    r['ro'] = all(os.statvfs(p).f_flag & os.ST_RDONLY for p in ('/', '/usr', '/etc', '/sys'))\n"
            "    r['ifaces'] = sorted(name for _, name in socket.if_nameindex())\n"
            "    try:\n"
            "        socket.create_connection(('127.0.0.1', PORT), timeout=1).close(); r['net'] = True\n"
            "    except OSError:\n"
            "        r['net'] = False\n"
            f"    r['visible'] = [p for p in {_sentinel_files(self._config.hide)!r} if os.path.exists(p)]\n"
            "    return r\n")
        # Network isolation is judged by what the namespace holds (no interface but lo) and by a
        # loopback listener of ours it must not reach: nothing outside this host is ever dialled.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            probe = probe.replace("PORT", str(listener.getsockname()[1]))
            res = self.run_function(probe, [""], fn_name="probe", limits=self.limits.replace(cpu_s=5.0))
        seen: dict[str, Any] = {}
        if res and res[0].ok and res[0].output:
            try:
                seen = ast.literal_eval(res[0].output)
            except (ValueError, SyntaxError):
                seen = {}
        if not seen:
            raise SandboxUnavailable(f"sandbox self-test failed: {res[0].error if res else 'no result'}; "
                                     f"worker setup: {'; '.join(facts.get('errors', [])) or 'no errors'}")
        props = {"network_namespace": bool(facts.get("netns")) and seen.get("net") is False
                 and seen.get("ifaces") in (["lo"], []),
                 "pid_namespace": bool(facts.get("pidns")) and int(seen.get("pid", 0)) < 100,
                 "mount_namespace": bool(facts.get("mountns")) and not seen.get("visible"),
                 # a dedicated identity: not root, no capabilities, and not the trainer's own uid
                 "non_root_uid": facts.get("identity") is not None and int(seen.get("uid", 0)) != 0
                 and not any(seen.get("caps", [1]))}
        errors = list(facts.get("errors", []))
        if facts.get("fresh_root_error"):
            errors.append(f"no fresh root ({facts['fresh_root_error']}): hidden in place")
        mode = "root" if facts.get("identity") == "uid" else ("rootless" if facts.get("identity") == "userns" else "none")
        return IsolationReport(_level(props), *props.values(), bool(facts.get("cgroup")),
                               tuple(facts.get("hidden", [])), "; ".join(errors), mode,
                               bool(seen.get("ro")), bool(facts.get("fresh_root")))

    def _break_isolation_for_test(self, slot: int = 0) -> None:
        """Tests only, with no job in flight: make worker ``slot`` lose its program identity (as
        if its namespace setup broke mid-run). Its next job must be an infrastructure error that
        runs nothing, and the worker must be replaced."""
        w = self._procs[slot]
        w.execute({"t": "break_isolation"}, [], time.monotonic() + 30.0, lambda h, b: True)

    def _kill_forker_in_next_test_for_test(self, slot: int = 0) -> None:
        """Tests only, with no job in flight: worker ``slot`` SIGKILLs the fork server of its next
        test once the program runs, as a program that could take it down would. That test must
        be RE, its job-mates must run normally and the worker must not be replaced."""
        w = self._procs[slot]
        w.execute({"t": "kill_forker_in_next_test"}, [], time.monotonic() + 30.0, lambda h, b: True)

    def close(self) -> None:
        """Stop all workers; pending jobs resolve to INFRA_ERROR."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=60)
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                self._fail(task, "sandbox closed")
        for w in self._procs:
            w.stop()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # ------------------------------------------------------------------ worker threads
    def _serve(self, w: WorkerProcess) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            if task.future.cancelled():
                continue
            try:
                if not w.alive or w.jobs_done >= self.recycle_after:
                    if w.proc is not None:
                        w.stop()
                    w.start()
                    self._count("restarts")
                    try:
                        self._check_worker_level(w, probed=True)
                    except SandboxUnavailable as exc:
                        raise WorkerDied(str(exc)) from None
                self._execute(w, task)
            except WorkerDied as exc:
                log.error("sandbox infrastructure error: %s", exc)
                self._count("infra_errors")
                w.kill()
                self._fail(task, str(exc))
            except BaseException as exc:  # noqa: BLE001 - never lose a future
                log.exception("sandbox internal error")
                self._count("infra_errors")
                w.kill()
                self._fail(task, f"internal error: {exc!r}")

    def _count(self, key: str, n: float = 1) -> None:
        with self._stats_lock:
            self.stats[key] = self.stats.get(key, 0) + n

    def _fail(self, task: _Task, message: str) -> None:
        if task.future.done():
            return
        if task.kind == "grade":
            task.future.set_result(Verdict(Status.INFRA_ERROR, message=message, n_tests=task.n))
        elif task.kind == "reference":
            task.future.set_result([None] * task.n)
        else:
            task.future.set_result([Result(Status.INFRA_ERROR, error=message)] * task.n)

    def _execute(self, w: WorkerProcess, task: _Task) -> None:
        lim = task.limits
        per_test = lim.wall_deadline_s + 2.0
        deadline = time.monotonic() + 10.0 + per_test * task.n + 1e-9 * sum(len(b) for b in task.blobs) * 50
        results: list[Any] = []

        failed = False

        def on_test(h: dict[str, Any], blobs: list[bytes]) -> bool:
            nonlocal failed
            if failed:  # ran before our STOP arrived: ignored (LCB semantics stop at the first failure)
                return False
            r = self._judge(task, h, blobs)
            results.append(r)
            if task.kind == "grade" and task.stop_on_failure and not r.passed:
                failed = True
                return False
            return True

        done = w.execute(task.header, task.blobs, deadline, on_test)
        self._count("jobs")
        self._count("tests", len(results))
        if len(results) < task.n and not done.get("stopped"):
            self._fill_missing(task, results, done)
        if done.get("runner_exit") in (73, 74) or any(
                getattr(r, "status", None) is Status.INFRA_ERROR for r in results):
            # A test child or forker could not set up its isolation (namespaces, identity): the
            # job is an infrastructure error and the worker is replaced; nothing ran unisolated.
            raise WorkerDied(f"sandbox worker {w.slot} lost its isolation setup: "
                             + next((getattr(r, "message", "") or getattr(r, "error", "") for r in results
                                     if getattr(r, "status", None) is Status.INFRA_ERROR),
                                    f"runner exit {done.get('runner_exit')}"))
        for r in results:  # observability: per-status counts and CPU/wall totals of tests
            if isinstance(r, (TestResult, Result)):  # run_reference yields plain strings
                self._count(f"status_{r.status.value}")
                self._count("test_cpu_s", r.cpu_s)
                self._count("test_wall_s", r.wall_s)
        if task.kind == "grade":
            task.future.set_result(self._aggregate(task, results))
        else:
            task.future.set_result(results)

    def _fill_missing(self, task: _Task, results: list[Any], done: dict[str, Any]) -> None:
        """Tests the runner never reported: CE for all after a compile error; TLE when the job's
        wall budget ran out; RE when the program killed its own runner; INFRA_ERROR when the
        runner failed before any program code could have run."""
        first = results[0] if results else None
        if first is not None and first.status is Status.CE:
            status, message = Status.CE, first.error if task.kind == "run" else first.message
        elif done.get("killed") == "budget":
            status, message = Status.TLE, "job wall-clock budget exhausted"
        elif done.get("runner_exit") in (73, 74) or done.get("killed") == "protocol":
            status, message = Status.INFRA_ERROR, f"sandbox runner failed (exit {done.get('runner_exit')})"
            log.error("sandbox runner failed: %s", done)
        else:
            status, message = Status.RE, "the program killed its sandbox runner"
        for i in range(len(results), task.n):
            if task.kind == "grade":
                results.append(TestResult(index=i, status=status, message=message))
                if task.stop_on_failure:
                    break
            elif task.kind == "run":
                results.append(Result(status, error=message))
            else:
                results.append(None)

    # ------------------------------------------------------------------ judging (parent side)
    def _judge(self, task: _Task, h: dict[str, Any], blobs: list[bytes]) -> Any:
        """Turn raw facts about one test into a TestResult (grade) or Result (run)."""
        out, rec_raw, err = blobs[0], blobs[1], b"".join(blobs[2:])
        i = int(h["i"])
        lim = task.limits
        cpu, wall = float(h.get("cpu", 0.0)), float(h.get("wall", 0.0))
        sig, code = h.get("sig"), h.get("exit")
        stderr_tail = err.decode("utf-8", "replace")
        record: dict[str, Any] = {}
        if rec_raw and not h.get("res_over"):
            try:
                parsed = loads_json(rec_raw.decode("utf-8"))
                record = parsed if isinstance(parsed, dict) else {}
            except (ValueError, UnicodeDecodeError, RecursionError):
                record = {}
        status, message = None, ""
        if not h.get("setup_ok", True):
            status, message = Status.INFRA_ERROR, f"{_SETUP_FAILED}: {record.get('msg', '')}"
        elif record.get("k") == "ce":
            status, message = Status.CE, str(record.get("msg", ""))
        elif h.get("kill") == "forker":
            status, message = Status.RE, "its fork server died while the program ran"
        elif h.get("kill") == "ole" or h.get("out_over") or h.get("res_over"):
            status, message = Status.OLE, f"output exceeded {lim.stdout_bytes} bytes"
        elif h.get("kill") == "wall":
            status, message = Status.TLE, f"wall-clock limit {lim.wall_deadline_s:g}s"
        elif cpu > lim.cpu_s or sig == _signal.SIGXCPU or (sig == _signal.SIGKILL and cpu >= int(lim.cpu_s + 0.999) - 0.05):
            status, message = Status.TLE, f"CPU limit {lim.cpu_s:g}s (used {cpu:.2f}s)"
        elif record.get("k") == "mle" or (sig == _signal.SIGKILL and h.get("oom")) or (
                sig == _signal.SIGABRT and "MemoryError" in stderr_tail):
            status, message = Status.MLE, "out of memory" if sig is None else "killed by the OOM killer"
        elif sig is not None:
            status, message = Status.RE, f"killed by signal {_signal.Signals(sig).name if sig in _signal.Signals._value2member_map_ else sig}"
        elif record.get("k") == "exc":
            status, message = Status.RE, f"{record.get('etype', 'Exception')}: {record.get('msg', '')}"
        elif record.get("k") == "bad":
            status, message = Status.RE, f"unserializable return value: {record.get('msg', '')}"
        elif code not in (0, None) and not (self.lcb_exit_parity and task.header["mode"] == "stdin"
                                           and record.get("k") == "exit"):
            status, message = Status.RE, f"exit code {code}"
        mode = task.header["mode"]
        if task.kind == "run":
            if status is None:
                if record.get("k") == "ok" and "v" in record:
                    return Result(Status.PASS, output=str(record["v"]), cpu_s=cpu, wall_s=wall)
                status, message = Status.RE, "function did not return (exit before return)"
            return Result(status, error=message, cpu_s=cpu, wall_s=wall)
        output_text = ""
        if mode == "stdin":
            output_text = out[:PREVIEW_CHARS * 4].decode("utf-8", "replace")[:PREVIEW_CHARS]
        elif "v" in record:
            output_text = str(record["v"])[:PREVIEW_CHARS]
        if task.kind == "reference":
            full = None
            if status is None:
                if mode == "stdin":
                    full = out.decode("utf-8", "replace")
                elif record.get("k") == "ok":
                    full = str(record.get("v"))
            return full
        if status is None:
            if mode == "stdin":
                ok, message = compare_stdout(out, task.expected[i], task.compare)
            elif record.get("k") == "ok" and "v" in record:
                ok, message = compare_json(str(record["v"]), task.expected[i])
            else:
                ok, message = False, "function did not return (exit before return)"
                status = Status.RE
            if status is None:
                status = Status.PASS if ok else Status.WA
        return TestResult(index=i, status=status, cpu_s=cpu, wall_s=wall, exit_code=code, signal=sig,
                          stdout_truncated=bool(h.get("out_over")), stderr_tail=stderr_tail,
                          output=output_text, message=message)

    def _aggregate(self, task: _Task, results: list[TestResult]) -> Verdict:
        if not results:
            return Verdict(Status.INFRA_ERROR, message="no test ran", n_tests=task.n)
        infra = [r for r in results if r.status is Status.INFRA_ERROR]
        if infra:
            return Verdict(Status.INFRA_ERROR, tuple(results), infra[0].message, n_tests=task.n)
        failed = [r for r in results if not r.passed]
        if failed:
            return Verdict(failed[0].status, tuple(results), f"test {failed[0].index}: {failed[0].message}",
                           n_tests=task.n)
        if len(results) < task.n:
            return Verdict(Status.INFRA_ERROR, tuple(results), "not every test ran", n_tests=task.n)
        return Verdict(Status.PASS, tuple(results), n_tests=task.n)

    # ------------------------------------------------------------------ building jobs
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Sandbox is closed")

    def _done(self, value: Any) -> Future:
        f: Future = Future()
        f.set_result(value)
        return f

    def _submit(self, task: _Task) -> Future:
        self._check_open()
        self._queue.put(task)
        return task.future

    def submit(self, code: Any, tests: Sequence[Any], *, fn_name: str | None = None, compare: str | None = None,
               limits: Limits | None = None, stop_on_failure: bool | None = None) -> "Future[Verdict]":
        """Asynchronous ``grade``: returns a ``concurrent.futures.Future`` resolving to a Verdict."""
        self._check_open()
        text, reason = policy.validate_program(code, self.max_program_bytes)
        n = len(tests) if isinstance(tests, Sequence) and not isinstance(tests, (str, bytes)) else 0
        if text is None:
            return self._done(Verdict(Status.CE, message=reason or "invalid program", n_tests=n))
        try:
            if isinstance(tests, (str, bytes)) or not isinstance(tests, Iterable):
                raise _DataError("tests must be a list of TestCase")
            cases = [_coerce_test(t) for t in tests]
            if not cases:
                raise _DataError("zero tests")
            if fn_name is not None and (not isinstance(fn_name, str) or not fn_name.isidentifier()):
                raise _DataError(f"invalid fn_name {fn_name!r}")
            mode = "functional" if fn_name is not None else "stdin"
            expected: list[Any]
            if mode == "functional":
                expected = []
                for c in cases:
                    try:
                        for line in c.input.split("\n"):
                            loads_json(line)
                        expected.append(loads_json(c.output))
                    except (ValueError, RecursionError) as exc:
                        raise _DataError(f"malformed functional test JSON: {exc}") from None
            else:
                expected = [c.output for c in cases]
            cmp = compare or self.compare
            if cmp not in COMPARE_MODES:
                raise _DataError(f"unknown compare mode {cmp!r}")
            lim = limits or self.limits
            blobs = [text.encode("utf-8")] + [c.input.encode("utf-8", "surrogatepass") for c in cases]
        except _DataError as exc:
            return self._done(Verdict(Status.INFRA_ERROR, message=f"data error: {exc}", data_error=True, n_tests=n))
        header = {"mode": mode, "fn": fn_name, "lim": lim.to_wire(), "header": self.lcb_header}
        task = _Task(header, blobs, lim, "grade", Future(), expected, cmp,
                     True if stop_on_failure is None else bool(stop_on_failure), len(cases))
        return self._submit(task)

    def grade(self, code: Any, tests: Sequence[Any], *, fn_name: str | None = None, compare: str | None = None,
              limits: Limits | None = None, stop_on_failure: bool | None = None) -> Verdict:
        """Grade one program. ``fn_name`` given -> functional (LeetCode) mode, else stdin mode."""
        return self.submit(code, tests, fn_name=fn_name, compare=compare, limits=limits,
                           stop_on_failure=stop_on_failure).result()

    @staticmethod
    def _as_job(job: Any) -> GradeJob:
        if isinstance(job, GradeJob):
            return job
        if isinstance(job, Mapping):
            return GradeJob(**{k: job[k] for k in ("code", "tests", "fn_name", "compare", "limits",
                                                   "stop_on_failure") if k in job})
        if isinstance(job, (tuple, list)) and 2 <= len(job) <= 3:
            return GradeJob(*job)
        raise TypeError(f"cannot use {type(job).__name__} as a grade job")

    def grade_many_async(self, jobs: Iterable[Any]) -> "list[Future[Verdict]]":
        """Submit many jobs at once (they run in parallel over the pool); one future per job."""
        futures = []
        for job in jobs:
            try:
                j = self._as_job(job)
            except TypeError as exc:
                futures.append(self._done(Verdict(Status.INFRA_ERROR, message=f"data error: {exc}",
                                                  data_error=True)))
                continue
            futures.append(self.submit(j.code, j.tests, fn_name=j.fn_name, compare=j.compare, limits=j.limits,
                                       stop_on_failure=j.stop_on_failure))
        return futures

    def grade_many(self, jobs: Iterable[Any]) -> list[Verdict]:
        """Grade many programs in parallel; verdicts in job order."""
        return [f.result() for f in self.grade_many_async(jobs)]

    def _run_task(self, code: Any, inputs: Sequence[str], fn_name: str | None, limits: Limits | None,
                  kind: str, header: bool | None = None, direct: bool = False) -> Future | list:
        text, reason = policy.validate_program(code, self.max_program_bytes)
        items = list(inputs)
        if text is None:
            return [Result(Status.CE, error=reason or "invalid program")] * len(items)
        if not items:
            return []
        if any(not isinstance(x, str) for x in items):
            return [Result(Status.INFRA_ERROR, error="data error: inputs must be strings")] * len(items)
        if fn_name is not None and (not isinstance(fn_name, str) or not fn_name.isidentifier()):
            return [Result(Status.INFRA_ERROR, error=f"data error: invalid fn_name {fn_name!r}")] * len(items)
        lim = limits or self.limits
        if kind == "run":
            mode = "azr"
        else:
            mode = "functional" if fn_name is not None else "stdin"
        use_header = (mode != "azr" and self.lcb_header) if header is None else header
        wire = {"mode": mode, "fn": fn_name, "lim": lim.to_wire(), "header": use_header, "direct": bool(direct)}
        blobs = [text.encode("utf-8")] + [x.encode("utf-8", "surrogatepass") for x in items]
        task = _Task(wire, blobs, lim, kind, Future(), None, self.compare, False, len(items))
        return self._submit(task)

    def run_function_async(self, code: Any, inputs: Sequence[str], *, fn_name: str = "f",
                           limits: Limits | None = None, banned_modules: Iterable[str] | bool | None = None,
                           lcb_header: bool = False, direct: bool = False) -> "Future[list[Result]]":
        """Asynchronous ``run_function``. ``direct=True``: every call is forked by the worker's
        persistent zygote whatever the number of inputs (no per-job runner), so the process
        tree a program sees does not depend on how many calls share its job."""
        self._check_open()
        if banned_modules:
            banned = policy.DEFAULT_BANNED_MODULES if banned_modules is True else frozenset(banned_modules)
            text, _ = policy.validate_program(code, self.max_program_bytes)
            if text is not None:
                hits = policy.find_banned_imports(text, banned)
                if hits:
                    return self._done([Result(Status.CE, error=f"banned import: {', '.join(hits)}")] * len(inputs))
        out = self._run_task(code, inputs, fn_name, limits, "run", lcb_header, direct)
        return out if isinstance(out, Future) else self._done(out)

    def run_function(self, code: Any, inputs: Sequence[str], *, fn_name: str = "f", limits: Limits | None = None,
                     banned_modules: Iterable[str] | bool | None = None, lcb_header: bool = False) -> list[Result]:
        """AZR-style: for each input expression ``x`` (e.g. ``"'abc', 3"``) evaluate ``fn_name(x)``
        in its own sandboxed process and return ``repr`` of the value (or the error) per input.
        ``banned_modules=True`` applies the default import policy (a CE without running)."""
        return self.run_function_async(code, inputs, fn_name=fn_name, limits=limits,
                                       banned_modules=banned_modules, lcb_header=lcb_header).result()

    def check_deterministic(self, code: Any, inputs: Sequence[str], *, fn_name: str = "f", runs: int = 2,
                            limits: Limits | None = None,
                            banned_modules: Iterable[str] | bool | None = None) -> DeterminismReport:
        """Run every call ``runs`` times, each time in its own fresh sandboxed process (own cwd,
        everything left by the previous call killed); deterministic iff every run gives the same
        status and output for every input. ``deterministic`` is None on an infrastructure error.
        All runs go in one job (one round trip), which is what makes validation cheap."""
        items, runs = list(inputs), max(2, runs)
        flat = self.run_function(code, items * runs, fn_name=fn_name, limits=limits,
                                 banned_modules=banned_modules)
        n = len(items)
        all_runs = tuple(tuple(flat[k * n:(k + 1) * n]) for k in range(runs))
        if any(r.status is Status.INFRA_ERROR for run in all_runs for r in run):
            return DeterminismReport(None, all_runs, "infrastructure error")
        first = [(r.status, r.output) for r in all_runs[0]]
        for k, run in enumerate(all_runs[1:], 1):
            for i, r in enumerate(run):
                if (r.status, r.output) != first[i]:
                    return DeterminismReport(False, all_runs, f"input {i} differs between run 0 and run {k}")
        return DeterminismReport(True, all_runs)

    def run_reference(self, code: Any, inputs: Sequence[str], *, fn_name: str | None = None,
                      limits: Limits | None = None) -> list[str | None]:
        """Outputs of a trusted-or-not reference program (stdout text, or the JSON of the return
        value when ``fn_name`` is given), for computing expected outputs; None where it failed."""
        out = self._run_task(code, inputs, fn_name, limits, "reference")
        if isinstance(out, Future):
            return list(out.result())
        return [None] * len(out)
