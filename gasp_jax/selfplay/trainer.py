"""The self-play trainer. `train(config, workdir)` is the algorithm, top to bottom:

    for each iteration:
      1. rollout weights   the trained params, resharded once into the sampler's layout (device to device)
      2. collect           every due rollout source: propose -> validate -> learnability -> student batch
                           -> solve -> judge (host + sampler; sandbox jobs run while the sampler works)
      3. advantages        rewards whitened per group (TRR++: per task type x role), per train state
      4. update            per train state (one shared model, or teacher + student): `rl.ppo_epochs` passes
                           of shuffled `rl.ppo_mini_batch_size`-row jitted PPO-clip steps (AZR: 3 a step)
      4b. after-step       hooks and sources' `after_step` on the updated policies (periodic evaluation;
                           GASP: goalposts solved + goalpost retirement)
      5. log               TensorBoard `<type>/<role>/<metric>`, metrics.jsonl, one console line
      6. checkpoint        params, optimizer state, step, RNG, sources' buffers and iterators (orbax);
                           also on SIGTERM, then exit

Everything before the loop is set-up (config check, models, restore-or-init, sandbox, writers); the
helpers below the loop are small functions of host data. Host work stays on the host side: the only
device calls in the loop are the reshard, the sampler (inside the sources) and the update.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
import zlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gasp_jax import models, multihost, rl, runtime, warmstart
from gasp_jax import profiling
from gasp_jax import sharding as shd
from gasp_jax.config_checks import ConfigError, checker  # noqa: F401  (ConfigError: this module's error, for callers)
from gasp_jax.checkpoint import Checkpointer
from gasp_jax.metrics import CompileTimer, MetricWriter, progress_line
from gasp_jax.sandbox import Sandbox
from gasp_jax.selfplay import fit_check
from gasp_jax.selfplay import sources as sources_lib
from gasp_jax.selfplay.policy import SamplerPolicy, reshard_for_rollout, rollout_model, rollout_rules
from gasp_jax.selfplay.settings import RolloutSettings
from gasp_jax.selfplay.types import ROLE_MODEL, SHARED_STATE, Episode, RolloutContext, SourceResult, Timers, state_name
from gasp_jax.tokenizer import build_byte_tokenizer

log = logging.getLogger(__name__)

PLACEMENTS = ("same", "split")
# Model-shape fields a checkpoint must match (dtypes and remat may change between runs).
SHAPE_FIELDS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                "num_kv_heads", "head_dim", "tie_word_embeddings", "qkv_bias", "qk_norm")


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) a self-play run in `workdir`; returns a summary dict."""
    check_config(config)
    try:
        settings = RolloutSettings.from_config(config)  # the typed blocks every source's phases read
        sources = sources_lib.build_sources(config)  # sources validate their own blocks here
        fit_check.check_run(config, sources)  # cache vs context, prompts + new tokens vs cache: before the warm start
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"config: {e}") from None
    run = setup(config, workdir, base_path=base_checkpoint(config))
    hooks = sources_lib.build_hooks(config, workdir)
    states, start, base_key = restore_or_init(run, sources, hooks)
    writer = MetricWriter(os.path.join(workdir, "tb"))
    if start == 0 or not os.path.exists(os.path.join(workdir, "config.json")):
        write_config(config, workdir, writer)
    for source in sources.values():  # a source's charts first in TensorBoard's CUSTOM SCALARS tab
        if hasattr(source, "tensorboard_layout"):
            writer.layout(source.tensorboard_layout())
    steps = int(config.steps)
    compile_timer, timers = CompileTimer(), Timers()
    observer = profiling.StepObserver(config.get("profile"), logdir=os.path.join(workdir, "tb"), first_step=start,
                                      last_step=steps, name="selfplay")
    preemption = Preemption()
    history: list[float] = []  # seconds per iteration without compilation (ETA)
    summary: dict[str, Any] = {"start_step": start, "workdir": workdir}
    last: dict[str, float] = {}

    with make_sandbox(config) as sandbox:
        # An iteration's clock runs from the end of the previous one's logging, so the previous
        # checkpoint save (timed into this iteration's phases) is inside it.
        t0 = time.perf_counter()
        for step in range(start, steps):
            compiled, tokens0 = compile_timer.take(), run.tokens_generated()
            observer.begin(step + 1)
            generation0 = generation_counts(run)

            # 1. Rollout weights: the trained params, resharded into the sampler's layout.
            if not run.policies_ready():
                with timers.phase("reshard"):
                    run.set_rollout_params(states)

            # 2. Collect episodes from every source due at this step.
            results: dict[str, SourceResult] = {}
            for name, source in sources.items():
                if sources_lib.is_due(config.sources[name], step):
                    ctx = make_context(run, config, sandbox, timers, name, step, base_key, workdir, settings)
                    results[name] = source.collect(ctx)
            episodes = [e for r in results.values() for e in r.episodes]

            # 3-4. Advantages per group, then one update per train state. The rollout copy of the weights
            # is dropped first (memory), and rebuilt from the new params right after.
            run.set_rollout_params(None)
            update_scalars: dict[str, float] = {}
            update_lens: list[int] = []  # every trained sequence's length (update FLOPs)
            for name, group in split_by_state(episodes, run.separate).items():
                batch, adv_stats = episodes_to_batch(group, config.rl, run.slots[name].update)
                update_lens += [len(e.prompt_tokens) + len(e.tokens) for e in group]
                with timers.phase("update"):  # rl.ppo_epochs x shuffled rl.ppo_mini_batch_size steps
                    states[name], metrics, _ = run.slots[name].update(states[name], batch,
                                                                      update_rng(config, step, name))
                update_scalars.update({f"{name}/rl/{k}": float(v) for k, v in metrics.items()})
                update_scalars.update({f"{name}/advantage/{k}": float(v) for k, v in adv_stats.items()})
            # Hooks (periodic evaluation) and sources' after-step phases (GASP: goalposts solved + goalpost
            # retirement) run on the updated policies.
            after = [*hooks, *(s for s in sources.values() if hasattr(s, "after_step"))]
            if after or step + 1 < steps:  # the next iteration's (and the hooks') rollout weights
                with timers.phase("reshard"):
                    run.set_rollout_params(states)
            for hook in after:
                ctx = make_context(run, config, sandbox, timers, "hooks", step, base_key, workdir, settings)
                update_scalars.update(hook.after_step(step + 1, ctx))

            # 5. Log.
            stop = preemption.agreed()
            done = step + 1 == steps or stop
            seconds = time.perf_counter() - t0
            exclusive, phases = dict(timers.exclusive), timers.reset()
            compiled += compile_timer.take()
            scalars = iteration_scalars(results, update_scalars, phases, seconds, compiled,
                                        run.tokens_generated() - tokens0)
            scalars.update(observe_iteration(run, observer, step + 1, exclusive, seconds, compiled, update_lens,
                                             generation0))
            writer.write(step + 1, scalars, echo=False)
            for r in results.values():
                for tag, values in r.histograms.items():
                    writer.histogram(step + 1, tag, values)
                if (step + 1) % int(config.log.text_every) == 0 or step == start:
                    for tag, text in r.texts.items():
                        writer.text(step + 1, tag, text)
            history.append(max(seconds - compiled, 1e-9))
            if (step + 1) % int(config.log.every) == 0 or done:
                log.info("%s | %s", progress_line(step + 1, steps, float(np.mean(history[-10:])), headline(scalars),
                                                  compile_s=compiled), profiling.goodput_line(scalars))
            last = scalars
            t0 = time.perf_counter()

            # 6. Checkpoint (every `checkpoint.every` iterations, at the end, and when preempted).
            if (step + 1) % int(config.checkpoint.every) == 0 or done:
                with timers.phase("checkpoint"):
                    save_checkpoint(run, states, sources, hooks, base_key, step + 1)
            observer.end(step + 1)
            if stop:
                log.warning("SIGTERM: saved step %d, stopping", step + 1)
                summary["preempted"] = True
                break

    observer.close()
    run.checkpointer.close()
    writer.close()
    preemption.restore()
    summary.update(final_step=int(run.checkpointer.latest_step() or start), steps=steps,
                   **{k: v for k, v in headline(last).items()})
    if multihost.is_main():
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=str)
    return summary


