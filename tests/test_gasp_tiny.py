"""The GASP tiny preset end to end through `python -m gasp_jax.main` (trainer, sandbox, checkpoints),
then a resume: the curriculum file and the accepted-question buffer continue, never duplicated."""

import json

import pytest

from gasp_jax.evaluation.common import shared_data_dir
from tests.test_sandbox_support import CAN_ISOLATE

pytestmark = [
    pytest.mark.slow,  # compiles the tiny model's sampler and update: minutes on 2 shared cores
    pytest.mark.skipif(not (shared_data_dir() / "problems").exists(), reason="shared LCB sample data not present"),
]


def _config(steps: int):
    from configs import gasp as gasp_config

    # Random init instead of the cached warm start keeps the test's cost bounded and independent of it.
    c = gasp_config.get_config(f"tiny,steps={steps}")
    c.init.warmstart.enabled = False
    c.sources.gasp.eval.every = 2
    c.checkpoint.every = 2
    c.sandbox.allow_unsafe = not CAN_ISOLATE
    return c


def test_tiny_preset_runs_and_resumes(tmp_path):
    from gasp_jax import main

    summary = main.run_job(_config(2), str(tmp_path))
    assert summary["final_step"] == 2
    rows = [json.loads(line) for line in (tmp_path / "curriculum.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0] * 4 + [1] * 4  # 4 lemmas per iteration; a random-init teacher never gets one accepted, so no lifts
    report = json.loads((tmp_path / "goalposts_eval" / "step_000001.json").read_text())
    assert report["goalposts"] == 5 and set(report["per_goalpost"]) == {"3466", "3453", "3337", "3394", "3374"}
    metrics = [json.loads(line) for line in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    assert "gasp/lemma/accept_rate" in metrics[-1] and "gasp/goalposts/solved_count" in metrics[-1]

    # A second run with more steps resumes from step 2: steps 2-3 are appended once.
    summary = main.run_job(_config(4), str(tmp_path))
    assert summary["start_step"] == 2 and summary["final_step"] == 4
    rows = [json.loads(line) for line in (tmp_path / "curriculum.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [s for s in range(4) for _ in range(4)]
