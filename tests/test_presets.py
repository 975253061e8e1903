"""Every preset the README lists runs, and a config that does not fit its model fails at start-up.

Command-line errors (an unknown `--config.<key>` flag or `key=value` arg) are one line; the start-up
consistency check (KV cache vs the model's context, prompts + new tokens vs the cache) rejects a bad
config with one line before the warm start or any compile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from gasp_jax.protocol.experiment import REPO, flatten, load_config_file
from gasp_jax.selfplay import fit_check

SELFPLAY_PRESETS = ("configs/azr.py", "configs/gasp.py", "configs/rlvr.py", "configs/gasp_rlvr.py")
# What `configs/warmstart.py:quick` changes, except its model: the smokes train the presets' own model
# (same context and tokenizer, so a prompt that does not fit it fails here) for a few steps.
NOT_FROM_QUICK = ("job", "enabled", "model.", "measure.", "runtime.")


def quick_warmstart_changes(cache_dir: str) -> dict:
    """Dotted `init.warmstart` keys -> values: `configs/warmstart.py:quick`'s training, cached in `cache_dir`."""
    default, quick = flatten(load_config_file("configs/warmstart.py")), flatten(load_config_file("configs/warmstart.py:quick"))
    changes = {k: v for k, v in quick.items() if v != default.get(k) and not k.startswith(NOT_FROM_QUICK)}
    return {**changes, "cache_dir": cache_dir}


def quick_warmstart(block: ml_collections.ConfigDict, cache_dir: str) -> ml_collections.ConfigDict:
    """`block` (a preset's `init.warmstart`) trained like `configs/warmstart.py:quick`."""
    from gasp_jax import overrides

    block = block.copy_and_resolve_references()
    overrides.apply_overrides(block, quick_warmstart_changes(cache_dir), where="quick warm start")
    return block


def _main(*args: str, module: str = "gasp_jax.main", timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (("--config=configs/azr.py:tiny", "--config.sources.azr.referencez=2"),
     "error: flag --config.sources.azr.referencez: unknown config key 'sources.azr.referencez' (no field "
     "'sources.azr.referencez'; known here: "),
    (("--config=configs/azr.py:tiny,sources.azr.referencez=2",),
     "error: configs/azr.py: unknown argument 'sources.azr.referencez' (no field 'sources.azr.referencez'"),
    (("--config=configs/tiny_cpu.py", "--config.nope.x=1"), "error: flag --config.nope.x: unknown config key 'nope.x'"),
    (("--config=configs/azr.py:tiny", "--config.steps=many"), "error: flag --config.steps=many: invalid literal"),
    (("--config=configs/no_such_file.py",), "error: flag --config: cannot read config file 'configs/no_such_file.py'"),
])
def test_command_line_config_errors_are_one_line(tmp_path, args, message):
    out = _main(*args, f"--workdir={tmp_path}")
    assert out.returncode == 2 and out.stderr.startswith(message) and out.stderr.count("\n") == 1, out.stderr[-3000:]


def test_unknown_experiment_flag_is_one_line(tmp_path):
    out = _main("--experiment=configs/experiments/tiny_cpu.py", "--experiment.budget.stepz=1", f"--workdir={tmp_path}",
                module="gasp_jax.protocol")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr[-3000:]
    assert out.stderr.startswith("error: flag --experiment.budget.stepz: unknown config key 'budget.stepz'")
    assert not tmp_path.joinpath("experiment.json").exists()


def _smoke_config(path: str, cache_dir: str) -> ml_collections.ConfigDict:
    from tests.test_sandbox_support import CAN_ISOLATE

    c = load_config_file(f"{path}:tiny,steps=1")
    c.init.warmstart = quick_warmstart(c.init.warmstart, cache_dir)
    c.sandbox.allow_unsafe = not CAN_ISOLATE
    return c


