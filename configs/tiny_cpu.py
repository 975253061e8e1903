"""Toy RL on CPU (the `toy_rl` job): RL alone on a digit-reversal task. About a minute on a 2-core CPU.

    python -m gasp_jax.main --config=configs/tiny_cpu.py --workdir=runs/tiny_cpu
    tensorboard --logdir runs/tiny_cpu/tb

A random-init `tiny` model (vocab cut to the task's 8 tokens) learns, by RL alone, to reverse the
2 digits of its prompt: sampler -> Python checker rewards -> TRR++ advantages -> PPO-clip update.
Expect `reward/mean` (fraction of digits right) to rise from ~0.25 (chance) to 1.0 within ~60 steps and
`eval/greedy_solved_frac` (all 16 prompts, greedy) to reach 1.0. Other seeds can plateau on a partial
solution (greedy 0.6-0.9): the entropy bonus keeps exploring, but a toy policy can still lock in a
wrong digit for some prompts. TensorBoard logs go to `WORKDIR/tb`, orbax checkpoints to
`WORKDIR/checkpoints`; re-running the command resumes from the latest one.

Presets (`--config=configs/tiny_cpu.py:ARG`):
  (none)  the toy RL run above
  demo    forward pass + checkpoint round trip only (seconds)
"""

import ml_collections

from gasp_jax import profiling, rl
from gasp_jax.sharding import DEFAULT_RULES


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.job = "demo" if arg == "demo" else "toy_rl"
    c.seed = 1

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"  # a gasp_jax.models.PRESETS name, used when hf_path is empty
    c.model.hf_path = ""  # a local HF checkpoint directory (demo job); overrides the preset
    c.model.vocab_size = 0  # 0: the preset's (demo) or the task's own vocabulary (toy_rl)
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"
    c.model.remat_policy = "none"

    c.task = ml_collections.ConfigDict(dict(num_digits=2, num_symbols=4))
    c.steps = 200
    c.prompts_per_step = 32
    c.samples_per_prompt = 4
    c.temperature = 1.0
    c.log_every = 20
    c.eval_every = 50

    c.rl = rl.default_config()
    c.rl.optimizer.learning_rate = 3e-3  # a toy model from scratch, not a 7B fine-tune (AZR: 1e-6)
    c.rl.optimizer.schedule = "warmup_cosine"
    c.rl.optimizer.warmup_steps = 10
    c.rl.optimizer.total_steps = 0  # 0: the run's `steps`
    c.rl.optimizer.final_lr_fraction = 0.1
    c.rl.loss.entropy_coef = 0.01  # keeps the toy policy exploring (AZR/GASP: 0)
    c.rl.logprob_chunk_size = 8

    c.checkpoint = ml_collections.ConfigDict(dict(every=50, keep=2))

    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    c.sharding = ml_collections.ConfigDict()
    c.sharding.rules = [list(rule) for rule in DEFAULT_RULES]
    # "auto": JAX's persistent compilation cache under $GASP_JAX_CACHE/xla (~/.cache/gasp_jax/xla)
    c.runtime = ml_collections.ConfigDict(dict(distributed=False, compilation_cache_dir="auto",
                                               compilation_cache_min_compile_s=1.0))
    c.profile = profiling.default_config()  # toy_rl: jax.profiler window, recompilation warm-up
    return c
