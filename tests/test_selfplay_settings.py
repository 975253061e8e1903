"""The rollout blocks resolved once into typed settings, and the source / hook table of plain imports."""

import dataclasses

import jax
import ml_collections
import numpy as np
import pytest

from configs import common
from gasp_jax import tasks
from gasp_jax.gasp.source import GaspSource
from gasp_jax.rlvr.source import LcbSource
from gasp_jax.selfplay import azr, phases, sources
from gasp_jax.selfplay.buffers import identity_records
from gasp_jax.selfplay.policy import ScriptedPolicy
from gasp_jax.selfplay.settings import PromptOptions, RolloutSettings
from gasp_jax.selfplay.types import RolloutContext, Timers
from gasp_jax.tokenizer import build_byte_tokenizer


def test_settings_are_typed_frozen_and_read_from_the_blocks():
    c = common.base(steps=1)
    c.judge.n_visible = 3
    c.rewards.wrong = -0.25
    c.prompts.token_budget = 512
    s = RolloutSettings.from_config(c)
    assert isinstance(s.validation, tasks.ValidationConfig) and isinstance(s.judge, tasks.JudgeConfig)
    assert s.judge.n_visible == 3 and s.rewards.wrong == -0.25
    assert s.judge.program_limits == s.validation.limits  # a task's own program runs under validation limits
    assert s.prompts == PromptOptions(template=str(c.prompts.template), chat=bool(c.prompts.chat), token_budget=512)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.prompts = None


def test_phases_read_the_settings_not_the_config_dict():
    """A context whose ConfigDict has no rollout blocks still builds prompts and rewards from `settings`."""
    c = common.base(steps=1)
    c.judge.n_visible = 1
    settings = RolloutSettings.from_config(c)
    policy = ScriptedPolicy(build_byte_tokenizer(), lambda prompt, i: "")
    ctx = RolloutContext(step=0, rng=np.random.default_rng(0), key=jax.random.key(0),
                         policies={"teacher": policy, "student": policy}, sandbox=None, timers=Timers(),
                         config=ml_collections.ConfigDict(), source_config=ml_collections.ConfigDict(),
                         settings=settings)
    record = identity_records("induction")[0]
    [prompt] = phases.solve_prompts(ctx, [("induction", record)])
    expected = tasks.solve_prompt("induction", dict(record), n_visible=1, template=settings.prompts.template,
                                  chat=settings.prompts.chat, tokenizer=None, token_budget=None).text
    assert prompt == expected
    assert phases.prompt_kwargs(ctx)["template"] == str(c.prompts.template)


def test_context_without_settings_resolves_them_from_its_config():
    c = common.base(steps=1)
    policy = ScriptedPolicy(build_byte_tokenizer(), lambda prompt, i: "")
    ctx = RolloutContext(step=0, rng=np.random.default_rng(0), key=jax.random.key(0),
                         policies={"teacher": policy, "student": policy}, sandbox=None, timers=Timers(),
                         config=c, source_config=ml_collections.ConfigDict())
    assert ctx.settings == RolloutSettings.from_config(c)


def test_source_and_hook_names_map_to_imported_classes():
    assert sources.SOURCE_TYPES == {"azr": azr.AzrSource, "gasp": GaspSource, "lcb_rlvr": LcbSource}
    assert azr.SelfPlaySource is azr.AzrSource  # the old name still imports
    for path, cls in (("gasp_jax.selfplay.azr:SelfPlaySource", azr.AzrSource),
                      ("gasp_jax.evaluation.periodic:PeriodicEval", sources.periodic_eval),
                      ("gasp_jax.rlvr.evaluation:PeriodicEval", sources.periodic_eval),
                      ("tests.test_selfplay_settings:_Hook", _Hook)):
        assert sources.resolve(path) is cls
    with pytest.raises(ValueError, match="unknown source type 'azr2'"):
        sources.resolve("azr2")
    c = common.base(steps=1)
    c.hooks = ("tests.test_selfplay_settings:_Hook",)
    [hook] = sources.build_hooks(c, "/tmp/w")
    assert isinstance(hook, _Hook) and hook.workdir == "/tmp/w"


class _Hook:
    def __init__(self, config, workdir):
        self.workdir = workdir


def test_old_module_name_is_the_phases_module():
    from gasp_jax.selfplay import steps

    assert steps is phases  # one module object: patching either name patches what the sources call


def test_source_blocks_resolve_once_into_frozen_settings():
    """Each source's block is checked and typed at set-up; the source reads the settings, not the dict."""
    c = common.base(steps=1)
    block = azr.default_config()
    block.kinds, block.banned_modules, block.references = "deduction,induction", "os, sys", 3
    s = azr.AzrSettings.from_config(block, "azr")
    assert s.kinds == ("deduction", "induction") and s.banned_modules == ("os", "sys") and s.references == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.references = 4
    source = azr.AzrSource("azr", s, c)  # the settings object in place of the block
    assert source.settings is s and not hasattr(source, "config")
    block.solve_per_kind = 0
    with pytest.raises(ValueError, match=r"^sources.azr2.solve_per_kind must be positive, got 0$"):
        azr.AzrSource("azr2", block, c)
    block.solve_per_kind, block.kinds = 1, "deduction,sorting"
    with pytest.raises(ValueError, match=r"^sources.azr2.kinds: unknown task type\(s\) \['sorting'\]"):
        azr.AzrSettings.from_config(block, "azr2")  # the block's own name, not "azr"

    from gasp_jax.gasp.source import GaspSettings, default_config

    block = default_config()
    block.axes, block.student_kinds, block.eval.ks, block.dedup.threshold = "io", "deduction", "1,4", 0.9
    g = GaspSettings.from_config(block, "gasp")
    assert g.axes == ("io",) and g.student_kinds == ("deduction",) and g.eval.measure.ks == (1, 4)
    assert g.dedup.threshold == 0.9 and g.dedup.block is block.dedup  # the embedder builder's block
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.solve_batch = 1
    block.solve_groups = "per_kind"
    with pytest.raises(ValueError, match=r"^sources.g2.solve_groups: unknown value 'per_kind'") as e:
        GaspSettings.from_config(block, "g2")
    assert "\n" not in str(e.value)
