"""Sandbox: adversarial catalogue (research note, "Adversarial test programs"), API and semantics.

Every adversarial case asserts the verdict *and* the host postconditions: no process survives,
no fd or temp-dir leak in this (the "trainer") process, files outside untouched, test alive.
"""

from __future__ import annotations

import logging
import os
import resource
import textwrap

import pytest

from gasp_jax.sandbox import Limits, Sandbox, Status, TestCase
from gasp_jax.sandbox.sandbox import SandboxUnavailable
from tests.test_sandbox_support import (CAN_ISOLATE, ROOTLESS, HostSnapshot, assert_host_clean,
                                        sandbox_uid_processes, sandbox_uids)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADD = [TestCase("1 2\n", "3\n")]
FAST = Limits(cpu_s=1.0, wall_s=2.5, memory_bytes=1 << 30)
UNSAFE_OK = not CAN_ISOLATE


def needs_full(sb) -> None:
    if sb.isolation.level != "full":
        pytest.skip(f"host-dangerous program: needs isolation level full, detected {sb.isolation.level}")


@pytest.fixture(scope="module")
def sb():
    with Sandbox(workers=2, limits=FAST, allow_unsafe=UNSAFE_OK) as box:
        yield box
        uids = sandbox_uids(box)
    # after close: nothing runs as one of its uids any more
    assert not sandbox_uid_processes(uids)


def run(sb, code: str, tests=ADD, **kw):
    before = HostSnapshot.take()
    v = sb.grade(textwrap.dedent(code), tests, **kw)
    assert_host_clean(sb, before)
    return v


# ------------------------------------------------------------------------------ isolation level
def test_isolation_detected_and_logged(caplog):
    caplog.set_level(logging.INFO, logger="gasp_jax.sandbox")
    with Sandbox(workers=1, limits=FAST, allow_unsafe=UNSAFE_OK) as box:
        iso = box.isolation
        assert iso.level in ("full", "partial", "none")
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert f"isolation level={iso.level}" in logged
        if CAN_ISOLATE:
            # As root (CAP_SYS_ADMIN) or, without root, where user namespaces are allowed:
            # everything must be on, and the report says which mode got there.
            assert iso.level == "full" and not iso.missing, iso
            assert iso.network_namespace and iso.pid_namespace and iso.mount_namespace and iso.non_root_uid
            assert iso.read_only_system and iso.mode == ("rootless" if ROOTLESS else "root")
            assert f"mode={iso.mode}" in logged
            assert any(REPO == p or REPO.startswith(p + "/") for p in iso.hidden_paths)
            assert "/run" in iso.hidden_paths or not os.path.isdir("/run")  # sockets of the trainer's user


def test_refuses_without_isolation_unless_allowed():
    with pytest.raises(SandboxUnavailable) as err:
        Sandbox(workers=1, limits=FAST, isolate=False)
    # Refused from what the workers set up, before any program ran; the error says what is
    # missing and the options.
    assert "No program was run" in str(err.value) and "PID namespace" in str(err.value)
    assert "min_isolation" in str(err.value) and "allow_unsafe=True" in str(err.value)
    with pytest.raises(SandboxUnavailable):
        Sandbox(workers=1, limits=FAST, isolate=False, min_isolation="partial")
    with pytest.raises(ValueError):
        Sandbox(workers=1, limits=FAST, min_isolation="some")
    with Sandbox(workers=1, limits=FAST, isolate=False, min_isolation="none") as box:
        assert box.isolation.level == "none" and box.isolation.mode == "none"
    with Sandbox(workers=1, limits=FAST, isolate=False, allow_unsafe=True) as box:
        assert box.isolation.level == "none"
        before = HostSnapshot.take()
        assert box.grade("print(sum(map(int, input().split())))", ADD).passed
        # Without namespaces: both fork servers, leftovers killed by process group, host temp dirs.
        assert box.grade("print(sum(map(int, input().split())))", ADD * 3).passed
        assert box.grade("import os, time\nif os.fork() == 0:\n    time.sleep(30)\nprint(3)", [TestCase("", "3\n")]).passed
        assert box.grade("while True: pass", ADD).status == Status.TLE
        assert box.grade("def f(:", ADD * 3).status == Status.CE
        assert [r.output for r in box.run_function("def f(x):\n    return x * 2", ["1", "'a'"])] == ["2", "'aa'"]
        assert_host_clean(box, before)


# ------------------------------------------------------------------------------ A. resource abuse
@pytest.mark.parametrize("code", [
    "while True: pass",
    """
    import signal
    signal.signal(signal.SIGALRM, signal.SIG_IGN); signal.alarm(0)
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    while True: pass
    """,
    """
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True: pass
    """,
], ids=["spin", "ignore-alarm-xcpu", "ignore-term"])
def test_cpu_spin_is_tle(sb, code):
    v = run(sb, code)
    assert v.status == Status.TLE and v.reward == 0.0


def test_spin_then_rewrite_stdout_is_not_pass(sb):
    v = run(sb, """
        import sys
        try:
            while True: pass
        except BaseException:
            pass
        sys.stdout.seek(0); sys.stdout.truncate(0); print(3)
    """)
    assert v.status == Status.TLE


