"""`python -m gasp_jax.protocol --experiment=configs/experiments/<file>.py[:arg] --workdir=DIR [--stages=...]`

Any experiment field can be overridden like a config: `--experiment.seeds=0,1 --experiment.budget.steps=2`.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import NamedTuple

from absl import app, flags
from ml_collections import config_flags

from gasp_jax import overrides, protocol, runtime

class Flags(NamedTuple):
    experiment: flags.FlagHolder
    workdir: flags.FlagHolder
    stages: flags.FlagHolder
    log_level: flags.FlagHolder


def define_flags() -> Flags:
    """The command line, defined only when this module runs as the program (absl flags are process-global)."""
    return Flags(
        experiment=config_flags.DEFINE_config_file("experiment", None, "An experiment file (configs/experiments/*.py).",
                                                   lock_config=True),
        workdir=flags.DEFINE_string("workdir", None, "Where runs, evaluations and the table go."),
        stages=flags.DEFINE_list("stages", list(protocol.STAGES), "Stages to run: train, eval, table."),
        log_level=flags.DEFINE_string("log_level", "INFO", "Python logging level."))


def main(argv, cli: Flags):
    del argv
    runtime.setup_logging(cli.log_level.value)
    if cli.experiment.value is None or cli.workdir.value is None:
        raise app.UsageError("--experiment and --workdir are required")
    try:
        out = protocol.run(cli.experiment.value, cli.workdir.value, stages=tuple(cli.stages.value))
    except protocol.ExperimentError as e:
        logging.getLogger("gasp_jax").error("experiment: %s", e)
        raise SystemExit(2) from None
    logging.getLogger("gasp_jax").info("protocol done: %s", json.dumps(out["runs"], default=str))
    if out["failures"]:  # every failure is named in the log above and in table1.md / table1.json
        raise SystemExit(f"error: protocol: {len(out['failures'])} failed: " +
                         "; ".join(f"{name}: {reason}" for name, reason in out["failures"].items()))


if __name__ == "__main__":
    app.run(functools.partial(main, cli=define_flags()),
            flags_parser=lambda argv: overrides.parse_flags(argv, ("experiment",)))
