"""Ahead-of-time compilation of one training iteration for a TPU topology, on any machine (no TPU).

    report = aot.compile_iteration(config, "v5p-8", num_slices=1, model_config=..., workload=...)
    report["programs"]["update"]["peak_bytes"], report["peak_bytes_per_device"], report["fits"]

With `libtpu` installed (`pip install -e .[tpu]`), JAX describes a TPU topology that is not present
(`jax.experimental.topologies.get_topology_desc`) and compiles for it: `jit(f).lower(abstract
args).compile()` runs XLA's TPU compiler, whose `memory_analysis()` gives the argument / output / temp /
alias bytes per device and `cost_analysis()` its flops, bytes and estimated seconds. Nothing is
materialised: every argument is a `jax.ShapeDtypeStruct` carrying its sharding (MaxText's
train_compile.py does the same for its train step).

The programs are the ones the trainer runs, built by the trainer's own code:
- `update`: `rl.make_update_step` (forward, backward, optimizer at `rl.micro_batches`) on the
  abstract train state (`trainer.abstract_train_state`) and a batch of the largest bucket one
  optimizer step sees (`rl.ppo_mini_batch_size` rows, or the iteration's rows; length bucket of
  prompt budget + max_new_tokens); `logprobs` too when pi_old or the reference are trainer log-probs.
- `reshard`: `selfplay.policy.reshard_program`, trainer params -> rollout copy (`rollout.rules`,
  `rollout.dtype`); absent when the copy would be the trainer's own arrays.
- continuous engine (`sampling.engine`): `unstack` (per-layer decode weights), `prefill` (the engine's
  admit program: prefill of the largest prompt bucket for the largest batch one refill admits, and the
  insert of its rows into the slots) and `decode` (one chunk over every slot at the per-slot cache
  length), sized by the engine's own `_plan` for the iteration's largest sampler call; static engine:
  the sampler's `prefill` and `decode` loop instead.

Device memory of an iteration (`peak_bytes_per_device`): for each program, XLA's peak for the
program (its arguments, outputs and temporaries) plus the buffers that stay resident on the device
while it runs but are not its arguments (`resident_bytes`): the train states (two when teacher and
student are separate on the same devices), the rollout copies and, inside the engine, the per-layer
weights and the slot state. The worst program sets the peak; `fits` is peak <= HBM.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import topologies

from gasp_jax import models, perf, rl, runtime
from gasp_jax import sharding as shd
from gasp_jax.sampling import buckets as bk
from gasp_jax.sampling import core as sampling_core
from gasp_jax.sampling import engine as engine_lib
from gasp_jax.sampling import sampler as sampler_lib
from gasp_jax.selfplay import policy as policy_lib
from gasp_jax.selfplay import trainer as trainer_lib

# family -> (topology name prefix, torus dims, TensorCores per JAX device); HBM and peak FLOP/s per
# device come from `perf.PEAKS`. v4 / v5p: one JAX device per 2-core (megacore) chip.
TPU_FAMILIES = {"v4": ("v4", 3, 2), "v5p": ("v5p", 3, 2), "v5litepod": ("v5e", 2, 1), "v5e": ("v5e", 2, 1),
                "v6e": ("v6e", 2, 1)}
INSTALL_HINT = "pip install -e .[tpu]"


class AotError(ValueError):
    """Bad input for an ahead-of-time compile (one line naming what and how to fix it)."""


class CompileError(RuntimeError):
    """XLA refused a program: `program` and XLA's message."""

    def __init__(self, program: str, message: str):
        super().__init__(f"{program}: {message}")
        self.program = program
        self.message = message


