"""launch/ scripts: `bash -n`, shellcheck, `--dry_run` commands and quoting, missing tools, the memory plan."""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ["common.sh", "tpu_vm.sh", "xpk.sh", "gpu.sh", "slurm.sh", "slurm.sbatch", "local.sh"]
# Job arguments that need quoting on the way through ssh / xpk / sbatch.
JOB = ["--config=configs/azr.py:paper", "--workdir=/mnt/gcs/runs/a b", "--config.model.hf_path=/ckpt/it's here"]


def run_script(name, *args, env=None, skip_plan=True):
    full_env = dict(os.environ, **({"GASP_SKIP_PLAN": "1"} if skip_plan else {}), **(env or {}))
    return subprocess.run(
        ["bash", str(REPO / "launch" / name), *args], capture_output=True, text=True, env=full_env, cwd=REPO, timeout=120
    )


def commands(stdout):
    """The printed launch commands (`+ ...` lines but the local memory plan), split back as a shell would."""
    cmds = [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]
    return [c for c in cmds if "gasp_jax.plan" not in c]


@pytest.mark.parametrize("name", OURS)
def test_bash_syntax(name):
    subprocess.run(["bash", "-n", str(REPO / "launch" / name)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_shellcheck_clean():
    out = subprocess.run(["shellcheck", "-x", *[f"launch/{n}" for n in OURS]], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout


def test_tpu_vm_dry_run_commands_and_quoting():
    r = run_script(
        "tpu_vm.sh", "--dry_run", "--name", "my-slice", "--project", "proj", "--zone=us-east5-a",
        "--accelerator", "v5p-64", "--", *JOB,
    )
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    gcloud = [c for c in cmds if c[0] == "gcloud"]
    verbs = [c[4] for c in gcloud]
    assert verbs == ["describe", "create", "scp", "ssh", "ssh", "ssh"]  # reuse check, create, sync, install, run
    create = gcloud[1]
    assert {"--accelerator-type=v5p-64", "--zone=us-east5-a", "--project=proj", "my-slice"} <= set(create)
    assert all("--worker=all" in c for c in gcloud[2:])
    run_cmd = next(a for a in gcloud[-1] if a.startswith("--command="))[len("--command="):]
    remote = shlex.split(run_cmd)  # what the worker's shell sees
    main = remote.index("gasp_jax.main")
    assert remote[main + 1 : main + 1 + len(JOB)] == JOB  # arguments arrive intact on every worker
    assert "GASP_DISTRIBUTED=1" in remote
    assert any(c[0] == "tar" for c in cmds)


def test_tpu_vm_steps_delete_and_logs():
    r = run_script("tpu_vm.sh", "--dry_run", "--name", "s", "logs", "delete")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert [c[4] for c in cmds] == ["ssh", "delete"]
    assert "--worker=0" in cmds[0] and "--quiet" in cmds[1]


def test_missing_tool_is_a_clear_error_and_launches_nothing(tmp_path):
    # A PATH with bash's helpers but without gcloud / xpk / sbatch.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "date", "tr", "wc", "sed"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    env = {"PATH": str(bin_dir)}
    for script, args, tool in [
        ("tpu_vm.sh", ["--name", "x", "--", *JOB], "gcloud"),
        ("xpk.sh", ["--cluster", "c", "--docker_image", "i", "--", *JOB], "xpk"),
        ("slurm.sh", ["--", *JOB], "sbatch"),
    ]:
        r = subprocess.run(["/bin/bash", str(REPO / "launch" / script), *args], capture_output=True, text=True,
                           env=dict(env, GASP_SKIP_PLAN="1"), cwd=REPO, timeout=60)
        assert r.returncode == 2, (script, r.stdout, r.stderr)
        assert f"'{tool}' not found" in r.stderr and "Nothing was launched" in r.stderr
        assert not commands(r.stdout)


def test_xpk_dry_run():
    r = run_script("xpk.sh", "--dry_run", "--cluster", "c1", "--docker_image", "gcr.io/p/img:1", "--tpu_type", "v5p-128",
                   "--num_slices", "2", "--workload", "w1", "--", *JOB, "--config.mesh.dcn.data=2")
    assert r.returncode == 0, r.stderr
    (cmd,) = commands(r.stdout)
    assert cmd[:3] == ["xpk", "workload", "create"]
    assert {"--cluster=c1", "--workload=w1", "--tpu-type=v5p-128", "--num-slices=2", "--docker-image=gcr.io/p/img:1"} <= set(cmd)
    remote = shlex.split(next(a for a in cmd if a.startswith("--command="))[len("--command="):])
    assert remote[-len(JOB) - 1 :] == [*JOB, "--config.mesh.dcn.data=2"]
    assert run_script("xpk.sh", "--dry_run", "--", *JOB).returncode == 2  # no --cluster


def test_gpu_slurm_local_dry_runs():
    r = run_script("gpu.sh", "--dry_run", "--gpus", "0,1", "--", *JOB)
    assert r.returncode == 0, r.stderr
    (cmd,) = commands(r.stdout)
    assert "CUDA_VISIBLE_DEVICES=0,1" in cmd and cmd[-len(JOB):] == JOB and "gasp_jax.main" in cmd
    r = run_script("slurm.sh", "--dry_run", "--nodes", "4", "--partition", "a3", "--", *JOB)
    assert r.returncode == 0, r.stderr
    (cmd,) = commands(r.stdout)
    assert cmd[0] == "sbatch" and "--nodes=4" in cmd and "--partition=a3" in cmd
    assert cmd[-len(JOB) - 1].endswith("launch/slurm.sbatch") and cmd[-len(JOB):] == JOB
    r = run_script("local.sh", "--dry_run", "--processes", "2", "--devices_per_process", "4", "--", *JOB)
    (cmd,) = commands(r.stdout)
    assert cmd[1:5] == ["-m", "gasp_jax.multihost", "--processes=2", "--devices_per_process=4"] and cmd[-len(JOB):] == JOB


def test_plan_runs_before_launch_and_stops_a_job_that_cannot_fit():
    # The hand estimate (GASP_PLAN_COMPILE=0): XLA's compile of a 7B iteration takes minutes.
    r = run_script("tpu_vm.sh", "--dry_run", "--name", "x", "--accelerator", "v4-8", "--", "--config=configs/azr.py:paper",
                   "--workdir=/tmp/x", skip_plan=False, env={"GASP_PLAN_COMPILE": "0"})
    assert r.returncode == 2
    assert "DOES NOT FIT" in r.stdout and "nothing was launched" in r.stderr
    assert not [c for c in commands(r.stdout) if c[0] == "gcloud"]  # stopped before creating anything


def test_tpu_launchers_compile_the_iteration_when_libtpu_is_installed():
    import importlib.util

    r = run_script("tpu_vm.sh", "--dry_run", "--name", "x", "--accelerator", "v5p-8", "--", *JOB)
    (plan,) = [shlex.split(line[2:]) for line in r.stdout.splitlines() if line.startswith("+ ") and "gasp_jax.plan" in line]
    assert "--accelerator=v5p-8" in plan and ("--compile" in plan) == (importlib.util.find_spec("libtpu") is not None)
    r = run_script("tpu_vm.sh", "--dry_run", "--name", "x", "--accelerator", "v5p-8", "--", *JOB, env={"GASP_PLAN_COMPILE": "0"})
    assert "--compile" not in r.stdout