# ------------------------------------------------------------------------------------------------ config


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first bad key, before anything is built or compiled."""

    need = checker("config: ")
    for block in ("model", "sampling", "prompts", "validation", "judge", "rewards", "rl", "mesh", "rollout",
                  "roles", "sandbox", "checkpoint", "log", "sources", "init"):
        need(block in config, block, "is missing (build configs from configs/common.py)")
    need(int(config.steps) >= 1, "steps", f"must be >= 1, got {config.steps}")
    need(float(config.sampling.temperature) > 0, "sampling.temperature",
         f"must be > 0 (PPO on greedy samples has no ratio), got {config.sampling.temperature}")
    need(0 < float(config.sampling.top_p) <= 1, "sampling.top_p", f"must be in (0, 1], got {config.sampling.top_p}")
    need(int(config.sampling.max_new_tokens) >= 1, "sampling.max_new_tokens", "must be >= 1")
    need(config.sampling.get("engine", "static") in ("static", "continuous"), "sampling.engine",
         f"must be 'static' or 'continuous', got {config.sampling.get('engine')!r}")
    need(config.roles.placement in PLACEMENTS, "roles.placement", f"must be one of {PLACEMENTS}, got {config.roles.placement!r}")
    need(int(config.checkpoint.every) >= 1, "checkpoint.every", "must be >= 1")
    need(int(config.log.every) >= 1 and int(config.log.text_every) >= 1, "log.every/text_every", "must be >= 1")
    need(int(config.sandbox.workers) >= 0, "sandbox.workers", "must be >= 0 (0: one per CPU)")
    if not config.model.hf_path and not config.init.get("warmstart", {}).get("enabled", False):
        need(config.model.preset in models.PRESETS, "model.preset",
             f"{config.model.preset!r} is not a preset ({', '.join(sorted(models.PRESETS))}) and model.hf_path is empty")
    if config.model.hf_path:
        need(os.path.isfile(os.path.join(config.model.hf_path, "config.json")), "model.hf_path",
             f"{config.model.hf_path!r} is not a local HF checkpoint directory (no config.json)")
    try:
        rollout_rules(config.rollout, shd.DEFAULT_RULES)
        rl.validate_config(config.rl)
    except ValueError as e:
        raise ConfigError(f"config: {e}") from None


def write_config(config, workdir: str, writer: MetricWriter) -> None:
    """The resolved config: `workdir/config.json` and a TensorBoard text summary."""
    if multihost.is_main():
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    writer.text(0, "config", "```\n" + str(config) + "\n```")


# ------------------------------------------------------------------------------------------------ set-up


@dataclasses.dataclass
class TrainedModel:
    """One trained model: its train-state name, model (trainer layout), the same model in the sampler's
    layout, its jitted update step and its rollout policy. (`Run.slots` holds one per train state; the
    sampling engine's decode slots are another thing.)"""

    name: str
    model: Any
    sampler_model: Any
    update: rl.PPOUpdate  # the jitted step under the PPO mini-batch / epoch schedule
    policy: SamplerPolicy


@dataclasses.dataclass
class Run:
    config: ml_collections.ConfigDict
    workdir: str
    model_config: models.ModelConfig
    hf_path: str  # "" for a random-init preset
    tokenizer: Any
    rl_config: ml_collections.ConfigDict
    slots: dict[str, TrainedModel]
    separate: bool
    checkpointer: Checkpointer

    def rng_sharding(self):
        """Replicated over the first model's mesh: the checkpointed key is a global array (orbax saves
        only global arrays in a multi-process run)."""
        mesh = next(iter(self.slots.values())).model.mesh
        return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def checkpoint_target(self) -> dict:
        """The abstract checkpoint tree: every train state and the RNG key data, with their shardings."""
        return {"states": {n: abstract_train_state(s.model, self.rl_config) for n, s in self.slots.items()},
                "rng": jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=self.rng_sharding())}

    @property
    def policies(self) -> dict[str, SamplerPolicy]:
        if not self.separate:
            return {model: self.slots[SHARED_STATE].policy for model in ROLE_MODEL.values()}
        return {model: self.slots[model].policy for model in ROLE_MODEL.values()}

    def set_rollout_params(self, states: Mapping[str, rl.TrainState] | None) -> None:
        for slot in self.slots.values():
            slot.policy.set_params(None if states is None else
                                   reshard_for_rollout(states[slot.name].params, slot.sampler_model,
                                                       self.config.rollout.get("dtype") or None))

    def policies_ready(self) -> bool:
        return all(slot.policy.params is not None for slot in self.slots.values())

    def initial_params(self, slot: TrainedModel):
        """`slot`'s step-0 weights in its layout: the HF / warm-start checkpoint, or the seed's random init."""
        if self.hf_path:
            _, params = models.load_hf(self.hf_path, mesh=slot.model.mesh, rules=slot.model.rules,
                                       dtype=self.model_config.dtype, param_dtype=self.model_config.param_dtype,
                                       remat_policy=self.model_config.remat_policy)
            return params
        return models.init_params(slot.model, jax.random.key(int(self.config.seed)))

    def initial_model(self, model: str) -> tuple[Any, Any]:
        """`(model, step-0 params)` of "teacher" / "student", in the trainer's layout, re-derived (also after
        a resume): what `RolloutContext.initial_model` gives sources (GASP's frozen dedup embedder)."""
        slot = self.slots[model if self.separate else SHARED_STATE]
        return slot.model, self.initial_params(slot)

    def tokens_generated(self) -> int:
        return sum(slot.policy.tokens_generated for slot in self.slots.values())

    def metadata(self) -> dict:
        """What a checkpoint must agree with to be resumed by this run."""
        shape = {k: getattr(self.model_config, k) for k in SHAPE_FIELDS}
        return {"model": shape, "states": sorted(self.slots),
                "sources": {n: str(b.type) for n, b in self.config.sources.items()}}