class OutOfMemory(CompileError):
    """XLA's TPU compiler found the program alone larger than HBM (`required_bytes`, its temporaries)."""

    def __init__(self, program: str, message: str):
        super().__init__(program, message)
        sizes = re.findall(r"\(([0-9.]+)([KMGT])\)", message)
        self.required_bytes = int(float(sizes[0][0]) * 1024 ** "KMGT".index(sizes[0][1]) * 1024) if sizes else 0


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """A TPU slice type such as v5p-8: `devices` JAX devices in a `topology` grid of chips."""

    name: str
    topology: str  # e.g. "v5p:2x2x1"
    grid: tuple[int, ...]
    devices: int
    hbm_bytes: int
    peak_flops: float  # bf16 FLOP/s per device
    hbm_bandwidth: float  # bytes/s per device

    @property
    def chips_per_host_bounds(self) -> tuple[int, int, int]:
        # 4 chips per host as a 2x2 block; a single-host slice of a 2-D family holds its whole grid.
        if len(self.grid) == 2 and self.devices <= 8:
            return (self.grid[0], self.grid[1], 1)
        return tuple(min(g, b) for g, b in zip((*self.grid, 1)[:3], (2, 2, 1)))


def _grid(chips: int, dims: int) -> tuple[int, ...]:
    """Chip grid of a power-of-two slice: 3-D starts at 2x2x1, 2-D at 1x1; then the smallest dimension
    doubles (the later one on ties): v5p 64 chips -> 4x4x4, v5e 8 chips -> 2x4."""
    grid = [2, 2, 1] if dims == 3 else [1, 1]
    while math.prod(grid) < chips:
        i = max(range(dims), key=lambda k: (-grid[k], k))
        grid[i] *= 2
    return tuple(grid)


def parse_accelerator(name: str) -> Accelerator:
    """`v4-N`, `v5p-N`, `v5litepod-N` (`v5e-N`), `v6e-N`; N counts TensorCores (a power of two)."""
    family, _, cores = name.lower().partition("-")
    if family not in TPU_FAMILIES or not cores.isdigit() or int(cores) < 1:
        raise AotError(f"unknown accelerator {name!r}: expected <family>-<cores> with family in "
                       f"{', '.join(TPU_FAMILIES)} (e.g. v5p-8, v5litepod-16)")
    prefix, dims, per_device = TPU_FAMILIES[family]
    peak = perf.device_peak(f"tpu {prefix}")
    devices = int(cores) // per_device
    if devices < 1 or devices & (devices - 1) or (dims == 3 and devices < 4):
        raise AotError(f"accelerator {name!r}: only power-of-two slices are mapped to a topology "
                       f"({'from 4 chips, ' if dims == 3 else ''}e.g. {family}-{8 if dims == 3 else 4})")
    grid = _grid(devices, dims)
    return Accelerator(name.lower(), f"{prefix}:{'x'.join(map(str, grid))}", grid, devices, int(peak.hbm_bytes),
                       peak.bf16_flops, peak.hbm_bytes_per_s)


def mesh_error(acc: Accelerator, config, num_slices: int, error: Exception) -> AotError:
    """One line naming the config's mesh and the topology it does not divide."""
    mesh = {a: int(config.mesh.get(a, 1)) for a in shd.MESH_AXES}
    return AotError(f"mesh {mesh} does not fit {num_slices} x {acc.name} ({acc.topology}, {acc.devices} devices "
                    f"per slice): {error}")


def topology_devices(acc: Accelerator, num_slices: int = 1) -> list:
    """The devices of `num_slices` slices of `acc`, described by libtpu (no TPU needed)."""
    if importlib.util.find_spec("libtpu") is None:
        raise AotError(f"libtpu is not installed, so nothing can be compiled for a TPU: {INSTALL_HINT}")

    # Several compiles may run side by side (tests, launchers): none of them owns a TPU to lock.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    topo = topologies.get_topology_desc(platform="tpu", topology_name=acc.topology,
                                        chips_per_host_bounds=acc.chips_per_host_bounds, num_slices=num_slices)
    return list(topo.devices)


# --------------------------------------------------------------------------------------- programs


def _device_bytes(tree) -> int:
    """Bytes one device holds of a tree of `ShapeDtypeStruct`s with shardings (the largest shard)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
        total += math.prod(shape) * x.dtype.itemsize
    return total


def _abstract(tree, shardings=None):
    """Arrays / structs -> `ShapeDtypeStruct`s (with `shardings` when given, a matching tree)."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _outputs(compiled, shapes) -> Any:
    """A compiled program's outputs as `ShapeDtypeStruct`s in the shardings XLA chose."""
    return _abstract(shapes, compiled.output_shardings)


