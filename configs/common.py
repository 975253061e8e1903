"""Config blocks shared by the self-play family (configs/azr.py, gasp.py, rlvr.py, gasp_rlvr.py).

Each function returns one ml-collections block; a config file assembles them with `base()` and then
changes what its method needs. Arguments after the colon are `preset,key=value,...`:

    python -m gasp_jax.main --config=configs/azr.py:tiny,steps=4,sources.azr.solve_per_kind=2 --workdir=...

`parse_arg` + `apply_overrides` turn them into config changes; an unknown preset or key is one
`ValueError` line naming it (before anything is built or compiled). `--config.x.y=...` flags work as
for every config file.
"""

from __future__ import annotations

import ml_collections

from gasp_jax import overrides as overrides_lib
from gasp_jax import profiling
from gasp_jax import rl as rl_lib
from gasp_jax.sharding import DEFAULT_RULES


# ---------------------------------------------------------------------------------------- arguments


parse_arg = overrides_lib.parse_arg  # `preset,key=value,...` (gasp_jax.overrides)


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict, *, where: str) -> None:
    """Sets dotted keys that exist in `config` (casting to the field's type); unknown -> ValueError."""
    overrides_lib.apply_overrides(config, overrides, where=where, noun="argument")


# ------------------------------------------------------------------------------------------- blocks


def model(preset: str = "tiny") -> ml_collections.ConfigDict:
    """The policy model: a local HF checkpoint (`hf_path`) or a random-init `gasp_jax.models` preset."""
    return ml_collections.ConfigDict(dict(
        preset=preset,  # used when hf_path is empty (random init; tokenizer: the byte tokenizer)
        hf_path="",  # a local HF checkpoint directory (weights + tokenizer); nothing is downloaded
        dtype="float32",
        param_dtype="float32",
        remat_policy="none",
        vocab_size=0,  # 0: the preset's
    ))


def sampling() -> ml_collections.ConfigDict:
    """Rollout sampling (AZR: T = 1.0, top-p 1.0).

    `engine`: "continuous" (continuous batching: finished decode slots are refilled between chunks of
    `chunk_steps` steps; 2-3x the static engine's tokens/s on ragged self-play work, docs/benchmarks.md)
    or "static" (one batch until its longest row stops). `max_slots` / `kv_cache_tokens`: the slot count,
    or the cached-token budget it is derived from (0: the engine's default, at most the call's rows).
    `fixed_shapes` (continuous; needs `max_slots` or `kv_cache_tokens`): every call runs the same slot
    count and cache length, and the first call compiles the admit program of every prompt bucket, so
    nothing compiles after the run's first iteration (docs/sampling.md, "Fixed shapes").
    """
    return ml_collections.ConfigDict(dict(
        temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8096, engine="continuous", chat_template=False,
        prompt_buckets=(), max_cache_length=0, max_slots=0, kv_cache_tokens=0, chunk_steps=16, fixed_shapes=False,
    ))


def prompts() -> ml_collections.ConfigDict:
    """Task prompt rendering (tasks layer): "full" AZR templates or "compact" ones for tiny models."""
    return ml_collections.ConfigDict(dict(template="full", chat=False, token_budget=6144))


def validation() -> ml_collections.ConfigDict:
    """Sandbox limits per proposal run: `cpu_s` decides the verdict (CPU time is fair on a loaded host),
    `wall_s` is the wall-clock backstop (0: 2 * cpu_s + 1). The paper presets use AZR's 10 s."""
    return ml_collections.ConfigDict(dict(cpu_s=4.0, wall_s=0.0, memory_mb=2048, max_output_chars=1000,
                                          max_input_chars=1000, runs=2))


def judge() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(cpu_s=4.0, wall_s=0.0, memory_mb=2048, n_visible=0))  # 0: half the pairs (AZR)


def rewards() -> ml_collections.ConfigDict:
    """AZR's composite reward constants (paper.md section 9.3)."""
    return ml_collections.ConfigDict(dict(correct=1.0, wrong=-0.5, format_error=-1.0, valid_extreme=-0.5,
                                          invalid=-1.0))


def rl() -> ml_collections.ConfigDict:
    """AZR/GASP RL defaults (AdamW 1e-6 constant, clip 1.0, PPO clip 0.2/0.28, token-mean, no KL, TRR++)."""
    return rl_lib.default_config()


def mesh() -> ml_collections.ConfigDict:
    """Device mesh of one slice; `dcn` (all ones: one slice) spreads axes over slices, e.g. dcn.data=2."""
    return ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, dcn=dict(data=1, fsdp=1, tensor=1)))


def sandbox() -> ml_collections.ConfigDict:
    """Host sandbox pool. `allow_unsafe` only for machines without namespaces (tests, laptops)."""
    return ml_collections.ConfigDict(dict(workers=0, allow_unsafe=False))  # workers 0: one per CPU


def checkpoint() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(every=10, keep=2, async_save=True))


def log() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(every=1, text_every=10))


def rollout() -> ml_collections.ConfigDict:
    """The sampler's weight layout: "tensor_only" (replicated over data/fsdp), "trainer", or a table;
    `dtype` of the rollout copy ("": the trainer's param dtype; "bfloat16": half the bytes of fp32)."""
    return ml_collections.ConfigDict(dict(rules="tensor_only", dtype=""))


