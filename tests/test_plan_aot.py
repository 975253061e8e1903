"""`python -m gasp_jax.plan --compile`: one iteration's programs compiled by XLA's TPU compiler for a TPU
topology that is not present (libtpu, no TPU), and the hand estimate next to XLA's numbers."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from gasp_jax import aot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="libtpu is not installed (pip install -e .[tpu]; launch/test.sh installs it)")

# The tiny model on 4 chips as fsdp 2 x tensor 2, with short prompts and few rows (compiles in seconds).
TINY = ("configs/azr.py:tiny,model.preset=tiny,mesh.fsdp=2,mesh.tensor=2,prompts.token_budget=48,"
        "sampling.max_new_tokens=16,sources.azr.propose_per_kind=2,sources.azr.solve_per_kind=2,"
        "sources.azr.learnability_samples=2")
# The hand estimate may miss XLA's temporaries (fusion buffers, collectives' scratch) by at most this factor.
ESTIMATE_FACTOR = 4.0


def run_plan(config: str, *flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "gasp_jax.plan", f"--config={config}", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "report.json"
    proc = run_plan(TINY, "--accelerator=v5p-8", "--compile", f"--report={path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(path.read_text()), proc.stdout


def test_report_contract_on_a_4_chip_topology(tiny_report):
    report, stdout = tiny_report
    for key in ("accelerator", "device_kind", "num_devices", "num_slices", "hbm_bytes_per_device", "mesh", "programs",
                "peak_bytes_per_device", "fits", "estimate"):
        assert key in report, key
    assert report["device_kind"].startswith("TPU") and report["num_devices"] == 4
    assert report["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2} and report["fits"] is True
    assert {"update", "reshard", "unstack", "prefill", "decode"} <= set(report["programs"])
    for name, p in report["programs"].items():
        for key in ("argument_bytes", "output_bytes", "temp_bytes", "alias_bytes", "generated_code_bytes", "peak_bytes",
                    "flops", "bytes_accessed", "xla_estimated_seconds"):
            assert key in p, (name, key)
        assert p["peak_bytes"] > 0, name
    assert all(report["programs"][name]["flops"] > 0 for name in ("update", "prefill", "decode"))
    # The decode chunk donates its slot state: XLA aliases it instead of holding a second cache.
    assert report["programs"]["decode"]["alias_bytes"] > 0
    worst = max(p["peak_bytes"] + p["resident_bytes"] for p in report["programs"].values())
    assert report["peak_bytes_per_device"] == worst
    assert "update" in stdout and "peak per device (XLA)" in stdout and "hand estimate" in stdout


def test_update_shards_every_large_weight(tiny_report):
    # fsdp x tensor: every weight and optimizer moment of >= 4096 elements is split, none replicated.
    report, _ = tiny_report
    assert report["programs"]["update"]["replicated_inputs"] == []
    assert report["state_bytes_per_device"] < report["programs"]["update"]["argument_bytes"] * 1.01


def test_hand_estimate_within_documented_factor_of_xla(tiny_report):
    report, _ = tiny_report
    xla, hand = report["peak_bytes_per_device"], report["estimate"]["total"]
    assert xla / ESTIMATE_FACTOR <= hand <= xla * ESTIMATE_FACTOR, (hand, xla)


def test_oversized_config_does_not_fit_and_exits_1(tmp_path):
    # A 2^28-token vocabulary: weights, moments and log-prob chunks far beyond a v5p chip's 95 GiB.
    path = tmp_path / "report.json"
    proc = run_plan(TINY + ",model.vocab_size=268435456", "--accelerator=v5p-8", "--compile", f"--report={path}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads(path.read_text())
    assert report["fits"] is False and report["peak_bytes_per_device"] > report["hbm_bytes_per_device"]
    assert "DOES NOT FIT" in proc.stdout


def test_bad_input_is_one_line():
    proc = run_plan(TINY, "--accelerator=v9x-8", "--compile")
    assert proc.returncode == 2 and "unknown accelerator 'v9x-8'" in proc.stderr.strip().splitlines()[-1]
    proc = run_plan(TINY.replace("mesh.fsdp=2", "mesh.fsdp=3"), "--accelerator=v5p-8", "--compile")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "v5p-8" in last and "'fsdp': 3" in last


def test_accelerator_names_map_to_topologies():
    assert aot.parse_accelerator("v5p-8").topology == "v5p:2x2x1"
    assert aot.parse_accelerator("v5p-128").topology == "v5p:4x4x4"
    assert aot.parse_accelerator("v5p-64").devices == 32
    assert aot.parse_accelerator("v4-16").topology == "v4:2x2x2"
    assert aot.parse_accelerator("v5litepod-16").topology == "v5e:4x4"
    assert aot.parse_accelerator("v6e-8").topology == "v6e:2x4"
    assert aot.parse_accelerator("v5p-8").hbm_bytes == 95 * 2**30
    with pytest.raises(aot.AotError, match="power-of-two"):
        aot.parse_accelerator("v5p-24")
