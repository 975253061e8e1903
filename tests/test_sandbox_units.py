"""Pure parent-side pieces of the sandbox: comparison, program validation, import policy,
limits, verdict semantics and the wire protocol (no workers started)."""

from __future__ import annotations

import os
import threading
from decimal import Decimal

import pytest

from gasp_jax.sandbox import Limits, Status, TestCase, Verdict, compare_json, compare_stdout
from gasp_jax.sandbox.compare import loads_json
from gasp_jax.sandbox.policy import find_banned_imports, validate_program
from gasp_jax.sandbox.wire import ProtocolError, encode_flat_frame, encode_frame, read_frame, write_all
from gasp_jax.sandbox.verdict import TestResult


@pytest.mark.parametrize("got,want,ok", [
    (b"3\n", "3", True),
    (b"  3  \r\n\n\n", "3\n", True),
    (b"1  2\n", "1 2\n", True),
    (b"3.0\n", "3\n", True),
    (b"3e0", "3", True),
    (b"1e3", "1000", True),
    (b"0.30000000001", "0.3", False),
    (b"2 1", "1 2", False),
    (b"1 2", "1 2 2", False),
    (b"Yes", "YES", False),
    (b"a\nb", "a b", False),
    (b"\xff", "x", False),
    ("é\n".encode(), "é", True),
    (b"nan", "nan", True),
    (b"NaN 1", "nan 1", False),
])
def test_compare_stdout_lcb(got, want, ok):
    assert compare_stdout(got, want)[0] is ok


def test_compare_stdout_tolerance_and_exact():
    assert compare_stdout(b"0.3333333", "0.33333333", "tolerance")[0]
    assert not compare_stdout(b"0.334", "0.33333333", "tolerance")[0]
    assert compare_stdout(b"1000000.5", "1000000", "tolerance", rel_tol=1e-6)[0]
    assert not compare_stdout(b"inf", "1e308", "tolerance")[0]
    assert compare_stdout(b"abc 1.0000001", "abc 1", "tolerance")[0]
    assert not compare_stdout(b"3\n", "3", "exact")[0]
    assert compare_stdout(b"3\n", "3\n", "exact")[0]
    with pytest.raises(ValueError):
        compare_stdout(b"", "", "lenient")


def test_compare_json():
    big = "1" + "0" * 6000
    assert compare_json("[1.0, 2]", loads_json("[1, 2]"))[0]
    assert compare_json("true", loads_json("1"))[0]  # LCB parity: Python ==
    assert not compare_json("[2, 1]", loads_json("[1, 2]"))[0]
    assert compare_json(big, loads_json(big))[0]
    assert isinstance(loads_json(big), Decimal)
    assert not compare_json(big + "1", loads_json(big))[0]
    assert not compare_json("{bad", 1)[0]
    assert not compare_json("[" * 100000 + "]" * 100000, [])[0]


@pytest.mark.parametrize("code,reason", [
    (None, "no program"), ("", "empty"), ("  \n", "empty"), ("x\x00", "NUL"), (b"\xff", "UTF-8"),
    ("a" * 300_000, "larger"), ("\ud800", "surrogates"), (3, "str or bytes"), (b"print(1)", None),
])
def test_validate_program(code, reason):
    text, why = validate_program(code)
    if reason is None:
        assert text == "print(1)" and why is None
    else:
        assert text is None and reason in why


def test_banned_imports():
    assert find_banned_imports("import random\nimport math") == ["random"]
    assert find_banned_imports("from os import path") == ["os.path"]
    assert find_banned_imports("import os.path as p") == ["os.path"]
    assert find_banned_imports("import os\nos.getcwd()") == []
    assert find_banned_imports("from time import sleep\nimport threading") == ["threading", "time"]
    assert find_banned_imports("x = __import__('subprocess')") == ["subprocess"]
    assert find_banned_imports("def f(:\nimport random") == ["random"]  # syntax error: word match
    assert find_banned_imports("import numpy", {"numpy"}) == ["numpy"]


def test_limits_validation_and_wire():
    lim = Limits(cpu_s=1.5)
    assert lim.wall_deadline_s == 4.0
    wire = lim.to_wire()
    assert wire["cpu_soft"] == 2 and wire["cpu_hard"] == 3  # hard = soft + 1: SIGKILL follows SIGXCPU
    for bad in ({"cpu_s": 0}, {"cpu_s": float("inf")}, {"memory_bytes": -1}, {"open_files": 3},
                {"wall_s": 0}):
        with pytest.raises(ValueError):
            Limits(**bad)


def test_verdict_reward_semantics():
    assert Verdict(Status.PASS, n_tests=1).reward == 1.0
    for s in (Status.WA, Status.TLE, Status.MLE, Status.OLE, Status.RE, Status.CE):
        assert Verdict(s).reward == 0.0 and not Verdict(s).passed
    assert Verdict(Status.INFRA_ERROR).reward is None
    assert Status.PASS == "PASS" and str(Status.TLE) == "TLE"
    v = Verdict(Status.WA, (TestResult(0, Status.PASS), TestResult(1, Status.WA)), n_tests=4)
    assert v.pass_fraction == 0.25 and v.lcb_codes == [True, -2]
    assert TestCase("a", "b") == ("a", "b")


def test_old_wire_module_name_is_an_alias():
    import gasp_jax.sandbox.protocol as old
    from gasp_jax.sandbox import wire

    assert old is wire and old.ProtocolError is ProtocolError


