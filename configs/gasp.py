"""GASP: guided asymmetric self-play (lemma -> lift curricula towards hard LiveCodeBench goalposts).

    python -m gasp_jax.main --config=configs/gasp.py:tiny --workdir=runs/gasp_tiny         # CPU, minutes
    python -m gasp_jax.main --config=configs/gasp.py --workdir=runs/gasp_7b \\
        --config.model.hf_path=/ckpts/Qwen2.5-Coder-7B \\
        --config.sources.gasp.goalposts.report=runs/goalposts/goalposts.json \\
        --config.sources.gasp.goalposts.sources=/data/lcb/code_generation_lite          # paper scale
    tensorboard --logdir runs/

Each iteration the teacher writes an easier variant (lemma) of a goalpost along an axis (I/O or
algorithm complexity), the sandbox validates it, n student samples give its pass rate p and the teacher
earns [4p(1-p)]^5 inside 0.3 <= p <= 0.7 (else -0.5; invalid or near-duplicate: -1); each accepted lemma
gets a harder variant (lift) written from the lemma alone, rewarded 10p((1-p)/0.9)^9 inside
0.1 <= p <= 0.5. The student solves the accepted questions, each shown as induction, deduction or
abduction; TRR++ whitens rewards per group (lemma-propose, lift-propose, solve per type) and one
PPO-clip update follows. Every lemma and lift is a line of WORKDIR/curriculum.jsonl. See docs/gasp.md.

Presets (`--config=configs/gasp.py:PRESET,key=value,...`):
  paper  (default) Qwen2.5-Coder-7B shape with AZR's optimisation settings (AdamW 1e-6 constant, clip
         1.0, T = 1.0, PPO clip 0.2 / 0.28, no KL), 64 lemmas per iteration, n = 8, 10 inputs per task,
         a 64-task student batch, 500 iterations, goalposts-solved evaluation every 100 iterations
         (100 samples, pass@1/10/100), AZR's PPO schedule (128-row mini-batches, 1 epoch) and 10 s
         sandbox timeout. Needs the goalposts: the lcb_goalposts report (the paper's 146 problems no
         selection run solves) and the LCB release; without one it stops at start-up and says how to
         make it (or set sources.gasp.goalposts.ids, or goalposts.allow_all=True for every problem).
  tiny   the CPU main command: the warm-started tiny model (configs/warmstart.py, cached; trained on
         first use: a 0.7M-parameter model with a BPE vocabulary trained on its rows, GASP lemma/lift
         rows and solver rows on the same short tasks), compact prompts, 5 real LCB goalposts with short
         statements (LCB question prompt, no chat wrapper), 10 lemmas per iteration, n = 8, T = 0.5,
         6 iterations, a goalposts-solved evaluation every 3 iterations. Minutes on 2 CPU cores. Expect
         about half of the lemmas to validate, a few accepted (tasks the warm start learnt, written for
         a goalpost; 2-3 accepted of 60 per seed), lifts written from them that validate, an accepted
         lift in 2 of 3 seeds (docs/gasp.md "What a newcomer sees" has the measured counts per seed), the student
         phase on the warm start's induction tasks and the accepted questions, and 0 goalposts solved (hard
         problems even for a 7B model).
Any config key can be set as `key=value` (dotted paths, e.g. `sources.gasp.goalposts.dynamic=True`).
"""

import ml_collections

from configs import common
from gasp_jax.data import paths

PRESETS = ("paper", "tiny")

# Real LCB problems dated before 2024-08-01 whose LCB question prompt fits the tiny model's 1024-token
# (byte) context with room for an answer: one hard, four medium.
TINY_GOALPOSTS = ("3466", "3453", "3337", "3394", "3374")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, overrides = common.parse_arg(arg, presets=PRESETS, default="paper", where="configs/gasp.py")
    c = tiny() if preset == "tiny" else paper()
    common.apply_overrides(c, overrides, where="configs/gasp.py")
    return c


def gasp_source() -> ml_collections.ConfigDict:
    from gasp_jax.gasp import source

    block = source.default_config()
    block.goalposts.sources = (str(paths.data_file(paths.LCB_PUBLIC_V5)),)  # public tests only: give a release
    return block


def paper() -> ml_collections.ConfigDict:
    c = common.paper_base(steps=500)
    g = c.sources.gasp = gasp_source()
    g.goalposts.allow_all = False  # the paper's goalposts come from an lcb_goalposts report, not all 601
    g.eval.every = 100
    g.eval.num_samples = 100
    g.eval.ks = "1,10,100"
    g.eval.max_new_tokens = 4096
    c.checkpoint.every = 10
    return c


def tiny() -> ml_collections.ConfigDict:
    c = common.tiny_base(steps=6)
    c.sampling.max_new_tokens = 192  # a lemma (program + 4 inputs + message) takes 60-160 BPE tokens
    # T = 0.5 for every rollout (the PPO ratio uses it): at T = 1 a 0.7M-parameter teacher garbles its
    # ~100-token answers (6 of 60 lemmas valid, none accepted, docs/gasp.md); at 0.5 about half are valid.
    c.sampling.temperature = 0.5
    c.sampling.max_cache_length = 640  # < the warm-start model's 1024; the longest eval prompt + 64 new tokens fit
    c.prompts.template = "compact"
    c.prompts.token_budget = c.sampling.max_cache_length - c.sampling.max_new_tokens  # a task prompt + its answer fit
    # 32 slots and a 640-slot cache for every call; buckets up to the rollouts' 448- and the evaluation's
    # 576-token prompt limits: iteration 1 compiles every rollout and evaluation program.
    common.fixed_rollout_shapes(c, slots=32, prompt_buckets=(128, 256, 448, 576))
    g = c.sources.gasp = gasp_source()
    g.goalposts.ids = TINY_GOALPOSTS
    g.lemmas_per_step = 10  # two per goalpost a step
    g.num_inputs = 4
    g.learnability_samples = 8  # p in eighths: 3/8..5/8 inside the lemma window, 1/8..4/8 inside the lift's
    g.solve_batch = 4
    g.prompt.max_statement_chars = 240
    g.prompt.lift_shown_pairs = 2
    g.seed_file = str(paths.azr_seed_file("7b_coder_code_f_seed_io.jsonl"))
    g.seed_max_snippet_chars = 200
    g.eval.every = 3
    g.eval.num_samples = 2
    g.eval.ks = "1,2"
    g.eval.max_new_tokens = 64
    g.eval.prompt_style = "question"  # LCB's user message only: the chat-wrapped prompt needs > 1024 tokens
    g.eval.batch_problems = 5
    c.validation.cpu_s = 2.0
    c.judge.cpu_s = 2.0
    c.checkpoint.every = 3
    c.log.text_every = 1  # every step's lineages in the TEXT tab
    if "template" in c.init.warmstart:  # agree with what the warm start trained on (never duplicated)
        w = c.init.warmstart
        c.prompts.template = w.template
        c.prompts.chat = w.chat
        g.num_inputs = w.data.induction_inputs
        g.seed_from_warmstart = True
        if c.sampling.max_cache_length < w.max_length:
            raise ValueError(f"configs/gasp.py: sampling.max_cache_length < the warm start's max_length {w.max_length}")
    return c
