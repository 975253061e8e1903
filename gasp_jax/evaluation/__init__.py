"""LiveCodeBench evaluation: prompts, code extraction, grading, pass@k and the two LCB jobs.

Modules:
  pass_at_k   unbiased pass@k estimator and per-group tables
  prompts     LCB's chat and base-model prompt formats
  extraction  LCB-parity code extraction (last fenced block) and a lenient variant
  grading     sandbox grading with verdicts mapped to LCB result codes
  runner      resumable sample -> extract -> grade loop (``samples.jsonl``)
  generation  the default ``generate_fn`` on our sampler
  eval_job    job ``lcb_eval``: ``run(config, workdir)``
  goalposts   job ``lcb_goalposts``: ``run(config, workdir)``
"""

from gasp_jax.evaluation.extraction import extract_code
from gasp_jax.evaluation.grading import LCB_CODES, SampleGrade, SandboxGrader, lcb_code
from gasp_jax.evaluation.pass_at_k import mean_pass_at_k, pass_at_k, pass_at_k_table
from gasp_jax.evaluation.prompts import (
    SYSTEM_MESSAGE,
    base_prompt,
    chat_messages,
    load_few_shot,
    question_prompt,
    render_prompt,
)
from gasp_jax.evaluation.runner import GenerateFn, ProblemRecord, SampleStore, sample_and_grade

__all__ = [
    "LCB_CODES",
    "SYSTEM_MESSAGE",
    "GenerateFn",
    "ProblemRecord",
    "SampleGrade",
    "SampleStore",
    "SandboxGrader",
    "base_prompt",
    "chat_messages",
    "extract_code",
    "lcb_code",
    "load_few_shot",
    "mean_pass_at_k",
    "pass_at_k",
    "pass_at_k_table",
    "question_prompt",
    "render_prompt",
    "sample_and_grade",
]