def test_sleep_is_tle_by_wall_clock(sb):
    v = run(sb, "import time\ntime.sleep(3600)")
    assert v.status == Status.TLE
    assert v.tests[0].cpu_s < 0.5 and v.tests[0].wall_s >= FAST.wall_deadline_s


@pytest.mark.parametrize("code", [
    "x = bytearray(10**11)",
    "l = []\nwhile True: l.append(' ' * 10**6)",
], ids=["huge-alloc", "incremental"])
def test_memory_bomb_is_mle(sb, code):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # A small address space runs out after ~0.1 s of CPU; the time limits are far away (a loaded
    # 2-core box may take many times that in wall-clock time), so the verdict is about memory.
    v = run(sb, code, limits=FAST.replace(memory_bytes=384 << 20, cpu_s=10.0, wall_s=120.0))
    assert v.status in (Status.MLE, Status.RE), v
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200_000  # KiB


@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "import posix\nfor _ in range(10000):\n    try:\n        posix.fork()\n    except OSError:\n        pass\nprint(3)",
    """
    import multiprocessing, time
    ps = []
    for _ in range(200):
        try:
            p = multiprocessing.Process(target=time.sleep, args=(60,)); p.start(); ps.append(p)
        except Exception:
            break
    print(3)
    """,
    "import subprocess\nsubprocess.Popen(['sh', '-c', ':(){ :|:& };:'])\nimport time; time.sleep(1); print(3)",
    "import ctypes\nlibc = ctypes.CDLL(None)\nfor _ in range(1000):\n    libc.fork()\nprint(3)",
    """
    import threading, time
    n = 0
    try:
        while True:
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); n += 1
    except RuntimeError:
        pass
    print(3)
    """,
], ids=["os-fork", "posix-fork", "multiprocessing", "shell-fork-bomb", "ctypes-fork", "thread-bomb"])
def test_fork_and_thread_bombs_are_contained(sb, code):
    needs_full(sb)
    v = run(sb, code)
    # Contained: whatever the verdict, nothing survives (checked in run: no process left under
    # the workers or outside them) and the host is fine.
    assert v.status in (Status.PASS, Status.TLE, Status.RE, Status.WA, Status.MLE)
    assert v.reward is not None


@pytest.mark.parametrize("code,status", [
    ("while True: print('x' * 10**6)", Status.OLE),
    ("import sys\nwhile True: sys.stdout.write('y' * 10**6)", Status.OLE),
    ("import sys\nwhile True: sys.stderr.write('e' * 10**6)", Status.TLE),
], ids=["print-flood", "one-long-line", "stderr-flood"])
def test_output_floods(sb, code, status):
    small = FAST.replace(stdout_bytes=4 << 20)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    v = run(sb, code, limits=small)
    assert v.status == status
    assert len(v.tests[0].stderr_tail) <= small.stderr_tail_bytes
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000


def test_disk_fill_is_contained_and_next_run_sees_empty_cwd(sb):
    needs_full(sb)
    v = run(sb, """
        import os
        for d in ('.', os.environ.get('TMPDIR', '.'), '/dev/shm', '/tmp'):
            try:
                with open(os.path.join(d, 'fill'), 'wb') as fh:
                    while True: fh.write(b'\\0' * (1 << 20))
            except OSError:
                pass
        print(3)
    """)
    assert v.status in (Status.PASS, Status.RE)
    v2 = run(sb, "import os\nprint(len(os.listdir('.')) + len(os.listdir('/dev/shm')) + 3)")
    assert v2.passed, v2


def test_fd_exhaustion(sb):
    needs_full(sb)
    v = run(sb, """
        import socket
        fs = []
        while True:
            fs.append(open('/dev/null'))
            fs.append(socket.socket())
    """)
    assert v.status == Status.RE


def test_daemons_and_zombies_do_not_survive(sb):
    needs_full(sb)
    v = run(sb, """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        for _ in range(5):
            if os.fork() == 0:
                os._exit(0)       # zombies: never waited for
        print(3)
    """)
    assert v.passed


# ------------------------------------------------------------------------------ B. escapes
def test_network_is_unreachable(sb):
    """No route out, and no socket of the host: a loopback TCP port and an abstract unix socket
    the test listens on (both exist per network namespace) are unreachable."""
    import socket

    needs_full(sb)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    unix = socket.socket(socket.AF_UNIX)
    name = f"gasp-sandbox-test-{os.getpid()}"
    unix.bind("\0" + name)
    unix.listen(4)
    try:
        v = run(sb, f"""
            import socket
            ok = []
            for addr in [("1.1.1.1", 80), ("127.0.0.1", {tcp.getsockname()[1]}), ("127.0.0.1", 22)]:
                try:
                    socket.create_connection(addr, timeout=1); ok.append(addr)
                except OSError:
                    pass
            try:
                s = socket.socket(socket.AF_UNIX); s.connect("\\0{name}"); ok.append("unix")
            except OSError:
                pass
            try:
                socket.getaddrinfo("example.com", 80); ok.append("dns")
            except OSError:
                pass
            print(3 if not ok else ok)
        """)
        assert v.passed, v.tests[0].output
    finally:
        tcp.close()
        unix.close()


