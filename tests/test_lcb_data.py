"""LCB loader: real sample files, private-test decoding, windows, dedupe, bad rows."""

import base64
import datetime as dt
import json
import os
import pickle
import shutil
import zlib

import pytest

from gasp_jax.data import DataError, DateWindow, LoadReport, Test, decode_private_tests, load_problems
from gasp_jax.data.livecodebench import iter_problems, load_problems_with_datasets, resolve_sources
from gasp_jax.data import paths

SAMPLE = paths.data_file(paths.LCB_PUBLIC_V5)
ENCODED = paths.data_file(paths.LCB_ENCODED_PRIVATE)
DECODED = paths.data_file(paths.LCB_DECODED_PRIVATE)
CUT = "2024-08-01"



def _rows(path=SAMPLE):
    with paths.open_text(path) as f:
        return [json.loads(line) for line in f]


def _write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def _encode(obj) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(obj))).decode()


def test_real_sample_split_601_279():
    before, after = LoadReport(), LoadReport()
    pre = load_problems(SAMPLE, window=DateWindow.of(end=CUT), report=before)
    post = load_problems(SAMPLE, window=DateWindow.of(start=CUT), report=after)
    # abc350_c (2024-04) has no tests in the sample: reported and skipped, never loaded.
    assert [s.problem_id for s in before.skipped] == ["abc350_c"]
    assert len(pre) + len(before.skipped) == 601
    assert len(post) == 279
    assert {p.id for p in pre}.isdisjoint({p.id for p in post})
    assert all(p.date < dt.datetime(2024, 8, 1) for p in pre)
    assert all(p.date >= dt.datetime(2024, 8, 1) for p in post)
    qwq = {json.loads(line)["question_id"] for line in paths.open_text(paths.data_file(paths.LCB_QWQ_WINDOW))}
    assert {p.id for p in post} == qwq


def test_problem_fields_both_types():
    problems = {p.id: p for p in load_problems(SAMPLE)}
    lc = problems["2777"]
    assert lc.platform == "leetcode" and lc.fn_name == "distinctDifferenceArray" and not lc.stdin
    assert lc.mode == "functional" and lc.starter_code.startswith("class Solution:")
    assert lc.tests[0] == Test("[1, 2, 3, 4, 5]", "[-3, -1, 1, 3, 5]", "functional")
    at = problems["abc301_a"]
    assert at.stdin and at.fn_name is None and at.starter_code == "" and at.mode == "stdin"
    assert all(t.testtype == "stdin" for t in at.tests)
    assert at.title and at.statement and at.difficulty in ("easy", "medium", "hard")
    assert at.date == dt.datetime.fromisoformat(next(r for r in _rows() if r["question_id"] == "abc301_a")["contest_date"])
    counts = {}
    for p in problems.values():
        counts[p.platform] = counts.get(p.platform, 0) + 1
        assert (p.fn_name is not None) == (p.platform == "leetcode")
    assert counts == {"leetcode": 381, "atcoder": 489, "codeforces": 9}


def test_1873A_private_tests_decode_to_shipped_json():
    (p,) = load_problems(ENCODED)
    expected = [Test(**t) for t in json.loads(DECODED.read_text())["private_test_cases_decoded"]]
    assert p.has_private_tests and list(p.private_tests) == expected
    assert p.tests[0] == p.public_tests[0] and len(p.tests) == 1 + len(expected)


def test_private_tests_lazy_from_jsonl_offset(tmp_path):
    row = json.loads(ENCODED.read_text())[0]
    path = _write_jsonl(tmp_path / "x.jsonl", [_rows()[0], row])
    p = [q for q in load_problems(path) if q.id == "1873_A"][0]
    assert p._private.path == str(path) and p._private.blob is None  # nothing decoded or held yet
    assert len(p.private_tests) == 4


def test_private_plain_json_and_empty():
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    assert decode_private_tests(json.dumps(tests)) == tests
    assert decode_private_tests(_encode(json.dumps(tests))) == tests
    assert decode_private_tests("") == [] and decode_private_tests(None) == []


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_refuses_globals_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    payload = _encode(_Boom(marker))
    pickle.loads(zlib.decompress(base64.b64decode(payload)))  # control: a plain unpickler runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(DataError, match="refus"):
        decode_private_tests(payload)
    assert not marker.exists()
    with pytest.raises(DataError, match="expected a JSON str"):
        decode_private_tests(_encode(42))


