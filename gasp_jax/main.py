"""The entry point: `python -m gasp_jax.main --config=configs/<file>.py[:arg] --workdir=DIR`.

The config's `job` field picks what runs; each job module exposes `run(config, workdir) -> dict`.
Any config field can be overridden on the command line: `--config.model.dtype=bfloat16`; an unknown key
or a bad value (flag or `key=value` arg) is one `error:` line naming it, exit status 2.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import sys
from typing import NamedTuple

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

log = logging.getLogger("gasp_jax")


class Flags(NamedTuple):
    config: flags.FlagHolder
    workdir: flags.FlagHolder
    log_level: flags.FlagHolder


def define_flags() -> Flags:
    """The command line, defined only when this module runs as the program: absl flags are process-global,
    so defining them at import would stop another entry point (`gasp_jax.plan`) sharing the process."""
    return Flags(
        config=config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                               lock_config=True),
        workdir=flags.DEFINE_string("workdir", None, "Where logs, checkpoints and reports go."),
        log_level=flags.DEFINE_string("log_level", "INFO", "Python logging level."))


def run_job(config, workdir: str) -> dict:
    if config.job not in JOBS:
        raise ValueError(f"unknown job {config.job!r}; available: {', '.join(sorted(JOBS))}")
    runtime.initialize(config)
    module = importlib.import_module(JOBS[config.job])
    log.info("job %s -> %s", config.job, workdir)
    return module.run(config, workdir)


def main(argv, cli: Flags):
    del argv
    runtime.setup_logging(cli.log_level.value)
    if cli.config.value is None or cli.workdir.value is None:
        raise app.UsageError("--config and --workdir are required")
    try:
        summary = run_job(cli.config.value, cli.workdir.value)
    except DataUnavailableError as e:  # missing data file, or the LCB hub offline: what to do, in one line
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    log.info("done: %s", json.dumps(summary, default=str))


if __name__ == "__main__":
    app.run(functools.partial(main, cli=define_flags()),
            flags_parser=lambda argv: overrides.parse_flags(argv, ("config",)))
