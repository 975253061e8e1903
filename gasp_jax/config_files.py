"""Config files by path: the one loader for `configs/<file>.py[:arg]` outside the `--config` flag.

Config files are a leaf: they import the library, never the other way round. Library code that needs a
preset (benchmarks, the protocol, sweeps) names the file and loads it here, exactly as
`--config=<file>[:arg]` builds it. A relative path is looked up from the working directory, then from
the source tree this package sits in; the directory that holds the file's `configs/` folder goes on
`sys.path`, so files that share blocks (`from configs import common`) load from any working directory.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import ml_collections

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the checkout holding gasp_jax/ and configs/


class ConfigFileError(ValueError):
    """A config file that does not exist or cannot be built; one line naming it."""


def resolve(path: str) -> Path:
    """The config file `path` names (absolute, relative to the working directory, or to the source tree)."""
    candidates = [Path(path)] if Path(path).is_absolute() else [Path.cwd() / path, SOURCE_ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigFileError(f"config file {path} does not exist (looked in {', '.join(str(c.parent) for c in candidates)})")


def load(spec: str) -> ml_collections.ConfigDict:
    """`"configs/gasp.py:tiny,steps=4"` -> that file's `get_config("tiny,steps=4")` (no arg: `get_config()`)."""
    path, _, arg = spec.partition(":")
    file = resolve(path)
    root = next((p.parent for p in file.parents if p.name == "configs"), file.parent)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module_spec = importlib.util.spec_from_file_location(f"_gasp_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
