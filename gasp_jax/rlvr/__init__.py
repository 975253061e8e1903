"""Real-data RL baselines: RLVR on LiveCodeBench (a rollout source).

  source      ``LcbSource``: LCB problems of a date window -> LCB prompts -> samples -> LCB grader rewards,
              GRPO-style groups per problem, zero-signal problems down-weighted or skipped

Evaluation during training (every method) is ``gasp_jax.evaluation.periodic``.

Configs: ``configs/rlvr.py`` (RLVR) and ``configs/gasp_rlvr.py`` (GASP + RLVR in one run).
"""
