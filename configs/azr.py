"""AZR self-play (Absolute Zero; the paper's unguided asymmetric self-play baseline).

    python -m gasp_jax.main --config=configs/azr.py:tiny --workdir=runs/azr_tiny          # CPU, minutes
    python -m gasp_jax.main --config=configs/azr.py --workdir=runs/azr_7b \\
        --config.model.hf_path=/ckpts/Qwen2.5-Coder-7B                                    # paper scale
    tensorboard --logdir runs/

Each iteration the teacher proposes deduction / abduction / induction tasks (K references from each
type's buffer), the sandbox validates them, n student samples estimate each task's pass rate p (not
trained on), the proposer earns 1 - p for learnable tasks, the student solves a batch (new tasks first,
then the buffer), TRR++ whitens rewards per (type, role) and one PPO-clip update follows.

Presets (`--config=configs/azr.py:PRESET,key=value,...`):
  paper  (default) Qwen2.5-Coder-7B shape, AZR settings: AdamW 1e-6 constant, clip 1.0, T = 1.0, n = 8,
         K = 6, 64 tasks per (type, role), PPO clip 0.2 / 0.28, no KL, seed files of the 7B coder run,
         8096 new tokens, prompt budget 6144, 500 iterations. Set model.hf_path.
  tiny   the CPU main command: the warm-started tiny model (configs/warmstart.py, cached), compact
         prompts, 4 tasks per (type, role), n = 4; some proposals validate, some answers are correct
         and the advantage groups have non-zero variance within the first iterations.
Any config key can be set as `key=value` (dotted paths, e.g. `sources.azr.references=2`).
"""

import ml_collections

from configs import common
from gasp_jax.data import paths

PRESETS = ("paper", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, overrides = common.parse_arg(arg, presets=PRESETS, default="paper", where="configs/azr.py")
    if preset == "tiny":
        c = tiny()
    else:
        c = paper()
    common.apply_overrides(c, overrides, where="configs/azr.py")
    return c


def azr_source() -> ml_collections.ConfigDict:
    from gasp_jax.selfplay import azr

    block = azr.default_config()
    block.seed_file = str(paths.azr_seed_file("7b_coder_seed_io.jsonl"))
    block.induction_seed_file = str(paths.azr_seed_file("7b_coder_code_f_seed_io.jsonl"))
    return block


def paper() -> ml_collections.ConfigDict:
    c = common.paper_base(steps=500)
    c.sources.azr = azr_source()
    c.checkpoint.every = 10
    return c


def tiny() -> ml_collections.ConfigDict:
    c = common.tiny_base(steps=20)
    ws = c.init.warmstart
    c.model.preset = ws.model.preset  # the warm start's model (random-init shape of its HF directory)
    # The warm start trained on these prompt shapes and sizes: read them from its block.
    c.prompts.template = ws.template
    c.prompts.chat = ws.chat
    c.prompts.token_budget = int(ws.max_length)
    c.sampling.max_new_tokens = 192  # proposals need up to ~200 tokens, answers ~60
    c.sampling.max_cache_length = int(ws.max_length) + c.sampling.max_new_tokens  # a prompt + its answer
    common.fixed_rollout_shapes(c, slots=32, prompt_buckets=(64, int(ws.max_length)))  # programs: iteration 1
    a = c.sources.azr = azr_source()
    a.propose_per_kind = 4
    a.solve_per_kind = 4
    a.references = int(ws.data.references)
    a.induction_inputs = int(ws.data.induction_inputs)
    a.learnability_samples = 4
    a.seed_from_warmstart = True
    a.buffer_max_size = 1024
    c.validation.cpu_s = 2.0
    c.judge.cpu_s = 2.0
    c.checkpoint.every = 5
    c.log.text_every = 5
    return c
