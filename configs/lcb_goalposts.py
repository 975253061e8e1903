r"""LiveCodeBench goalpost selection (job `lcb_goalposts`): problems no checkpoint solves at pass@100.

Run (one entry per checkpoint of the selection RL runs; GASP: 3 seeds, a checkpoint every 50 steps).
The arg is a comma-separated list of local HF checkpoint directories:

  python -m gasp_jax.main --workdir=/tmp/goalposts \
      --config=configs/lcb_goalposts.py:/ckpt/seed0/step50,/ckpt/seed0/step100,/ckpt/seed1/step50 \
      --config.data.sources=/data/lcb/code_generation_lite --config.data.release=release_v5

or a number of empty checkpoint slots filled by overrides (`--config=configs/lcb_goalposts.py:2
--config.checkpoints[0].hf_path=/ckpt/a --config.checkpoints[1].hf_path=/ckpt/b`); default 1 slot. Defaults: problems dated before 2024-08-01
(601 in release_v5), k=100 with n=100 samples per problem and checkpoint at temperature 1.0 (the
paper's rollout temperature), LCB chat prompt, every public + private test graded in the sandbox.
A problem solved by an earlier checkpoint is not sampled again (skip_solved).

Expect in `workdir`: goalposts.json (goalpost ids and, per goalpost and checkpoint, n, correct
count, pass@k, verdict histogram, sample codes and the samples file; solved problems with the
checkpoint that solved them; undetermined problems with the reason), and
checkpoints/<name>/samples.jsonl (all samples; rerun the same command to resume).
GASP found 146 goalposts among 601 problems with Qwen2.5-Coder-7B RLVR runs.

  smoke   (`:smoke`) two random-weight tiny checkpoints on 3 short problems, n=k=2: plumbing
          check; expect all 3 as goalposts (random weights solve nothing).

The arg mixes checkpoint directories (words with a `/`), a slot count, the preset (`full`, the
default, or `smoke`) and `key=value` overrides, e.g. `:/ckpt/a,/ckpt/b,k=10,sampling.n=10`.
"""

import ml_collections

from gasp_jax import overrides, profiling
from gasp_jax.data import paths
from gasp_jax.data.livecodebench import LCB_CUTOFF


def _checkpoint_slot(name: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = name  # label in goalposts.json (default: the directory name)
    c.hf_path = ""  # local HF checkpoint directory
    c.preset = ""  # or a random-weight preset (smoke tests)
    c.tokenizer = ""
    c.dtype = "bfloat16"
    c.param_dtype = ""
    c.remat_policy = "none"
    c.vocab_size = 0
    c.init_seed = 0
    return c


PRESETS = ("full", "smoke")
WHERE = "configs/lcb_goalposts.py"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    words = [w.strip() for w in (arg or "").split(",") if w.strip()]
    checkpoint_paths = [w for w in words if "/" in w and "=" not in w]
    counts = [int(w) for w in words if w.isdigit()]
    rest = ",".join(w for w in words if w not in checkpoint_paths and not w.isdigit())
    preset, changes = overrides.parse_arg(rest, presets=PRESETS, default="full", where=WHERE)
    smoke = preset == "smoke"
    slots = 2 if smoke else len(checkpoint_paths) or (counts[0] if counts else 1)
    config = ml_collections.ConfigDict()
    config.job = "lcb_goalposts"

    config.data = ml_collections.ConfigDict()
    # LCB JSONL/JSON files, or a directory holding test.jsonl ... test6.jsonl. Default: the shipped
    # release_v5 problems (public tests only); hub=True reads the full release (private tests too).
    config.data.sources = (str(paths.data_file(paths.LCB_PUBLIC_V5)),)
    config.data.hub = False  # read `hub_repo` through `datasets` (needs internet once; then the datasets cache)
    config.data.hub_repo = "livecodebench/code_generation_lite"  # or a local directory with its files
    config.data.release = ""  # a directory's release ("" = all present); with hub: the version_tag (default release_v5)
    config.data.loader = "stream"
    config.data.start = ""  # half-open window [start, end) on contest_date
    config.data.end = LCB_CUTOFF
    config.data.problem_ids = ()
    config.data.max_problems = 0
    config.data.max_private_mb = 512

    config.checkpoints = [_checkpoint_slot() for _ in range(slots)]
    for slot, path in zip(config.checkpoints, checkpoint_paths):
        slot.hf_path = path
    config.use_mesh = True
    config.profile = profiling.default_config()  # trace sampler calls start_step.. per checkpoint (docs/profiling.md)
    config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))

    config.prompt = ml_collections.ConfigDict()
    config.prompt.style = "chat"
    config.prompt.few_shot_dir = ""

    config.k = 100
    config.sampling = ml_collections.ConfigDict()
    config.sampling.n = 100  # must be >= k
    config.sampling.temperature = 1.0
    config.sampling.top_p = 1.0
    config.sampling.top_k = 0
    config.sampling.max_new_tokens = 4096
    config.sampling.max_prompt_tokens = 4096  # KV cache per row = this + max_new_tokens; longer prompts skip
    config.sampling.seed = 0
    config.sampling.extra_eos_ids = ()
    config.sampling.batch_problems = 2
    config.sampling.max_rows = 64

    config.extraction = "lcb"
    config.sandbox = ml_collections.ConfigDict()
    config.sandbox.workers = 0
    config.sandbox.infra_retries = 1
    config.sandbox.limits = ml_collections.ConfigDict()  # gasp_jax.sandbox.Limits fields
    config.sandbox.limits.cpu_s = 6.0  # LCB's per-test timeout (judged on CPU time)
    config.sandbox.limits.memory_mb = 2048  # RLIMIT_AS per process
    config.sandbox.limits.memory_bytes = 0  # deprecated (memory_mb); non-zero still applies, with a warning

    config.skip_solved = True
    config.evidence_samples = 2  # sample codes copied inline per goalpost and checkpoint
    config.overwrite = False

    if smoke:
        config.data.problem_ids = ("3453", "abc333_a", "3337")  # short statements (tiny context)
        for i, c in enumerate(config.checkpoints):
            c.name = f"tiny{i}"
            c.preset = "tiny"
            c.dtype = "float32"
            c.init_seed = i
        config.use_mesh = False
        config.k = 2
        config.sampling.n = 2
        config.sampling.max_new_tokens = 16
        config.sampling.max_prompt_tokens = 2032  # the tiny preset's context is 2048
        config.sandbox.workers = 2
    overrides.apply_overrides(config, changes, where=WHERE, noun="argument")
    return config
