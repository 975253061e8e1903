"""The tiny self-play preset for 2 iterations: 2 `jax.distributed` processes (4 CPU devices each) equal 1 process
(8 devices) with the same global batch: the same metrics, rewards and final params; only process 0 writes."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gasp_jax import multihost

REPO = Path(__file__).resolve().parents[1]

_WORKER = r"""
import sys
from gasp_jax import multihost
multihost.maybe_initialize()
from gasp_jax.selfplay import trainer
from tests.test_selfplay_trainer import tiny_config
trainer.train(tiny_config(steps=2), sys.argv[1])
"""

# Wall time, throughput, compile time and memory use differ between runs; everything else must agree.
_VOLATILE = ("time", "time/", "perf/", "memory/")


def _metrics(workdir):
    rows = [json.loads(line) for line in open(Path(workdir) / "tb" / "metrics.jsonl")]
    return [{k: v for k, v in r.items() if not k.startswith(_VOLATILE)} for r in rows]


def _final_params(config, workdir, out):
    from gasp_jax.models.safetensors_io import CheckpointDir
    from gasp_jax.selfplay import trainer

    trainer.export_policy(config, str(workdir), str(out))
    ckpt = CheckpointDir(str(out))
    return {name: ckpt.read(name) for name in ckpt.names()}


@pytest.mark.slow  # two processes compile the sampler and the update (minutes of CPU)
def test_tiny_selfplay_two_processes_equal_one(tmp_path):
    from gasp_jax.selfplay import trainer
    from tests.test_selfplay_trainer import tiny_config

    outputs = multihost.run_local_processes(
        [sys.executable, "-c", _WORKER, str(tmp_path / "two")], 2, devices_per_process=4, timeout=1500, cwd=str(REPO)
    )
    for rc, out in outputs:
        assert rc == 0, out[-4000:]
    config = tiny_config(steps=2)
    trainer.train(config, str(tmp_path / "one"))

    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["step"] for r in two] == [1, 2]  # written once (process 0), not once per process
    assert one[0].keys() == two[0].keys()
    for a, b in zip(one, two):
        for key in a:
            if isinstance(a[key], float):
                np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-6, err_msg=key)
            else:
                assert b[key] == a[key], key
    p1 = _final_params(config, tmp_path / "one", tmp_path / "one_hf")
    p2 = _final_params(config, tmp_path / "two", tmp_path / "two_hf")
    assert p1.keys() == p2.keys()
    for name in p1:
        np.testing.assert_allclose(np.asarray(p2[name], np.float32), np.asarray(p1[name], np.float32), rtol=1e-4, atol=1e-6, err_msg=name)