def base_checkpoint(config) -> str:
    """The HF directory a run starts from: with `init.warmstart.enabled`, the cached warm start (trained
    first when missing); else `model.hf_path` ("": a random init of `model.preset`)."""
    if config.init.get("warmstart", {}).get("enabled", False):
        return warmstart.ensure_warmstart(config.init.warmstart)
    return str(config.model.hf_path)


def model_config_and_tokenizer(config, hf_path: str) -> tuple[models.ModelConfig, str, Any]:
    """(ModelConfig, HF directory or "", tokenizer) of the checkpoint at `hf_path` ("": `model.preset`
    with the byte tokenizer), without loading any weight."""
    mc = config.model
    overrides = dict(dtype=mc.dtype, param_dtype=mc.get("param_dtype") or mc.dtype,
                     remat_policy=mc.get("remat_policy", "none"))
    if hf_path:
        model_config = models.ModelConfig.from_hf_dict(models.hf.read_hf_config(hf_path), **overrides)
        return model_config, hf_path, models.load_tokenizer(hf_path)
    model_config = models.get_preset(mc.preset, **overrides)
    if mc.get("vocab_size"):
        model_config = model_config.replace(vocab_size=int(mc.vocab_size))
    tokenizer = build_byte_tokenizer()
    if len(tokenizer) > model_config.vocab_size:
        raise ConfigError(f"config: model.vocab_size {model_config.vocab_size} < the byte tokenizer's {len(tokenizer)}")
    return model_config, "", tokenizer


