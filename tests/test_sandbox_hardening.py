"""The sandbox weaknesses found by the attack catalogue, each closed as a class: one test per
class, asserting the host-side postcondition or the verdict. They run in the mode of the test
process (root here); ``test_sandbox_rootless.py`` runs this file again as an unprivileged uid.
The judge's classes (answers that run code, judging told from validation, forged encodings) are
in ``test_tasks_sandbox.py``."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import textwrap

import pytest

import gasp_jax
from gasp_jax.sandbox import Limits, Sandbox, Status
from gasp_jax.sandbox import pool
from gasp_jax.sandbox.pool import default_kept_paths
from tests.test_sandbox_support import CAN_ISOLATE, HostSnapshot, assert_host_clean

pytestmark = pytest.mark.skipif(not CAN_ISOLATE, reason="no namespaces on this host: nothing to harden")

FAST = Limits(cpu_s=1.0, wall_s=3.0, memory_bytes=1 << 30)
_libc = ctypes.CDLL(None, use_errno=True)
SYS_ADD_KEY, SYS_KEYCTL = {"x86_64": (248, 250), "aarch64": (217, 219)}.get(os.uname().machine, (None, None))


@pytest.fixture(scope="module")
def sb():
    with Sandbox(workers=1, limits=FAST) as box:  # one worker: every job shares its namespaces
        yield box


def call(sb, body: str, inputs=("",), **kw):
    code = "def f():\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return sb.run_function(code, list(inputs), **kw)


@pytest.mark.skipif(SYS_KEYCTL is None, reason="keyctl syscall numbers unknown for this machine")
def test_trainer_keyrings_are_out_of_reach():
    """A key in the trainer's session keyring cannot be read, found or listed by a program."""
    if _libc.syscall(SYS_KEYCTL, 1, None) < 0:  # KEYCTL_JOIN_SESSION_KEYRING: a keyring of this test's own
        pytest.skip(f"keyctl: {os.strerror(ctypes.get_errno())}")
    secret = b"gasp-keyring-secret-42"
    key = _libc.syscall(SYS_ADD_KEY, b"user", b"gasp-test-key", secret, len(secret), -3)  # -3: @s
    if key < 0:
        pytest.skip(f"add_key: {os.strerror(ctypes.get_errno())}")
    with Sandbox(workers=1, limits=FAST) as box:
        out = call(box, f"""
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            buf = ctypes.create_string_buffer(4096)
            seen = []
            for target in ({key}, -3, -4, -5):  # the key, @s, @u, @us
                n = libc.syscall({SYS_KEYCTL}, 11, target, buf, 4096)  # KEYCTL_READ
                seen.append(buf.raw[:max(n, 0)])
            found = libc.syscall({SYS_KEYCTL}, 10, -3, b"user", b"gasp-test-key", 0)  # KEYCTL_SEARCH
            return repr((seen, found))""")
    assert out[0].status is Status.PASS, out[0].error
    assert "gasp-keyring-secret" not in out[0].output and str(key.to_bytes(4, "little")) not in out[0].output
    assert out[0].output.endswith(", -1)\"") or out[0].output.endswith(", -1)'"), out[0].output


def test_sysv_ipc_does_not_outlive_its_test_and_its_limits_are_read_only(sb):
    """A SysV segment left by one test is gone for the next test (of the same job and of later
    jobs), and the IPC limits of the worker's namespace cannot be rewritten."""
    make = """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmat.restype = ctypes.c_void_p
        made = libc.shmget(0x6A5B, 64 << 20, 0o1666)  # IPC_CREAT | 0666
        if made >= 0:
            ctypes.memmove(libc.shmat(made, None, 0), b"left-behind", 11)
        found = libc.shmget(0x6A5B, 0, 0)
        try:
            with open('/proc/sys/kernel/shmmax', 'w') as fh:
                fh.write('4096')
            wrote = True
        except OSError:
            wrote = False
        return (made >= 0, found >= 0, wrote)"""
    first, second = call(sb, make, inputs=("", ""))  # two tests of one job
    later = call(sb, make)[0]  # a later job
    assert first.status is Status.PASS and first.output == "(True, True, False)", first
    assert second.output == "(True, True, False)" and later.output == "(True, True, False)", (second, later)
    probe = call(sb, "import ctypes\nreturn ctypes.CDLL(None).shmget(0x6A5B, 0, 0)")[0]
    assert probe.output == "-1", probe