def test_only_basic_devices_are_visible(sb):
    """No GPU, accelerator, disk or terminal device of the host: /dev holds null, zero, full,
    random, urandom (usable), the fd/stdio links and the private /dev/shm."""
    needs_full(sb)
    v = run(sb, """
        import os
        extra = sorted(set(os.listdir('/dev')) - {'null', 'zero', 'full', 'random', 'urandom', 'fd', 'stdin',
                                                    'stdout', 'stderr', 'shm'})
        open('/dev/null', 'w').write('x')
        print(3 if not extra and len(open('/dev/urandom', 'rb').read(4)) == 4 else extra)
    """)
    assert v.passed, v.tests[0].output


def test_isolation_cannot_be_undone(sb):
    """The program cannot unmount a hidden path, remount the system writable, or get around the
    mounts from a user and mount namespace of its own (the kernel locks inherited mounts)."""
    needs_full(sb)
    hidden = "/" + REPO.split("/")[1]
    v = run(sb, f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        secret, seen = {os.path.join(REPO, "setup.py")!r}, []
        def check(tag):
            if os.path.exists(secret):
                seen.append(tag)
            try:
                open("/usr/gasp_sandbox_probe", "w").close(); seen.append(tag + ":usr-writable")
            except OSError:
                pass
        libc.umount2({hidden.encode()!r}, 2)
        check("umount")
        libc.mount(None, b"/usr", None, 32 | 4096, None)  # MS_REMOUNT | MS_BIND, without MS_RDONLY
        check("remount")
        if libc.unshare(0x10000000 | 0x00020000) == 0:  # own user + mount namespace: all capabilities there
            libc.umount2({hidden.encode()!r}, 2)
            libc.mount(None, b"/usr", None, 32 | 4096, None)
            check("own-namespaces")
        print(3 if not seen else seen)
    """)
    assert v.passed, v.tests[0].output
    assert not os.path.exists("/usr/gasp_sandbox_probe")


def test_secrets_are_not_readable(sb, monkeypatch):
    needs_full(sb)
    monkeypatch.setenv("GASP_SECRET_TOKEN", "hunter2-secret")
    v = run(sb, f"""
        import os
        leaked = [k for k, x in os.environ.items() if 'TOKEN' in k or 'KEY' in k or 'hunter2' in x]
        readable = []
        for path in ['/proc/1/environ', '/etc/shadow', {os.path.join(REPO, 'setup.py')!r},
                     {os.path.join(REPO, 'gasp_jax', 'data', 'files', 'SOURCES.md')!r}, os.path.expanduser('~/.cache/huggingface/token'),
                     '/root/.bash_history']:
            try:
                open(path).read(1); readable.append(path)
            except OSError:
                pass
        print(3 if not leaked and not readable else f"{{leaked}} {{readable}}")
    """)
    assert v.passed, v.tests[0].output


def test_writes_outside_fail_and_host_unchanged(sb):
    needs_full(sb)
    target = os.path.join(REPO, "pwned")
    bash_mtime = os.stat("/bin/bash").st_mtime
    v = run(sb, f"""
        import os
        hits = 0
        # (the private /tmp too: only the cwd and /dev/shm are writable, emptied after each test)
        for path in [{target!r}, '/bin/bash', os.__file__, '/etc/passwd', '/pwned', '/tmp/pwned', '/var/tmp/pwned']:
            try:
                with open(path, 'a') as fh: fh.write('x')
                hits += 1
            except OSError:
                pass
        print(3 + hits)
    """)
    assert v.passed, v
    assert not os.path.exists(target) and not os.path.exists("/pwned")
    assert os.stat("/bin/bash").st_mtime == bash_mtime


@pytest.mark.parametrize("code", [
    "import os\nos.kill(-1, 9)\nprint(3)",
    "import os, posix\nposix.kill(os.getppid(), 9)\nprint(3)",
    "import os\nos.killpg(0, 9)",
    "import os, signal\nfor p in range(1, 300):\n    try: os.kill(p, signal.SIGKILL)\n    except OSError: pass\nprint(3)",
], ids=["kill-all", "kill-parent", "killpg", "kill-range"])
def test_killing_parents_does_not_hurt(sb, code):
    needs_full(sb)
    workers, restarts = [w.proc.pid for w in sb._procs], sb.stats["restarts"]
    v = run(sb, code)
    assert v.reward is not None  # a verdict, not an infrastructure error
    assert v.status in (Status.PASS, Status.RE, Status.WA)
    assert sb.grade("print(3)", ADD).passed  # the worker still works
    # ... and is the same worker: nothing outside the test's own processes was hit.
    assert [w.proc.pid for w in sb._procs] == workers and sb.stats["restarts"] == restarts


def test_guard_bypass_idioms_still_limited(sb):
    needs_full(sb)
    v = run(sb, """
        import importlib, os
        importlib.reload(os)
        posix = __import__('posix')
        import ctypes
        libc = ctypes.CDLL(None)
        libc.setuid(0)
        print(3 if os.getuid() != 0 and posix.getuid() != 0 else 'root')
    """)
    assert v.passed, v


# ------------------------------------------------------------------------------ C. reward hacks
def test_always_equal_object_is_not_pass(sb):
    v = run(sb, """
        class Solution:
            def f(self, a):
                class Eq:
                    def __eq__(self, o): return True
                    def __ne__(self, o): return False
                return Eq()
    """, [TestCase("[1, 2]", "[2, 1]")], fn_name="f")
    assert v.status == Status.RE


def test_frame_and_gc_scans_find_nothing(sb):
    v = run(sb, """
        import gc, sys
        class Solution:
            def f(self, a):
                found = []
                f = sys._getframe()
                while f is not None:
                    found += [v for k, v in f.f_locals.items() if k in ('gt_out', 'expected', 'output')]
                    f = f.f_back
                for o in gc.get_objects():
                    if isinstance(o, dict) and 'SECRET-EXPECTED' in str(o)[:1000]:
                        found.append(o)
                return found[0] if found else -1
    """, [TestCase("1", '"SECRET-EXPECTED"')], fn_name="f")
    assert v.status == Status.WA


def test_reading_test_files_finds_nothing(sb):
    v = run(sb, """
        import os, glob
        junk = glob.glob('*') + glob.glob('/tmp/*') + glob.glob('*.json')
        cmd = open('/proc/self/cmdline', 'rb').read()
        try:
            open(f'/proc/{os.getppid()}/mem', 'rb').read(1); junk.append('mem')
        except OSError:
            pass
        print('EXPECTED-ANSWER' if b'EXPECTED-ANSWER' in cmd else len(junk))
    """, [TestCase("", "EXPECTED-ANSWER\n")])
    assert v.status == Status.WA


@pytest.mark.parametrize("code", ["import sys\nsys.exit(0)\nprint(3)", "import os\nos._exit(0)\nprint(3)"],
                         ids=["sys-exit", "os-exit"])
def test_exit_before_printing_is_wa(sb, code):
    assert run(sb, code).status == Status.WA


def test_raising_on_empty_expected_is_re(sb):
    v = run(sb, "class Solution:\n    def f(self, a):\n        raise ValueError('no')",
            [TestCase("1", "null")], fn_name="f")
    assert v.status == Status.RE


def test_wrong_order_and_collapsed_duplicates_are_wa(sb):
    assert run(sb, "print('2 1')", [TestCase("", "1 2\n")]).status == Status.WA
    assert run(sb, "print('1 2')", [TestCase("", "1 2 2\n")]).status == Status.WA


def test_nondeterministic_program_is_flagged(sb):
    rep = sb.check_deterministic("import random\ndef f(x):\n    return random.random() + x", ["1", "2"])
    assert rep.deterministic is False and not rep
    rep = sb.check_deterministic("def f(x):\n    return sorted({str(i) for i in range(x)})", ["5", "30"])
    assert rep.deterministic is True and rep


def test_string_hashes_agree_across_workers(sb):
    # PYTHONHASHSEED=0 must reach every worker: set order (hence a program's output) may not depend on
    # which worker ran it. Several jobs at once spread over both workers.
    code = "def f(x):\n    import sys\n    return (hash('abc'), sys.flags.hash_randomization)"
    futures = [sb.run_function_async(code, ["1"]) for _ in range(8)]
    outputs = {f.result()[0].output for f in futures}
    assert len(outputs) == 1, outputs
    assert outputs.pop().endswith(", 0)")


# ------------------------------------------------------------------------------ D. quirky but correct
@pytest.mark.parametrize("code", [
    "import sys\nt = 0\nfor line in sys.stdin:\n    t += sum(map(int, line.split()))\nprint(t)",
    "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))",
    "import sys\nt = 0\nwhile True:\n    l = sys.stdin.buffer.readline()\n    if not l: break\n    t += sum(map(int, l.split()))\nprint(t)",
    "print(sum(map(int, open(0).read().split())))",
    "import os\nprint(sum(map(int, os.read(0, 1 << 20).split())))",
    "t = 0\nwhile True:\n    try:\n        t += sum(map(int, input().split()))\n    except EOFError:\n        break\nprint(t)",
    "import sys\nprint(sum(int(x) for l in sys.stdin.readlines() for x in l.split()))",
    "def main():\n    print(sum(map(int, input().split())))\nif __name__ == '__main__':\n    main()",
    "cnt = 0\ndef add(x):\n    global cnt\n    cnt += x\nfor x in input().split():\n    add(int(x))\nprint(cnt)",
    """
    import sys, threading
    def main():
        print(sum(map(int, sys.stdin.read().split())))
    threading.stack_size(2**27)
    threading.Thread(target=main).start()
    """,
    "import sys\nsys.stdout.write(str(sum(map(int, input().split()))) + '\\n')",
    "import os\nos.write(1, b'3\\n')",
    "print(3, flush=True)",
    "import sys\nsys.stdout.buffer.write(b'3')",
    "import sys\nsys.stdout.write('3\\r\\n')",
    "print('3   ')\nprint()\nprint()",
    "print(3)\nexit()",
    "import sys\nprint(3)\nsys.exit()",
    "import sys\nprint(3)\nsys.exit(0)",
    "print(3)\nquit()",
    "print(f'{3.0}')",
], ids=["for-line", "buffer-read", "buffer-readline", "open0", "os-read", "input-eof", "readlines", "main-guard",
        "global", "thread-stack", "stdout-write", "os-write", "flush", "buffer-write", "crlf", "trailing-ws",
        "exit", "sys-exit", "sys-exit0", "quit", "float-token"])
def test_quirky_stdin_programs_pass(sb, code):
    v = run(sb, code)
    assert v.passed, (v.status, v.message, v.tests[0].stderr_tail[-500:])


def test_deep_recursion_and_big_ints_pass(sb):
    v = run(sb, """
        import sys
        from functools import lru_cache
        sys.setrecursionlimit(10**6)
        @lru_cache(maxsize=None)
        def depth(n):
            return 0 if n == 0 else 1 + depth(n - 1)
        print(depth(100000) - 99997)
    """, limits=FAST.replace(cpu_s=4.0, wall_s=60.0))
    assert v.passed, (v.status, v.message, v.tests[0].stderr_tail[-300:])
    big = run(sb, "print(10 ** 20000)", [TestCase("", "1" + "0" * 20000 + "\n")])
    assert big.passed


def test_leetcode_header_and_tuple_returns(sb):
    v = run(sb, """
        class Solution:
            def f(self, nums: List[int], k: int) -> List[int]:
                c = Counter(nums); h = []
                for x, n in c.items():
                    heappush(h, (-n, x))
                best = [heappop(h)[1] for _ in range(k)]
                assert gcd(4, 6) == 2 and inf > 10**18
                @lru_cache(None)
                def g(i): return i
                d = defaultdict(int); d[g(1)] += 1
                return tuple(sorted(best))
    """, [TestCase("[1, 1, 1, 2, 2, 3]\n2", "[1, 2]")], fn_name="f")
    assert v.passed, (v.status, v.message, v.tests[0].stderr_tail)
    fresh = run(sb, """
        class Solution:
            calls = 0
            def __init__(self):
                self.seen = []
            def f(self, x):
                self.seen.append(x)
                return len(self.seen)
    """, [TestCase("5", "1"), TestCase("6", "1")], fn_name="f")
    assert fresh.passed  # a fresh Solution() per test
    plain = run(sb, "def f(a, b):\n    return a + b", [TestCase("1\n2", "3"), TestCase('"a"\n"b"', '"ab"')],
                fn_name="f")
    assert plain.passed


def test_number_comparisons(sb):
    assert run(sb, "print('3.0')", [TestCase("", "3\n")]).passed
    assert run(sb, "print('1e3')", [TestCase("", "1000\n")]).passed
    assert run(sb, "print('0.3333333')", [TestCase("", "0.33333333\n")]).status == Status.WA
    assert run(sb, "print('0.3333333')", [TestCase("", "0.33333333\n")], compare="tolerance").passed
    assert run(sb, "def f(x):\n    return [x * 1.0]", [TestCase("1", "[1]")], fn_name="f").passed


def test_unicode_and_big_stdin(sb):
    assert run(sb, "print('é')", [TestCase("", "é\n")]).passed
    big = "1 " * (25 * 1024 * 1024)
    ignore = run(sb, "print(3)", [TestCase(big, "3\n")])
    assert ignore.passed
    read = run(sb, "import sys\nprint(len(sys.stdin.buffer.read()))",
               [TestCase(big, f"{len(big)}\n")], limits=FAST.replace(cpu_s=5.0, wall_s=60.0))
    assert read.passed, read


def test_stderr_and_exit_codes(sb):
    v = run(sb, "import sys\nprint('oops', file=sys.stderr)\nprint(3)")
    assert v.passed and "oops" in v.tests[0].stderr_tail
    re_ = run(sb, "print(3)\nraise SystemExit(2)")
    assert re_.status == Status.RE
    with Sandbox(workers=1, limits=FAST, lcb_exit_parity=True, allow_unsafe=UNSAFE_OK) as parity:
        assert parity.grade("print(3)\nraise SystemExit(2)", ADD).passed
    exc = run(sb, "print(3)\nraise KeyError('k')")
    assert exc.status == Status.RE and "KeyError" in exc.message and "KeyError" in exc.tests[0].stderr_tail
    seg = run(sb, "import ctypes\nctypes.string_at(0)")
    assert seg.status == Status.RE and "SIGSEGV" in seg.message


def test_early_exit_and_run_all(sb):
    tests = [TestCase("1 2\n", "3\n"), TestCase("1 1\n", "0\n"), TestCase("2 2\n", "4\n")]
    code = "print(sum(map(int, input().split())))"
    v = run(sb, code, tests)
    assert v.status == Status.WA and len(v.tests) == 2 and v.n_tests == 3
    v_all = run(sb, code, tests, stop_on_failure=False)
    assert [t.status for t in v_all.tests] == [Status.PASS, Status.WA, Status.PASS]
    assert v_all.pass_fraction == pytest.approx(2 / 3) and v_all.reward == 0.0
    assert v_all.lcb_codes == [True, -2, True]


# ------------------------------------------------------------------------------ E. bad API inputs
@pytest.mark.parametrize("code", ["", "   \n\t", None, "print(1)\x00", b"\xff\xfe", "x = 1\n" * 60000, 12345,
                                  "def f(:\n", "print('\ud800')"],
                         ids=["empty", "blank", "none", "nul", "bad-utf8", "too-big", "not-text", "syntax",
                              "surrogate"])
def test_bad_programs_are_ce(sb, code):
    v = sb.grade(code, ADD)
    assert v.status == Status.CE and v.reward == 0.0


@pytest.mark.parametrize("tests,fn_name", [
    ([], None),
    ([TestCase("1", None)], None),
    ([("1",)], None),
    ("1 2", None),
    ([TestCase("[1, 2", "3")], "f"),
    ([TestCase("1", "{bad")], "f"),
    ([TestCase("1", "1")], "not an identifier"),
    ([{"input": b"\xff", "output": "1"}], None),
], ids=["zero", "none-output", "short-tuple", "str", "bad-json-in", "bad-json-out", "bad-fn", "bad-bytes"])
def test_bad_tests_are_data_errors(sb, tests, fn_name):
    v = sb.grade("def f(a):\n    return a", tests, fn_name=fn_name)
    assert v.status == Status.INFRA_ERROR and v.data_error and v.reward is None


def test_grade_many_and_async(sb):
    jobs = [("print(sum(map(int, input().split())))", ADD), ("print(4)", ADD, None),
            {"code": "def f(a):\n    return a * 2", "tests": [TestCase("2", "4")], "fn_name": "f"},
            ("while True: pass", ADD), ("", ADD), object()]
    verdicts = sb.grade_many(jobs)
    assert [v.status for v in verdicts] == [Status.PASS, Status.WA, Status.PASS, Status.TLE, Status.CE,
                                            Status.INFRA_ERROR]
    futures = sb.grade_many_async([("print(3)", ADD)] * 6)
    assert all(f.result(timeout=60).passed for f in futures)


def test_run_function_and_policy(sb):
    res = sb.run_function("def f(a, b):\n    return a * b", ["'ab', 3", "2, 5", "1, None", "(", "7"])
    assert [r.status for r in res] == [Status.PASS, Status.PASS, Status.RE, Status.RE, Status.RE]
    assert res[0].output == "'ababab'" and res[1].output == "10" and "TypeError" in res[2].error
    loop = sb.run_function("def f(x):\n    while x: pass\n    return x", ["0", "1", "0"])
    assert [r.status for r in loop] == [Status.PASS, Status.TLE, Status.PASS]
    banned = sb.run_function("import random\ndef f(x):\n    return x", ["1"], banned_modules=True)
    assert banned[0].status == Status.CE and "random" in banned[0].error
    assert sb.run_function("def f(:", ["1", "2"])[1].status == Status.CE
    assert sb.run_function("def f(x): return x", []) == []
    ref = sb.run_reference("print(int(input()) * 2)", ["2\n", "x\n"])
    assert ref == ["4\n", None]


def test_infra_errors_give_none_reward_and_recover(sb):
    w = sb._procs[0]
    w.kill()  # simulate a worker crash: the next job on it restarts the worker transparently
    vs = sb.grade_many([("print(3)", ADD)] * 4)
    assert all(v.passed for v in vs)
    from gasp_jax.sandbox.verdict import Verdict
    assert Verdict(Status.INFRA_ERROR).reward is None


def test_worker_recycling():
    with Sandbox(workers=1, limits=FAST, recycle_after=3, allow_unsafe=UNSAFE_OK) as box:
        first = box._procs[0].proc.pid
        for _ in range(5):
            assert box.grade("print(3)", ADD).passed
        assert box._procs[0].proc.pid != first and box.stats["restarts"] >= 1


# ------------------------------------------------------------------------------ per-job runner path
RUNNER_CASES = [  # jobs of >= 3 tests go through the per-job runner T (1-2 tests: J forks directly)
    ("while True: pass", {Status.TLE}),
    ("import time\ntime.sleep(3600)", {Status.TLE}),
    ("x = bytearray(10**11)", {Status.MLE, Status.RE}),
    ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", {Status.TLE}),
    ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\nprint(sum(map(int, input().split())))",
     {Status.PASS}),
    ("while True: print('x' * 10**6)", {Status.OLE}),
    ("import os\nos.kill(-1, 9)\nos.kill(os.getppid(), 9)\nprint(sum(map(int, input().split())))", {Status.PASS, Status.RE}),
    ("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=1); print('net')\n"
     "except OSError:\n    print(sum(map(int, input().split())))", {Status.PASS}),
    ("import os\nprint(os.getuid() != 0 and not os.path.exists(%r) and sum(map(int, input().split())))"
     % os.path.join(REPO, "setup.py"),
     {Status.PASS}),
    ("def f(:", {Status.CE}),
    ("import sys\nsys.exit(3)", {Status.RE}),
]


@pytest.mark.parametrize("code,allowed", RUNNER_CASES, ids=[f"runner-{i}" for i in range(len(RUNNER_CASES))])
def test_catalogue_on_runner_path(sb, code, allowed):
    needs_full(sb)
    tests = [TestCase("1 2\n", "3\n"), TestCase("2 2\n", "4\n"), TestCase("3 4\n", "7\n")]
    v = run(sb, code, tests, limits=FAST.replace(stdout_bytes=4 << 20))
    assert v.status in allowed, (v.status, v.message)
    if v.status == Status.PASS:
        assert len(v.tests) == 3


def test_runner_killed_by_program_is_re_not_infra(sb):
    needs_full(sb)
    # Three tests -> per-job runner; the program kills every process of its uid, including
    # (possibly) the runner: the verdict must be a program failure or pass, never INFRA_ERROR.
    v = run(sb, "import os, signal\nfor p in range(1, 2000):\n    try: os.kill(p, signal.SIGKILL)\n"
                "    except OSError: pass\nprint(3)", [TestCase("", "3\n")] * 3)
    assert v.reward is not None


def test_trainer_death_takes_the_workers_down(sb, tmp_path):
    """If the parent is SIGKILLed mid-job, every worker (and its namespace) dies with it, and the
    next Sandbox removes the cgroups it could not clean up."""
    import signal
    import subprocess
    import sys
    import time

    needs_full(sb)
    script = tmp_path / "trainer.py"
    script.write_text(
        "import sys, time\n"
        "from gasp_jax.sandbox import Sandbox\n"
        "sb = Sandbox(workers=2)\n"
        "print(' '.join(str(w.proc.pid) for w in sb._procs), flush=True)\n"
        "sb.submit('import time\\ntime.sleep(30)', [('', '1')])\n"
        "time.sleep(60)\n")
    from gasp_jax.sandbox.pool import default_python, site_package_dirs
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, *site_package_dirs()]))
    proc = subprocess.Popen([default_python(), str(script)], stdout=subprocess.PIPE, cwd=REPO, text=True, env=env)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")], "workers outlived their parent"
    assert not sandbox_uid_processes({1_000_000 + p for p in pids})
    from gasp_jax.sandbox import cgroups
    cgroups.remove_stale()
    if os.geteuid() == 0:
        root = "/sys/fs/cgroup/memory" + (cgroups._own_cgroup("memory") or "/nonexistent")
        if os.path.isdir(root):
            assert not [n for n in os.listdir(root) if n.startswith(f"gasp_sandbox_{proc.pid}_")]


def test_memory_hygiene_no_earlier_output_in_a_later_child():
    """A program that scans all of its own memory finds nothing of an earlier job's program text,
    input or output on the same worker (J keeps user data only in DONTFORK maps)."""
    import hashlib
    secret = "0f9e8d7c6b5a49382716_do_not_leak_" + "x" * 16
    digest = hashlib.sha256(secret.encode()).hexdigest()
    prefix = "GASP" + "LEAK:"
    with Sandbox(workers=1, limits=FAST, allow_unsafe=UNSAFE_OK) as box:
        needs_full(box)
        for tests in ([TestCase(prefix + secret + "\n", "x")],  # in the input (stdin) ...
                      [TestCase("", "x")] * 3):                  # ... and via the runner path
            first = box.grade(f"print({prefix + secret!r})\nprint(input() if 0 else '')", tests)
            assert first.status == Status.WA and secret in first.tests[0].output
        scan = f"""
            import hashlib, re
            pre = "GASP" + "LEAK:"
            pat = re.compile(re.escape(pre.encode()) + rb"(.{{{len(secret)}}})", re.S)
            hits = 0
            with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
                for line in maps:
                    addr, perms = line.split()[:2]
                    if "r" not in perms or "[vvar]" in line or "[vsyscall]" in line:
                        continue
                    lo, hi = (int(x, 16) for x in addr.split("-"))
                    try:
                        mem.seek(lo)
                        chunk = mem.read(hi - lo)
                    except (OSError, ValueError, OverflowError):
                        continue
                    for m in pat.finditer(chunk):
                        if hashlib.sha256(m.group(1)).hexdigest() == {digest!r}:
                            hits += 1
            print("scanned", hits)
        """
        lim = FAST.replace(cpu_s=5.0, wall_s=60.0)
        # Positive control: the scanner does find the secret when it is in the process's memory.
        control = box.grade(f"keep = {prefix + secret!r}\n" + textwrap.dedent(scan), [TestCase("", "scanned 0\n")],
                            limits=lim)
        assert control.status == Status.WA and control.tests[0].output.startswith("scanned ")
        assert int(control.tests[0].output.split()[1]) >= 1
        for tests in ([TestCase("", "scanned 0\n")], [TestCase("", "scanned 0\n")] * 3):
            v = box.grade(textwrap.dedent(scan), tests, limits=lim)
            assert v.passed, (v.status, v.message, v.tests[0].output, v.tests[0].stderr_tail[-500:])


def test_huge_return_value_is_ole_and_limits_override(sb):
    v = run(sb, "def f(n):\n    return 'x' * n", [TestCase(str(5 << 20), '"x"')], fn_name="f",
            limits=FAST.replace(stdout_bytes=1 << 20))
    assert v.status == Status.OLE
    # A per-call Limits overrides the sandbox default: 1 s of CPU is TLE, 4 s is enough.
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.5: pass\nprint(3)"
    assert run(sb, busy, limits=FAST.replace(cpu_s=1.0, wall_s=60.0)).status == Status.TLE
    assert run(sb, busy, limits=FAST.replace(cpu_s=4.0, wall_s=60.0)).passed


def test_parent_with_more_than_1024_open_files():
    """A trainer process often holds > 1024 fds; the parent side must not use select()."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 1300")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300) if hard == resource.RLIM_INFINITY
                                                else min(max(soft, 1300), hard), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with Sandbox(workers=1, limits=FAST, allow_unsafe=UNSAFE_OK) as box:
            assert min(box._procs[0].proc.stdout.fileno(), box._procs[0].proc.stdin.fileno()) > 1024
            assert box.grade("print(sum(map(int, input().split())))", ADD).passed
            assert box.grade("while True: pass", ADD).status == Status.TLE
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ------------------------------------------------------------------------------ fork servers
def _zygote_pids(box) -> set[int]:
    """J's persistent fork servers (Z): children of J (the worker's only child) named gasp-zygote."""
    from tests.test_sandbox_support import _is_zygote, _status, descendants
    w = box._procs[0].proc.pid
    below = descendants(w)
    runners = {p for p in below if _status(p).get("PPid") == str(w)}
    return {p for p in below if _is_zygote(p, runners)}