def slot_meshes(config, mesh) -> dict[str, Any]:
    """Train-state name -> mesh: one shared model, or teacher + student on the same mesh / disjoint halves."""
    if not config.rl.separate_teacher_student:
        return {SHARED_STATE: mesh}
    if config.roles.placement == "same":
        return {"teacher": mesh, "student": mesh}
    devices = np.asarray(mesh.devices).reshape(-1)
    if devices.size % 2:
        raise ConfigError(f"config: roles.placement='split' needs an even device count, got {devices.size}")
    half = devices.size // 2
    shape = {a: int(config.mesh.get(a, 1)) for a in shd.MESH_AXES}
    # The configured mesh shape applies to each half: the `fsdp` (or -1) axis absorbs the halving.
    for axis in ("fsdp", "data", "tensor"):
        if shape[axis] == -1 or shape[axis] % 2 == 0:
            shape[axis] = -1 if shape[axis] == -1 else shape[axis] // 2
            break
    return {"teacher": shd.make_mesh(shape, devices=list(devices[:half])),
            "student": shd.make_mesh(shape, devices=list(devices[half:]))}


def setup(config, workdir: str, *, base_path: str | None = None) -> Run:
    """Models, samplers, update steps and the checkpointer of a run starting from `base_path` (the
    `base_checkpoint(config)` the caller resolved; None: `model.hf_path`, only when no warm start is on)."""
    if base_path is None:
        if config.init.get("warmstart", {}).get("enabled", False):
            raise ConfigError("config: init.warmstart.enabled needs the warm-start checkpoint: "
                              "call setup(config, workdir, base_path=base_checkpoint(config))")
        base_path = str(config.model.hf_path)
    mesh = runtime.mesh_from_config(config)
    rules = runtime.rules_from_config(config)
    model_config, hf_path, tokenizer = model_config_and_tokenizer(config, base_path)
    rl_config = config.rl.copy_and_resolve_references()
    if rl_config.optimizer.schedule == "warmup_cosine" and not rl_config.optimizer.total_steps:
        rl_config.optimizer.total_steps = int(config.steps)
    sampler_rules = rollout_rules(config.rollout, rules)
    slots = {}
    for name, slot_mesh in slot_meshes(config, mesh).items():
        model = models.build_model(model_config, mesh=slot_mesh, rules=rules)
        runtime.check_sharding(model, config.get("sharding"))  # before any weight is read or created
        sampler_model = rollout_model(model, sampler_rules)
        policy = SamplerPolicy(sampler_model, tokenizer, config.sampling)
        slots[name] = TrainedModel(name, model, sampler_model, rl.make_ppo_update(model, rl_config, slot_mesh), policy)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=int(config.checkpoint.keep),
                        async_save=bool(config.checkpoint.get("async_save", True)))
    return Run(config, workdir, model_config, hf_path, tokenizer, rl_config, slots,
               bool(config.rl.separate_teacher_student), ckpt)


