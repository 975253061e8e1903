"""Every preset the README lists runs, and a config that does not fit its model fails at start-up.

Command-line errors (an unknown `--config.<key>` flag or `key=value` arg) are one line; the start-up
consistency check (KV cache vs the model's context, prompts + new tokens vs the cache) rejects a bad
config with one line before the warm start or any compile.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gasp_jax.protocol.experiment import REPO


def _main(*args: str, module: str = "gasp_jax.main") -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args, message", [
    (("--config=configs/azr.py:tiny", "--config.sources.azr.referencez=2"),
     "error: flag --config.sources.azr.referencez: unknown config key 'sources.azr.referencez' (no field "
     "'sources.azr.referencez'; known here: "),
    (("--config=configs/azr.py:tiny,sources.azr.referencez=2",),
     "error: configs/azr.py: unknown argument 'sources.azr.referencez' (no field 'sources.azr.referencez'"),
    (("--config=configs/tiny_cpu.py", "--config.nope.x=1"), "error: flag --config.nope.x: unknown config key 'nope.x'"),
    (("--config=configs/azr.py:tiny", "--config.steps=many"), "error: flag --config.steps=many: invalid literal"),
    (("--config=configs/no_such_file.py",), "error: flag --config: cannot read config file 'configs/no_such_file.py'"),
])
def test_command_line_config_errors_are_one_line(tmp_path, args, message):
    out = _main(*args, f"--workdir={tmp_path}")
    assert out.returncode == 2 and out.stderr.startswith(message) and out.stderr.count("\n") == 1, out.stderr[-3000:]


def test_unknown_experiment_flag_is_one_line(tmp_path):
    out = _main("--experiment=configs/experiments/tiny_cpu.py", "--experiment.budget.stepz=1", f"--workdir={tmp_path}",
                module="gasp_jax.protocol")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr[-3000:]
    assert out.stderr.startswith("error: flag --experiment.budget.stepz: unknown config key 'budget.stepz'")
    assert not tmp_path.joinpath("experiment.json").exists()
