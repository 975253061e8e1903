"""The entry point: `python -m gasp_jax.main --config=configs/<file>.py[:arg] --workdir=DIR`.

The config's `job` field picks what runs; each job module exposes `run(config, workdir) -> dict`.
Any config field can be overridden on the command line: `--config.model.dtype=bfloat16`; an unknown key
or a bad value (flag or `key=value` arg) is one `error:` line naming it, exit status 2.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from gasp_jax import overrides, runtime
from gasp_jax.data.paths import DataUnavailableError

JOBS = {
    "demo": "gasp_jax.jobs.demo",
    "toy_rl": "gasp_jax.jobs.toy_rl",
    "lcb_eval": "gasp_jax.evaluation.eval_job",
    "lcb_goalposts": "gasp_jax.evaluation.goalposts",
    "code_eval": "gasp_jax.evaluation.code_eval",
    "selfplay": "gasp_jax.jobs.selfplay",
    "warmstart": "gasp_jax.jobs.warmstart",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where logs, checkpoints and reports go.")
_LOG_LEVEL = flags.DEFINE_string("log_level", "INFO", "Python logging level.")

log = logging.getLogger("gasp_jax")


def run_job(config, workdir: str) -> dict:
    if config.job not in JOBS:
        raise ValueError(f"unknown job {config.job!r}; available: {', '.join(sorted(JOBS))}")
    runtime.initialize(config)
    module = importlib.import_module(JOBS[config.job])
    log.info("job %s -> %s", config.job, workdir)
    return module.run(config, workdir)


def main(argv):
    del argv
    runtime.setup_logging(_LOG_LEVEL.value)
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("--config and --workdir are required")
    try:
        summary = run_job(_CONFIG.value, _WORKDIR.value)
    except DataUnavailableError as e:  # missing data file, or the LCB hub offline: what to do, in one line
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    log.info("done: %s", json.dumps(summary, default=str))


if __name__ == "__main__":
    app.run(main, flags_parser=lambda argv: overrides.parse_flags(argv, ("config",)))