def abstract_train_state(model, rl_config) -> rl.TrainState:
    """The train state as ShapeDtypeStructs in its shardings: the restore target (nothing allocated)."""
    shapes = jax.eval_shape(lambda: rl.create_train_state(model, rl_config, rng=jax.random.key(0)))
    shardings = rl.train_state_shardings(model, rl_config)
    if shardings is None:
        return shapes
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def check_compatible(saved: Mapping, run: Run) -> None:
    """Clear error when the workdir's checkpoint belongs to another model shape / role set / sources."""
    where = run.checkpointer.directory
    ours = run.metadata()
    theirs = saved.get("run", {})
    for key, value in ours["model"].items():
        if key in theirs.get("model", {}) and theirs["model"][key] != value:
            raise ConfigError(f"{where} holds a checkpoint of a different model ({key}: checkpoint "
                              f"{theirs['model'][key]!r}, config {value!r}); use a new --workdir or the same model")
    if theirs.get("states") not in (None, ours["states"]):
        raise ConfigError(f"{where} holds train states {theirs['states']} but this config trains {ours['states']} "
                          "(rl.separate_teacher_student differs); use a new --workdir")
    if theirs.get("sources") not in (None, ours["sources"]):
        raise ConfigError(f"{where} was written by sources {theirs['sources']}, this config has {ours['sources']}; "
                          "use a new --workdir")


def restore_or_init(run: Run, sources: Mapping[str, Any], hooks: Sequence[Any]
                    ) -> tuple[dict[str, rl.TrainState], int, jax.Array]:
    """`(states, start step, base key)`: resumed from the latest complete checkpoint (arrays restored
    straight into their shardings), or fresh states from the HF / warm-start weights or a random init
    and the key of `config.seed`. Every per-step key derives from the base key and the step."""
    ckpt = run.checkpointer
    latest = ckpt.latest_step()
    if latest is not None:
        host = ckpt.restore_host(latest)
        check_compatible(host, run)
        restored, host, step = ckpt.restore(run.checkpoint_target(), latest)
        for name, source in sources.items():
            source.load_state_dict(host["sources"][name])
        for i, hook in enumerate(hooks):
            if hasattr(hook, "load_state_dict") and str(i) in host.get("hooks", {}):
                hook.load_state_dict(host["hooks"][str(i)])
        log.info("resumed from step %d in %s", step, ckpt.directory)
        key = jax.random.wrap_key_data(np.asarray(restored["rng"].addressable_data(0), np.uint32))  # replicated
        return dict(restored["states"]), int(step), key

    states = {}
    params = None
    for name, slot in run.slots.items():
        if params is None:
            params = first = run.initial_params(slot)
        else:
            # A second model starts from the same weights in its own buffers (and placement).
            params = jax.device_put(jax.tree.map(jnp.copy, first), models.param_shardings(slot.model))
        states[name] = rl.create_train_state(slot.model, run.rl_config, params=params)
    return states, 0, jax.random.key(int(run.config.seed))


