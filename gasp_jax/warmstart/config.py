"""The warm start's config block (`init.warmstart`, and the top level of configs/warmstart.py) and its checks."""

from __future__ import annotations

import os

import ml_collections

from gasp_jax import models, rl, runtime, tasks
from gasp_jax.config_checks import checker
from gasp_jax.data import paths
from gasp_jax.data.livecodebench import LCB_CUTOFF  # noqa: F401  (re-exported: goalposts are before it, never after)

CACHE_VERSION = 3  # 2/3: length-bucketed batches (GASP rows), token-budgeted
MANIFEST = "warmstart.json"
ROLES = ("solve", "propose", "gasp")
TOKENIZERS = ("byte", "bpe")


def default_config() -> ml_collections.ConfigDict:
    """The `init.warmstart` block (and the top level of configs/warmstart.py). Defaults: the tiny CPU
    recipe (docs/warmstart.md has the measured cost and rates)."""
    c = ml_collections.ConfigDict()
    c.enabled = False  # self-play: train/load the warm start and use it as the model
    c.cache_dir = ""  # "": $GASP_JAX_CACHE/warmstart, else ~/.cache/gasp_jax/warmstart
    c.seed = 0  # init, reference draws, shuffling
    c.steps = 400  # about half of them GASP batches (fewer, longer rows; about the same tokens per step)
    c.batch_size = 16  # rows per step (a multiple of micro_batches x data-parallel devices)
    c.max_length = 160  # prompt + response tokens; a record with any longer row is left out
    c.template = "compact"  # tasks prompt template; self-play must use the same (configs read it from here)
    c.chat = False  # render prompts with the tokenizer's chat template (instruct models)
    c.log_every = 50

    c.model = ml_collections.ConfigDict()
    c.model.preset = "warmstart_tiny"  # random-init preset (when hf_path is empty)
    c.model.hf_path = ""  # a local HF checkpoint (weights + tokenizer) to fine-tune instead
    # A preset's tokenizer: "bpe" (byte-level BPE trained on the rows; ~3x fewer tokens than bytes) or "byte".
    c.model.tokenizer = "bpe"
    c.model.bpe_vocab_size = 1024
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"
    c.model.remat_policy = "none"

    c.data = ml_collections.ConfigDict()
    c.data.seed_file = str(paths.azr_seed_file("7b_coder_seed_io.jsonl"))
    c.data.induction_seed_file = str(paths.azr_seed_file("7b_coder_code_f_seed_io.jsonl"))
    c.data.pairs_as_io = True  # every (input, output) pair of an induction seed is also an io record
    c.data.max_snippet_chars = 100  # short programs only (a tiny model's context is short)
    c.data.max_value_chars = 40  # input / output strings
    c.data.max_message_chars = 120  # induction messages
    c.data.max_io_records = 32  # deduction/abduction training records (after filtering; 0: all)
    c.data.max_induction_records = 12
    c.data.holdout_programs = 4  # programs kept out of training, for the held-out rates
    c.data.references = 1  # K references in a proposer prompt (self-play's tiny preset uses the same)
    c.data.induction_inputs = 4  # inputs an induction proposal writes (self-play's `induction_inputs`)
    c.data.proposal_draws = 1  # proposer rows per record, each with other references
    c.data.roles = ("solve", "propose", "gasp")

    # GASP teacher rows (role "gasp"): lemma prompt of a real LCB statement / lift prompt of a short
    # induction task -> another short induction task as gold, in the answer format GaspSource parses.
    c.data.gasp = ml_collections.ConfigDict()
    c.data.gasp.induction_seed_files = tuple(sorted(  # the gold tasks' pool (AZR induction seeds, all sizes)
        str(paths.azr_seed_file(f)) for f in (
            "3b_coder_code_f_seed_io.jsonl", "7b_code_f_seed_io.jsonl", "7b_coder_code_f_seed_io.jsonl",
            "14b_code_f_seed_io.jsonl", "14b_coder_code_f_seed_io.jsonl", "llama_64_code_f_seed_io.jsonl")))
    c.data.gasp.max_snippet_chars = 120  # the program is written in the response and shown in a lift prompt
    c.data.gasp.max_value_chars = 40
    c.data.gasp.cut_message_chars = 64  # gold messages are cut (at a word) to this: every byte is learnt
    c.data.gasp.max_records = 32  # the shortest valid gold tasks (a tiny model memorises few long answers)
    c.data.gasp.problems_file = str(paths.data_file(paths.LCB_PUBLIC_V5))
    c.data.gasp.lemma_rows = 64  # one per drawn pre-cutoff LCB problem
    c.data.gasp.lift_rows = 64
    # Solver rows (induction, and deduction/abduction of the first pair) on the gold tasks: the student
    # of a tiny run learns the tasks its teacher writes, so a lemma's p can land inside the window.
    c.data.gasp.solve_rows = True
    # = configs/gasp.py:tiny's `prompt.max_statement_chars` / `prompt.lift_shown_pairs` (tests check it).
    c.data.gasp.max_statement_chars = 240
    c.data.gasp.lift_shown_pairs = 2
    c.data.gasp.max_length = 256  # GASP rows' token limit; they train in their own length bucket
    c.data.gasp.allow_unsafe = False  # validation sandbox without namespaces (see docs/sandbox.md)

    c.optimizer = rl.default_config().optimizer
    c.optimizer.learning_rate = 3e-3  # from scratch; use ~1e-5 for a real checkpoint
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 20
    c.optimizer.total_steps = 0  # 0: `steps`
    c.optimizer.final_lr_fraction = 0.1
    c.micro_batches = 1
    c.logprob_chunk_size = 128

    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    return c


