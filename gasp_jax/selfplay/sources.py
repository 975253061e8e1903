"""A config's `sources.<name>` blocks -> `RolloutSource` instances, and its `hooks` -> after-step hooks.

Each source block has `type` (a key of `SOURCE_TYPES`), `every` and `start` (the source collects on
iterations `step >= start` with `(step - start) % every == 0`: the mix rule), plus its own fields.
Classes are constructed as `Cls(name, block, run_config)`, hooks as `Cls(run_config, workdir)`. The
tables below are plain imports; a `"package.module:Class"` path still names a class of one's own.
"""

from __future__ import annotations

import importlib

import ml_collections

from gasp_jax.evaluation.periodic import PeriodicEval
from gasp_jax.gasp.evaluation import GoalpostsSolved
from gasp_jax.gasp.source import GaspSource
from gasp_jax.rlvr.source import LcbSource
from gasp_jax.selfplay.azr import AzrSource

SOURCE_TYPES = {"azr": AzrSource, "gasp": GaspSource, "lcb_rlvr": LcbSource}


def periodic_eval(run_config: ml_collections.ConfigDict, workdir: str) -> PeriodicEval:
    """The periodic evaluation hook with GASP's goalposts-solved measure (the evaluation package does not
    import GASP; it is handed the measure here)."""
    return PeriodicEval(run_config, workdir, goalposts=GoalpostsSolved)


# Config names of the project's classes, the paths configs and checkpoints have used included.
KNOWN_PATHS = {
    "gasp_jax.selfplay.azr:AzrSource": AzrSource,
    "gasp_jax.selfplay.azr:SelfPlaySource": AzrSource,
    "gasp_jax.gasp.source:GaspSource": GaspSource,
    "gasp_jax.rlvr.source:LcbSource": LcbSource,
    "gasp_jax.evaluation.periodic:PeriodicEval": periodic_eval,
    "gasp_jax.rlvr.evaluation:PeriodicEval": periodic_eval,
}


def resolve(path_or_name: str):
    """A class from a `SOURCE_TYPES` name, a known path, or a `"package.module:Class"` path of one's own
    (ValueError naming it otherwise)."""
    known = SOURCE_TYPES.get(path_or_name) or KNOWN_PATHS.get(path_or_name)
    if known is not None:
        return known
    if ":" not in path_or_name:
        raise ValueError(f"unknown source type {path_or_name!r}; known: {', '.join(sorted(SOURCE_TYPES))} "
                         "(or give 'package.module:Class')")
    module, _, attr = path_or_name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"source type {path_or_name!r}: {e}") from e


def is_due(block: ml_collections.ConfigDict, step: int) -> bool:
    every, start = int(block.get("every", 1)), int(block.get("start", 0))
    return step >= start and (step - start) % every == 0


def build_sources(config: ml_collections.ConfigDict) -> dict:
    """`{name: source}` in the config's order; errors name the block."""
    blocks = config.get("sources", None)
    if not blocks:
        raise ValueError("config.sources is empty: give at least one source block (e.g. sources.azr)")
    out = {}
    for name, block in blocks.items():
        if "type" not in block:
            raise ValueError(f"sources.{name}: missing 'type'")
        if int(block.get("every", 1)) < 1 or int(block.get("start", 0)) < 0:
            raise ValueError(f"sources.{name}: every must be >= 1 and start >= 0")
        out[name] = resolve(block.type)(name, block, config)
    return out


def build_hooks(config: ml_collections.ConfigDict, workdir: str) -> list:
    """The config's after-step hooks, constructed in order."""
    return [resolve(path)(config, workdir) for path in config.get("hooks", ())]