def save_checkpoint(run: Run, states, sources, hooks, base_key, step: int) -> None:
    host = {"step": step, "run": run.metadata(),
            "sources": {name: s.state_dict() for name, s in sources.items()},
            "hooks": {str(i): h.state_dict() for i, h in enumerate(hooks) if hasattr(h, "state_dict")}}
    rng = shd.put_host_array(np.asarray(jax.random.key_data(base_key)), run.rng_sharding())
    run.checkpointer.save(step, {"states": states, "rng": rng}, host, force=True)


def make_sandbox(config):
    workers = int(config.sandbox.workers) or (os.cpu_count() or 1)
    return Sandbox(workers=workers, allow_unsafe=bool(config.sandbox.allow_unsafe))


# -------------------------------------------------------------------------------------------- iteration


def make_context(run: Run, config, sandbox, timers: Timers, name: str, step: int, base_key, workdir: str,
                 settings: RolloutSettings) -> RolloutContext:
    """The per-(step, source) context: host rng and jax key derived from (seed, step, source name) only,
    so every process draws the same and a resumed run repeats a straight run."""
    tag = zlib.crc32(name.encode()) & 0x7FFFFFFF
    return RolloutContext(
        step=step, rng=np.random.default_rng([int(config.seed), step, tag]),
        key=jax.random.fold_in(jax.random.fold_in(base_key, step), tag), policies=run.policies,
        sandbox=sandbox, timers=timers, config=config,
        source_config=config.sources.get(name, ml_collections.ConfigDict()), workdir=workdir,
        initial_model=run.initial_model, settings=settings)


def update_rng(config, step: int, state: str) -> np.random.Generator:
    """The host generator that shuffles one train state's mini-batches at `step`: from (seed, step, state)
    only, like `make_context`, so a resumed run shuffles as a straight one."""
    return np.random.default_rng([int(config.seed), step, zlib.crc32(f"update/{state}".encode()) & 0x7FFFFFFF])


def split_by_state(episodes: Sequence[Episode], separate: bool) -> dict[str, list[Episode]]:
    """Episodes per train state they update (propose -> teacher, solve -> student; one "policy" if shared)."""
    out: dict[str, list[Episode]] = {}
    for e in episodes:
        out.setdefault(state_name(e.role, separate), []).append(e)
    return out


def episodes_to_batch(episodes: Sequence[Episode], rl_config, update: rl.UpdateStep | rl.PPOUpdate):
    """Advantages per group (rl.advantage config) and the padded host batch. Rows are padded to a power of
    two times the data-parallel multiple, so the update compiles for a handful of batch sizes."""
    multiple = int(rl_config.micro_batches) * update.batch_divisor
    return rl.batch_from_rollouts(
        [e.prompt_tokens for e in episodes], [e.tokens for e in episodes], [e.logprobs for e in episodes],
        np.array([e.reward for e in episodes], np.float32), [e.group for e in episodes], rl_config.advantage,
        temperature=np.array([e.temperature for e in episodes], np.float32),
        batch_multiple=multiple, batch_buckets=[multiple * 2**i for i in range(24)],
    )


def iteration_scalars(results: Mapping[str, SourceResult], update_scalars, phases: Mapping[str, float],
                      seconds: float, compiled: float, tokens: int) -> dict[str, float]:
    scalars: dict[str, float] = {}
    for r in results.values():
        scalars.update(r.scalars)
    scalars.update(update_scalars)
    scalars.update({f"time/{k}_s": v for k, v in phases.items()})
    scalars["time/iteration_s"] = seconds
    scalars["time/compile_s"] = compiled
    steady = max(seconds - compiled, 1e-9)
    # The share of the iteration spent blocked on the sandbox: the part not hidden behind device work.
    scalars["time/sandbox_unhidden_frac"] = phases.get("sandbox_wait", 0.0) / steady
    generate_s = phases.get("teacher_generate", 0.0) + phases.get("student_generate", 0.0)
    scalars["perf/tokens_per_s"] = tokens / generate_s if generate_s > 0 else 0.0
    scalars["perf/tokens"] = float(tokens)
    scalars["episodes"] = float(sum(len(r.episodes) for r in results.values()))
    return scalars


