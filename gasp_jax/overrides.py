"""Dotted-key overrides of an ml-collections config (`rl.optimizer.learning_rate=1e-5`), checked.

One implementation for every place that takes overrides: config files' `key=value` args
(`configs/common.py`), sweep files (`gasp_jax.sweep`), experiment files (`gasp_jax.protocol`) and the
`--config.<key>=` / `--experiment.<key>=` flags of the entry points (`parse_flags`). A key must name an
existing field and the value must fit its type; either mistake is one line naming the key.
"""

from __future__ import annotations

import ast
import sys
from typing import Any, Mapping, Sequence

import ml_collections
from absl import flags


def unknown_key(config: ml_collections.ConfigDict, key: str, *, noun: str = "config key") -> str | None:
    """Why dotted `key` names no field of `config` (with the fields known where it stops), or None."""
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else "(not a block)"
            return f"unknown {noun} {key!r} (no field {'.'.join(parts[: i + 1])!r}; known here: {known})"
        node = node[part]
    return None


def parse_value(text: str) -> Any:
    """A `key=value` argument's value: a Python literal, else the bare word as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_arg(arg: str | None, *, presets: Sequence[str], default: str, where: str) -> tuple[str, dict]:
    """A config file's argument `"tiny,steps=4"` -> `("tiny", {"steps": 4})`; the preset (a bare word) is
    optional, an unknown one is a ValueError naming it and the known ones."""
    preset, overrides = default, {}
    for part in filter(None, (p.strip() for p in (arg or "").split(","))):
        if "=" in part:
            key, _, value = part.partition("=")
            overrides[key.strip()] = parse_value(value.strip())
        elif part in presets:
            preset = part
        else:
            raise ValueError(f"{where}: unknown preset {part!r}; known presets: {', '.join(presets)}")
    return preset, overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any], *, where: str,
                    noun: str = "config key") -> None:
    """Sets each dotted key of `overrides` in `config` (in place). Raises ValueError, prefixed by `where`,
    naming the first unknown key (and the fields known at that level) or the value that does not fit."""
    for key, value in overrides.items():
        problem = unknown_key(config, key, noun=noun)
        if problem:
            raise ValueError(f"{where}: {problem}")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad value {value!r} for {key!r}: {e}") from None


def parse_flags(argv: Sequence[str], config_flags: Sequence[str] = ("config",)) -> list[str]:
    """absl `flags_parser` for `app.run`: parses `argv`; any flag error is one line on stderr, exit 2.

    absl and ml_collections report a config file's `ValueError` with its traceback inside the message,
    and a `--config.<key>=` flag naming no field as a bare `KeyError` traceback; both become
    `error: <the reason>` naming the key."""
    try:
        rest = flags.FLAGS(list(argv))
        message = next(filter(None, (_load_error(flags.FLAGS[n]) for n in config_flags if n in flags.FLAGS)), None)
        if message is None:
            return rest
    except flags.Error as e:
        message = str(e)
        if "Error whilst parsing config file" in message:  # the config file's own error, without the trace
            message = " ".join(str(_innermost(e)).split())
    except (KeyError, AttributeError) as e:  # an override flag naming no field of its config
        message = _unknown_flag_key(argv, config_flags) or f"bad config override flag: {type(e).__name__}: {e}"
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _load_error(flag: Any) -> str | None:
    """A config file that could not be read (ml_collections defers the error to the first access)."""
    value = flag.value
    if value is None or isinstance(value, ml_collections.ConfigDict):
        return None
    path = flag.serialize().split("=", 1)[-1]
    return f"flag --{flag.name}: cannot read config file {path!r} (a configs/*.py path, relative to the working directory)"


def _innermost(e: BaseException) -> BaseException:
    """The first exception of a chain (what the config file itself raised)."""
    while (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__
    return e


def _unknown_flag_key(argv: Sequence[str], names: Sequence[str]) -> str | None:
    """`--<name>.<key>` flag naming no field: the message, from the config file reloaded by its flag."""
    args = list(argv[1:])
    for name in names:
        path = next((a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")), None)
        if path is None and f"--{name}" in args[:-1]:
            path = args[args.index(f"--{name}") + 1]
        if path is None:
            continue
        try:
            config = flags.FLAGS[name].parser.parse(path)
        except Exception:  # noqa: BLE001 - the config file's own error is reported by its flag
            return None
        for arg in args:
            if arg.startswith(f"--{name}."):
                key = arg[len(name) + 3:].split("=", 1)[0]
                problem = unknown_key(config, key)
                if problem:
                    return f"flag --{name}.{key}: {problem}"
    return None