def test_no_user_namespace_and_no_siblings_of_the_kept_paths(sb):
    """No program can create a user namespace (root mode too: it could bind-mount / in one), and
    of the directories above the interpreter prefix and site-packages a program sees only the
    path down to them (no cache names, no other home entries)."""
    kept = default_kept_paths()
    out = call(sb, f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        listed = {{}}
        for path in {kept!r}:
            parts = path.strip('/').split('/')
            for k in range(1, len(parts)):
                parent = '/' + '/'.join(parts[:k])
                if parent not in ('/usr', '/usr/lib', '/usr/local', '/usr/local/lib'):
                    listed[parent] = sorted(os.listdir(parent))
        return (libc.unshare(0x10000000), libc.unshare(0x10000000 | 0x20000), listed)""")[0]
    assert out.status is Status.PASS, out.error
    created, with_mounts, listed = eval(out.output)  # test side only: a literal the program returned
    assert created == -1 and with_mounts == -1, out.output
    allowed: dict[str, set] = {}
    for path in kept:
        parts = path.strip("/").split("/")
        for k in range(1, len(parts)):
            allowed.setdefault("/" + "/".join(parts[:k]), set()).add(parts[k])
    if "/tmp" in allowed:  # a checkout below /tmp: the program's own /tmp holds its work dir (HOME, TMPDIR) too
        allowed["/tmp"].add("run")
    for parent, names in listed.items():
        assert set(names) <= allowed[parent], (parent, names)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGUSR1", "SIGHUP"])
def test_signals_to_pid_1_void_nothing(sb, sig):
    """A test that signals its PID 1 (the forker) gets its own verdict; its job-mates are judged
    normally and the worker is not restarted, on the direct path (1 test) and the job runner
    (3 tests)."""
    code = (f"import os, signal\ndef f(x):\n    if x == 0:\n        try:\n            os.kill(1, signal.{sig})\n"
            "        except PermissionError:\n            pass  # root mode: PID 1 is another uid\n    return x")
    restarts, infra = sb.stats["restarts"], sb.stats["infra_errors"]
    for inputs in (["0"], ["1", "0", "2"]):
        res = sb.run_function(code, inputs)
        assert [r.status for r in res] == [Status.PASS] * len(inputs), res
        assert [r.output for r in res] == inputs
    assert (sb.stats["restarts"], sb.stats["infra_errors"]) == (restarts, infra)
    blocked = sb.run_function("def f():\n    return open('/proc/self/status').read().split('SigBlk:')[1].split()[0]", [""])
    assert blocked[0].output == "'0000000000000000'"  # a program gets no signal blocked


def test_a_forker_death_under_a_program_is_that_tests_failure_only(sb):
    """Should a program still take its fork server down, that test is RE; the job's other tests
    run on a new one and the worker is not replaced (the direct path and the job runner)."""
    code = "import time\ndef f(x):\n    if x == 0:\n        time.sleep(1.0)\n    return x"
    restarts, infra = sb.stats["restarts"], sb.stats["infra_errors"]
    for inputs in (["0", "1"], ["0", "1", "2"]):  # the hook takes the first test that runs
        sb._kill_forker_in_next_test_for_test()
        res = sb.run_function(code, inputs)
        want = [Status.RE if x == "0" else Status.PASS for x in inputs]
        assert [r.status for r in res] == want, res
        assert "fork server died" in res[inputs.index("0")].error
        assert [r.output for r in res if r.status is Status.PASS] == [x for x in inputs if x != "0"]
    assert (sb.stats["restarts"], sb.stats["infra_errors"]) == (restarts, infra)


def test_cpu_of_unreaped_children_counts(sb):
    """CPU burnt by children that the program never waits for is counted against its limit."""
    code = textwrap.dedent("""
        import os, time
        kids = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                while True:
                    pass
            kids.append(pid)
        def burnt():  # the children's CPU so far, as /proc shows it (they are never reaped)
            total = 0
            for pid in kids:
                try:
                    with open(f"/proc/{pid}/stat") as fh:
                        fields = fh.read().rsplit(")", 1)[1].split()
                    total += int(fields[11]) + int(fields[12])
                except OSError:
                    pass
            return total / os.sysconf("SC_CLK_TCK")
        while burnt() < 1.2:
            time.sleep(0.05)
        print(3)
    """)
    v = sb.grade(code, [("1 2\n", "3\n")], limits=Limits(cpu_s=0.5, wall_s=60.0, memory_bytes=1 << 30))
    assert v.status is Status.TLE, (v.status, v.tests[0].cpu_s, v.message)
    assert v.tests[0].cpu_s > 1.0


def test_command_line_and_top_level_files_tell_nothing(sb):
    """Neither the program's nor its PID 1's command line holds the worker's configuration or a
    host path other than the interpreter's; top-level files of / are not there."""
    files = [e.path for e in os.scandir("/") if e.is_file(follow_symlinks=False)]
    out = call(sb, f"""
        import os
        def read(path):
            try:
                with open(path, 'rb') as fh:
                    return fh.read()
            except OSError:
                return b''
        return repr((read('/proc/1/cmdline'), read('/proc/self/cmdline'), [p for p in {files!r} if os.path.lexists(p)]))""")[0]
    assert out.status is Status.PASS, out.error
    pid1, own, present = eval(eval(out.output))
    for cmdline in (pid1, own):
        text = cmdline.decode()
        assert "gasp_jax" not in text and '"hide"' not in text and "/work" not in text, text[:300]
    assert present == [], present


def _expected_root() -> set[str]:
    """What a program's / holds: the system entries the host has, /dev, /proc, /tmp and the first
    step down to each kept directory."""
    names = {n for n in pool.SYSTEM_DIRS if os.path.lexists("/" + n)} | {"dev", "proc", "tmp"}
    return names | {p.strip("/").split("/")[0] for p in default_kept_paths()}


def test_root_lists_only_what_programs_need(sb):
    """A program's / is a root of its own: the system directories, /dev, /proc, /tmp and the
    first step down to the interpreter prefix and site-packages; no other name of the host's /."""
    assert sb.isolation.fresh_root, sb.isolation.details
    out = call(sb, "import os\nreturn sorted(os.listdir('/'))")[0]
    assert out.status is Status.PASS, out.error
    assert set(eval(out.output)) == _expected_root(), (out.output, sorted(_expected_root()))
    assert set(os.listdir("/")) - _expected_root(), "the host's / must hold more for this test to mean anything"


def _lists_something(path: str) -> bool:
    try:
        return bool(os.listdir(path))
    except OSError:  # rootless: not ours to read anyway
        return False


def test_without_a_fresh_root_the_host_tree_is_emptied_in_place(monkeypatch):
    """Where the kernel refuses a new root, the old one is hidden in place: the other top-level
    directories are empty, its regular files read empty (their names stay), the level is full
    and the report says ``fresh_root=False``."""
    real = pool.boot_blob
    monkeypatch.setattr(pool, "boot_blob", lambda config: real(dict(config, fresh_root=False)))
    hidden = [e.path for e in os.scandir("/") if e.is_dir(follow_symlinks=False)
              and e.name not in _expected_root() and _lists_something(e.path)]
    files = [e.path for e in os.scandir("/") if e.is_file(follow_symlinks=False) and os.path.getsize(e.path)]
    with Sandbox(workers=1, limits=FAST) as box:
        assert box.isolation.level == "full" and not box.isolation.fresh_root, box.isolation
        out = call(box, f"""
            import os
            def read(path):
                with open(path, 'rb') as fh:
                    return fh.read()
            return ([os.listdir(p) for p in {hidden!r}], [read(p) for p in {files!r}])""")[0]
    assert out.status is Status.PASS, out.error
    listed, contents = eval(out.output)
    assert all(names == [] for names in listed), list(zip(hidden, listed))
    assert all(c == b"" for c in contents), [c[:40] for c in contents]


def test_worker_code_names_no_host_path(sb):
    """Every code object, frame and module of the worker a program can reach carries a neutral
    file name, never a path of the checkout."""
    out = call(sb, """
        import gc, sys
        names = set()
        frame = sys._getframe()
        while frame is not None:
            names.add(frame.f_code.co_filename)
            frame = frame.f_back
        for obj in gc.get_objects():
            code = getattr(obj, '__code__', None) or (obj if type(obj).__name__ == 'code' else None)
            if code is not None and hasattr(code, 'co_filename'):
                names.add(code.co_filename)
        for name, module in list(sys.modules.items()):
            spec = getattr(module, '__spec__', None)
            names.update(str(x) for x in (getattr(module, '__file__', None), getattr(spec, 'origin', None)))
            names.update(str(x) for x in getattr(module, '__path__', None) or ())
        return sorted(names)""")[0]
    assert out.status is Status.PASS, out.error
    names = eval(out.output)
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(gasp_jax.__file__)))
    host = [n for n in names if (checkout in n or "gasp_jax" in n)
            and not any(n.startswith(kept + "/") for kept in default_kept_paths())]  # site-packages may be in it
    assert not host, host
    assert {"<sandbox-worker>/runner.py", "<sandbox-worker>/child.py"} <= set(names), names


