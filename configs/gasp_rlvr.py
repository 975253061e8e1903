"""GASP + RLVR: guided self-play and real-data RL on LiveCodeBench in one run (the paper's best row).

    python -m gasp_jax.main --config=configs/gasp_rlvr.py:tiny --workdir=runs/gasp_rlvr_tiny      # CPU
    python -m gasp_jax.main --config=configs/gasp_rlvr.py --workdir=runs/gasp_rlvr_7b \\
        --config.model.hf_path=/ckpts/Qwen2.5-Coder-7B \\
        --config.sources.gasp.goalposts.report=runs/goalposts/goalposts.json \\
        --config.sources.lcb.data.sources=/data/lcb/code_generation_lite                       # paper scale

Two rollout sources feed one policy: `sources.gasp` (configs/gasp.py: lemma -> lift curricula towards
the goalposts) and `sources.lcb` (configs/rlvr.py: LCB problems before 2024-08-01 with grader rewards).
Each keeps its own advantage groups (GASP: lemma/lift propose, solve per type; LCB: one group per
problem) and its own metrics (`gasp/...`, `<type>/<role>/...`, `lcb/solve/...`, `lcb/...`); the run's
estimator (TRR++, GASP's) whitens every group separately. The mix rule (`mix.mode`):
  ratio      (default) both sources every iteration; `mix.lcb_share` is LCB's share of the student
             (solve) episodes: sources.lcb.problems_per_step = round(share / (1 - share) x
             sources.gasp.solve_batch / sources.lcb.samples_per_problem), at least 1.
  alternate  GASP on even iterations, LCB on odd ones (`every` = 2, `start` = 0 / 1).
The rule is applied after the `key=value` arguments, so `mix.mode=alternate,mix.lcb_share=0.25` work;
it sets `every` / `start` / `problems_per_step` of the two blocks.

Presets (`--config=configs/gasp_rlvr.py:PRESET,key=value,...`): `paper` (default) and `tiny`, each
GASP's preset plus RLVR's LCB source and periodic evaluation of the same preset (`tiny`: LCB's user
message alone as the prompt, `prompt_style="question"`, and the model's whole context as the KV cache,
so that the LCB prompts fit the warm-started tiny model; see configs/rlvr.py).
"""

import ml_collections

from configs import common
from configs import gasp as gasp_configs
from configs import rlvr as rlvr_configs

PRESETS = ("paper", "tiny")
MIX_MODES = ("ratio", "alternate")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset, overrides = common.parse_arg(arg, presets=PRESETS, default="paper", where="configs/gasp_rlvr.py")
    c = combine(gasp_configs.tiny() if preset == "tiny" else gasp_configs.paper(),
                rlvr_configs.tiny() if preset == "tiny" else rlvr_configs.paper())
    common.apply_overrides(c, overrides, where="configs/gasp_rlvr.py")
    apply_mix(c)
    return c


def combine(gasp: ml_collections.ConfigDict, rlvr: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """GASP's run config + RLVR's LCB source and evaluation (the KV cache is the larger of the two; whether
    every prompt fits it is checked at start-up, gasp_jax/selfplay/fit_check.py)."""
    c = gasp
    c.sources.lcb = rlvr.sources.lcb
    if not c.sources.lcb.max_new_tokens:  # unset: RLVR's answers keep RLVR's token budget, not GASP's
        c.sources.lcb.max_new_tokens = int(rlvr.sampling.max_new_tokens)
    c.eval = rlvr.eval
    c.hooks = rlvr.hooks
    caches = (int(c.sampling.max_cache_length), int(rlvr.sampling.max_cache_length))
    c.sampling.max_cache_length = 0 if 0 in caches else max(caches)  # 0: the model's whole context
    c.mix = ml_collections.ConfigDict(dict(mode="ratio", lcb_share=0.5))
    return c


def apply_mix(c: ml_collections.ConfigDict) -> None:
    mode, share = c.mix.mode, float(c.mix.lcb_share)
    if mode not in MIX_MODES:
        raise ValueError(f"configs/gasp_rlvr.py: mix.mode must be one of {MIX_MODES}, got {mode!r}")
    g, s = c.sources.gasp, c.sources.lcb
    if mode == "alternate":
        g.every, g.start, s.every, s.start = 2, 0, 2, 1
        return
    if not 0.0 < share < 1.0:
        raise ValueError(f"configs/gasp_rlvr.py: mix.lcb_share must be in (0, 1), got {share}")
    g.every, g.start, s.every, s.start = 1, 0, 1, 0
    lcb_episodes = share / (1.0 - share) * int(g.solve_batch)
    s.problems_per_step = max(1, round(lcb_episodes / int(s.samples_per_problem)))