def replicated_inputs(compiled, args, min_elements: int = 4096) -> list[str]:
    """Paths of the arguments of at least `min_elements` that the compiled program holds whole on
    every device (fully replicated) although the mesh has more than one: silently unsharded weights."""
    flat_args = jax.tree_util.tree_flatten_with_path(args)[0]
    flat_shardings = jax.tree.leaves(compiled.input_shardings[0])
    out = []
    for (path, x), sharding in zip(flat_args, flat_shardings):
        if math.prod(x.shape) >= min_elements and sharding.num_devices > 1 and sharding.is_fully_replicated:
            out.append(jax.tree_util.keystr(path, simple=True, separator="/"))
    return out


def program_stats(compiled) -> dict[str, float]:
    """The report fields of one compiled program (bytes per device; cost of the whole program)."""
    m = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
    # Everything the program holds at once, counted as XLA's own out-of-memory check does (arguments,
    # outputs not aliased to a donated argument, temporaries); XLA's heap simulation can be lower.
    peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
    return {
        "argument_bytes": int(m.argument_size_in_bytes), "output_bytes": int(m.output_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes), "alias_bytes": int(m.alias_size_in_bytes),
        "generated_code_bytes": int(m.generated_code_size_in_bytes), "peak_bytes": int(peak),
        "heap_peak_bytes": int(getattr(m, "peak_memory_in_bytes", 0) or 0),
        "flops": float(cost.get("flops", 0.0)), "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
        "xla_estimated_seconds": float(cost.get("optimal_seconds", 0.0)),
    }


def _compile(name: str, jitted, *args):
    """`jitted.lower(*args).compile()`; XLA's refusal -> CompileError naming the program."""
    t0 = time.perf_counter()
    try:
        compiled = jitted.lower(*args).compile()
    except Exception as e:  # XLA's errors come as several exception types; keep the message
        message = " ".join(str(e).strip().splitlines()[:3])[:2000] or type(e).__name__
        if "RESOURCE_EXHAUSTED" in message or "Ran out of memory" in message:
            raise OutOfMemory(name, message) from None
        raise CompileError(name, message) from None
    return compiled, time.perf_counter() - t0


_EMPTY_STATS = dict(argument_bytes=0, output_bytes=0, temp_bytes=0, alias_bytes=0, generated_code_bytes=0, peak_bytes=0,
                    heap_peak_bytes=0, flops=0.0, bytes_accessed=0.0, xla_estimated_seconds=0.0)


@dataclasses.dataclass
class _Program:
    name: str
    stats: dict
    resident_bytes: int  # live on the device while it runs, outside its arguments
    calls: float  # per iteration (for the time estimate)
    compile_seconds: float
    loop_trips: int = 1  # iterations of the loop that holds its work (XLA's cost analysis counts a body once)

    def iteration_seconds(self, acc: "Accelerator") -> float:
        """This program's share of an iteration by XLA's cost model: its estimated seconds (or, where
        XLA gives none, the roofline of its flops and bytes) x loop trips x calls."""
        s = self.stats
        body = s["xla_estimated_seconds"]
        if body <= 0:
            body = max(s["flops"] / acc.peak_flops, s["bytes_accessed"] / acc.hbm_bandwidth)
        return body * self.loop_trips * self.calls


# ------------------------------------------------------------------------------------- workload


