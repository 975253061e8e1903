"""Experiment files -> a validated plan: every training run's config and every evaluation's config.

An experiment file is a Python file with `get_config(arg)` (big_vision style) returning:

    name            label of the table
    methods         rows, in order: names of METHODS ("base" = the base checkpoint, untrained)
    seeds           seeds of every trained method (the table reports mean +- std over them)
    preset          the method configs' preset ("tiny" | "paper")
    budget.steps    training iterations of every run
    base.hf_path    the base checkpoint (a local HF directory) every run starts from, or
    base.warmstart  True: the method configs' cached warm start is the base (tiny CPU presets)
    goalposts.ids / goalposts.report   the goalposts (ids, or an lcb_goalposts goalposts.json); GASP
                    runs are guided by them and every checkpoint is scored on them
    overrides.<method | all>           nested dicts of run-config changes (`{"rl": {"optimizer": ...}}`)
    train_eval      add the periodic evaluation hook (gasp_jax.evaluation.periodic) to every run
    eval.<lcb | goalposts | humaneval | mbpp_plus>.enabled / .overrides   the final evaluations, each the
                    config of its job (configs/lcb_eval.py, configs/code_eval.py) changed by overrides
    eval.checkpoints  "final" | "all" (every saved checkpoint is evaluated; the table uses the final)
    eval.model.dtype / .use_mesh   how checkpoints are loaded for evaluation
    data.lcb / data.release   one LCB file or release directory for every LCB use (RLVR problems, GASP
                    goalposts, evaluations); "" = each config's default (the shipped public-test sample)
    executor, max_attempts, table.ks

`build_plan` checks everything before anything runs: an unknown method, config key or eval name, a
missing base checkpoint, data file or goalpost, a run or evaluation whose prompts + new tokens do not fit
its KV cache or model context (`selfplay.fit_check`) is one `ExperimentError` naming it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from gasp_jax import config_files
from gasp_jax import overrides as overrides_lib
from gasp_jax import warmstart as warmstart_lib
from gasp_jax.evaluation import periodic
from gasp_jax.evaluation.common import load_config_problems
from gasp_jax.selfplay import fit_check, trainer
from gasp_jax.selfplay import sources as sources_lib

REPO = Path(__file__).resolve().parents[2]


class ExperimentError(ValueError):
    """A bad experiment file or workdir; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    config_file: str | None  # None: no training (the base checkpoint itself)
    real_data: bool
    guidance: bool
    label: str


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("base", None, False, False, "Base model"),
    Method("azr", "configs/azr.py", False, False, "AZR (unguided self-play)"),
    Method("rlvr", "configs/rlvr.py", True, False, "Real-data RL (RLVR on LCB train)"),
    Method("gasp", "configs/gasp.py", False, True, "GASP"),
    Method("gasp_rlvr", "configs/gasp_rlvr.py", True, True, "GASP + Real-data RL"),
)}
EVALS = {
    "lcb": ("configs/lcb_eval.py", None),
    "goalposts": ("configs/lcb_eval.py", None),
    "humaneval": ("configs/code_eval.py", "humaneval"),
    "mbpp_plus": ("configs/code_eval.py", "mbpp_plus"),
}
EXECUTORS = ("subprocess", "inprocess")


@dataclasses.dataclass
class RunSpec:
    """One training run: a method at a seed, its resolved config and its directory."""

    method: str
    seed: int
    workdir: Path
    config: ml_collections.ConfigDict

    @property
    def name(self) -> str:
        return f"{self.method}/seed{self.seed}"


@dataclasses.dataclass
class Plan:
    experiment: ml_collections.ConfigDict
    workdir: Path
    runs: list[RunSpec]
    evals: dict[str, ml_collections.ConfigDict]  # name -> job config (model filled in per checkpoint)
    goalpost_ids: tuple[str, ...]
    base_hf_path: str  # "" with base.warmstart (resolved when the base is evaluated)
    warmstart: ml_collections.ConfigDict | None  # the shared warm-start block (base.warmstart)

    def runs_of(self, method: str) -> list[RunSpec]:
        return [r for r in self.runs if r.method == method]


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`path[:arg]` -> its `get_config(arg)` (`gasp_jax.config_files`, the one loader)."""
    try:
        return config_files.load(spec)
    except config_files.ConfigFileError as e:
        raise ExperimentError(str(e)) from None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts / ConfigDicts -> `{"a.b.c": value}`."""
    items = tree.items() if isinstance(tree, (Mapping, ml_collections.ConfigDict)) else []
    out: dict[str, Any] = {}
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (Mapping, ml_collections.ConfigDict)):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def apply_overrides(config: ml_collections.ConfigDict, overrides: Any, *, where: str) -> None:
    """Sets each dotted key of a nested override tree, which must exist in `config` (-> ExperimentError)."""
    try:
        overrides_lib.apply_overrides(config, flatten(overrides), where=where)
    except ValueError as e:
        raise ExperimentError(str(e)) from None