def test_self_test_addresses_only_loopback(monkeypatch):
    """The start-up self-test judges network isolation without dialling anything outside this
    host: it connects only to a loopback listener of its own."""
    dialled = []
    real = Sandbox.run_function

    def spy(self, code, inputs, **kw):
        dialled.append(code)
        return real(self, code, inputs, **kw)

    monkeypatch.setattr(Sandbox, "run_function", spy)
    with Sandbox(workers=1, limits=FAST) as box:
        assert box.isolation.network_namespace
    probe = dialled[0]
    addresses = {a for a in __import__("re").findall(r"\('([0-9.]+)', ", probe)}
    assert addresses == {"127.0.0.1"}, addresses


def test_program_memory_is_bounded_per_process(sb):
    """Without a memory cgroup (rootless here), RLIMIT_AS and RLIMIT_DATA bound every process and
    RLIMIT_NPROC their number: a program's total is at most processes x memory_bytes."""
    import resource

    out = call(sb, "import resource\nreturn (resource.getrlimit(resource.RLIMIT_AS), "
                   "resource.getrlimit(resource.RLIMIT_DATA), resource.getrlimit(resource.RLIMIT_NPROC))")[0]
    (as_, data, nproc) = eval(out.output)
    assert as_ == data == (FAST.memory_bytes, FAST.memory_bytes), out.output
    assert nproc[0] == FAST.processes and nproc[0] != resource.RLIM_INFINITY, out.output


def test_host_clean_after_hardening_programs(sb):
    before = HostSnapshot.take()
    call(sb, "import os, signal\nos.kill(1, signal.SIGINT)\nreturn 1")
    assert_host_clean(sb, before)
    assert socket.gethostname()  # the host's network stack is untouched by the tests above
    assert signal.getsignal(signal.SIGINT) is not None
