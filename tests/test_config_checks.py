"""One validator helper: every config check says `<where>.<key>: <what is wrong>` in one line."""

from __future__ import annotations

import pytest

from gasp_jax import rl, warmstart
from gasp_jax.config_checks import ConfigError, checker
from gasp_jax.rlvr import source as rlvr_source
from gasp_jax.selfplay import trainer


def test_checker_names_the_key():
    need = checker("sources.lcb.")
    need(True, "group_by", "never raised")
    with pytest.raises(ConfigError, match=r"^sources\.lcb\.group_by: must be one of") as e:
        need(False, "group_by", "must be one of ('problem', 'source')")
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def test_every_validator_uses_it():
    c = rl.default_config()
    c.optimizer.learning_rate = 0.0
    with pytest.raises(ConfigError, match=r"^rl\.optimizer\.learning_rate: must be > 0, got 0.0$"):
        rl.validate_config(c)
    ws = warmstart.default_config()
    ws.steps = 0
    with pytest.raises(ConfigError, match=r"^warmstart\.steps: must be >= 1, got 0$"):
        warmstart.validate_config(ws)
    block = rlvr_source.default_config()
    block.group_by = "nope"
    with pytest.raises(ConfigError, match=r"^sources\.lcb\.group_by: must be one of"):
        rlvr_source.LcbSettings.from_config(block, "lcb")
    assert trainer.ConfigError is ConfigError