def generation_counts(run: Run) -> np.ndarray:
    """Running (tokens, decode steps, KV positions read, sampling programs compiled) of every rollout policy
    (perf.decode_bytes_per_device; `perf/sampling_programs_compiled`)."""
    return np.array([sum(getattr(s.policy, k, 0) for s in run.slots.values())
                     for k in ("tokens_generated", "decode_steps", "kv_positions_read", "programs_compiled")], np.int64)


def observe_iteration(run: Run, observer: profiling.StepObserver, step: int, exclusive: Mapping[str, float],
                      seconds: float, compiled: float, update_lens: Sequence[int], generation0: np.ndarray
                      ) -> dict[str, float]:
    """The `time/goodput/...`, `perf/...` and `memory/...` scalars of one iteration (docs/profiling.md).
    Generate and update seconds are the goodput buckets: compile time excluded."""
    scalars = profiling.goodput(exclusive, seconds, compiled)
    scalars.update(observer.scalars(step))
    mc = run.model_config
    scalars.update(profiling.update_perf(mc, update_lens, scalars["time/goodput/update_s"],
                                         passes=int(run.rl_config.get("ppo_epochs", 1) or 1)))
    tokens, decode_steps, kv_positions, sampling_programs = generation_counts(run) - generation0
    scalars["perf/sampling_programs_compiled"] = float(sampling_programs)  # of perf/compilations: the sampler's
    rollout_dtype = run.config.rollout.get("dtype") or mc.param_dtype
    mesh = next(iter(run.slots.values())).sampler_model.mesh
    axes = dict(mesh.shape) if mesh is not None else {}
    # "tensor_only": weights split over `tensor`, replicated over data/fsdp; otherwise also over fsdp.
    weight_shards = axes.get("tensor", 1) * (1 if run.config.rollout.rules == "tensor_only" else axes.get("fsdp", 1))
    scalars.update(profiling.generation_perf(
        mc, tokens=int(tokens), seconds=scalars["time/goodput/generate_s"],
        weight_bytes=mc.num_params * jnp.dtype(rollout_dtype).itemsize,
        decode_steps=int(decode_steps), kv_positions_read=int(kv_positions), weight_shards=weight_shards))
    return scalars


def headline(scalars: Mapping[str, float]) -> dict[str, float]:
    """The few numbers of the console line: mean solve pass rate, proposal valid fraction, loss."""
    def mean_of(suffix):
        vals = [v for k, v in scalars.items() if k.endswith(suffix) and not k.startswith("time/")]
        return float(np.mean(vals)) if vals else None

    out = {"solve": mean_of("/solve/pass_rate"), "valid": mean_of("/propose/valid_frac"),
           "reward": mean_of("/reward_mean"), "loss": mean_of("/rl/loss")}
    return {k: v for k, v in out.items() if v is not None and math.isfinite(v)}


class Preemption:
    """SIGTERM sets a flag; the loop saves and stops at the end of the iteration (all processes agree)."""

    def __init__(self):
        self.requested = False
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. a test runner thread): no handler
            self._previous = None

    def _handle(self, signum, frame):
        self.requested = True

    def agreed(self) -> bool:
        return any(multihost.all_gather_objects([self.requested]))

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


# ---------------------------------------------------------------------------------------------- export


def export_policy(config, workdir: str, out_dir: str, *, step: int | None = None, role: str = "student") -> str:
    """Writes the `role` model ("student" / "teacher"; the shared one when there is one) of checkpoint
    `step` (latest by default) in `workdir` as a HF directory with its tokenizer; returns `out_dir`."""
    check_config(config)
    run = setup(config, workdir, base_path=base_checkpoint(config))
    ckpt = run.checkpointer
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{ckpt.directory}: no checkpoint to export")
    check_compatible(ckpt.restore_host(step), run)
    name = state_name({"student": "solve", "teacher": "propose"}[role], run.separate)
    restored, _, _ = ckpt.restore(run.checkpoint_target(), step)
    models.save_hf(run.slots[name].model, restored["states"][name].params, out_dir, tokenizer=run.tokenizer)
    ckpt.close()
    return out_dir
