"""Before launching: the mesh a config gets on N devices and the expected memory per device.

    python -m gasp_jax.plan --config=configs/azr.py:paper --accelerator=v5p-128
    python -m gasp_jax.plan --config=configs/gasp.py --num_devices=8 --device_memory_gb=80   # 8 x H100

Nothing runs on an accelerator: the params are abstract shapes and the mesh is its shape only. Prints
the mesh, every parameter that a rule could not shard (silently replicated), and the per-device bytes
of params, grads, optimizer state, the rollout copy of the weights, the sampler's KV cache and the
training activations (`sharding.estimate_memory`). Exits 1 when the estimate exceeds the device memory,
so a launcher stops before creating anything. The launch/ scripts run it first.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from typing import Any, NamedTuple

from absl import app, flags
from ml_collections import config_flags

from gasp_jax import aot, models, runtime
from gasp_jax import sharding as shd
from gasp_jax.rl.batch import DEFAULT_LENGTH_BUCKETS
from gasp_jax.sampling import engine
from gasp_jax.sampling import buckets as bk
from gasp_jax.selfplay.policy import rollout_rules

# GiB of accelerator memory per JAX device, and TensorCores per device (v4/v5p: one device per 2-core chip).
CHIPS = {
    "v4": (32, 2), "v5p": (95, 2), "v5litepod": (16, 1), "v5e": (16, 1), "v6e": (32, 1),
    "h100": (80, 1), "h200": (141, 1), "a100": (80, 1),
}
KINDS = ("deduction", "abduction", "induction")


class Flags(NamedTuple):
    config: flags.FlagHolder
    accelerator: flags.FlagHolder
    num_devices: flags.FlagHolder
    device_memory_gb: flags.FlagHolder
    num_slices: flags.FlagHolder
    compile: flags.FlagHolder
    report: flags.FlagHolder


def define_flags() -> Flags:
    """The command line, defined only when this module runs as the program: absl flags are process-global,
    so defining them at import would stop `gasp_jax.main` (which also has `--config`) sharing the process."""
    return Flags(
        config=config_flags.DEFINE_config_file("config", None, "Config file, as for gasp_jax.main.", lock_config=False),
        accelerator=flags.DEFINE_string("accelerator", "", "TPU accelerator type (v5p-128, v4-8, v5litepod-16, v6e-64)."),
        num_devices=flags.DEFINE_integer("num_devices", 0, "JAX devices (chips / GPUs) when not a TPU type."),
        device_memory_gb=flags.DEFINE_float("device_memory_gb", 0.0, "Memory per device; default from --accelerator."),
        num_slices=flags.DEFINE_integer("num_slices", 1, "Slices (multi-slice runs put mesh.dcn across them)."),
        compile=flags.DEFINE_bool("compile", False, "Compile every program of one iteration for --accelerator with "
                                  "XLA's TPU compiler (needs libtpu, `pip install -e .[tpu]`; no TPU) and report its "
                                  "memory and cost."),
        report=flags.DEFINE_string("report", "", "With --compile: also write the report as JSON to this file."))


def tpu_devices(accelerator: str) -> tuple[int, float]:
    """`("v5p-128")` -> (64 devices, 95 GiB): the number after the dash counts TensorCores."""
    family, _, cores = accelerator.lower().partition("-")
    if family not in CHIPS or not cores.isdigit():
        raise ValueError(f"unknown accelerator {accelerator!r}; expected <family>-<cores>, family in {sorted(CHIPS)}")
    gib, per_device = CHIPS[family]
    return max(1, int(cores) // per_device), float(gib)


def mesh_shape_for(config: Any, num_devices: int, num_slices: int = 1) -> dict[str, int]:
    """`config.mesh` resolved for `num_devices` devices in `num_slices` slices (no devices needed)."""
    ici = {a: int(config.mesh.get(a, 1)) for a in shd.MESH_AXES}
    dcn = dict(config.mesh.get("dcn", None) or {})
    if math.prod(int(v) for v in dcn.values()) != num_slices:
        if num_slices != 1 or dcn:
            raise shd.MeshError(f"config.mesh.dcn {dcn or {}} does not describe {num_slices} slices")
    per_slice = num_devices // num_slices
    known = math.prod(v for v in ici.values() if v != -1)
    if -1 in ici.values():
        if per_slice % known:
            raise shd.MeshError(f"mesh {ici} does not divide {per_slice} devices per slice")
        ici[next(a for a, v in ici.items() if v == -1)] = per_slice // known
    if math.prod(ici.values()) * num_slices != num_devices:
        raise shd.MeshError(f"mesh {ici} x {num_slices} slices needs {math.prod(ici.values()) * num_slices} devices, plan has {num_devices}")
    return {a: ici[a] * int(dcn.get(a, 1)) for a in shd.MESH_AXES}


def workload(config: Any) -> dict[str, int]:
    """Rows and lengths of one iteration, read from the config (self-play fields when present)."""
    sampling = config.get("sampling", {})
    prompts = config.get("prompts", {})
    length = int(prompts.get("token_budget", 0) or sampling.get("max_prompt_tokens", 0) or 1024)
    length += int(sampling.get("max_new_tokens", 1024))
    train_rows, sample_rows = 0, 0
    for block in dict(config.get("sources", {}) or {}).values():
        n = int(block.get("learnability_samples", 1))
        if "propose_per_kind" in block:  # AZR: every task type proposes and solves
            propose, solve = len(KINDS) * int(block.propose_per_kind), len(KINDS) * int(block.get("solve_per_kind", 0))
        else:  # GASP: lemmas (+ lifts per lemma) proposed, a student batch solved
            propose = int(block.get("lemmas_per_step", 0)) * (1 + int(block.get("lifts_per_lemma", 0)))
            solve = int(block.get("solve_batch", 0))
        train_rows += propose + solve
        sample_rows = max(sample_rows, propose * n, solve)
    if not train_rows:  # evaluation jobs: sampling only
        sample_rows = int(sampling.get("max_rows", 0) or sampling.get("n", 1) * sampling.get("batch_problems", 1))
    return {
        "train_rows": train_rows,
        "train_length": length,
        "sample_rows": sample_rows,
        "cache_length": int(sampling.get("max_cache_length", 0) or length),
        "micro_batches": int(config.get("rl", {}).get("micro_batches", 1)),
        "logprob_chunk": int(config.get("rl", {}).get("logprob_chunk_size", 256)),
        # rows of one optimizer step (PPO mini-batch), each split into `micro_batches`
        "step_rows": min(train_rows, int(config.get("rl", {}).get("ppo_mini_batch_size", 0) or 0) or train_rows),
    }


def padded_length(length: int) -> int:
    """The update's sequence length as the trainer pads it: the next `rl.DEFAULT_LENGTH_BUCKETS` bucket."""
    return next((b for b in DEFAULT_LENGTH_BUCKETS if b >= length), length)


