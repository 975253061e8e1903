"""Real-data RL baselines: RLVR on LiveCodeBench (a rollout source) and evaluation during training.

  source      ``LcbSource``: LCB problems of a date window -> LCB prompts -> samples -> LCB grader rewards,
              GRPO-style groups per problem, zero-signal problems down-weighted or skipped
  evaluation  ``PeriodicEval``: a trainer hook, LCB pass@k on the held-out window + goalposts solved
  prompts     ``lcb_prompt_fn``: LCB's prompt format for a live policy

Configs: ``configs/rlvr.py`` (RLVR) and ``configs/gasp_rlvr.py`` (GASP + RLVR in one run).
"""