def _goalpost_ids(exp: ml_collections.ConfigDict) -> tuple[str, ...]:
    g = exp.goalposts
    if g.get("report"):
        path = Path(g.report)
        if not path.is_file():
            raise ExperimentError(f"goalposts.report {g.report} does not exist (run the lcb_goalposts job first)")
        return tuple(json.loads(path.read_text())["goalpost_ids"])
    return tuple(g.get("ids", ()) or ())


def _lcb_data(exp: ml_collections.ConfigDict) -> tuple[str, str]:
    """`data.lcb` (an LCB file or release directory; "" = each config's default) and `data.release`."""
    data = exp.get("data", ml_collections.ConfigDict())
    lcb = str(data.get("lcb", "") or "")
    if lcb and not os.path.exists(lcb):
        raise ExperimentError(f"data.lcb {lcb} does not exist")
    return lcb, str(data.get("release", "") or "")


def _check_hf_dir(path: str, key: str) -> None:
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ExperimentError(f"{key}: {path!r} is not a local HF checkpoint directory (no config.json)")


def run_config(exp: ml_collections.ConfigDict, method: str, seed: int, goalposts: tuple[str, ...]) -> ml_collections.ConfigDict:
    """The resolved config of one training run."""
    m = METHODS[method]
    where = f"{m.config_file} ({method}, seed {seed})"
    try:
        c = load_config_file(f"{m.config_file}:{exp.preset}")
    except ValueError as e:
        raise ExperimentError(f"{where}: {e}") from None
    c.seed = int(seed)
    c.steps = int(exp.budget.steps)
    if exp.base.get("hf_path"):
        c.model.hf_path = exp.base.hf_path
        c.init.warmstart.enabled = False
    elif exp.base.get("warmstart", False) and not c.init.warmstart.get("enabled", False):
        raise ExperimentError(f"{where}: base.warmstart is set but the {exp.preset!r} preset has no warm start")
    if "gasp" in c.sources and goalposts:
        c.sources.gasp.goalposts.report = ""
        c.sources.gasp.goalposts.ids = goalposts
    lcb, release = _lcb_data(exp)
    if lcb:  # one LCB release for everything: RLVR's training problems, GASP's goalposts, evaluations
        for block in [c.sources[n].data for n in c.sources if c.sources[n].type == "lcb_rlvr"] + \
                [c.sources[n].goalposts for n in c.sources if c.sources[n].type == "gasp"]:
            block.sources, block.release = (lcb,), release
    if exp.get("train_eval", False):
        if "eval" not in c:
            periodic.add_evaluation(c)
    if "eval" in c and lcb:
        c.eval.lcb.data.sources, c.eval.lcb.data.release = (lcb,), release
        c.eval.goalposts.select.sources, c.eval.goalposts.select.release = (lcb,), release
    if "eval" in c and goalposts:  # evaluation during training scores the experiment's goalposts
        c.eval.goalposts.enabled = True
        c.eval.goalposts.select.report, c.eval.goalposts.select.ids = "", goalposts
    overrides = exp.get("overrides", ml_collections.ConfigDict())
    for key in ("all", method):
        if key in overrides:
            apply_overrides(c, overrides[key], where=f"overrides.{key}")

    try:
        trainer.check_config(c)
    except ValueError as e:
        raise ExperimentError(f"{where}: {e}") from None
    return c


def eval_config(exp: ml_collections.ConfigDict, name: str, goalposts: tuple[str, ...]) -> ml_collections.ConfigDict:
    file, arg = EVALS[name]
    c = load_config_file(f"{file}:{arg}" if arg else file)
    block = exp.eval[name]
    if name == "goalposts":
        c.data.start, c.data.end = "", ""
        c.data.problem_ids = goalposts
    lcb, release = _lcb_data(exp)
    if lcb and name in ("lcb", "goalposts"):
        c.data.sources, c.data.release = (lcb,), release
    apply_overrides(c, block.get("overrides", {}), where=f"eval.{name}.overrides")
    c.overwrite = False
    return c


