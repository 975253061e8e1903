"""Supervised warm start: SFT on the shipped AZR seed tasks, cached by content hash (job: `jobs/warmstart.py`).

A random-init model never emits a parseable `<answer>`, so self-play from scratch gets no valid proposal,
no correct answer and all-equal rewards (zero-variance advantage groups): nothing to learn from. The warm
start teaches a model the exact prompt/response formats of self-play on short seed tasks:

    seed records -> rows (tasks.solve_prompt -> tasks.format_answer for the three kinds,
                          tasks.propose_prompt -> tasks.format_proposal, the seed task as gold proposal;
                          GASP's lemma/lift prompts -> a short validated induction task as gold)
                 -> token ids (+ stop token) -> rl.sft steps (token-mean cross-entropy on the response)
                 -> an HF checkpoint directory (config.json, model.safetensors, tokenizer, warmstart.json)

Every row is built by the tasks layer's prompt builders, so the warm start and self-play see the same
text. The result is stored in `<cache_dir>/<key>/`, `key` a hash of everything that determines it (model,
tokenizer, the token ids of every training row, steps, batch, optimizer, seed, code version), so a change
of template or data retrains and nothing else does. `ensure_warmstart(block)` returns that directory,
training it first when missing; the self-play trainer calls it before set-up (`trainer.base_checkpoint`)
and loads the directory like any `model.hf_path`.

Modules: `config` (the block and its checks), `rows` (solver/proposer rows from the seed tasks),
`gasp_rows` (GASP teacher rows, prompts from `gasp.prompts.TeacherPrompts`), `training` (token ids, cache
key, SFT, the cached checkpoint), `measure` (the rates of a checkpoint).

    python -m gasp_jax.main --config=configs/warmstart.py --workdir=runs/warmstart        # + measured rates
    python -m gasp_jax.main --config=configs/warmstart.py --workdir=runs/ws_real \\
        --config.model.hf_path=/ckpts/Qwen2.5-Coder-0.5B --config.chat=True              # a real model

The job then measures what the warm start is for (`rates.json` in the workdir): at the rollout
temperature, the share of solver answers that parse and are judged correct (training tasks and held-out
programs) and the share of proposals that parse and validate in the sandbox.
"""

from gasp_jax.warmstart.config import (CACHE_VERSION, LCB_CUTOFF, MANIFEST, ROLES, cache_root, default_config,
                                       rl_config, validate_config)
from gasp_jax.warmstart.rows import Row, SeedTasks, build_rows, encode_rows, propose_row, row_limit, seed_tasks, solve_row
from gasp_jax.warmstart.gasp_rows import gasp_candidates, gasp_gold_tasks, gasp_rows, lcb_statements, teacher_prompts
from gasp_jax.warmstart.training import (Prepared, base_model_config, base_tokenizer, cache_key, ensure_warmstart,
                                         length_buckets, prepare, read_manifest, train)
from gasp_jax.warmstart.measure import measure

__all__ = [
    "CACHE_VERSION", "LCB_CUTOFF", "MANIFEST", "Prepared", "ROLES", "Row", "SeedTasks", "base_model_config",
    "base_tokenizer", "build_rows", "cache_key", "cache_root", "default_config", "encode_rows", "ensure_warmstart",
    "gasp_candidates", "gasp_gold_tasks", "gasp_rows", "lcb_statements", "length_buckets", "measure", "prepare",
    "propose_row", "read_manifest", "rl_config", "row_limit", "seed_tasks", "solve_row", "teacher_prompts", "train",
    "validate_config",
]