def update_rows(config, update_step, w: dict) -> tuple[int, int, int]:
    """(rows per optimizer step, padded length, optimizer steps per iteration) for the iteration's
    workload `w` (`plan.workload`), padded as the trainer pads them: rows to `micro_batches x batch
    divisor x 2^i` (`episodes_to_batch`), length to a `rl.DEFAULT_LENGTH_BUCKETS` bucket."""
    rows = max(1, w["train_rows"])
    per_step = int(config.rl.get("ppo_mini_batch_size", 0) or 0) or rows
    epochs = int(config.rl.get("ppo_epochs", 1) or 1)
    steps = epochs * -(-rows // min(per_step, rows))
    multiple = int(config.rl.micro_batches) * update_step.batch_divisor
    padded = multiple
    while padded < min(per_step, rows):
        padded *= 2
    length = next((b for b in rl.DEFAULT_LENGTH_BUCKETS if b >= w["train_length"]), w["train_length"])
    return padded, length, steps


def abstract_batch(rows: int, length: int, sharding, *, need_ref: bool) -> rl.Batch:
    """The update's batch as `ShapeDtypeStruct`s: what `UpdateStep.__call__` hands the jitted step."""
    s = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    bt = (rows, length)
    return rl.Batch(tokens=s(bt, jnp.int32), positions=s(bt, jnp.int32), attention_mask=s(bt, jnp.bool_),
                    completion_mask=s(bt, jnp.bool_), old_logprobs=s(bt, jnp.float32), advantages=s(bt, jnp.float32),
                    ref_logprobs=s(bt, jnp.float32) if need_ref else None, temperature=s((rows,), jnp.float32))


def sampler_calls(config) -> list[tuple[int, int]]:
    """The iteration's sampler calls as (prompts, samples per prompt), at most (every proposal
    accepted): per source a propose call, a learnability call with n samples and a solve call."""
    calls = []
    for block in dict(config.get("sources", {}) or {}).values():
        n = int(block.get("learnability_samples", 1))
        if "propose_per_kind" in block:
            kinds = len(str(block.get("kinds", "deduction,abduction,induction")).split(","))
            propose, solve = kinds * int(block.propose_per_kind), kinds * int(block.get("solve_per_kind", 0))
        else:
            propose = int(block.get("lemmas_per_step", 0)) * (1 + int(block.get("lifts_per_lemma", 0)))
            solve = int(block.get("solve_batch", 0))
        calls += [(c, s) for c, s in ((propose, 1), (propose, n), (solve, 1)) if c]
    return calls or [(1, 1)]


# ----------------------------------------------------------------------------------- the iteration


def compile_iteration(config: ml_collections.ConfigDict, accelerator: str, num_slices: int = 1, *,
                      model_config: models.ModelConfig, workload: dict, log: Callable[[str], None] | None = None) -> dict:
    """Compiles every program of one iteration of `config` for `num_slices` x `accelerator`; the report.
    `model_config` and `workload` (rows and lengths) come from `gasp_jax.plan`, as for the hand estimate."""
    log = log or (lambda _: None)
    acc = parse_accelerator(accelerator)
    mesh_cfg = {a: int(config.mesh.get(a, 1)) for a in shd.MESH_AXES}
    dcn = {a: int(v) for a, v in dict(config.mesh.get("dcn", None) or {}).items()}
    if math.prod(dcn.values() or [1]) != num_slices:
        raise AotError(f"config.mesh.dcn {dcn} describes {math.prod(dcn.values() or [1])} slice(s), "
                       f"--num_slices is {num_slices}: set mesh.dcn.data={num_slices} (data parallel over DCN)")
    devices = topology_devices(acc, num_slices)
    try:
        mesh = shd.make_mesh(mesh_cfg, dcn_shape=dcn if num_slices > 1 else None, devices=devices)
    except shd.MeshError as e:
        raise mesh_error(acc, config, num_slices, e) from None
    rules = runtime.rules_from_config(config)
    rl_config = config.rl.copy_and_resolve_references()
    if rl_config.optimizer.schedule == "warmup_cosine" and not rl_config.optimizer.total_steps:
        rl_config.optimizer.total_steps = int(config.steps)
    slot_meshes = trainer_lib.slot_meshes(config, mesh)
    states_per_device = 2 if len(slot_meshes) == 2 and config.roles.placement == "same" else 1
    slot_mesh = next(iter(slot_meshes.values()))  # every slot compiles to the same programs on its mesh
    model = models.build_model(model_config, mesh=slot_mesh, rules=rules)
    programs: list[_Program] = []

    def add(name, jitted, args, resident, calls, loop_trips=1):
        log(f"compiling {name} ...")
        compiled, seconds = _compile(name, jitted, *args)
        stats = dict(program_stats(compiled), replicated_inputs=replicated_inputs(compiled, args))
        programs.append(_Program(name, stats, int(resident), float(calls), seconds, int(loop_trips)))
        log(f"  {name}: peak {stats['peak_bytes'] / 2**30:.2f} GiB, {seconds:.1f} s to compile")
        return compiled

    # Update (and trainer log-probs when the loss needs them).
    update = rl.make_update_step(model, rl_config, slot_mesh)
    state = trainer_lib.abstract_train_state(model, rl_config)
    state_bytes = _device_bytes(state)
    params_bytes = _device_bytes(state.params)
    rows, length, steps = update_rows(config, update, workload)
    batch = abstract_batch(rows, length, update.batch_sharding, need_ref=update.need_ref)
    sampler_info, rollout_bytes, failed = {}, 0, None
    s = config.sampling
    prompt_len = int(config.get("prompts", {}).get("token_budget", 0) or s.get("max_prompt_tokens", 0) or 1024)
    new_tokens = int(s.max_new_tokens)
    all_calls = sampler_calls(config)
    try:
        layers = model_config.num_layers
        add("update", update.jitted, (state, batch), (states_per_device - 1) * state_bytes, steps,
            int(rl_config.micro_batches) * layers)
        if rl_config.loss.old_logprobs == "trainer" or update.need_ref:
            logprob = rl.make_logprob_step(model, rl_config, slot_mesh)
            add("logprobs", logprob, (state.params, batch), states_per_device * state_bytes - params_bytes, steps, layers)

        # Rollout copy of the weights.
        sampler_model = policy_lib.rollout_model(model, policy_lib.rollout_rules(config.rollout, rules))
        dtype = config.rollout.get("dtype") or None
        copies = 1 if states_per_device == 1 else 2
        base = states_per_device * state_bytes
        if policy_lib.rollout_in_place(state.params, sampler_model, dtype):
            rollout_params, rollout_bytes, in_state = state.params, 0, params_bytes
        else:
            reshard = policy_lib.reshard_program(sampler_model, dtype)
            rollout_params = _abstract(jax.eval_shape(reshard, state.params), models.param_shardings(sampler_model))
            rollout_bytes, in_state = _device_bytes(rollout_params), 0
            add("reshard", reshard, (state.params,), base - params_bytes + (copies - 1) * rollout_bytes, copies)
        base += copies * rollout_bytes  # train states + every rollout copy: resident through the rollout
        own = rollout_bytes or in_state  # this sampler's params, counted in `base`

        # Sampler programs at the iteration's largest call.
        prompts, samples = max(sampler_calls(config), key=lambda c: c[0] * c[1])
        temperature, top_k, top_p = float(s.temperature), int(s.get("top_k", 0)), float(s.get("top_p", 1.0))
        requests = [engine_lib.Request(prompt=np.zeros(prompt_len, np.int32), max_new_tokens=new_tokens, num_samples=samples,
                                       temperature=temperature, top_k=top_k, top_p=top_p, eos_ids=(0,))
                    for _ in range(prompts)]
        kwargs = dict(prompt_buckets=tuple(int(b) for b in s.get("prompt_buckets", ()) or ()) or None,
                      max_cache_length=int(s.get("max_cache_length", 0) or 0) or None)
        shards = sampling_core.batch_shards(sampler_model.mesh, sampler_model.rules)
        rows_sharding = lambda shape: shd.named_sharding(("cache_batch",) + (None,) * (len(shape) - 1), shape,
                                                         sampler_model.mesh, sampler_model.rules)
        rows_struct = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=rows_sharding(shape))
        replicated = jax.sharding.NamedSharding(sampler_model.mesh, jax.sharding.PartitionSpec())
        rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
        if s.get("engine", "static") == "continuous":
            ep = engine_lib._plan(sampler_model, requests, max_slots=int(s.get("max_slots", 0) or 0) or None,
                                  kv_cache_tokens=int(s.get("kv_cache_tokens", 0) or 0) or None, **kwargs)
            unroll = True  # SamplerPolicy decodes with the engine's default (unrolled layers)
            decode_model = sampling_core.decode_model(sampler_model)
            unstack = sampling_core.unstack_program(sampler_model)
            compiled = add("unstack", unstack, (rollout_params,), base - own, 1)
            decode_params = _outputs(compiled, jax.eval_shape(unstack, rollout_params))
            init = engine_lib.init_program(sampler_model, slots=ep.slots, cache_len=ep.cache_len, eos_width=ep.eos_width,
                                           per_layer=unroll)
            init_compiled, _ = _compile("init", init, rng)
            slot_state = _outputs(init_compiled, jax.eval_shape(init, rng))
            slot_bytes = _device_bytes(slot_state)
            # Admit (prefill + insert into slots): a refill admits every queued request whose samples fit
            # the free slots and runs them in batches of `admit_sizes` prompts; the largest batch comes
            # from the call with most prompts per refill (n = 1 calls: one prompt per slot).
            sizes = engine_lib.admit_sizes(ep.slots, shards)
            admitted = lambda c, n: min(c, max(1, ep.slots // n))  # prompts per refill of a call
            batch_of = lambda c, n: max((z for z in sizes if z <= admitted(c, n)), default=sizes[-1])
            bp, samples_bp = max((batch_of(c, n), n) for c, n in all_calls)
            admits = sum(-(-c // batch_of(c, n)) for c, n in all_calls)
            bucket = ep.prompt_buckets[0]
            width = bk.batch_bucket(bp * samples_bp)
            block, pads = rows_struct((bp, bucket), jnp.int32), rows_struct((bp,), jnp.int32)
            vec = lambda dtype: jax.ShapeDtypeStruct((width,), dtype, sharding=replicated)
            # As `run_requests` admits: the unrolled prefill over the per-layer weights the decode holds.
            admit = engine_lib.admit_program(decode_model)
            add("prefill", admit, (decode_params, slot_state, block, pads, rng, vec(jnp.int32), vec(jnp.int32),
                                   vec(jnp.int32), vec(jnp.int32), vec(jnp.int32), vec(jnp.float32), vec(jnp.float32),
                                   vec(jnp.int32), jax.ShapeDtypeStruct((width, ep.eos_width), jnp.int32, sharding=replicated)),
                base, admits, 1)
            chunk = int(s.get("chunk_steps", 0) or engine_lib.DEFAULT_CHUNK_STEPS)
            decode = engine_lib.decode_program(decode_model, chunk_steps=chunk, variants=ep.variants)
            waves = sum(-(-(c * n) // ep.slots) for c, n in all_calls)
            refill_after = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
            add("decode", decode, (decode_params, slot_state, refill_after), base, waves * -(-new_tokens // chunk), chunk)
            sampler_info = {"engine": "continuous", "slots": ep.slots, "cache_len": ep.cache_len, "prompt_bucket": bucket,
                            "prefill_prompts": bp, "chunk_steps": chunk, "kv_cache_bytes_per_device": slot_bytes}
        else:
            sp = sampler_lib._plan(sampler_model, [np.zeros(prompt_len, np.int32)] * prompts, max_new_tokens=new_tokens,
                                   temperature=temperature, top_k=top_k, top_p=top_p, **kwargs)
            bp, bucket = sp.padded_prompts, sp.prompt_bucket
            # As `generate_static` runs: the layers split once per call, prefill and decode unrolled over them.
            decode_model = sampling_core.decode_model(sampler_model)
            unstack = sampling_core.unstack_program(sampler_model)
            compiled = add("unstack", unstack, (rollout_params,), base - own, 1)
            decode_params = _outputs(compiled, jax.eval_shape(unstack, rollout_params))
            prefill = sampling_core.prefill_program(decode_model)
            block, pads = rows_struct((bp, bucket), jnp.int32), rows_struct((bp,), jnp.int32)
            compiled = add("prefill", prefill, (decode_params, block, pads), base, len(all_calls), 1)
            prompt_cache, last_logits = _outputs(compiled, jax.eval_shape(prefill, decode_params, block, pads))
            decode = sampler_lib.decode_program(decode_model, num_samples=samples, max_new_tokens=new_tokens,
                                                mode=sp.mode)
            scalar = lambda dtype: jax.ShapeDtypeStruct((), dtype, sharding=replicated)
            add("decode", decode, (decode_params, prompt_cache, last_logits, pads, pads, rows_struct((bp,), jnp.bool_),
                                   pads, pads, rng, scalar(jnp.float32), scalar(jnp.float32),
                                   jax.ShapeDtypeStruct(sampling_core.padded_stop_ids((0,)).shape, jnp.int32,
                                                        sharding=replicated)),
                base, len(all_calls), new_tokens)
            sampler_info = {"engine": "static", "rows": bp * samples, "prompt_bucket": bucket,
                            "cache_len": bucket + new_tokens - 1}

    except OutOfMemory as e:  # this program alone exceeds HBM: report it, skip the programs after it
        failed = {"program": e.program, "xla_message": e.message}
        programs.append(_Program(e.program, dict(_EMPTY_STATS, peak_bytes=e.required_bytes, error=e.message), 0, 0.0, 0.0))
        log(f"  {e.program}: {e.message}")

    # The report.
    out = {name: dict(p.stats, resident_bytes=p.resident_bytes, compile_seconds=round(p.compile_seconds, 2),
                      calls_per_iteration=p.calls, loop_trips=p.loop_trips,
                      iteration_seconds=p.iteration_seconds(acc))
           for name, p in ((p.name, p) for p in programs)}
    worst = max(programs, key=lambda p: p.stats["peak_bytes"] + p.resident_bytes)
    peak = worst.stats["peak_bytes"] + worst.resident_bytes
    seconds = sum(p.iteration_seconds(acc) for p in programs)
    w = workload
    trained = w["train_rows"] * int(config.rl.get("ppo_epochs", 1) or 1)
    flops = model_flops(model_config, trained, w["train_length"], all_calls, prompt_len, new_tokens)
    num_devices = len(devices)
    return {
        "accelerator": acc.name, "topology": acc.topology, "device_kind": devices[0].device_kind,
        "num_devices": num_devices, "num_slices": num_slices, "hbm_bytes_per_device": acc.hbm_bytes,
        "mesh": {a: int(v) for a, v in mesh.shape.items()}, "programs": out,
        "peak_bytes_per_device": int(peak), "peak_program": worst.name,
        "fits": bool(peak <= acc.hbm_bytes and failed is None), "headroom_fraction": 1.0 - peak / acc.hbm_bytes,
        "out_of_memory": failed,
        "train_states_per_device": states_per_device,
        "state_bytes_per_device": state_bytes, "rollout_params_bytes_per_device": rollout_bytes,
        "update_batch": {"rows": rows, "length": length, "micro_batches": int(rl_config.micro_batches),
                         "optimizer_steps": steps},
        "sampler": sampler_info,
        "xla_estimated_seconds_per_iteration": seconds,
        "model_flops_per_iteration": flops,
        "mfu_upper_bound": perf.utilisation(flops, seconds, num_devices, acc.peak_flops),
        "compile_seconds": round(sum(p.compile_seconds for p in programs), 2),
    }


def model_flops(mc, train_rows: int, train_length: int, calls, prompt_len: int, new_tokens: int) -> float:
    """Model FLOPs of one iteration with every sequence at full length (`perf`'s counting: matmuls +
    causal attention, no remat recompute): the update's forward + backward over `train_rows` sequences
    of `train_length`, one prefill per prompt and one forward per generated token."""
    train = perf.update_flops(mc, [train_length] * train_rows).model
    prompts = sum(c for c, _ in calls)
    rows = sum(c * s for c, s in calls)
    attention = lambda t: perf.attention_forward_flops(mc, [t])
    prefill = prompts * (2 * perf.matmul_params(mc) * prompt_len + attention(prompt_len))
    decode = rows * (2 * perf.matmul_params(mc) * new_tokens + attention(prompt_len + new_tokens) - attention(prompt_len))
    return train + prefill + decode
