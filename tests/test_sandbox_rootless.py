"""Sandbox without root (issue 16): the same isolation through user namespaces.

The sandbox suite runs in the mode of the test process (root here; rootless where CI runs as an
ordinary user). This file adds the other mode: with root, a representative part of the suite (the
adversarial catalogue with its host postconditions, the self-test, the refusal path) runs again
with the trainer as an unprivileged uid (``setpriv``); everything, the LCB differential included,
is the slow duplicate. Then the self-test's report in each mode, and the refusal when the host
allows no user namespace (simulated for one process tree: a user namespace whose limit
``user.max_user_namespaces`` is used up, as a host with it set to 0 would be).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import textwrap

import pytest

from gasp_jax.sandbox import Limits, Sandbox, SandboxUnavailable
from gasp_jax.sandbox.pool import default_python, site_package_dirs
from tests.test_sandbox_support import CAN_ISOLATE, ROOTLESS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, *site_package_dirs()]), PYTHONDONTWRITEBYTECODE="1")
# A uid of its own per run: the rootless postconditions look for processes of the test's uid.
UNPRIVILEGED_UID = 20_000 + os.getpid() % 20_000
FAST = Limits(cpu_s=1.0, wall_s=2.5, memory_bytes=1 << 30)

needs_root_to_switch = pytest.mark.skipif(
    ROOTLESS or shutil.which("setpriv") is None,
    reason="the test process is not root: the main sandbox suite already runs rootless")

# The representative rootless part of tests/test_sandbox.py for the default suite: escapes,
# daemons, fork bombs, memory, disk, the per-job runner path, isolation checks and refusal.
DEFAULT_SUBSET = ("isolation_detected or refuses or fork_and_thread or memory_bomb or disk_fill or daemons "
                  "or network or secrets or writes_outside or basic_devices or killing_parents or undone or runner-4 or runner-6 "
                  "or runner-8 or trainer_death or lost_isolation")


def _as_unprivileged(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``argv`` as an unprivileged uid (no groups, no capabilities)."""
    cmd = ["setpriv", f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", "--clear-groups", *argv]
    return subprocess.run(cmd, cwd="/tmp", env=dict(ENV, HOME="/nonexistent"), capture_output=True, text=True,
                          timeout=timeout)


def _pytest_as_unprivileged(paths: list[str], select: str | None, timeout: float) -> None:
    probe = _as_unprivileged([default_python(), "-c", "import ctypes, sys\n"
                              "sys.exit(ctypes.CDLL(None).unshare(0x10000000) != 0)"], timeout=60)
    if probe.returncode != 0:
        pytest.skip("this host allows no user namespace to an unprivileged uid (see the refusal test)")
    basetemp = tempfile.mkdtemp(prefix="gasp_rootless_")  # in /tmp itself: the uid must reach it
    os.chown(basetemp, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    argv = [default_python(), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={REPO}",
            f"--basetemp={basetemp}/pytest", "-m", "not slow" if select else "slow or not slow", "--durations=8",
            *[os.path.join(REPO, p) for p in paths]]
    if select:
        argv += ["-k", select]
    try:
        out = _as_unprivileged(argv, timeout)
    finally:
        shutil.rmtree(basetemp, ignore_errors=True)
    tail = (out.stdout + out.stderr)[-4000:]
    assert out.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail and " skipped" not in tail, tail


@needs_root_to_switch
def test_sandbox_suite_as_unprivileged_user():
    _pytest_as_unprivileged(["tests/test_sandbox.py"], DEFAULT_SUBSET, timeout=600)


@needs_root_to_switch
def test_hardening_as_unprivileged_user():
    """Every weakness class of the attack catalogue, closed in rootless mode too (the sandbox's
    and the judge's)."""
    _pytest_as_unprivileged(["tests/test_sandbox_hardening.py", "tests/test_tasks_sandbox.py"],
                            "test_sandbox_hardening or run_code or indistinguishable or forged or zero_argument",
                            timeout=600)


@pytest.mark.slow
@needs_root_to_switch
def test_whole_sandbox_suite_and_lcb_differential_as_unprivileged_user():
    _pytest_as_unprivileged(["tests/test_sandbox.py", "tests/test_sandbox_lcb.py"], None, timeout=3000)


REPORT = textwrap.dedent("""
    import dataclasses, json
    from gasp_jax.sandbox import Limits, Sandbox
    with Sandbox(workers=1, limits=Limits(cpu_s=1.0)) as sb:
        report = dataclasses.asdict(sb.isolation)
        report["missing"] = list(sb.isolation.missing)
        report["uid"] = sb.run_function("import os\\ndef f(x):\\n    return os.getuid()", ["0"])[0].output
    print(json.dumps(report))
""")


def _report_here() -> dict:
    out = subprocess.run([default_python(), "-c", REPORT], cwd="/tmp", env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not CAN_ISOLATE, reason="no namespaces on this host (refusal is tested below)")
def test_self_test_report_in_each_mode():
    """Root mode and rootless mode reach the same level with the same properties; only the
    mode, the program's uid and (here) the memory cgroup differ."""
    reports = {}
    here = _report_here()
    reports[here["mode"]] = here
    if not ROOTLESS and shutil.which("setpriv"):
        out = _as_unprivileged([default_python(), "-c", REPORT], timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        rootless = json.loads(out.stdout.strip().splitlines()[-1])
        reports[rootless["mode"]] = rootless
    assert set(reports) == ({"rootless"} if ROOTLESS else {"root", "rootless"}), reports
    for mode, r in reports.items():
        assert r["level"] == "full" and r["missing"] == [], r
        assert r["network_namespace"] and r["pid_namespace"] and r["mount_namespace"] and r["non_root_uid"], r
        assert r["read_only_system"] and "/run" in r["hidden_paths"], r
        # A dedicated identity: a per-worker uid (root mode), or a uid of the nested program
        # namespace without capabilities (rootless: on the host it is the trainer's uid).
        assert r["uid"] != "0" and (mode == "rootless" or int(r["uid"]) >= 1_000_000), r
    if "root" in reports:
        assert reports["root"]["hidden_paths"] == reports["rootless"]["hidden_paths"]


# Starts ``argv`` unprivileged inside two user namespaces, the outer one allowing exactly one
# namespace below it (the inner one): the process cannot create a user namespace, as on a host
# with user.max_user_namespaces = 0. Works from root and from an ordinary user.
NO_USERNS_LAUNCHER = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    def enter(inner, outer_uid, outer_gid):
        if libc.unshare(0x10000000) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{inner} {outer_uid} 1"),
                           ("gid_map", f"{inner} {outer_gid} 1")):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
    enter(0, os.geteuid(), os.getegid())
    with open("/proc/sys/user/max_user_namespaces", "w") as fh:
        fh.write("1")
    enter(1000, 0, 0)
    os.execv(sys.argv[1], sys.argv[1:])
""")

REFUSED_TRAINER = textwrap.dedent("""
    import json
    from gasp_jax.sandbox import Limits, Sandbox, SandboxUnavailable
    out = {}
    try:
        Sandbox(workers=1, limits=Limits(cpu_s=1.0))
        out["error"] = None
    except SandboxUnavailable as exc:
        out["error"] = str(exc)
    with Sandbox(workers=1, limits=Limits(cpu_s=1.0), min_isolation="none") as sb:
        out["level"], out["mode"] = sb.isolation.level, sb.isolation.mode
        out["ran"] = sb.run_function("def f(x):\\n    return x + 1", ["1"])[0].output
    print(json.dumps(out))
""")


def test_refusal_when_the_host_allows_no_user_namespace():
    """One clear error before any program runs: what is missing, the host setting behind it and
    the options; accepting a lower level explicitly starts the sandbox at that level."""
    if not CAN_ISOLATE:  # this host really has none: the plain constructor is the refusal path
        with pytest.raises(SandboxUnavailable, match="No program was run"):
            Sandbox(workers=1, limits=FAST)
        return
    out = subprocess.run([default_python(), "-c", NO_USERNS_LAUNCHER, default_python(), "-c", REFUSED_TRAINER],
                         cwd="/tmp", env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    err = res["error"]
    assert err is not None, "the sandbox started without namespaces"
    assert "below the required 'full'" in err and "No program was run" in err
    for prop in ("network namespace", "PID namespace", "mount namespace", "unprivileged identity"):
        assert prop in err, err
    assert "max_user_namespaces" in err and "No space left on device" in err  # the host setting (ENOSPC)
    assert "run the trainer as root in a container" in err and "min_isolation='partial'" in err
    assert res["level"] == "none" and res["mode"] == "none" and res["ran"] == "2", res
