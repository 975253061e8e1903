"""Source registry: a config's `sources.<name>` blocks -> `RolloutSource` instances.

Each block has `type` (a key of `SOURCE_TYPES` or a `"package.module:Class"` path), `every` and `start`
(the source collects on iterations `step >= start` with `(step - start) % every == 0`: the mix rule),
plus its own fields. Classes are constructed as `Cls(name, block, run_config)`.
"""

from __future__ import annotations

import importlib

import ml_collections

SOURCE_TYPES = {
    "azr": "gasp_jax.selfplay.azr:SelfPlaySource",
    "gasp": "gasp_jax.gasp.source:GaspSource",
    "lcb_rlvr": "gasp_jax.rlvr.source:LcbSource",
}


# Classes that moved; configs written before keep working.
MOVED = {"gasp_jax.rlvr.evaluation:PeriodicEval": "gasp_jax.evaluation.periodic:PeriodicEval"}


def resolve(path_or_name: str):
    """A class from a registry name or a `"package.module:Class"` path (ValueError naming it otherwise)."""
    path = SOURCE_TYPES.get(path_or_name, MOVED.get(path_or_name, path_or_name))
    if ":" not in path:
        raise ValueError(f"unknown source type {path_or_name!r}; known: {', '.join(sorted(SOURCE_TYPES))} "
                         "(or give 'package.module:Class')")
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"source type {path_or_name!r} -> {path}: {e}") from e


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