def validate_config(ws: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (a ValueError) naming the first bad field of a warm-start block."""
    need = checker("warmstart.")
    need(int(ws.steps) >= 1, "steps", f"must be >= 1, got {ws.steps}")
    need(int(ws.batch_size) >= 1, "batch_size", f"must be >= 1, got {ws.batch_size}")
    need(int(ws.max_length) >= 16, "max_length", f"must be >= 16, got {ws.max_length}")
    need(ws.model.get("tokenizer", "byte") in TOKENIZERS, "model.tokenizer",
         f"{ws.model.get('tokenizer')!r} not in {TOKENIZERS}")
    need(ws.template in tasks.TEMPLATES, "template", f"{ws.template!r} not in {tasks.TEMPLATES}")
    need(set(ws.data.roles) <= set(ROLES) and len(ws.data.roles) > 0, "data.roles",
         f"must be a non-empty subset of {ROLES}, got {tuple(ws.data.roles)}")
    need(bool(ws.data.seed_file) or bool(ws.data.induction_seed_file), "data.seed_file",
         "one of seed_file / induction_seed_file is needed")
    for name in ("seed_file", "induction_seed_file"):
        path = ws.data[name]
        need(not path or os.path.isfile(path), f"data.{name}", f"{path!r} does not exist")
    need(int(ws.data.references) >= 0, "data.references", "must be >= 0")
    need(int(ws.data.induction_inputs) >= 1, "data.induction_inputs", "must be >= 1")
    need(int(ws.data.proposal_draws) >= 1, "data.proposal_draws", "must be >= 1")
    if "gasp" in ws.data.roles:
        g = ws.data.gasp
        need(len(g.induction_seed_files) > 0 and all(os.path.isfile(f) for f in g.induction_seed_files),
             "data.gasp.induction_seed_files", f"missing files in {tuple(g.induction_seed_files)}")
        need(os.path.isfile(g.problems_file), "data.gasp.problems_file", f"{g.problems_file!r} does not exist")
        need(int(g.max_length) >= int(ws.max_length), "data.gasp.max_length", "must be >= max_length")
        need(int(g.max_records) >= 2, "data.gasp.max_records", "a lift row needs two gold tasks: must be >= 2")
    if ws.model.hf_path:
        need(os.path.isfile(os.path.join(ws.model.hf_path, "config.json")), "model.hf_path",
             f"{ws.model.hf_path!r} is not a local HF checkpoint directory (no config.json)")
    else:
        need(ws.model.preset in models.PRESETS, "model.preset",
             f"{ws.model.preset!r} is not a preset ({', '.join(sorted(models.PRESETS))})")
    opt = ml_collections.ConfigDict(rl_config(ws).to_dict())
    try:
        rl.validate_config(opt)
    except ValueError as e:
        raise ValueError(f"warmstart.optimizer: {e}") from None


def rl_config(ws) -> ml_collections.ConfigDict:
    """The rl block the SFT step and the optimizer are built from (and the cache key hashes)."""
    c = rl.default_config()
    c.optimizer = ml_collections.ConfigDict(ws.optimizer.to_dict())
    if not c.optimizer.total_steps:
        c.optimizer.total_steps = int(ws.steps)
    c.micro_batches = int(ws.micro_batches)
    c.logprob_chunk_size = int(ws.logprob_chunk_size)
    return c


def cache_root(ws) -> str:
    if ws.cache_dir:
        return os.path.abspath(os.path.expanduser(ws.cache_dir))
    return runtime.cache_root("warmstart")