def _check_eval_data(name: str, c: ml_collections.ConfigDict) -> None:
    if name in ("lcb", "goalposts"):
        try:
            problems, _, window = load_config_problems(c.data)
        except (ValueError, FileNotFoundError) as e:
            raise ExperimentError(f"eval.{name}: {e}") from None
        if not problems:
            raise ExperimentError(f"eval.{name}: no LCB problem in {window}")
        if name == "goalposts":
            missing = sorted(set(c.data.problem_ids) - {p.id for p in problems})
            if missing:
                raise ExperimentError(f"goalposts: {missing} not in {list(c.data.sources)}")
    elif not Path(c.data.path).is_file():
        raise ExperimentError(f"eval.{name}: data file {c.data.path} does not exist")


def build_plan(exp: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Plan:
    """Resolves and checks every run and evaluation (nothing is trained or evaluated here)."""
    workdir = Path(workdir)
    unknown = [m for m in exp.methods if m not in METHODS]
    if unknown:
        raise ExperimentError(f"methods: unknown {unknown}; known: {', '.join(METHODS)}")
    if not exp.methods:
        raise ExperimentError("methods is empty")
    if not exp.seeds or len(set(exp.seeds)) != len(exp.seeds):
        raise ExperimentError(f"seeds must be distinct and non-empty, got {tuple(exp.seeds)}")
    if int(exp.budget.steps) < 1:
        raise ExperimentError(f"budget.steps must be >= 1, got {exp.budget.steps}")
    if exp.get("executor", "subprocess") not in EXECUTORS:
        raise ExperimentError(f"executor must be one of {EXECUTORS}, got {exp.executor!r}")
    if exp.eval.get("checkpoints", "final") not in ("final", "all"):
        raise ExperimentError(f"eval.checkpoints must be 'final' or 'all', got {exp.eval.checkpoints!r}")
    bad_evals = sorted(set(exp.eval.keys()) - set(EVALS) - {"checkpoints", "model"})
    if bad_evals:
        raise ExperimentError(f"eval: unknown evaluation(s) {bad_evals}; known: {', '.join(EVALS)}")
    bad_overrides = sorted(set(exp.get("overrides", {}).keys()) - set(METHODS) - {"all"})
    if bad_overrides:
        raise ExperimentError(f"overrides: unknown method(s) {bad_overrides}; known: all, {', '.join(METHODS)}")
    if exp.base.get("hf_path"):
        _check_hf_dir(exp.base.hf_path, "base.hf_path")
    elif not exp.base.get("warmstart", False):
        raise ExperimentError("base: give base.hf_path (a local HF checkpoint directory) or base.warmstart=True")
    goalposts = _goalpost_ids(exp)

    evals = {}  # checked first: cheaper than building the runs' sources
    for name in EVALS:
        if name in exp.eval and exp.eval[name].get("enabled", False):
            if name == "goalposts" and not goalposts:
                raise ExperimentError("eval.goalposts is enabled but no goalposts are given (goalposts.ids / .report)")
            evals[name] = eval_config(exp, name, goalposts)
            _check_eval_data(name, evals[name])
    if not evals:
        raise ExperimentError("eval: no evaluation enabled")
    runs: list[RunSpec] = []
    warmstart = None
    for method in exp.methods:
        if METHODS[method].config_file is None:
            continue
        for seed in exp.seeds:
            c = run_config(exp, method, int(seed), goalposts)
            if warmstart is None and c.init.warmstart.get("enabled", False):
                warmstart = c.init.warmstart
            runs.append(RunSpec(method, int(seed), workdir / "runs" / method / f"seed{seed}", c))

        try:  # the sources load their data (LCB problems, goalposts, seed files): fail here, not mid-run
            sources = sources_lib.build_sources(runs[-1].config)
        except (ValueError, FileNotFoundError, KeyError) as e:
            raise ExperimentError(f"{method}: sources: {e}") from None
        try:  # every prompt + its new tokens fits the cache, the cache fits the model (seeds differ in seed only)
            fit_check.check_run(runs[-1].config, sources)
        except ValueError as e:
            raise ExperimentError(f"{METHODS[method].config_file}:{exp.preset} ({method}): {e}") from None
    if exp.base.get("warmstart", False) and warmstart is None:
        warmstart = warmstart_lib.default_config()
        warmstart.enabled = True
    spec = (fit_check.hf_spec(exp.base.hf_path, "base.hf_path") if exp.base.get("hf_path")
            else fit_check.warmstart_spec(warmstart, "base.warmstart"))
    for name, c in evals.items():  # every checkpoint evaluated has the base model's shape and tokenizer
        try:
            fit_check.check_eval(name, c, spec)
        except ValueError as e:
            raise ExperimentError(str(e)) from None

    return Plan(exp, workdir, runs, evals, goalposts, str(exp.base.get("hf_path", "") or ""), warmstart)
