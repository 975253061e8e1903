"""LCB jobs under 2 real `jax.distributed` processes on CPU (4 faked devices each) equal 1 process (8 devices)."""

import json
import os
import sys
from pathlib import Path

import pytest

from gasp_jax import multihost
from gasp_jax.data import paths
from gasp_jax.evaluation import eval_job, goalposts
from tests.test_lcb_jobs import IDS, SAMPLE, FakeGenerator, IdTemplater, eval_config, fake_grader, goal_config

REPO = Path(__file__).resolve().parents[1]

PLAN = {"2777": 4, "abc301_a": 2, "abc301_b": 0, "2779": 1, "abc302_a": (1, 2), "abc302_b": 0}

# Runs the LCB jobs with the fake generator, and a grader that records which process graded what.
_FAKE_WORKER = r"""
import json, os, sys
from gasp_jax import multihost
multihost.maybe_initialize()
from gasp_jax.data import paths
from tests.test_lcb_jobs import SAMPLE, FakeGenerator, IdTemplater, eval_config, fake_grader, goal_config
from gasp_jax.evaluation import eval_job, goalposts
workdir, plan = sys.argv[1], json.loads(sys.argv[2])
rows = [json.loads(l) for l in paths.open_text(SAMPLE)]
statements = {r["question_content"]: r["question_id"] for r in rows}
graded = []
def grader(problem, tests, codes):
    graded.append(problem.id)
    return fake_grader(problem, tests, codes)
tok = IdTemplater(statements)
report = eval_job.run(eval_config(None), workdir, generate_fn=FakeGenerator(plan), tokenizer=tok, grader=grader)
def must_not_run(prompts, n):
    raise AssertionError("resumed run sampled a finished problem")
again = eval_job.run(eval_config(None), workdir, generate_fn=must_not_run, tokenizer=tok, grader=grader)
cfg = eval_config(None)
cfg.sampling.temperature = 0.5
try:
    eval_job.run(cfg, workdir, generate_fn=must_not_run, tokenizer=tok, grader=grader)
    mismatch = None
except ValueError as e:
    mismatch = str(e)
goal = goalposts.run(goal_config(), workdir + "_goal", generate_fn_factory=lambda c: (FakeGenerator({"2777": 1}), tok), grader=grader)
print("RESULT " + json.dumps({"report": report, "again": again["pass_at_k"], "graded": graded, "mismatch": mismatch, "goal": goal["goalpost_ids"]}))
"""


def _results(outputs):
    res = []
    for rc, out in outputs:
        assert rc == 0, out[-4000:]
        res.append(json.loads([l for l in out.splitlines() if l.startswith("RESULT ")][-1][len("RESULT "):]))
    return res


def _drop_timing(report):
    return {k: v for k, v in report.items() if k not in ("elapsed_s", "report_path")}


def test_lcb_jobs_shard_grading_and_write_once(tmp_path):
    outputs = multihost.run_local_processes(
        [sys.executable, "-c", _FAKE_WORKER, str(tmp_path / "two"), json.dumps(PLAN)], 2,
        devices_per_process=1, timeout=120, cwd=str(REPO),
    )
    r0, r1 = _results(outputs)
    # Each process graded a disjoint share (its half of each batch of 4 problems), together all of them.
    assert not set(r0["graded"][:3]) & set(r1["graded"][:3]) and sorted(r0["graded"][:3] + r1["graded"][:3]) == sorted(IDS)
    # Same report on both processes, equal to one process's; resume and the settings check agree too.
    rows = [json.loads(l) for l in paths.open_text(SAMPLE)]
    tok = IdTemplater({r["question_content"]: r["question_id"] for r in rows})
    one = eval_job.run(eval_config(None), str(tmp_path / "one"), generate_fn=FakeGenerator(PLAN), tokenizer=tok, grader=fake_grader)
    assert _drop_timing(r0["report"]) == _drop_timing(r1["report"]) == json.loads(json.dumps(_drop_timing(one)))
    assert r0["again"] == r1["again"] == one["pass_at_k"]
    assert r0["mismatch"] and r0["mismatch"] == r1["mismatch"] and "different settings" in r0["mismatch"]
    # Only process 0 wrote: one record per problem (not one per process).
    lines = (tmp_path / "two" / "samples.jsonl").read_text().splitlines()
    assert sorted(json.loads(l)["question_id"] for l in lines) == sorted(IDS)
    goal_one = goalposts.run(
        goal_config(), str(tmp_path / "goal_one"), generate_fn_factory=lambda c: (FakeGenerator({"2777": 1}), tok), grader=fake_grader
    )
    assert r0["goal"] == r1["goal"] == goal_one["goalpost_ids"]


@pytest.mark.slow  # ~35 s of CPU for two compiling processes plus the 1-process reference
def test_lcb_eval_smoke_two_processes_equal_one(tmp_path):
    """The real job (random-weight tiny model, sampler over a global 8-device mesh, sandbox grading)."""
    args = [
        "--config=configs/lcb_eval.py:smoke", "--config.use_mesh=True", "--config.sandbox.workers=1",
        "--config.sampling.max_new_tokens=8",
    ]
    outputs = multihost.run_local_processes(
        [sys.executable, "-m", "gasp_jax.main", f"--workdir={tmp_path / 'two'}", *args], 2,
        devices_per_process=4, timeout=240, cwd=str(REPO),
    )
    for rc, out in outputs:
        assert rc == 0, out[-4000:]
        assert "process 0/2" in out or "process 1/2" in out
    from tests.test_lcb_jobs import load_config

    cfg = load_config("lcb_eval", "smoke")
    cfg.use_mesh, cfg.sandbox.workers, cfg.sampling.max_new_tokens = True, 1, 8
    eval_job.run(cfg, str(tmp_path / "one"))

    def records(d):
        return sorted((json.loads(l) for l in (tmp_path / d / "samples.jsonl").read_text().splitlines()), key=lambda r: r["question_id"])

    one, two = records("one"), records("two")
    assert len(two) == len(one) == 4  # written once, not once per process
    assert [(r["question_id"], r["completions"], r["grades"]) for r in two] == [
        (r["question_id"], r["completions"], r["grades"]) for r in one
    ]
    rep_one = json.loads((tmp_path / "one" / "report.json").read_text())
    rep_two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert rep_two["pass_at_k"] == rep_one["pass_at_k"] and rep_two["samples"] == rep_one["samples"]
    assert os.listdir(tmp_path / "two" / "tensorboard")
