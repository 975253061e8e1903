"""The protocol runner: bad experiments fail before anything runs, finished runs are never redone and
crashed ones are resumed, the table is built from reports only (gaps marked), and (slow) the tiny
protocol end to end through the CLI, killed mid-way and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gasp_jax import protocol
from gasp_jax.protocol import table, training
from gasp_jax.protocol.experiment import REPO, ExperimentError, build_plan, load_config_file

TINY = "configs/experiments/tiny_cpu.py"


def small(**changes):
    """The `small` tiny experiment with dotted-key changes."""
    exp = load_config_file(f"{TINY}:small")
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = exp
        for p in parents:
            node = node[p]
        node[leaf] = value
    return exp


@pytest.mark.parametrize("change, match", [
    ({"methods": ("base", "rlvr", "ppo")}, r"methods: unknown \['ppo'\]"),
    ({"overrides.all": {"rl": {"optimiser": {"lr": 1.0}}}}, r"overrides.all: unknown config key 'rl.optimiser.lr'"),
    ({"base.hf_path": "/nonexistent/ckpt"}, r"base.hf_path: '/nonexistent/ckpt' is not a local HF checkpoint"),
    ({"goalposts.ids": ("3374", "no_such_problem")}, r"goalposts: \['no_such_problem'\] not in"),
    ({"eval.lcb.overrides": {"sampling": {"nn": 3}}}, r"eval.lcb.overrides: unknown config key 'sampling.nn'"),
    ({"seeds": (0, 0)}, "seeds must be distinct"),
])
def test_bad_experiment_fails_before_anything_runs(tmp_path, change, match):
    exp = small(**change)
    with pytest.raises(ExperimentError, match=match):
        protocol.run(exp, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()  # nothing was written, let alone trained


def test_finished_runs_are_not_redone_and_crashed_runs_resume(tmp_path, monkeypatch):
    """The launcher is replaced by a recorder: seed 0 finishes, seed 1 crashes (no summary) on every
    attempt of the first invocation; the second invocation skips seed 0 and resumes seed 1."""
    exp = small()
    launched: list[str] = []
    crash = {"rlvr/seed1"}

    def fake_launch(spec, executor):
        launched.append(spec.name)
        assert (spec.workdir / "run_config.json").exists() and (spec.workdir / "run_config.py").exists()
        if spec.name in crash:
            (spec.workdir / "checkpoints").mkdir(exist_ok=True)
            return 1
        (spec.workdir / "summary.json").write_text(json.dumps({"final_step": int(spec.config.steps)}))
        return 0

    monkeypatch.setattr(training, "launch", fake_launch)
    out = protocol.run(exp, str(tmp_path), stages=("train", "table"))
    assert launched == ["rlvr/seed0", "rlvr/seed1", "rlvr/seed1"]  # max_attempts = 2
    assert out["runs"] == {"rlvr/seed0": {"finished": True, "final_step": 1},
                           "rlvr/seed1": {"finished": False, "final_step": None}}
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["rlvr/seed1"]["error"] == "exit status 1, no error line in train.log"
    assert out["failures"] == {"rlvr/seed1": "run failed: exit status 1, no error line in train.log"}
    md = (tmp_path / "table1.md").read_text()
    assert "Missing cells" in md and "no LCB report" in md  # nothing evaluated: every cell is a gap
    assert "seed 1: run failed: exit status 1" in md and "- rlvr/seed1: run failed: exit status 1" in md

    crash.clear()
    launched.clear()
    out = protocol.run(exp, str(tmp_path), stages=("train",))
    assert launched == ["rlvr/seed1"] and all(r["finished"] for r in out["runs"].values())
    # The resolved config is a normal job config: it loads back to the same run.
    cfg = load_config_file(str(tmp_path / "runs" / "rlvr" / "seed1" / "run_config.py"))
    assert cfg.seed == 1 and cfg.steps == 1 and cfg.sources.lcb.type == "lcb_rlvr"

    changed = small(**{"budget.steps": 3})
    with pytest.raises(ExperimentError, match="different experiment .*steps"):
        protocol.run(changed, str(tmp_path), stages=("train",))


def test_a_run_config_stored_with_zero_for_the_runs_sampling_values_still_resumes(tmp_path):
    """LCB sources once wrote temperature / max_new_tokens 0 for "the run's sampling value" (None now;
    0 is greedy): such a run directory is the same run, and its stored config is rewritten in today's form."""
    spec = build_plan(small(), tmp_path).runs[0]
    training.prepare(spec)
    path = spec.workdir / "run_config.json"
    stored = json.loads(path.read_text())
    assert stored["sources"]["lcb"]["temperature"] is None and stored["sources"]["lcb"]["max_new_tokens"] is None
    stored["sources"]["lcb"].update(temperature=0.0, max_new_tokens=0)
    path.write_text(json.dumps(stored))
    training.prepare(spec)
    assert json.loads(path.read_text())["sources"]["lcb"]["temperature"] is None
    stored["sources"]["lcb"].update(temperature=0.5)
    path.write_text(json.dumps(stored))
    with pytest.raises(ExperimentError, match="different experiment .*sources.lcb.temperature"):
        training.prepare(spec)