def test_private_size_cap_and_corruption():
    big = json.dumps([{"input": "x" * 100_000, "output": "y", "testtype": "stdin"}])
    with pytest.raises(DataError, match="size cap"):
        decode_private_tests(_encode(big), max_bytes=10_000)
    assert len(decode_private_tests(_encode(big), max_bytes=1_000_000)) == 1
    with pytest.raises(DataError):
        decode_private_tests("not base64 !!!")
    with pytest.raises(DataError, match="zlib"):
        decode_private_tests(base64.b64encode(b"not zlib").decode())
    truncated = base64.b64encode(zlib.compress(pickle.dumps(big))[:-20]).decode()
    with pytest.raises(DataError):
        decode_private_tests(truncated)


def test_undecodable_private_blob_raises_dataerror_on_access(tmp_path):
    row = dict(json.loads(ENCODED.read_text())[0], private_test_cases="eJxrYJmaz8gABhE")
    (p,) = load_problems(_write_jsonl(tmp_path / "bad.jsonl", [row]))
    assert p.public_tests  # the row loads (decoding is lazy) ...
    with pytest.raises(DataError):
        p.tests  # ... and the bad blob surfaces as a DataError the jobs report and skip


def test_bad_rows_reported_and_skipped(tmp_path):
    good = _rows()[:3]
    missing = {k: v for k, v in good[0].items() if k != "metadata"}
    bad_platform = dict(good[1], question_id="bp", platform="hackerrank")
    no_fn = dict(good[0], question_id="nofn", metadata="{}")  # functional tests without func_name
    bad_tests = dict(good[1], question_id="bt", public_test_cases="[{\"input\": 1}]")
    bad_date = dict(good[1], question_id="bd", contest_date="yesterday")
    dup = dict(good[2])
    path = _write_jsonl(tmp_path / "m.jsonl", [*good, "{not json", missing, bad_platform, no_fn, bad_tests, bad_date, dup, "[1, 2]"])
    report = LoadReport()
    problems = load_problems(path, report=report)
    assert sorted(p.id for p in problems) == sorted(r["question_id"] for r in good)
    assert len(problems) == 3 and report.duplicates == 1 and report.rows_read == 11
    ids = [s.problem_id for s in report.skipped]
    assert ids == ["<m.jsonl:4>", good[0]["question_id"], "bp", "nofn", "bt", "bd", "<m.jsonl:11>"]
    reasons = " | ".join(s.reason for s in report.skipped)
    for needle in ("not valid JSON", "missing field", "platform", "functional", "input", "bad date", "expected an object"):
        assert needle in reasons
    assert report.to_dict()["skipped"] == 7


def test_half_open_windows_partition_time_of_day_rows(tmp_path):
    base = _rows()[0]
    dates = ["2024-07-31T23:59:59", "2024-08-01T00:00:00", "2024-08-01T18:30:00", "2024-09-01T00:00:00"]
    rows = [dict(base, question_id=f"q{i}", contest_date=d) for i, d in enumerate(dates)]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    pre = load_problems(path, window=DateWindow.of(end=CUT))
    mid = load_problems(path, window=DateWindow.of(CUT, "2024-09-01"))
    post = load_problems(path, window=DateWindow.of(start="2024-09-01"))
    assert [p.id for p in pre] == ["q0"] and [p.id for p in mid] == ["q1", "q2"] and [p.id for p in post] == ["q3"]
    assert "2024-08-01T18:30:00" in [p.date.isoformat() for p in mid]  # LCB's inclusive end would drop it
    with pytest.raises(ValueError):
        DateWindow.of("2024-09-01", "2024-08-01")


def test_release_directory_resolution(tmp_path):
    rows = _rows()
    _write_jsonl(tmp_path / "test.jsonl", rows[:5])
    _write_jsonl(tmp_path / "test2.jsonl", rows[5:8] + rows[:1])  # one duplicate across files
    assert [p.name for p in resolve_sources(tmp_path)] == ["test.jsonl", "test2.jsonl"]
    assert [p.name for p in resolve_sources(tmp_path, release="release_v1")] == ["test.jsonl"]
    assert [p.name for p in resolve_sources(tmp_path, release="v2")] == ["test2.jsonl"]
    with pytest.raises(FileNotFoundError, match="test3.jsonl"):
        resolve_sources(tmp_path, release="release_v3")
    with pytest.raises(ValueError, match="unknown"):
        resolve_sources(tmp_path, release="release_v9")
    report = LoadReport()
    assert len(list(iter_problems(tmp_path, report=report))) == 8 and report.duplicates == 1


def test_datasets_path_matches_streaming(tmp_path):
    rows = _rows()[:40] + [json.loads(ENCODED.read_text())[0]]
    path = _write_jsonl(tmp_path / "s.jsonl", rows)
    streamed = load_problems(path)
    via_ds = load_problems_with_datasets(str(path), cache_dir=str(tmp_path / "cache"))
    assert [p.id for p in via_ds] == [p.id for p in streamed]
    assert all(a.tests == b.tests for a, b in zip(via_ds, streamed))
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
