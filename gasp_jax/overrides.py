"""Dotted-key overrides of an ml-collections config (`rl.optimizer.learning_rate=1e-5`), checked.

One implementation for every place that takes overrides as data: config files' `key=value` args
(`configs/common.py`), sweep files (`gasp_jax.sweep`) and experiment files (`gasp_jax.protocol`). A key
must name an existing field and the value must fit its type, as `--config.<key>=` would demand.
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any], *, where: str,
                    noun: str = "config key") -> None:
    """Sets each dotted key of `overrides` in `config` (in place). Raises ValueError, prefixed by `where`,
    naming the first unknown key (and the fields known at that level) or the value that does not fit."""
    for key, value in overrides.items():
        node, parts = config, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else "(not a block)"
                raise ValueError(f"{where}: unknown {noun} {key!r} (no field {'.'.join(parts[: i + 1])!r}; "
                                 f"known here: {known})")
            if i < len(parts) - 1:
                node = node[part]
        try:
            node[parts[-1]] = value
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad value {value!r} for {key!r}: {e}") from None