def test_protocol_roundtrip_and_errors():
    r, w = os.pipe()
    big = os.urandom(300_000)
    t = threading.Thread(target=lambda: write_all(w, encode_frame({"t": "x", "n": 1}, [b"abc", big, b""])))
    t.start()
    header, blobs = read_frame(r, deadline=None)
    t.join()
    assert header["t"] == "x" and blobs == [b"abc", big, b""]
    os.write(w, b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    with pytest.raises(ProtocolError):
        read_frame(r)
    os.close(w)
    with pytest.raises(ProtocolError):
        read_frame(r)
    os.close(r)
    r2, w2 = os.pipe()
    import time
    with pytest.raises(ProtocolError):
        read_frame(r2, deadline=time.monotonic() + 0.05)
    os.close(r2)
    os.close(w2)


def test_flat_frame_matches_encode_frame():
    """The runner's per-test header encoder gives the same JSON as ``encode_frame`` (and falls
    back to it for anything that is not a flat scalar)."""
    import json
    headers = [
        {"t": "test", "id": 7, "i": 0, "exit": None, "sig": 9, "cpu": 1e-05, "wall": 2.5, "rss_kb": 123,
         "kill": "wall", "out_over": False, "res_over": True, "setup_ok": True, "oom": False},
        {"t": "test", "i": 3, "exit": 0, "sig": None, "cpu": 0.0, "wall": 1e16, "rss_kb": 0, "kill": None},
        {"t": "done", "id": 1, "ran": 2, "killed": None, "runner_exit": 0, "runner_sig": None},
        {"t": "ready", "facts": {"root": True}, "pid": 1},  # nested: fallback
        {"t": "x", "msg": "a \"quoted\" text\n"},  # not an identifier: fallback
        {"t": "x", "v": float("inf")},  # not finite: fallback
        {"t": "x", "v": True, 1: 2},
    ]
    for h in headers:
        for blobs in ([], [b"ab", memoryview(b"xyz"), bytearray(b""), memoryview(bytearray(b"q"))]):
            got, ref = encode_flat_frame(h, blobs), encode_frame(h, blobs)
            assert got[0] == ref[0] and json.loads(got[1]) == json.loads(ref[1])
            assert [bytes(b) for b in got[2:]] == [bytes(b) for b in ref[2:]]
    r, w = os.pipe()
    big = memoryview(bytearray(os.urandom(200_000)))
    t = threading.Thread(target=lambda: write_all(w, encode_flat_frame(headers[0], [b"", big, b"x" * 70_000])))
    t.start()
    header, blobs = read_frame(r, deadline=None)
    t.join()
    os.close(r)
    os.close(w)
    assert header["sig"] == 9 and header["kill"] == "wall" and blobs == [b"", bytes(big), b"x" * 70_000]


def test_protocol_works_with_fd_numbers_above_1024():
    import resource as _r
    soft, hard = _r.getrlimit(_r.RLIMIT_NOFILE)
    if hard != _r.RLIM_INFINITY and hard < 1100:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 1100")
    if soft < 1100:
        _r.setrlimit(_r.RLIMIT_NOFILE, (1100 if hard == _r.RLIM_INFINITY else min(hard, 4096), hard))
    r, w = os.pipe()
    hi_r, hi_w = os.dup2(r, 1050), os.dup2(w, 1051)
    os.close(r)
    os.close(w)
    try:
        write_all(hi_w, encode_frame({"t": "x"}, [b"payload"]))
        import time
        header, blobs = read_frame(hi_r, deadline=time.monotonic() + 5)
        assert header["t"] == "x" and blobs == [b"payload"]
    finally:
        os.close(hi_r)
        os.close(hi_w)
        _r.setrlimit(_r.RLIMIT_NOFILE, (soft, hard))


def test_memory_cgroup_v2_in_a_delegated_subtree(tmp_path, monkeypatch):
    """cgroup v2 without root: the worker cgroup goes under our own (delegated) cgroup when the
    memory controller is enabled there or can be; otherwise None (the rlimit fallback)."""
    from gasp_jax.sandbox import cgroups

    own = tmp_path / "user.slice" / "app.scope"
    own.mkdir(parents=True)
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.subtree_control").write_text("memory\n")
    monkeypatch.setattr(cgroups, "V2_ROOTS", (str(tmp_path),))
    monkeypatch.setattr(cgroups, "_own_cgroup", lambda c: None if c else "/user.slice/app.scope")
    path = cgroups.create("gasp_sandbox_1_0", 123 << 20)
    assert path == str(own / "gasp_sandbox_1_0")
    assert (own / "gasp_sandbox_1_0" / "memory.max").read_text() == str(123 << 20)
    # From the trainer leaf (moved there to enable the controller), workers still go beside it.
    monkeypatch.setattr(cgroups, "_own_cgroup", lambda c: None if c else "/user.slice/app.scope/gasp_trainer")
    assert cgroups.create("gasp_sandbox_1_1", 1 << 20) == str(own / "gasp_sandbox_1_1")
    (own / "cgroup.controllers").write_text("cpu pids\n")  # no memory controller delegated
    (own / "cgroup.subtree_control").write_text("")
    assert cgroups.create("gasp_sandbox_1_2", 1 << 20) is None and not (own / "gasp_sandbox_1_2").exists()