def roles() -> ml_collections.ConfigDict:
    """With `rl.separate_teacher_student`: "same" mesh for both models or "split" (disjoint halves)."""
    return ml_collections.ConfigDict(dict(placement="same"))


def runtime(compilation_cache_dir: str = "") -> ml_collections.ConfigDict:
    """`compilation_cache_dir`: JAX's persistent compilation cache: "" off, "auto" (the CPU presets:
    `$GASP_JAX_CACHE/xla`, else ~/.cache/gasp_jax/xla), or a directory every host can read (pods:
    a `gs://` path); `gasp_jax.runtime.initialize`."""
    return ml_collections.ConfigDict(dict(distributed="auto", compilation_cache_dir=compilation_cache_dir,
                                          compilation_cache_min_compile_s=1.0))


def warmstart(enabled: bool) -> ml_collections.ConfigDict:
    """The supervised warm start block (gasp_jax/warmstart/): a cached SFT checkpoint that
    replaces `model.hf_path` when enabled."""
    from gasp_jax import warmstart as warmstart_lib

    block = warmstart_lib.default_config()
    block.enabled = enabled
    return block


def base(*, steps: int, model_preset: str = "tiny", warmstart_enabled: bool = False) -> ml_collections.ConfigDict:
    """Every shared block of a self-play run; the caller adds `sources` and changes what it needs."""
    c = ml_collections.ConfigDict()
    c.job = "selfplay"
    c.seed = 0
    c.steps = steps
    c.model = model(model_preset)
    c.init = ml_collections.ConfigDict()
    c.init.warmstart = warmstart(warmstart_enabled)
    c.sampling = sampling()
    c.prompts = prompts()
    c.validation = validation()
    c.judge = judge()
    c.rewards = rewards()
    c.rl = rl()
    c.mesh = mesh()
    c.sharding = ml_collections.ConfigDict()
    c.sharding.rules = [list(rule) for rule in DEFAULT_RULES]
    c.rollout = rollout()
    c.roles = roles()
    c.sandbox = sandbox()
    c.checkpoint = checkpoint()
    c.log = log()
    c.runtime = runtime()
    c.profile = profiling.default_config()  # jax.profiler window + recompilation warm-up (docs/profiling.md)
    c.hooks = ()  # "package.module:Class" after-step hooks (e.g. periodic evaluation)
    c.sources = ml_collections.ConfigDict()
    return c


def tiny_base(*, steps: int) -> ml_collections.ConfigDict:
    """`base` for the CPU presets: the tiny model from the supervised warm start, two sandbox workers."""
    c = base(steps=steps, model_preset="tiny", warmstart_enabled=True)
    c.rl.optimizer.learning_rate = 1e-4  # a tiny warm-started model, not a 7B fine-tune (AZR: 1e-6)
    c.rl.logprob_chunk_size = 128
    c.sandbox.workers = 2
    c.runtime = runtime(compilation_cache_dir="auto")  # a rerun loads its programs from the disk
    return c


def fixed_rollout_shapes(c: ml_collections.ConfigDict, *, slots: int, prompt_buckets: tuple[int, ...]
                         ) -> ml_collections.ConfigDict:
    """Every rollout call of the run on `slots` slots, the whole `sampling.max_cache_length` and these
    prompt buckets (list each cache limit - max_new_tokens a call uses, or the engine adds it): the
    programs compile in the first iteration, later ones compile nothing."""
    c.sampling.update(fixed_shapes=True, max_slots=int(slots), prompt_buckets=tuple(int(b) for b in prompt_buckets))
    return c


def paper_base(*, steps: int = 500) -> ml_collections.ConfigDict:
    """`base` at the paper's scale: Qwen2.5-Coder-7B in bf16 compute, fp32 master weights, full remat."""
    c = base(steps=steps, model_preset="qwen2.5-coder-7b")
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.remat_policy = "full"
    # AZR's optimisation schedule: one PPO epoch over the iteration's sequences in 128-row mini-batches
    # (384 sequences -> 3 optimiser steps).
    c.rl.ppo_mini_batch_size = 128
    c.rl.ppo_epochs = 1
    paper_v5p8(c)
    # AZR's executor timeout (10 s per execution) for proposal validation and judging.
    for block in (c.validation, c.judge):
        block.cpu_s = 10.0
        block.wall_s = 10.0
    return c


def paper_v5p8(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Fit the paper's batch on one v5p-8 (4 chips, 95 GiB each) with >= 10% of HBM left, as XLA's TPU
    compiler counts it (`python -m gasp_jax.plan --accelerator=v5p-8 --compile`; docs/launch.md has the
    figures and the settings for bigger slices). Every weight is split 4 ways over `tensor` (the heads:
    28 / 4, KV heads 4 / 4), which also shards a sequence's attention scores by head; one 14,240-token
    row per micro-batch (128-row PPO steps in 128 micro-batches); a bf16 rollout copy in the trainer's
    layout (no replica); a KV budget of 16 engine slots instead of a cache for every sample row."""
    c.mesh.update(data=1, fsdp=-1, tensor=4)  # v5p-8: fsdp 1; bigger slices: fsdp fills the rest
    c.rl.micro_batches = 128
    c.rollout.dtype = "bfloat16"
    c.sampling.max_cache_length = int(c.prompts.token_budget) + int(c.sampling.max_new_tokens)  # 6,144 + 8,096
    c.sampling.kv_cache_tokens = 16 * c.sampling.max_cache_length
    return c