def test_last_error_line_of_a_run_log(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("\n=== 2026-01-01 attempt 1\nTraceback (most recent call last):\n  File x\nOSError: disk full\n"
                   "\n=== 2026-01-01 attempt 2\nI0101 step 1\nTraceback (most recent call last):\n  File y\n"
                   "ValueError: max_cache_length=1280 must be in [1, max_position_embeddings=1024]\n")
    assert training.last_error(log) == "ValueError: max_cache_length=1280 must be in [1, max_position_embeddings=1024]"
    log.write_text("\n=== attempt\nerror: config: sampling.max_cache_length=1280 > the model's context 1024\n")
    assert training.last_error(log) == "error: config: sampling.max_cache_length=1280 > the model's context 1024"
    log.write_text("\n=== attempt\nI0101 all good\n")
    assert training.last_error(log) is None and training.last_error(tmp_path / "absent.log") is None


def _write_report(root: Path, name: str, report: dict) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "report.json").write_text(json.dumps(report))


def test_table_from_reports_mean_std_goalposts_and_gaps(tmp_path):
    exp = small()
    exp.methods = ("base", "rlvr")
    plan = build_plan(exp, tmp_path)
    lcb = {0: (0.25, 0.5), 1: (0.75, 1.0)}
    for seed, (p1, p2) in lcb.items():
        root = table.eval_dir(plan, "rlvr", seed)
        _write_report(root, "lcb", {"pass_at_k": {"overall": {"pass@1": p1, "pass@2": p2}}})
        solved = {"3374": 1} if seed == 0 else {"3374": 2, "3395": 1}
        _write_report(root, "goalposts", {"per_problem": {g: {"correct": solved.get(g, 0)} for g in ("3374", "3395")}})
        _write_report(root, "humaneval", {"pass_at_k": {"overall": {"pass@1": 0.5}}})
    # The base row has LCB only; seed 1 of RLVR has no MBPP+ report, seed 0 has one.
    _write_report(table.eval_dir(plan, "base", None), "lcb", {"pass_at_k": {"overall": {"pass@1": 0.1, "pass@2": 0.2}}})
    _write_report(table.eval_dir(plan, "rlvr", 0), "mbpp_plus", {"pass_at_k": {"overall": {"pass@1": 0.3}}})
    # Goalposts solved during training: the periodic evaluation's history (seed 0) and GASP's own reports
    # (seed 1); ids outside the experiment's goalposts do not count.
    run0, run1 = (next(r for r in plan.runs if r.method == "rlvr" and r.seed == s).workdir for s in (0, 1))
    (run0 / "eval").mkdir(parents=True)
    (run0 / "eval" / "history.jsonl").write_text(
        json.dumps({"step": 2, "goalposts": {"solved": ["3395", "not_a_goalpost"]}}) + "\n")
    (run1 / "goalposts_eval").mkdir(parents=True)
    (run1 / "goalposts_eval" / "step_000002.json").write_text(json.dumps({"solved": ["3374"]}))
    t = table.write_table(plan)
    rows = {r["method"]: r for r in t["rows"]}
    union = rows["rlvr"]["cells"]["goalposts_union"]
    assert union["unique"] == 2 and union["per_seed"] == {"0": 2, "1": 2}
    assert union["solved_ids"]["0"] == ["3374", "3395"]
    cell = rows["rlvr"]["cells"]["lcb_pass@1"]
    assert cell["mean"] == pytest.approx(50.0) and cell["std"] == pytest.approx(35.3553, rel=1e-4) and cell["n"] == 2
    gp = rows["rlvr"]["cells"]["goalposts"]
    assert gp["unique"] == 2 and gp["per_seed"] == {"0": 1, "1": 2}
    assert rows["rlvr"]["cells"]["mbpp_plus_pass@1"]["n"] == 1
    assert rows["base"]["cells"]["humaneval_pass@1"]["n"] == 0
    md = (tmp_path / "table1.md").read_text()
    line = next(l for l in md.splitlines() if l.startswith("| Real-data RL"))
    assert "50.00 ± 35.36" in line and "75.00 ± 35.36" in line and "2 (1 / 2 per seed)" in line
    assert "2 (2 / 2 per seed)" in line and "goalposts solved at any evaluation (of 2)" in md
    assert "30.00 (n=1/2)" in line
    base = next(l for l in md.splitlines() if l.startswith("| Base model"))
    assert "10.00" in base and "—" in base
    assert "Base model, HumanEval pass@1, seed None: no humaneval report" in md
    assert json.loads((tmp_path / "table1.json").read_text())["rows"][1]["cells"]["lcb_pass@2"]["mean"] == pytest.approx(75.0)