@pytest.mark.parametrize("n_tests", [1, 3], ids=["direct", "runner"])
def test_output_of_a_killed_or_flooding_test_never_reaches_the_next(sb, n_tests):
    """The output pipes are per worker: what an OLE flood or a leftover writer left in them must
    be dropped, and the next test must see exactly its own output."""
    needs_full(sb)
    small = FAST.replace(stdout_bytes=1 << 16)
    flood = run(sb, "import sys\nwhile True: sys.stdout.write('F' * 4096)", [TestCase("", "x")] * n_tests,
                limits=small)
    assert flood.status == Status.OLE
    writer = run(sb, """
        import os, sys, time
        if os.fork() == 0:          # keeps writing after the test's main process exits
            while True:
                os.write(1, b"J" * 512)
                time.sleep(0.001)
        time.sleep(0.05)
        print(3)
    """, [TestCase("", "3\n")] * n_tests, limits=small)
    assert writer.status in (Status.WA, Status.OLE, Status.PASS)
    after = run(sb, "print(int(input()) + 1)", [TestCase(f"{i}\n", f"{i + 1}\n") for i in range(n_tests)])
    assert after.passed and all(t.output == f"{t.index + 1}\n" for t in after.tests), after


def test_warm_module_zygote_and_plain_zygote_coexist():
    """A program that mentions numpy runs in forks of a zygote that imported it; the plain
    zygote's clean-up of leftovers (kill(-1) as the sandbox uid) never reaches that zygote."""
    pytest.importorskip("numpy")
    code = "import numpy as np\ndef f(n):\n    return int(np.arange(n).sum())"
    with Sandbox(workers=1, limits=FAST, allow_unsafe=UNSAFE_OK) as box:
        needs_full(box)
        assert box.grade("print(3)", [TestCase("", "3\n")]).passed
        assert [r.output for r in box.run_function(code, ["10", "4"])] == ["45", "6"]
        zygotes = _zygote_pids(box)
        assert len(zygotes) == 2  # plain and warm
        plain = box.grade("import os, time\nif os.fork() == 0:\n    time.sleep(60)\nprint(3)", [TestCase("", "3\n")])
        assert plain.passed
        assert _zygote_pids(box) == zygotes  # the plain one's kill(-1) spared the warm one
        assert [r.output for r in box.run_function(code, ["5"])] == ["10"]
        assert [r.output for r in box.run_function(code, ["1", "2", "3"])] == ["0", "1", "3"]  # runner path
        assert _zygote_pids(box) == zygotes
    with Sandbox(workers=1, limits=FAST, allow_unsafe=UNSAFE_OK, warm_modules=()) as box:
        assert [r.output for r in box.run_function(code, ["10"])] == ["45"]


def test_lost_isolation_is_an_infra_error_and_the_worker_is_replaced():
    """A worker whose namespace setup breaks mid-run (simulated: its program identity is lost)
    runs nothing: the job is an infrastructure error (reward None) and the worker is replaced;
    the next job runs isolated again. Both forker paths (1 test: zygote; 3 tests: job runner)."""
    with Sandbox(workers=1, limits=FAST, allow_unsafe=UNSAFE_OK) as box:
        needs_full(box)
        for n_tests in (1, 3):
            worker, restarts = box._procs[0].proc.pid, box.stats["restarts"]
            box._break_isolation_for_test(0)
            before = HostSnapshot.take()
            lost = box.grade("import os\nprint(os.getuid())", [TestCase("", "0\n")] * n_tests)
            assert lost.status == Status.INFRA_ERROR and lost.reward is None and not lost.tests, lost
            assert "lost its isolation" in lost.message
            again = box.run_function("import os\ndef f(x):\n    return os.getuid() != 0", ["1"] * n_tests)
            assert all(r.output == "True" for r in again), again
            assert box._procs[0].proc.pid != worker and box.stats["restarts"] == restarts + 1
            assert_host_clean(box, before)