@pytest.mark.parametrize("path", SELFPLAY_PRESETS)
def test_selfplay_tiny_preset_runs_one_iteration(tmp_path, warmstart_cache, path):
    """The README's `python -m gasp_jax.main --config=<path>:tiny` for one iteration (quick warm start of
    the preset's own model): set-up, the start-up check, sources, sampler, sandbox, update, evaluations
    due after the last iteration, checkpoint."""
    from gasp_jax import main

    summary = main.run_job(_smoke_config(path, warmstart_cache), str(tmp_path))
    assert summary["final_step"] == 1
    metrics = [json.loads(line) for line in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and any("/rl/" in k for k in metrics[0]), sorted(metrics[0])[:20]


@pytest.mark.parametrize("spec", ["configs/code_eval.py:humaneval,smoke", "configs/code_eval.py:mbpp_plus,smoke",
                                  "configs/warmstart.py:quick"])
def test_evaluation_and_warmstart_presets_run(tmp_path, warmstart_cache, spec):
    """The README's other presets (`lcb_eval:smoke` runs in tests/test_standalone.py, from a bare clone)."""
    from gasp_jax import main
    from tests.test_sandbox_support import CAN_ISOLATE

    c = load_config_file(spec)
    if c.job == "warmstart":
        c.cache_dir = warmstart_cache
        c.measure.allow_unsafe = not CAN_ISOLATE
    summary = main.run_job(c, str(tmp_path))
    if c.job == "warmstart":
        rates = json.loads((tmp_path / "rates.json").read_text())
        assert os.path.isfile(os.path.join(summary["path"], "config.json")) and rates, summary
    else:
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["problems"]["graded"] == report["problems"]["selected"] > 0, report["problems"]
        assert "pass@1" in report["pass_at_k"]["overall"]


def test_startup_check_rejects_a_cache_longer_than_the_context_in_one_line(tmp_path):
    """Before the warm start is trained and before any compile."""
    cache = tmp_path / "ws"
    out = _main("--config=configs/rlvr.py:tiny,sampling.max_cache_length=1280", f"--config.init.warmstart.cache_dir={cache}",
                f"--workdir={tmp_path / 'run'}")
    context = fit_check.model_spec(load_config_file("configs/rlvr.py:tiny")).context
    assert out.returncode != 0 and out.stderr.count("\n") == 1, out.stderr[-3000:]
    assert out.stderr.startswith(f"error: config: sampling.max_cache_length=1280 > the model's context {context} "
                                 "(max_position_embeddings of init.warmstart.model"), out.stderr
    # The warm start's host-only preparation ran (its tokenizer is the model's), its training did not.
    assert not list(cache.glob("*/config.json")) and not (tmp_path / "run" / "checkpoints").exists()


def test_startup_check_names_a_prompt_that_does_not_fit(tmp_path):
    """A named training problem's LCB prompt + the new tokens overflow the tiny model's cache: one line
    naming the problem, the keys and the numbers; the preset as shipped fits its model."""
    from gasp_jax.selfplay import sources

    c = load_config_file("configs/rlvr.py:tiny")
    context = fit_check.model_spec(c).context
    longest = fit_check.check_run(c, sources.build_sources(c))
    assert max(longest.values()) + int(c.sampling.max_new_tokens) <= context
    c.sources.lcb.prompt_style = "chat"
    c.sampling.max_new_tokens = context - 8
    with pytest.raises(ValueError, match=rf"^sources.lcb: LCB problem \(prompt_style='chat'\) \S+: \d+ prompt tokens "
                                         rf"\+ sampling.max_new_tokens={context - 8} = \d+ > the KV cache {context} "
                                         r"\(sampling.max_cache_length=0; = the context of init.warmstart.model"):
        fit_check.check_run(c, sources.build_sources(c))


EXPERIMENT_FILE = """\"\"\"configs/experiments/tiny_cpu.py with the changes of a test.\"\"\"
import json

import ml_collections

from gasp_jax.protocol.experiment import load_config_file

CHANGES = json.loads(%r)


def get_config(arg=None):
    c = load_config_file("configs/experiments/tiny_cpu.py")
    for key, value in CHANGES.items():
        node, parts = c, key.split(".")
        for part in parts[:-1]:
            if part not in node:
                node[part] = ml_collections.ConfigDict()
            node = node[part]
        node[parts[-1]] = tuple(value) if isinstance(value, list) else value
    return c
"""


def _tiny_experiment(path, cache_dir: str, **changes) -> str:
    """An experiment file: the tiny Table 1 with one seed, one iteration per method, the quick warm start."""
    base = {"seeds": [0], "budget.steps": 1,
            **{f"overrides.all.init.warmstart.{k}": v for k, v in quick_warmstart_changes(cache_dir).items()}}
    path.write_text(EXPERIMENT_FILE % json.dumps({**base, **changes}))
    return str(path)


class FailingSource:
    """A rollout source whose first collect raises: a run that fails after set-up, on every attempt."""

    def __init__(self, name, config, run_config):
        self.name = name

    def collect(self, ctx):
        raise RuntimeError("forced failure of the protocol test")

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_tiny_protocol_fills_every_cell(tmp_path, warmstart_cache):
    """The README's Table 1 command on the tiny experiment (every method, one seed, one iteration each):
    exit 0 and every cell of every row has all its seeds (n == of), nothing marked missing."""
    exp = _tiny_experiment(tmp_path / "experiment.py", warmstart_cache)
    out = _main(f"--experiment={exp}", f"--workdir={tmp_path / 'table1'}", module="gasp_jax.protocol", timeout=1800)
    assert out.returncode == 0, out.stderr[-4000:]
    t = json.loads((tmp_path / "table1" / "table1.json").read_text())
    assert [r["method"] for r in t["rows"]] == ["base", "azr", "rlvr", "gasp", "gasp_rlvr"]
    for row in t["rows"]:
        for key, cell in row["cells"].items():
            assert cell["n"] == cell["of"] == 1 and "missing" not in cell, (row["method"], key, cell)
    md = (tmp_path / "table1" / "table1.md").read_text()
    rows = [line.split("|")[4:-1] for line in md.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    assert len(rows) == 5 and "Missing cells" not in md and not any("—" in c for r in rows for c in r), md


def test_protocol_run_failure_exits_nonzero_with_the_reason_in_both_tables(tmp_path, warmstart_cache):
    """A run that fails on every attempt: the protocol goes on, then exits non-zero naming the run and its
    last error line in the console, table1.md and table1.json; its cells stay missing with that reason."""
    exp = _tiny_experiment(tmp_path / "experiment.py", warmstart_cache, methods=["base", "rlvr"], max_attempts=1,
                           **{"overrides.rlvr.sources.lcb.type": "tests.test_presets:FailingSource"})
    out = _main(f"--experiment={exp}", f"--workdir={tmp_path / 'table1'}", "--stages=train,table",
                module="gasp_jax.protocol", timeout=900)
    reason = "run failed: RuntimeError: forced failure of the protocol test"
    assert out.returncode != 0, out.stderr[-4000:]
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: protocol: 1 failed: rlvr/seed0: {reason}"), out.stderr[-4000:]
    md = (tmp_path / "table1" / "table1.md").read_text()
    assert f"- rlvr/seed0: {reason}" in md and f"Real-data RL (RLVR on LCB train), pass@1, seed 0: {reason}" in md, md
    t = json.loads((tmp_path / "table1" / "table1.json").read_text())
    assert t["failures"] == {"rlvr/seed0": [reason]}
    rlvr = next(r for r in t["rows"] if r["method"] == "rlvr")
    assert all(cell["n"] == 0 and cell["missing"] == {"0": reason} for cell in rlvr["cells"].values()), rlvr