def _cli(workdir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one CPU device per process, like the CLI outside tests
    return subprocess.Popen([sys.executable, "-m", "gasp_jax.protocol", f"--experiment={TINY}:small",
                             f"--workdir={workdir}", *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_tiny_protocol_end_to_end_killed_and_resumed(tmp_path):
    """The CLI on the `small` tiny experiment: killed once the first run has finished, then rerun; the
    finished run is not trained again and the table has every cell."""
    import jax

    from gasp_jax import models
    from gasp_jax.tokenizer import build_byte_tokenizer

    # A random tiny base checkpoint (the warm start is the CLI default; it is trained once and cached).
    model = models.build_model(models.get_preset("tiny", dtype="float32", param_dtype="float32"))
    models.save_hf(model, models.init_params(model, jax.random.key(0)), str(tmp_path / "base"),
                   tokenizer=build_byte_tokenizer())
    base = (f"--experiment.base.hf_path={tmp_path / 'base'}", "--experiment.base.warmstart=False")
    workdir = tmp_path / "table1"
    first = workdir / "runs" / "rlvr" / "seed0" / "summary.json"
    proc = _cli(workdir, *base)
    deadline = time.monotonic() + 1500
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    assert first.exists(), proc.communicate()[0][-4000:] if proc.poll() is not None else "timeout"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    launches0 = (workdir / "runs" / "rlvr" / "seed0" / "train.log").read_text().count("=== ")

    proc = _cli(workdir, *base)
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out[-4000:]
    assert "rlvr/seed0 finished earlier" in out
    assert (workdir / "runs" / "rlvr" / "seed0" / "train.log").read_text().count("=== ") == launches0 == 1
    t = json.loads((workdir / "table1.json").read_text())
    for row in t["rows"]:
        for key, cell in row["cells"].items():
            assert cell["n"] == cell["of"] and "missing" not in cell, (row["method"], key, cell)
    assert "Missing cells" not in (workdir / "table1.md").read_text()
    assert (workdir / "runs" / "rlvr" / "seed1" / "export" / "step_000001" / "config.json").exists()

    # A third invocation finds everything done: no training, no sampling.
    proc = _cli(workdir, *base)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0 and "already evaluated" in out and "starting" not in out


def test_a_rerun_waits_for_a_run_still_held_by_an_earlier_job(tmp_path):
    """A job left over from a killed protocol holds the run lock; launching the same run waits for it
    and, when that job finished the run meanwhile, does not start a second one."""
    exp = small()
    plan = build_plan(exp, tmp_path)
    spec = plan.runs[0]
    training.prepare(spec)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, json, os, sys, time\n"
        f"fd = os.open({str(spec.workdir / '.run.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(2)\n"
        f"open({str(spec.workdir / 'summary.json')!r}, 'w').write(json.dumps({{'final_step': {int(spec.config.steps)}}}))\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    t0 = time.monotonic()
    assert training.launch(spec, "subprocess") == 0
    assert time.monotonic() - t0 >= 1.0 and holder.wait(timeout=30) == 0  # it waited for the holder
    assert not (spec.workdir / "train.log").exists()  # and started nothing: the run was finished
    assert training.status(spec)["finished"]
