"""Sweeps: expansion (names, workdirs, overrides), validation before launch, a local 2-run sweep, status."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gasp_jax import sweep

REPO = Path(__file__).resolve().parents[1]


def write_sweep(tmp_path, body, name="s"):
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return path


def test_grid_expands_to_named_runs_with_their_own_workdirs(tmp_path):
    path = write_sweep(tmp_path, (
        'base = "configs/tiny_cpu.py"\n'
        'grid = {"rl.optimizer.learning_rate": [1e-3, 3e-3], "seed": [1, 2], "rl.loss.entropy_coef": [0.0]}\n'
        'fixed = {"steps": 5}\n'
        'short = {"rl.optimizer.learning_rate": "lr"}\n'
    ))
    runs = sweep.expand(sweep.load_sweep(path), tmp_path / "out")
    assert [r.name for r in runs] == ["0_lr=0.001,seed=1", "1_lr=0.001,seed=2", "2_lr=0.003,seed=1", "3_lr=0.003,seed=2"]
    assert [r.workdir for r in runs] == [str(tmp_path / "out" / r.name) for r in runs]
    assert runs[3].overrides == {"steps": 5, "rl.optimizer.learning_rate": 3e-3, "seed": 2, "rl.loss.entropy_coef": 0.0}
    assert runs[3].argv == (
        "--config=configs/tiny_cpu.py", f"--workdir={runs[3].workdir}", "--config.steps=5",
        "--config.rl.optimizer.learning_rate=0.003", "--config.seed=2", "--config.rl.loss.entropy_coef=0",
    )


def test_run_list_and_ambiguous_short_names(tmp_path):
    path = write_sweep(tmp_path, (
        'base = "configs/tiny_cpu.py:demo"\n'
        'runs = [{"model.dtype": "float32", "rl.optimizer.b1": 0.9}, {"model.dtype": "bfloat16", "rl.optimizer.b1": 0.8}]\n'
    ))
    names = [r.name for r in sweep.expand(sweep.load_sweep(path), tmp_path)]
    assert names == ["0_dtype=float32,b1=0.9", "1_dtype=bfloat16,b1=0.8"]
    path = write_sweep(tmp_path, 'base = "configs/tiny_cpu.py"\nruns = [{"model.dtype": "float32"}, {"model.param_dtype": "bfloat16"}]\n')
    # Same last component in two keys would be ambiguous: the labels keep more of the path.
    path2 = write_sweep(tmp_path, 'base = "configs/tiny_cpu.py"\ngrid = {"model.dtype": ["float32"], "rl.optimizer.b1": [0.9, 0.8]}\n', "t")
    assert [r.name for r in sweep.expand(sweep.load_sweep(path2), tmp_path)] == ["0_b1=0.9", "1_b1=0.8"]
    assert len(sweep.expand(sweep.load_sweep(path), tmp_path)) == 2


@pytest.mark.parametrize(
    "body,message",
    [
        ('grid = {"rl.optimizer.learnig_rate": [1e-3]}', "unknown config key 'rl.optimizer.learnig_rate'"),
        ('runs = [{"seed": 1}, {"nope.x": 2}]', "run 1: unknown config key 'nope.x'"),
        ('grid = {"steps": ["many"]}', "bad value 'many' for 'steps'"),
        ('grid = {"seed": []}', "non-empty lists"),
        ('grid = {"seed": [1]}\nruns = [{}]', "exactly one of"),
    ],
)
def test_bad_sweeps_fail_before_anything_launches(tmp_path, body, message):
    path = write_sweep(tmp_path, 'base = "configs/tiny_cpu.py"\n' + body + "\n")
    with pytest.raises(sweep.SweepError, match=message.replace("(", r"\(").replace("[", r"\[")):
        sweep.expand(sweep.load_sweep(path), tmp_path / "sw")
    assert not (tmp_path / "sw").exists()


def test_cli_reports_a_bad_sweep_and_launches_nothing(tmp_path):
    path = write_sweep(tmp_path, 'base = "configs/tiny_cpu.py"\ngrid = {"seed": [1], "rl.optimizer.learnig_rate": [1e-3]}\n')
    out = subprocess.run(
        [sys.executable, "-m", "gasp_jax.sweep", "launch", str(path), f"--sweep_dir={tmp_path / 'sw'}"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert out.returncode == 2 and "error: sweep s run 0: unknown config key 'rl.optimizer.learnig_rate'" in out.stderr
    assert "known here: b1, b2, eps, final_lr_fraction, learning_rate" in out.stderr
    assert not (tmp_path / "sw").exists() and "started" not in out.stdout


def test_workload_names_are_kubernetes_safe():
    assert sweep.workload_name("azr_paper_lr", "0_lr=5e-07") == "azr-paper-lr-0-lr-5e-07"
    name = sweep.workload_name("9x", "1_" + "y" * 80)
    assert name.startswith("s-9x-") and len(name) <= 40 and not name.endswith("-")


def test_local_two_run_sweep_runs_and_reports(tmp_path):
    """Two demo runs (forward pass + checkpoint + TensorBoard) side by side, then the status table."""
    path = write_sweep(tmp_path, 'base = "configs/tiny_cpu.py:demo"\ngrid = {"seed": [1, 2]}\n', "demo_seeds")
    sweep_dir = tmp_path / "sw"
    out = subprocess.run(
        [sys.executable, "-m", "gasp_jax.sweep", "launch", str(path), f"--sweep_dir={sweep_dir}", "--parallel=2"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["name"] for r in meta["runs"]] == ["0_seed=1", "1_seed=2"]
    for name in ("0_seed=1", "1_seed=2"):
        state = json.loads((sweep_dir / name / "state.json").read_text())
        assert state["state"] == "done" and state["rc"] == 0
        assert list((sweep_dir / name / "tb").iterdir())  # one TensorBoard run per sweep run, by name
    table = sweep.status_table(sweep_dir).splitlines()
    assert table[0].split()[:2] == ["run", "state"]
    assert [line.split()[:3] for line in table[1:]] == [["0_seed=1", "done", "0"], ["1_seed=2", "done", "0"]]
    # Relaunching resumes: finished runs are not run again.
    assert sweep.launch_local(sweep.expand(sweep.load_sweep(path), sweep_dir), parallel=2) == {}


@pytest.mark.slow  # two tiny self-play runs (random-init tiny model, 2 iterations each): minutes of CPU
def test_local_two_run_sweep_of_the_tiny_selfplay_preset(tmp_path):
    from tests.test_sandbox_support import CAN_ISOLATE

    path = write_sweep(tmp_path, (
        'base = "configs/azr.py:tiny"\n'
        'grid = {"seed": [0, 1]}\n'
        'fixed = {"steps": 2, "init.warmstart.enabled": False, "model.preset": "tiny", "sampling.max_new_tokens": 16,\n'
        '         "prompts.token_budget": 256, "sources.azr.propose_per_kind": 2, "sources.azr.solve_per_kind": 2,\n'
        f'         "sources.azr.learnability_samples": 2, "rl.logprob_chunk_size": 64, "sandbox.allow_unsafe": {not CAN_ISOLATE}}}\n'
    ), "azr_tiny")
    sweep_dir = tmp_path / "sw"
    out = subprocess.run(
        [sys.executable, "-m", "gasp_jax.sweep", "launch", str(path), f"--sweep_dir={sweep_dir}", "--parallel=2"],
        capture_output=True, text=True, cwd=REPO, timeout=1800,
    )
    assert out.returncode == 0, out.stdout + out.stderr + "".join(
        (sweep_dir / n / "run.log").read_text()[-3000:] for n in ("0_seed=0", "1_seed=1") if (sweep_dir / n / "run.log").exists())
    for name in ("0_seed=0", "1_seed=1"):
        rows = [json.loads(line) for line in open(sweep_dir / name / "tb" / "metrics.jsonl")]
        assert [r["step"] for r in rows] == [1, 2]
        assert json.load(open(sweep_dir / name / "summary.json"))["final_step"] == 2
    assert [line.split()[1] for line in sweep.status_table(sweep_dir).splitlines()[1:]] == ["done", "done"]
