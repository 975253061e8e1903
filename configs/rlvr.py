"""RLVR on LiveCodeBench (the paper's real-data RL baseline): policy gradient on real LCB problems.

    python -m gasp_jax.main --config=configs/rlvr.py:tiny --workdir=runs/rlvr_tiny          # CPU, minutes
    python -m gasp_jax.main --config=configs/rlvr.py --workdir=runs/rlvr_7b \\
        --config.model.hf_path=/ckpts/Qwen2.5-Coder-7B \\
        --config.sources.lcb.data.sources=/data/lcb/code_generation_lite \\
        --config.sources.lcb.data.release=release_v5                                     # paper scale
    tensorboard --logdir runs/

Each iteration takes the next problems of the training window (contest date before 2024-08-01: the
601-problem split of LCB release_v5) in a per-epoch shuffled order, renders LCB's prompt, samples a
group of completions per problem, grades the extracted code with the LCB grader on the problem's tests
(public + private) and rewards 1 / 0; advantages are GRPO's per problem (rl.advantage.estimator =
"grpo"; TRR++, RLOO, Dr.GRPO selectable, `sources.lcb.group_by="source"` for one group). Problems whose
groups stay all-pass or all-fail (no gradient) are down-weighted (`sources.lcb.zero_signal`). Every
`eval.every` iterations the held-out LCB window (>= 2024-08-01) is evaluated (pass@k) and the goalposts
solved are counted: TensorBoard `eval/...`, JSON `WORKDIR/eval/`.

Presets (`--config=configs/rlvr.py:PRESET,key=value,...`):
  paper  (default) Qwen2.5-Coder-7B shape with AZR's optimisation settings (AdamW 1e-6 constant, clip
         1.0, T = 1.0, PPO clip 0.2 / 0.28, no KL), 8 problems x 8 samples per iteration, 4096 new
         tokens, 500 iterations, LCB evaluation every 50 (n = 20 at T = 0.2; goalposts solved, n = 100 at
         T = 1.0, once `eval.goalposts.enabled=True,eval.goalposts.select.report=goalposts.json`).
         The shipped LCB file has public tests only: give the release (private tests) for real runs.
  tiny   the CPU command: the warm-started tiny model (configs/warmstart.py, cached), 8 short real LCB
         problems, 2 problems x 4 samples per iteration, 64 new tokens, 4 iterations, evaluation every 2
         on 2 held-out problems and 2 goalposts with n = 2. Prompts are LCB's user message alone
         (`prompt_style="question"`, not LCB's chat format): the warm start trains on plain text, and it
         leaves the most room in the tiny model's context whatever its tokenizer. The KV cache
         is the model's context; the start-up check fails with one line naming the prompt and the numbers
         if a problem no longer fits the warm start's model. Expect reward 0 (a tiny model does not solve
         LCB problems), every group constant (logged as dead problems) and the full pipeline to run.
Any config key can be set as `key=value` (dotted paths, e.g. `sources.lcb.samples_per_problem=16`).
"""

import ml_collections

from configs import common
from gasp_jax.data import paths
from gasp_jax.evaluation import periodic

PRESETS = ("paper", "tiny")
# Real LCB problems with the shortest statements, before and after 2024-08-01.
TINY_TRAIN = ("3453", "3476", "2819", "3337", "3371", "3349", "3394", "abc333_a")
TINY_HELD_OUT = ("3676", "abc383_d")
TINY_GOALPOSTS = ("3374", "3395")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, overrides = common.parse_arg(arg, presets=PRESETS, default="paper", where="configs/rlvr.py")
    c = tiny() if preset == "tiny" else paper()
    common.apply_overrides(c, overrides, where="configs/rlvr.py")
    return c


def lcb_sample_file() -> str:
    """The shipped LCB problems (public tests only); pass a real release for private tests."""
    return str(paths.data_file(paths.LCB_PUBLIC_V5))


def lcb_source() -> ml_collections.ConfigDict:
    from gasp_jax.rlvr import source

    block = source.default_config()
    block.data.sources = (lcb_sample_file(),)
    return block


# The periodic evaluation (hook + `eval` block) lives in the library; the name stays for config files.
add_evaluation = periodic.add_evaluation


def paper() -> ml_collections.ConfigDict:
    c = common.paper_base(steps=500)
    c.sampling.max_new_tokens = 4096
    c.rl.advantage.estimator = "grpo"
    s = c.sources.lcb = lcb_source()
    s.problems_per_step = 8
    s.samples_per_problem = 8
    add_evaluation(c)
    c.eval.every = 50
    # Goalposts solved needs the goalposts (an lcb_goalposts report): eval.goalposts.enabled=True,
    # eval.goalposts.select.report=...; off by default (all 601 problems x n = 100 would be the default).
    c.eval.goalposts.enabled = False
    c.checkpoint.every = 10
    return c


def tiny() -> ml_collections.ConfigDict:
    c = common.tiny_base(steps=4)
    c.sampling.max_new_tokens = 64
    # The cache is the model's context and every prompt must fit it with its new tokens: the start-up
    # check (gasp_jax/selfplay/fit_check.py) measures the prompts below against the warm start's model.
    c.sampling.max_cache_length = 0
    c.rl.advantage.estimator = "grpo"
    s = c.sources.lcb = lcb_source()
    s.data.problem_ids = TINY_TRAIN
    # LCB's user message without system text or chat turn: the warm start trains on plain-text prompts,
    # and it leaves the most room in the tiny context whatever the warm start's tokenizer (byte tokens:
    # 755-843, chat-wrapped 969-1057; the warm start's BPE: 329-378). docs/protocol.md, "RLVR".
    s.prompt_style = "question"
    s.max_prompt_tokens = 0  # 0: what the cache leaves after max_new_tokens
    s.problems_per_step = 2
    s.samples_per_problem = 4
    s.limits.cpu_s = 2.0
    s.zero_signal.after = 1
    add_evaluation(c)
    e = c.eval
    e.every = 2
    e.prompt_style = "question"
    e.lcb.data.problem_ids = TINY_HELD_OUT
    e.lcb.n, e.lcb.ks, e.lcb.temperature, e.lcb.max_new_tokens = 2, (1, 2), 1.0, 32
    e.goalposts.select.ids = TINY_GOALPOSTS
    e.goalposts.n, e.goalposts.ks, e.goalposts.max_new_tokens = 2, (1, 2), 32
    c.checkpoint.every = 2
    c.log.text_every = 2
    return c
