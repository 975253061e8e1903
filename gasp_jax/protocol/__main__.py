"""`python -m gasp_jax.protocol --experiment=configs/experiments/<file>.py[:arg] --workdir=DIR [--stages=...]`

Any experiment field can be overridden like a config: `--experiment.seeds=0,1 --experiment.budget.steps=2`.
"""

from __future__ import annotations

import json
import logging

from absl import app, flags
from ml_collections import config_flags

from gasp_jax import overrides, protocol, runtime

_EXPERIMENT = config_flags.DEFINE_config_file("experiment", None, "An experiment file (configs/experiments/*.py).",
                                              lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where runs, evaluations and the table go.")
_STAGES = flags.DEFINE_list("stages", list(protocol.STAGES), "Stages to run: train, eval, table.")
_LOG_LEVEL = flags.DEFINE_string("log_level", "INFO", "Python logging level.")


def main(argv):
    del argv
    runtime.setup_logging(_LOG_LEVEL.value)
    if _EXPERIMENT.value is None or _WORKDIR.value is None:
        raise app.UsageError("--experiment and --workdir are required")
    try:
        out = protocol.run(_EXPERIMENT.value, _WORKDIR.value, stages=tuple(_STAGES.value))
    except protocol.ExperimentError as e:
        logging.getLogger("gasp_jax").error("experiment: %s", e)
        raise SystemExit(2) from None
    logging.getLogger("gasp_jax").info("protocol done: %s", json.dumps(out["runs"], default=str))
    if out["failures"]:  # every failure is named in the log above and in table1.md / table1.json
        raise SystemExit(f"error: protocol: {len(out['failures'])} failed: " +
                         "; ".join(f"{name}: {reason}" for name, reason in out["failures"].items()))


if __name__ == "__main__":
    app.run(main, flags_parser=lambda argv: overrides.parse_flags(argv, ("experiment",)))
