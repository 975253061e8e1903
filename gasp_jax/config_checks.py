"""The one helper config validators use: each check names its key and says what is wrong, in one line."""

from __future__ import annotations

from collections.abc import Callable


class ConfigError(ValueError):
    """A config value that cannot work; the message is one line naming the key."""


def checker(prefix: str) -> Callable[[bool, str, str], None]:
    """`need = checker("sources.lcb.")`, then `need(ok, "group_by", "must be ...")` raises
    `ConfigError("sources.lcb.group_by: must be ...")` when `ok` is false. `prefix` says where the keys
    live ("config: " for a run's top level)."""

    def need(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{prefix}{key}: {message}")

    return need