def sampler_rows(config: Any, w: dict[str, int], mesh_shape: dict[str, int], rules: shd.Rules) -> tuple[int, int]:
    """(rows, per-row cache length) the sampler holds a KV cache for: the continuous engine's slots
    (`sampling.max_slots`, or as many as `kv_cache_tokens` holds, never more than the call's rows) at its
    bucketed per-slot length; the static engine: every row of the largest call."""
    s = config.get("sampling", {})
    if s.get("engine", "static") != "continuous" or not w["sample_rows"]:
        return w["sample_rows"], w["cache_length"]
    target = dict(rules).get("cache_batch")
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    shards = math.prod(mesh_shape.get(a, 1) for a in axes)
    new = int(s.get("max_new_tokens", 1024))
    limit = w["cache_length"]
    prompt = bk.pick_bucket(w["train_length"] - new, bk.effective_prompt_buckets(
        tuple(s.get("prompt_buckets", ()) or ()) or bk.default_prompt_buckets(limit - new), limit - new))
    cache_len = engine.cache_length_bucket(prompt + new - 1, limit)
    slots = int(s.get("max_slots", 0) or 0) or (engine.slots_for_budget(int(s.kv_cache_tokens), cache_len, shards)
                                                if s.get("kv_cache_tokens") else engine.DEFAULT_MAX_SLOTS // shards * shards)
    return min(slots, bk.batch_bucket(w["sample_rows"], shards)), cache_len


def _rollout_rules(config: Any, rules: shd.Rules) -> shd.Rules | None:
    """The sampler's weight layout (selfplay's `rollout` block), or None for jobs without one."""
    if "rollout" not in config:
        return None

    return rollout_rules(config.rollout, rules)


def model_config_of(config: Any):
    """(ModelConfig, notes) of `config.model` from the config alone: the HF `config.json` when
    readable, else the preset's shapes; dtypes, remat policy and vocab size as the trainer applies them."""
    mc = config.model
    if not mc.get("hf_path") and not mc.get("preset"):
        raise ValueError("config.model needs hf_path (a local HF checkpoint directory) or a preset to plan for")
    notes = []
    overrides = dict(dtype=mc.dtype, param_dtype=mc.get("param_dtype") or mc.dtype,
                     remat_policy=mc.get("remat_policy", "none"))
    if mc.get("hf_path") and os.path.isfile(os.path.join(mc.hf_path, "config.json")):
        return models.ModelConfig.from_hf_dict(models.hf.read_hf_config(mc.hf_path), **overrides), notes
    if mc.get("hf_path"):
        notes.append(f"note: {mc.hf_path} is not readable here; planning with the shapes of preset {mc.preset!r}")
    model_config = models.get_preset(mc.preset, **overrides)
    if mc.get("vocab_size"):
        model_config = model_config.replace(vocab_size=int(mc.vocab_size))
    return model_config, notes


def plan(config: Any, num_devices: int, device_gib: float | None, num_slices: int = 1) -> tuple[str, bool]:
    """(report text, fits) for `config` on `num_devices` devices of `device_gib` GiB."""
    text, fits, _ = estimate(config, num_devices, device_gib, num_slices)
    return text, fits


def estimate(config: Any, num_devices: int, device_gib: float | None, num_slices: int = 1
             ) -> tuple[str, bool, dict[str, int]]:
    """The hand model: (report text, fits, bytes per device by component incl. "total")."""
    mc = config.model
    model_config, notes = model_config_of(config)
    mesh_shape = mesh_shape_for(config, num_devices, num_slices)
    rules = runtime.rules_from_config(config)
    boxed = models.abstract_params(models.build_model(model_config))
    w = workload(config)
    rollout = _rollout_rules(config, rules)
    rows, cache_len = sampler_rows(config, w, mesh_shape, rollout or rules)
    continuous = config.get("sampling", {}).get("engine", "static") == "continuous"
    est = shd.estimate_memory(
        boxed, model_config, mesh_shape, rules, rollout_rules=rollout,
        rollout_dtype=(config.get("rollout", {}).get("dtype") or None), rollout_copies=2 if continuous else 1,
        train_rows=w["step_rows"], train_length=padded_length(w["train_length"]), micro_batches=w["micro_batches"],
        logprob_chunk=w["logprob_chunk"], sample_rows=rows, cache_length=cache_len)
    lines = notes + [f"model {mc.get('hf_path') or mc.preset}: {model_config.num_params / 1e9:.2f}B params "
             f"({model_config.param_dtype} storage, {model_config.dtype} compute)",
             f"mesh {mesh_shape} on {num_devices} devices" + (f" in {num_slices} slices" if num_slices > 1 else ""),
             f"workload per iteration {w}"]
    for p in shd.param_placements(boxed, mesh_shape, rules):
        if p.dropped:
            lines.append(f"  replicated: {p.path} {p.shape} spec {p.spec}: {'; '.join(p.dropped)}")
    batch_shards = mesh_shape["data"] * mesh_shape["fsdp"]
    multiple = max(1, w["micro_batches"]) * batch_shards  # the trainer pads a step's rows to a multiple of this
    if w["step_rows"] and multiple > w["step_rows"]:
        lines.append(f"  warning: {w['step_rows']} rows per optimizer step are padded to rl.micro_batches x data x fsdp "
                     f"= {multiple} ({multiple // w['step_rows']}x the compute); choose rl.micro_batches = "
                     f"{max(1, w['step_rows'] // batch_shards)} on this mesh")
    lines.append("estimated memory per device:")
    lines += [f"  {k:15s} {v / 2**30:8.2f} GiB" for k, v in est.items()]
    fits = device_gib is None or est["total"] <= device_gib * 2**30
    if device_gib is not None:
        lines.append(f"  device memory   {device_gib:8.2f} GiB -> {'fits' if fits else 'DOES NOT FIT'}")
    return "\n".join(lines), fits, {k: int(v) for k, v in est.items()}


def format_report(report: dict) -> str:
    """The compile report as a console table: one row per program, then the iteration's totals."""
    gib = lambda b: f"{b / 2**30:8.2f}"
    est = report.get("estimate", {})
    lines = [f"{report['accelerator']} x {report['num_slices']} slice(s) ({report['topology']}, {report['device_kind']}, "
             f"{report['num_devices']} devices, {report['hbm_bytes_per_device'] / 2**30:.0f} GiB HBM each), mesh {report['mesh']}",
             f"update batch {report['update_batch']}, sampler {report['sampler']}",
             f"{'program':10s} {'args GiB':>8s} {'out GiB':>8s} {'temp GiB':>8s} {'alias GiB':>9s} {'peak GiB':>8s} "
             f"{'+resident':>9s} {'TFLOP':>9s} {'XLA s':>9s} {'calls':>7s} {'s/iter':>8s} {'compile s':>9s}"]
    for name, p in report["programs"].items():
        lines.append(f"{name:10s} {gib(p['argument_bytes'])} {gib(p['output_bytes'])} {gib(p['temp_bytes'])} "
                     f"{gib(p['alias_bytes']):>9s} {gib(p['peak_bytes'])} {gib(p['resident_bytes']):>9s} "
                     f"{p['flops'] / 1e12:9.2f} {p['xla_estimated_seconds']:9.4f} {p['calls_per_iteration']:7.0f} "
                     f"{p.get('iteration_seconds', 0.0):8.1f} {p['compile_seconds']:9.1f}")
    lines.append(f"peak per device (XLA): {report['peak_bytes_per_device'] / 2**30:.2f} GiB in {report['peak_program']} "
                 f"({report['headroom_fraction']:.0%} of HBM left) -> {'fits' if report['fits'] else 'DOES NOT FIT'}")
    if est:
        lines.append("hand estimate per device: " + ", ".join(f"{k} {v / 2**30:.2f}" for k, v in est.items()) + " GiB")
    lines.append(f"XLA cost model (not a measurement): {report['xla_estimated_seconds_per_iteration']:.1f} s per "
                 f"iteration, MFU upper bound {report['mfu_upper_bound']:.1%}")
    return "\n".join(lines)


def compile_report(config: Any, accelerator: str, num_slices: int = 1, log=None) -> dict:
    """`aot.compile_iteration` plus the hand estimate for the same topology under "estimate"."""
    acc = aot.parse_accelerator(accelerator)
    try:
        _, _, est = estimate(config, acc.devices * num_slices, acc.hbm_bytes / 2**30, num_slices)
    except shd.MeshError as e:
        raise aot.mesh_error(acc, config, num_slices, e) from None
    report = aot.compile_iteration(config, accelerator, num_slices, model_config=model_config_of(config)[0],
                                   workload=workload(config), log=log)
    report["estimate"] = est
    return report


def main(argv, cli: Flags) -> None:
    del argv
    if cli.config.value is None:
        raise app.UsageError("--config is required")
    if cli.compile.value:
        # Compiling for a TPU topology needs libtpu but no TPU: keep JAX's own backend on the CPU.
        os.environ.setdefault("JAX_PLATFORMS", "cpu")

        if not cli.accelerator.value:
            raise app.UsageError("--compile needs --accelerator (a TPU type such as v5p-8)")
        try:
            report = compile_report(cli.config.value, cli.accelerator.value, cli.num_slices.value,
                                    log=lambda m: print(f"plan: {m}", file=sys.stderr, flush=True))
        except aot.CompileError as e:
            print(f"plan: XLA could not compile {e}", file=sys.stderr)
            sys.exit(2)
        except (ValueError, FileNotFoundError) as e:  # no libtpu, bad accelerator / mesh / config
            print(f"plan: error: {e}", file=sys.stderr)
            sys.exit(2)
        print(format_report(report))
        if cli.report.value:
            with open(cli.report.value, "w") as f:
                json.dump(report, f, indent=2)
        sys.exit(0 if report["fits"] else 1)
    gib = cli.device_memory_gb.value or None
    if cli.accelerator.value:
        num_devices, chip_gib = tpu_devices(cli.accelerator.value)
        num_devices *= cli.num_slices.value
        gib = gib or chip_gib
    elif cli.num_devices.value:
        num_devices = cli.num_devices.value
    else:
        raise app.UsageError("give --accelerator (TPU type) or --num_devices")
    try:
        text, fits = plan(cli.config.value, num_devices, gib, cli.num_slices.value)
    except (ValueError, FileNotFoundError) as e:  # a bad mesh, model or config: one line, no traceback
        print(f"plan: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(text)
    sys.exit(0 if fits else 1)


if __name__ == "__main__":
    app.run(functools.partial(main, cli=define_flags()))
