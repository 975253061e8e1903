"""GASP guidance (Jana et al. 2026): goalposts, the lemma -> lift curriculum, teacher rewards, dedup.

Modules:
  rewards      ``lemma_reward(p)``, ``lift_reward(p)`` (public contracts) and ``teacher_reward``
  goalposts    the goalpost pool from an ``lcb_goalposts`` report or an LCB date window + ids
  prompts      the lemma and lift prompts (the lift never sees the goalpost)
  dedup        pluggable embedders and the near-duplicate index (one matmul per search)
  curriculum   ``WORKDIR/curriculum.jsonl`` and the accepted-question buffer
  dynamic      fixed or dynamic goalposts (retire solved, promote by policy)
  evaluation   goalposts solved: pass@k of the student with the LCB grader
  source       ``GaspSource``, the trainer's rollout source (imported lazily: it needs the trainer)

See docs/gasp.md.
"""

from gasp_jax.gasp.rewards import (
    FORMAT_PENALTY,
    LEMMA_WINDOW,
    LIFT_WINDOW,
    OUT_OF_WINDOW,
    accepted_rate,
    lemma_reward,
    lift_reward,
    teacher_reward,
)
from gasp_jax.gasp.goalposts import Goalpost, GoalpostError, GoalpostPool, load_goalposts
from gasp_jax.gasp.prompts import AXES, lemma_prompt, lift_prompt
from gasp_jax.gasp.dedup import DedupIndex, HashedNgramEmbedder, TransformerEmbedder, build_embedder
from gasp_jax.gasp.curriculum import FIELDS as CURRICULUM_FIELDS, CurriculumLog, QuestionBuffer
from gasp_jax.gasp.dynamic import GoalpostSchedule

__all__ = [
    "AXES", "CURRICULUM_FIELDS", "CurriculumLog", "DedupIndex", "FORMAT_PENALTY", "Goalpost", "GoalpostError",
    "GoalpostPool", "GoalpostSchedule", "HashedNgramEmbedder", "LEMMA_WINDOW", "LIFT_WINDOW", "OUT_OF_WINDOW",
    "QuestionBuffer", "TransformerEmbedder", "accepted_rate", "build_embedder", "lemma_prompt", "lemma_reward",
    "lift_prompt", "lift_reward", "load_goalposts", "teacher_reward",
]
