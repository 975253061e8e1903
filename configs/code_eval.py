r"""HumanEval / MBPP+ evaluation (job `code_eval`): pass@k as AZR reports them (EvalPlus protocol).

Run (a local HF checkpoint directory with its tokenizer):

  python -m gasp_jax.main --config=configs/code_eval.py:humaneval --workdir=/tmp/humaneval \
      --config.model.hf_path=/ckpt/Qwen2.5-Coder-7B
  python -m gasp_jax.main --config=configs/code_eval.py:mbpp_plus --workdir=/tmp/mbpp_plus \
      --config.model.hf_path=/ckpt/Qwen2.5-Coder-7B

Defaults follow AZR's evaluation (EvalPlus): greedy decoding (n=1, temperature 0), EvalPlus's chat
prompt (self-contained script in a markdown block, assistant turn pre-filled up to ```python),
EvalPlus's sanitiser and oracle. HumanEval: the 164 problems of OpenAI's file with their check()
tests (HumanEval+'s extra inputs are not shipped). MBPP+: the 378 EvalPlus problems,
base inputs and plus inputs; `pass@1` is MBPP+ (base AND plus), `base_pass_at_k` the base tests only.
For pass@k with k > 1 set `--config.sampling.n=20 --config.sampling.temperature=0.8 --config.ks=1,5,10,20`.

Expect in `workdir`: report.json, samples.jsonl (resume state; rerun to continue), tensorboard/.

Config args (`--config=configs/code_eval.py:<benchmark>[,smoke][,key=value,...]`):
  humaneval | mbpp_plus    the benchmark (default humaneval)
  smoke                    a random-weight tiny model with the byte tokenizer on 3 problems, n=2,
                           16 new tokens: plumbing check in well under a minute; expect pass@1 = 0.
"""

import ml_collections

from gasp_jax import profiling
from gasp_jax import overrides
from gasp_jax.data import paths

DATA_FILES = {"humaneval": paths.HUMANEVAL, "mbpp_plus": paths.MBPP_PLUS}  # shipped (gasp_jax/data/files)


WHERE = "configs/code_eval.py"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    words = [w.strip() for w in (arg or "").split(",") if w.strip()]
    smoke = "smoke" in words  # combines with a benchmark, so it is not one of the presets
    benchmark, changes = overrides.parse_arg(",".join(w for w in words if w != "smoke"), presets=tuple(DATA_FILES),
                                             default="humaneval", where=WHERE)

    config = ml_collections.ConfigDict()
    config.job = "code_eval"
    config.benchmark = benchmark  # "humaneval" | "mbpp_plus"

    config.data = ml_collections.ConfigDict()
    config.data.path = str(paths.data_file(DATA_FILES[benchmark]))
    config.data.problem_ids = ()  # restrict to these task ids (empty = all)
    config.data.max_problems = 0  # first N problems in file order; 0 = all

    config.model = ml_collections.ConfigDict()
    config.model.hf_path = ""  # local HF checkpoint directory (weights + tokenizer)
    config.model.preset = ""  # or a gasp_jax.models preset with RANDOM weights (smoke tests)
    config.model.tokenizer = ""
    config.model.dtype = "bfloat16"
    config.model.param_dtype = ""
    config.model.remat_policy = "none"
    config.model.vocab_size = 0
    config.model.init_seed = 0

    config.use_mesh = True
    config.profile = profiling.default_config()  # trace sampler calls start_step.. (docs/profiling.md)
    config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))

    config.prompt = ml_collections.ConfigDict()
    config.prompt.style = "chat"  # "chat" (EvalPlus instruct prompt) | "base" (direct completion)

    config.sampling = ml_collections.ConfigDict()
    config.sampling.n = 1
    config.sampling.temperature = 0.0  # greedy, as AZR reports HumanEval+/MBPP+
    config.sampling.top_p = 1.0
    config.sampling.top_k = 0
    config.sampling.max_new_tokens = 768
    config.sampling.max_prompt_tokens = 2048
    config.sampling.seed = 0
    config.sampling.extra_eos_ids = ()
    config.sampling.batch_problems = 16
    config.sampling.max_rows = 64

    config.sandbox = ml_collections.ConfigDict()
    config.sandbox.workers = 0  # 0 = os.cpu_count()
    config.sandbox.infra_retries = 1
    config.sandbox.limits = ml_collections.ConfigDict()  # per call (one process per input)
    config.sandbox.limits.cpu_s = 4.0
    config.sandbox.limits.memory_mb = 2048  # RLIMIT_AS per process
    config.sandbox.limits.memory_bytes = 0  # deprecated (memory_mb); non-zero still applies, with a warning

    config.ks = (1,)
    config.step = 0
    config.overwrite = False

    if smoke:
        config.data.max_problems = 3
        config.model.preset = "tiny"
        config.model.dtype = "float32"
        config.use_mesh = False
        config.sampling.n = 2
        config.sampling.temperature = 1.0
        config.sampling.max_new_tokens = 16
        config.sampling.max_prompt_tokens = 2032
        config.sandbox.workers = 2
        config.ks = (1, 2)
    overrides.apply_overrides(config, changes, where=WHERE, noun="argument")
    return config
