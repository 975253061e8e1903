r"""LiveCodeBench evaluation (job `lcb_eval`): pass@1/5/10/20 on problems dated >= 2024-08-01.

Run (a local HF checkpoint directory with its tokenizer; LCB files on local disk):

  python -m gasp_jax.main --config=configs/lcb_eval.py --workdir=/tmp/lcb_eval \
      --config.model.hf_path=/ckpt/Qwen2.5-Coder-7B-Instruct \
      --config.data.sources=/data/lcb/code_generation_lite --config.data.release=release_v5

Defaults follow GASP's evaluation: LCB release_v5 problems in [2024-08-01, 2025-02-01) (279
problems), n=20 samples per problem at temperature 0.2 / top-p 0.95, LCB's generic chat prompt,
LCB-parity code extraction, all public + private tests graded in the sandbox.

Expect in `workdir`: report.json (pass@k overall / per difficulty / per platform, per-problem
counts, everything skipped and why), samples.jsonl (resume state; rerun the same command to
continue), tensorboard/ (scalars lcb/pass_at_k, lcb/difficulty/*/pass_at_k, lcb/platform/*/pass_at_k).
Progress is logged per batch (problems done, problems/s, ETA).

Config args (`--config=configs/lcb_eval.py:[preset][,key=value,...]`, as for every config file):
  full    (default) the evaluation above.
  smoke   a random-weight tiny model with the project's byte tokenizer on 4 problems of the
          shipped public-test sample, n=2: checks the plumbing in about a minute on CPU; expect pass@1 = 0.
"""

import ml_collections

from gasp_jax import profiling
from gasp_jax import overrides
from gasp_jax.data import paths
from gasp_jax.data.livecodebench import LCB_CUTOFF


PRESETS = ("full", "smoke")
WHERE = "configs/lcb_eval.py"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, changes = overrides.parse_arg(arg, presets=PRESETS, default="full", where=WHERE)
    config = ml_collections.ConfigDict()
    config.job = "lcb_eval"

    config.data = ml_collections.ConfigDict()
    # LCB JSONL/JSON files, or a directory holding test.jsonl ... test6.jsonl. Default: the shipped
    # release_v5 problems (public tests only); hub=True reads the full release (private tests too).
    config.data.sources = (str(paths.data_file(paths.LCB_PUBLIC_V5)),)
    config.data.hub = False  # read `hub_repo` through `datasets` (needs internet once; then the datasets cache)
    config.data.hub_repo = "livecodebench/code_generation_lite"  # or a local directory with its files
    config.data.release = ""  # a directory's release: "release_v5", "v4_v5", ... ("" = all present); with hub:
    # the version_tag (default release_v5)
    config.data.loader = "stream"  # or "datasets" (load_dataset("json", data_files=...))
    config.data.start = LCB_CUTOFF  # half-open window [start, end) on contest_date
    config.data.end = "2025-02-01"
    config.data.problem_ids = ()  # restrict to these question_ids (empty = all in the window)
    config.data.max_problems = 0  # first N problems by (date, id); 0 = all
    config.data.max_private_mb = 512  # decompressed size cap per problem's private tests

    config.model = ml_collections.ConfigDict()
    config.model.hf_path = ""  # local HF checkpoint directory (weights + tokenizer)
    config.model.preset = ""  # or a gasp_jax.models preset with RANDOM weights (smoke tests)
    config.model.tokenizer = ""  # tokenizer directory when it is not the checkpoint's
    config.model.dtype = "bfloat16"
    config.model.param_dtype = ""
    config.model.remat_policy = "none"
    config.model.vocab_size = 0  # override the preset's vocab (0 = keep)
    config.model.init_seed = 0

    config.use_mesh = True  # shard the model and sampler over all devices (config.mesh)
    config.profile = profiling.default_config()  # trace sampler calls start_step.. (docs/profiling.md)
    config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))

    config.prompt = ml_collections.ConfigDict()
    config.prompt.style = "chat"  # "chat" | "chat_no_system" | "base" (LCB few-shot)
    config.prompt.few_shot_dir = ""  # for "base": dir with LCB func.json / stdin.json

    config.sampling = ml_collections.ConfigDict()
    config.sampling.n = 20
    config.sampling.temperature = 0.2
    config.sampling.top_p = 0.95
    config.sampling.top_k = 0
    config.sampling.max_new_tokens = 4096
    config.sampling.max_prompt_tokens = 4096  # KV cache per row = this + max_new_tokens; longer prompts skip
    config.sampling.seed = 0
    config.sampling.extra_eos_ids = ()
    config.sampling.batch_problems = 8  # problems per generation batch (x n rows)
    config.sampling.max_rows = 64  # rows per sampler call (x cache length = the KV cache)

    config.extraction = "lcb"  # "lcb" (parity, reported) | "lenient" (also unfenced / truncated)

    config.sandbox = ml_collections.ConfigDict()
    config.sandbox.workers = 0  # 0 = os.cpu_count()
    config.sandbox.infra_retries = 1
    config.sandbox.limits = ml_collections.ConfigDict()  # gasp_jax.sandbox.Limits fields
    config.sandbox.limits.cpu_s = 6.0  # LCB's per-test timeout (judged on CPU time)
    config.sandbox.limits.memory_mb = 2048  # RLIMIT_AS per process
    config.sandbox.limits.memory_bytes = 0  # deprecated (memory_mb); non-zero still applies, with a warning

    config.ks = (1, 5, 10, 20)
    config.step = 0  # TensorBoard step (e.g. the checkpoint's training step)
    config.overwrite = False  # discard samples.jsonl instead of resuming

    if preset == "smoke":
        config.data.start = ""
        config.data.end = ""
        # Short statements (fit the tiny model's 2048-token context): functional + stdin, both sides of the cut.
        config.data.problem_ids = ("3676", "abc383_d", "3453", "abc333_a")
        config.model.preset = "tiny"
        config.model.dtype = "float32"
        config.use_mesh = False
        config.sampling.n = 2
        config.sampling.temperature = 1.0
        config.sampling.top_p = 1.0
        config.sampling.max_new_tokens = 16
        config.sampling.max_prompt_tokens = 2032  # the tiny preset's context is 2048
        config.sampling.batch_problems = 4
        config.sandbox.workers = 2
        config.ks = (1, 2)
    overrides.apply_overrides(config, changes, where=WHERE, noun="argument")
    return config
