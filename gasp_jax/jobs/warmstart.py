"""Supervised warm start (job `warmstart`): SFT on the shipped AZR seed tasks, cached by content hash.

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
training it first when missing; self-play's tiny presets call it and load the directory like any
`model.hf_path`.

    python -m gasp_jax.main --config=configs/warmstart.py --workdir=runs/warmstart        # + measured rates
    python -m gasp_jax.main --config=configs/warmstart.py --workdir=runs/ws_real \\
        --config.model.hf_path=/ckpts/Qwen2.5-Coder-0.5B --config.chat=True              # a real model

The job then measures what the warm start is for (`rates.json` in the workdir): at the rollout
temperature, the share of solver answers that parse and are judged correct (training tasks and held-out
programs) and the share of proposals that parse and validate in the sandbox.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from gasp_jax import models, multihost, rl, tasks
from gasp_jax import sharding as shd
from gasp_jax.data import paths
# GASP's goalposts are LCB problems before the cutoff; later problems are held out (never trained on).
from gasp_jax.data.livecodebench import LCB_CUTOFF
from gasp_jax.rl import sft

log = logging.getLogger(__name__)

# Bump when row construction or the training recipe changes in a way the key does not see.
CACHE_VERSION = 3  # 2/3: length-bucketed batches (GASP rows), token-budgeted
MANIFEST = "warmstart.json"
ROLES = ("solve", "propose", "gasp")
GOLD_POOL_VERSION = 2  # bump when the validated pool's content or order changes (its cache file name)
GASP_PROMPT_BUCKET = 384  # padded prompt length when measuring the GASP rows


def default_config() -> ml_collections.ConfigDict:
    """The `init.warmstart` block (and the top level of configs/warmstart.py). Defaults: the tiny CPU
    recipe (docs/warmstart.md has the measured cost and rates)."""
    c = ml_collections.ConfigDict()
    c.enabled = False  # self-play: train/load the warm start and use it as the model
    c.cache_dir = ""  # "": $GASP_JAX_CACHE/warmstart, else ~/.cache/gasp_jax/warmstart
    c.seed = 0  # init, reference draws, shuffling
    c.steps = 400  # ~37% of them GASP batches (fewer, longer rows; about the same tokens per step)
    c.batch_size = 16  # rows per step (a multiple of micro_batches x data-parallel devices)
    c.max_length = 256  # prompt + response tokens; a record with any longer row is left out
    c.template = "compact"  # tasks prompt template; self-play must use the same (configs read it from here)
    c.chat = False  # render prompts with the tokenizer's chat template (instruct models)
    c.log_every = 50

    c.model = ml_collections.ConfigDict()
    c.model.preset = "warmstart_tiny"  # random-init preset with the byte tokenizer (when hf_path is empty)
    c.model.hf_path = ""  # a local HF checkpoint (weights + tokenizer) to fine-tune instead
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
    c.data.gasp.max_records = 8  # the shortest valid gold tasks (a tiny model memorises few long answers)
    c.data.gasp.problems_file = str(paths.data_file(paths.LCB_PUBLIC_V5))
    c.data.gasp.lemma_rows = 16  # one per drawn pre-cutoff LCB problem
    c.data.gasp.lift_rows = 16
    # = configs/gasp.py:tiny's `prompt.max_statement_chars` / `prompt.lift_shown_pairs` (tests check it).
    c.data.gasp.max_statement_chars = 240
    c.data.gasp.lift_shown_pairs = 2
    c.data.gasp.max_length = 640  # GASP rows' token limit; they train in their own length bucket
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
    """Raises ValueError naming the first bad field of a warm-start block."""

    def need(ok: bool, field: str, msg: str):
        if not ok:
            raise ValueError(f"warmstart.{field}: {msg}")

    need(int(ws.steps) >= 1, "steps", f"must be >= 1, got {ws.steps}")
    need(int(ws.batch_size) >= 1, "batch_size", f"must be >= 1, got {ws.batch_size}")
    need(int(ws.max_length) >= 16, "max_length", f"must be >= 16, got {ws.max_length}")
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
    opt = ml_collections.ConfigDict(_rl_config(ws).to_dict())
    try:
        rl.validate_config(opt)
    except ValueError as e:
        raise ValueError(f"warmstart.optimizer: {e}") from None


# ------------------------------------------------------------------------------------------------ data


@dataclasses.dataclass(frozen=True)
class SeedTasks:
    """The warm start's task records by kind: `train` (trained on) and `holdout` (programs never seen)."""

    train: dict[str, list[dict]]
    holdout: dict[str, list[dict]]


def _short(rec: dict, data) -> bool:
    values = [rec["input"], rec["output"]] if "input" in rec else list(rec["inputs"]) + list(rec["outputs"])
    if len(tasks.program_text(rec)) > int(data.max_snippet_chars):
        return False
    if any(len(v) > int(data.max_value_chars) for v in values):
        return False
    # An induction task needs a message: the proposer's gold must carry one that parses.
    return "message" not in rec or 0 < len(rec["message"].strip()) <= int(data.max_message_chars)


def _cut_induction(rec: dict, n: int) -> dict:
    """The first `n` pairs of an induction record: the shape a tiny-run induction proposal has."""
    out = dict(rec, inputs=list(rec["inputs"][:n]), outputs=list(rec["outputs"][:n]))
    out.pop("gold", None)
    return out


def seed_tasks(data) -> SeedTasks:
    """Short seed records, deterministic: file order, filtered, de-duplicated by task content; the
    holdout is the last `holdout_programs` distinct programs (all their records)."""
    io: list[dict] = []
    induction: list[dict] = []
    if data.seed_file:
        io += tasks.load_seed_file(data.seed_file)
    if data.induction_seed_file:
        for rec in tasks.load_seed_file(data.induction_seed_file):
            if len(rec["inputs"]) < int(data.induction_inputs):
                continue  # too few inputs to serve as a gold induction proposal
            induction.append(rec)
            if data.pairs_as_io:
                io += [tasks.io_record_from_induction(rec, i) for i in range(len(rec["inputs"]))]
    io = _dedupe([r for r in io if _short(r, data)], "deduction")
    induction = _dedupe([r for r in induction if _short(r, data)], "induction")
    programs = list(dict.fromkeys(tasks.program_text(r) for r in io + induction))
    held = set(programs[len(programs) - int(data.holdout_programs):]) if int(data.holdout_programs) else set()

    def split(recs: list[dict], limit: int):
        train = [r for r in recs if tasks.program_text(r) not in held]
        return train[: limit or None], [r for r in recs if tasks.program_text(r) in held]

    io_train, io_held = split(io, int(data.max_io_records))
    ind_train, ind_held = split(induction, int(data.max_induction_records))
    return SeedTasks(train={"deduction": io_train, "abduction": io_train, "induction": ind_train},
                     holdout={"deduction": io_held, "abduction": io_held, "induction": ind_held})


def _dedupe(records: list[dict], kind: str) -> list[dict]:
    seen, out = set(), []
    for r in records:
        key = tasks.record_key(kind, r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


@dataclasses.dataclass(frozen=True)
class Row:
    """One training example: the prompt text and the gold response text (no stop token)."""

    role: str
    kind: str
    record_id: str
    prompt: str
    response: str


def solve_row(kind: str, rec: dict, ws, tokenizer=None) -> Row:
    p = tasks.solve_prompt(kind, rec, template=ws.template, chat=bool(ws.chat), tokenizer=tokenizer)
    return Row("solve", kind, rec["id"], p.text, tasks.format_answer(kind, rec, template=ws.template, chat=bool(ws.chat)))


def propose_row(kind: str, rec: dict, references: Sequence[dict], ws, tokenizer=None) -> Row:
    """The proposer prompt with `references` and `rec` as the gold proposal. Induction follows AZR: the
    prompt gives `rec`'s program, the gold writes its first `induction_inputs` inputs and its message."""
    n = int(ws.data.induction_inputs)
    if kind == "induction":
        gold = _cut_induction(rec, n)
        p = tasks.propose_prompt(kind, references, program=rec, num_inputs=n, template=ws.template,
                                 chat=bool(ws.chat), tokenizer=tokenizer)
        response = tasks.format_proposal(kind, gold, template=ws.template, chat=bool(ws.chat), with_program=False)
    else:
        p = tasks.propose_prompt(kind, references, num_inputs=n, template=ws.template, chat=bool(ws.chat),
                                 tokenizer=tokenizer)
        response = tasks.format_proposal(kind, rec, template=ws.template, chat=bool(ws.chat))
    return Row("propose", kind, rec["id"], p.text, response)


def build_rows(seed: SeedTasks, ws, tokenizer=None) -> list[Row]:
    """Every training row, in a deterministic order (shuffled per epoch by the trainer). Proposer rows
    draw `references` other training records of the kind, `proposal_draws` times per record."""
    rng = np.random.default_rng([int(ws.seed), 7])
    rows: list[Row] = []
    for kind in tasks.KINDS:
        recs = seed.train[kind]
        for i, rec in enumerate(recs):
            if "solve" in ws.data.roles:
                rows.append(solve_row(kind, rec, ws, tokenizer))
            if "propose" in ws.data.roles:
                others = [r for j, r in enumerate(recs) if j != i and tasks.program_text(r) != tasks.program_text(rec)]
                # An AZR induction prompt shows the given program, no references: one row is enough.
                for _ in range(1 if kind == "induction" else int(ws.data.proposal_draws)):
                    k = min(int(ws.data.references), len(others))
                    refs = [others[j] for j in rng.choice(len(others), size=k, replace=False)] if k else []
                    rows.append(propose_row(kind, rec, refs, ws, tokenizer))
    return rows


# ------------------------------------------------------------------------------------------- GASP rows


def gasp_candidates(ws, seed: SeedTasks) -> list[dict]:
    """Short induction tasks that can be the gold of a GASP row, before validation: AZR induction seeds
    cut to `induction_inputs` pairs, short program/values/message, de-duplicated by program, none of the
    warm start's held-out programs, whose gold answer parses back as the same task."""
    g, n = ws.data.gasp, int(ws.data.induction_inputs)
    held = {tasks.program_text(r) for recs in seed.holdout.values() for r in recs}
    limits = ml_collections.ConfigDict(dict(max_snippet_chars=g.max_snippet_chars, max_value_chars=g.max_value_chars,
                                            max_message_chars=g.cut_message_chars))
    out, programs = [], set()
    for path in g.induction_seed_files:
        for rec in tasks.load_seed_file(path):
            if len(rec["inputs"]) < n:
                continue
            rec = _cut_induction(rec, n)
            rec["message"] = _cut_words(rec["message"].strip(), int(g.cut_message_chars))
            prog = tasks.program_text(rec)
            if prog in programs or prog in held or not _short(rec, limits):
                continue
            # The gold answer must read back as this task (a message holding "</answer>" would not).
            text = tasks.format_proposal("induction", rec, template=ws.template, with_program=True)
            back = tasks.parse_proposal("induction", text, program=None, num_inputs=n)
            if not back or back.snippet.strip() != rec["snippet"].strip() or list(back.inputs) != rec["inputs"]:
                continue
            programs.add(prog)
            out.append(rec)
    return out


def _cut_words(text: str, limit: int) -> str:
    """`text` cut to at most `limit` chars at a word boundary (unchanged when short enough or limit 0)."""
    if not limit or len(text) <= limit:
        return text
    return text[: limit + 1].rsplit(" ", 1)[0].rstrip(" ,;:") or text[:limit]


def gasp_gold_tasks(ws, seed: SeedTasks) -> list[dict]:
    """The validated gold pool (the `max_records` shortest answers): every candidate goes through
    `tasks.validate_records` once (outputs recomputed in the sandbox; invalid ones dropped). The result is
    cached next to the checkpoints under a hash of the candidates, so later calls start no sandbox."""
    cands = gasp_candidates(ws, seed)
    spec = [GOLD_POOL_VERSION, ws.template] + [tasks.record_key("induction", r) for r in cands]
    digest = hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]
    path = os.path.join(cache_root(ws), f"gasp_gold-{digest}.json")
    if os.path.isfile(path):
        with open(path) as f:
            valid = json.load(f)
    else:
        from gasp_jax.sandbox import Limits, Sandbox

        config = tasks.ValidationConfig(limits=Limits(cpu_s=2.0))
        with Sandbox(workers=2, allow_unsafe=bool(ws.data.gasp.allow_unsafe)) as sb:
            results = tasks.validate_records(sb, [("induction", r) for r in cands], config=config)
        if any(v.ok is None for v in results):  # infrastructure failure: never cache a partial pool
            raise RuntimeError(f"warmstart: the sandbox failed on {sum(v.ok is None for v in results)} gold tasks")
        valid = [v.record for v in results if v.ok]
        # Shortest answers first (stable): `max_records` keeps the ones a tiny model learns fastest.
        valid.sort(key=lambda r: len(tasks.format_proposal("induction", r, template=ws.template, with_program=True)))
        os.makedirs(cache_root(ws), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(valid, f)
        os.replace(tmp, path)
        log.info("warmstart: %d of %d GASP gold tasks valid -> %s", len(valid), len(cands), path)
    return valid[: int(ws.data.gasp.max_records)]


def lcb_statements(ws) -> list[tuple[str, str]]:
    """`(problem id, statement)` of the LCB problems before LCB_CUTOFF (GASP's goalpost window), by date."""
    from gasp_jax.data.livecodebench import DateWindow, load_problems

    problems = load_problems(ws.data.gasp.problems_file, window=DateWindow.of(end=LCB_CUTOFF))
    return [(p.id, p.statement) for p in problems]


def gasp_rows(ws, gold: Sequence[dict], statements: Sequence[tuple[str, str]], tokenizer=None) -> list[Row]:
    """GASP teacher rows, built with GASP's own prompt builders and the tasks layer's proposal format:
    lemma = lemma prompt of a drawn pre-cutoff statement -> a gold task; lift = lift prompt of a gold task
    -> another gold task. Axes alternate. The gold is not a real lemma of the statement (a tiny model
    learns the format and the shape of a short induction task, not the reduction)."""
    from gasp_jax.gasp import prompts as gasp_prompts

    rng = np.random.default_rng([int(ws.seed), 13])

    def answer(rec: dict) -> str:
        return tasks.format_proposal("induction", rec, template=ws.template, chat=bool(ws.chat), with_program=True)

    rows = []
    picks = rng.choice(len(statements), size=min(int(ws.data.gasp.lemma_rows), len(statements)), replace=False)
    for i, j in enumerate(picks):
        pid, text = statements[int(j)]
        rec = gold[i % len(gold)]
        prompt = gasp_lemma_prompt(ws, text, gasp_prompts.AXES[i % len(gasp_prompts.AXES)], tokenizer)
        rows.append(Row("lemma", "induction", f"{rec['id']}@lcb:{pid}", prompt, answer(rec)))
    for i in range(int(ws.data.gasp.lift_rows)):
        a = i % len(gold)
        b = (a + 1 + int(rng.integers(len(gold) - 1))) % len(gold)  # another task: a lift changes the program
        prompt = gasp_lift_prompt(ws, gold[a], gasp_prompts.AXES[i % len(gasp_prompts.AXES)], tokenizer)
        rows.append(Row("lift", "induction", gold[b]["id"], prompt, answer(gold[b])))
    return rows


def gasp_lemma_prompt(ws, statement: str, axis: str, tokenizer=None) -> str:
    """GaspSource.lemma_prompt's text for the warm start's template and statement cut."""
    from gasp_jax.gasp import prompts as gasp_prompts

    body = gasp_prompts.lemma_prompt(statement, axis, num_inputs=int(ws.data.induction_inputs), template=ws.template,
                                     max_statement_chars=int(ws.data.gasp.max_statement_chars))
    return gasp_prompts.wrap_prompt(body, template=ws.template, chat=bool(ws.chat), tokenizer=tokenizer)


def gasp_lift_prompt(ws, lemma: dict, axis: str, tokenizer=None) -> str:
    """GaspSource.lift_prompt's text for the warm start's template and shown pairs."""
    from gasp_jax.gasp import prompts as gasp_prompts

    body = gasp_prompts.lift_prompt(lemma, axis, num_inputs=int(ws.data.induction_inputs), template=ws.template,
                                    shown_pairs=int(ws.data.gasp.lift_shown_pairs))
    return gasp_prompts.wrap_prompt(body, template=ws.template, chat=bool(ws.chat), tokenizer=tokenizer)


def row_limit(row: Row, ws) -> int:
    """A row's token limit: GASP rows (long statements) have their own."""
    return int(ws.data.gasp.max_length) if row.role in ("lemma", "lift") else int(ws.max_length)


def encode_rows(rows: Sequence[Row], tokenizer, max_length: int | Sequence[int]) -> tuple[list[tuple[list[int], list[int]]], int]:
    """`(prompt ids, response ids + stop)` per row that fits `max_length` (one limit, or one per row), and
    how many did not."""
    eos = int(tokenizer.eos_token_id)
    limits = [int(max_length)] * len(rows) if isinstance(max_length, int) else [int(x) for x in max_length]
    out, dropped = [], 0
    for r, limit in zip(rows, limits, strict=True):
        p = list(tokenizer.encode(r.prompt, add_special_tokens=False))
        t = list(tokenizer.encode(r.response, add_special_tokens=False)) + [eos]
        if len(p) + len(t) > limit:
            dropped += 1
            continue
        out.append((p, t))
    return out, dropped


# ----------------------------------------------------------------------------------------------- model


def base_tokenizer(ws):
    """The checkpoint's tokenizer, or the byte tokenizer for a preset."""
    if ws.model.hf_path:
        return models.load_tokenizer(ws.model.hf_path)
    from gasp_jax.tokenizer import build_byte_tokenizer

    return build_byte_tokenizer()


def base_model_config(ws, tokenizer) -> models.ModelConfig:
    overrides = dict(dtype=ws.model.dtype, param_dtype=ws.model.get("param_dtype") or ws.model.dtype,
                     remat_policy=ws.model.get("remat_policy", "none"))
    if ws.model.hf_path:
        return models.ModelConfig.from_hf_dict(models.hf.read_hf_config(ws.model.hf_path), **overrides)
    # The byte tokenizer's ids only: no never-trained logits the sampler could draw.
    return models.get_preset(ws.model.preset, vocab_size=len(tokenizer), **overrides)


def _model_identity(ws, config: models.ModelConfig) -> dict:
    ident = {"config": dataclasses.asdict(config)}
    if ws.model.hf_path:  # the weights by name, size and mtime (hashing GBs of weights is too slow)
        files = sorted(f for f in os.listdir(ws.model.hf_path) if f.endswith((".safetensors", ".json")))
        ident["files"] = [(f, os.path.getsize(os.path.join(ws.model.hf_path, f)),
                           int(os.path.getmtime(os.path.join(ws.model.hf_path, f)))) for f in files]
        ident["path"] = os.path.abspath(ws.model.hf_path)
    return ident


def _rl_config(ws) -> ml_collections.ConfigDict:
    c = rl.default_config()
    c.optimizer = ml_collections.ConfigDict(ws.optimizer.to_dict())
    if not c.optimizer.total_steps:
        c.optimizer.total_steps = int(ws.steps)
    c.micro_batches = int(ws.micro_batches)
    c.logprob_chunk_size = int(ws.logprob_chunk_size)
    return c


def cache_key(ws, model_config: models.ModelConfig, encoded: Sequence[tuple[list[int], list[int]]], tokenizer) -> str:
    """sha256 (24 hex) of everything that determines the trained weights."""
    h = hashlib.sha256()
    for p, t in encoded:
        h.update(np.asarray(p, np.int32).tobytes() + b"|" + np.asarray(t, np.int32).tobytes() + b"\n")
    vocab = sorted(tokenizer.get_vocab().items())
    spec = {
        "version": CACHE_VERSION,
        "model": _model_identity(ws, model_config),
        "tokenizer": hashlib.sha256(json.dumps(vocab).encode()).hexdigest(),
        "rows": h.hexdigest(),
        "steps": int(ws.steps), "batch_size": int(ws.batch_size), "buckets": length_buckets(ws),
        "seed": int(ws.seed), "rl": _rl_config(ws).to_dict(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_root(ws) -> str:
    if ws.cache_dir:
        return os.path.abspath(os.path.expanduser(ws.cache_dir))
    base = os.environ.get("GASP_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gasp_jax")
    return os.path.join(base, "warmstart")


# -------------------------------------------------------------------------------------------- training


def length_buckets(ws) -> tuple[int, ...]:
    """The padded lengths of training batches: `max_length`, and GASP rows' own when they are trained."""
    extra = (int(ws.data.gasp.max_length),) if "gasp" in ws.data.roles else ()
    return tuple(sorted({int(ws.max_length), *extra}))


def train(ws, model, params, encoded: Sequence[tuple[list[int], list[int]]], *, log_fn=None):
    """SFT steps over shuffled epochs of `encoded`; returns `(params, history)` (one dict per logged step).

    Each row belongs to the shortest length bucket it fits and a batch holds one bucket's rows, padded to
    it (one compiled step per bucket): the short solve/propose rows never pay for GASP's long prompts.
    A longer bucket's batch has proportionally fewer rows (`batch_size` rows of `max_length` tokens per
    step, i.e. about the same tokens and cost per step). A step draws its bucket with probability
    proportional to the bucket's batches per epoch, so every row is seen about equally often; within a
    bucket, epochs (every row once before any row twice)."""
    rl_config = _rl_config(ws)
    step_fn = sft.make_sft_step(model, rl_config, model.mesh)
    state = rl.create_train_state(model, rl_config, params=params)
    multiple = step_fn.micro_batches * step_fn.batch_divisor
    rng = np.random.default_rng([int(ws.seed), 11])
    buckets = length_buckets(ws)
    sizes = [max(multiple, int(ws.batch_size) * int(ws.max_length) // b // multiple * multiple) for b in buckets]
    sizes[0] = -(-int(ws.batch_size) // multiple) * multiple
    members = [[i for i, (p, t) in enumerate(encoded) if _bucket(len(p) + len(t), buckets) == b] for b in buckets]
    live = [k for k, m in enumerate(members) if m]
    weights = np.asarray([len(members[k]) / sizes[k] for k in live], np.float64)
    orders: dict[int, list[int]] = {k: [] for k in live}
    history = []
    t0 = time.perf_counter()
    for step in range(int(ws.steps)):
        k = live[0] if len(live) == 1 else live[int(rng.choice(len(live), p=weights / weights.sum()))]
        batch_size = sizes[k]
        while len(orders[k]) < batch_size:
            orders[k] += [members[k][j] for j in rng.permutation(len(members[k]))]
        idx, orders[k] = orders[k][:batch_size], orders[k][batch_size:]
        batch = sft.make_sft_batch([encoded[i][0] for i in idx], [encoded[i][1] for i in idx],
                                   length_buckets=(buckets[k],), batch_multiple=multiple)
        state, metrics = step_fn(state, batch)
        last = step + 1 == int(ws.steps)
        if (step + 1) % int(ws.log_every) == 0 or last or step == 0:
            m = {k: float(v) for k, v in jax.device_get(metrics).items() if k != "sampler_logp_abs_diff_max"}
            m.update(step=step + 1, elapsed_s=round(time.perf_counter() - t0, 2))
            history.append(m)
            (log_fn or log.info)("warmstart step %d/%d: loss %.4f, confident %.3f, grad_norm %.3f (%.1fs)",
                                 step + 1, int(ws.steps), m["loss"], m["confident_frac"], m["grad_norm"], m["elapsed_s"])
    return state.params, history


def _bucket(length: int, buckets: Sequence[int]) -> int:
    return next(b for b in buckets if length <= b)


def _local_mesh(ws):
    """The warm start trains on this process's devices only (process 0 in a multi-host job)."""
    shape = {axis: int(ws.mesh.get(axis, 1)) for axis in shd.MESH_AXES}
    return shd.make_mesh(shape, devices=jax.local_devices())


@contextlib.contextmanager
def _file_lock(path: str):
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST)) and os.path.isfile(os.path.join(path, "config.json"))


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What `ensure_warmstart` computes before any training: rows, their ids, the key and the path."""

    seed: SeedTasks
    rows: list[Row]
    encoded: list[tuple[list[int], list[int]]]
    dropped: int
    tokenizer: Any
    model_config: models.ModelConfig
    key: str
    path: str
    gasp_gold: list[dict]  # the validated gold induction tasks of the GASP rows ([] without them)


def prepare(ws) -> Prepared:
    """Host-only and cheap (no weights, no device): data, token ids, cache key and directory."""
    validate_config(ws)
    tokenizer = base_tokenizer(ws)
    seed = seed_tasks(ws.data)
    rows = build_rows(seed, ws, tokenizer if ws.chat else None)
    gold: list[dict] = []
    if "gasp" in ws.data.roles:
        gold = gasp_gold_tasks(ws, seed)
        rows += gasp_rows(ws, gold, lcb_statements(ws), tokenizer if ws.chat else None)
    encoded, dropped = encode_rows(rows, tokenizer, [row_limit(r, ws) for r in rows])
    if not encoded:
        raise ValueError(f"warmstart: no training row fits max_length={ws.max_length} "
                         f"({len(rows)} rows from {sum(map(len, seed.train.values()))} records)")
    model_config = base_model_config(ws, tokenizer)
    key = cache_key(ws, model_config, encoded, tokenizer)
    return Prepared(seed, rows, encoded, dropped, tokenizer, model_config, key, os.path.join(cache_root(ws), key), gold)


def ensure_warmstart(ws: ml_collections.ConfigDict, *, wait_s: float = 3600.0) -> str:
    """The warm-started HF checkpoint directory for block `ws`, trained and cached first if missing.

    Safe for concurrent callers on one machine (a file lock; the directory appears atomically by
    rename). Multi-host: process 0 trains on its local devices; the others wait for the directory
    (on a shared filesystem) up to `wait_s` seconds.
    """
    prep = prepare(ws)
    if _complete(prep.path):
        log.info("warmstart: cached %s", prep.path)
        return prep.path
    if multihost.process_count() > 1 and not multihost.is_main():
        deadline = time.monotonic() + wait_s
        while not _complete(prep.path):
            if time.monotonic() > deadline:
                raise TimeoutError(f"warmstart: {prep.path} did not appear within {wait_s:.0f}s (process 0 trains it;"
                                   " is cache_dir on a filesystem every host sees?)")
            time.sleep(2.0)
        return prep.path
    os.makedirs(cache_root(ws), exist_ok=True)
    with _file_lock(prep.path + ".lock"):
        if _complete(prep.path):  # another caller finished it while we waited for the lock
            return prep.path
        _train_and_save(ws, prep)
    return prep.path


def _train_and_save(ws, prep: Prepared) -> None:
    t0 = time.perf_counter()
    mesh = _local_mesh(ws)
    model = models.build_model(prep.model_config, mesh=mesh)
    if ws.model.hf_path:
        _, params = models.load_hf(ws.model.hf_path, dtype=prep.model_config.dtype,
                                   param_dtype=prep.model_config.param_dtype, mesh=mesh,
                                   remat_policy=prep.model_config.remat_policy)
    else:
        params = models.init_params(model, jax.random.key(int(ws.seed)))
    log.info("warmstart: training %s (%s params) on %d rows (%d dropped as longer than their limit), length buckets %s,"
             " %d steps -> %s", ws.model.hf_path or ws.model.preset, f"{models.count_params(params):,}",
             len(prep.encoded), prep.dropped, length_buckets(ws), int(ws.steps), prep.path)
    params, history = train(ws, model, params, prep.encoded)
    tmp = tempfile.mkdtemp(prefix=prep.key + ".tmp-", dir=cache_root(ws))
    try:
        models.save_hf(model, params, tmp, tokenizer=prep.tokenizer)
        manifest = {
            "key": prep.key, "version": CACHE_VERSION, "created": time.time(),
            "train_seconds": round(time.perf_counter() - t0, 2),
            "block": ws.to_dict(), "rows": len(prep.encoded), "rows_dropped": prep.dropped,
            "records": {k: [r["id"] for r in v] for k, v in prep.seed.train.items()},
            "rows_by_role": {role: sum(r.role == role for r in prep.rows) for role in sorted({r.role for r in prep.rows})},
            "gasp_gold": [r["id"] for r in prep.gasp_gold],
            "holdout": {k: [r["id"] for r in v] for k, v in prep.seed.holdout.items()},
            "history": history,
        }
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, default=str)
        os.replace(tmp, prep.path) if not os.path.exists(prep.path) else shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("warmstart: saved %s (%.1fs)", prep.path, time.perf_counter() - t0)


def read_manifest(path: str) -> dict:
    with open(os.path.join(path, MANIFEST)) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------ measurement


def _rate(xs: Sequence[bool]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def measure(path: str, ws, sandbox, *, samples: int = 4, temperature: float = 1.0, max_new_tokens: int = 128,
            max_tasks: int = 24, seed: int = 0, validation_config=None, judge_config=None,
            gasp_max_new_tokens: int = 416) -> dict:
    """What the warm-started model at `path` does at `temperature` with the self-play prompts.

    Solve: `samples` answers per (kind, task) for the training tasks and the held-out programs ->
    `format_rate` (the answer parses) and `correct_rate` (judged correct). Propose: `samples` proposals
    per (kind, training record, fresh reference draw) -> `parse_rate` and `valid_rate` (validated in the
    sandbox: runs, deterministic, plain data) and `novel_rate` (valid and not a training task). At most
    `max_tasks` tasks / records per (split, kind), the first ones. With GASP rows: `gasp/*` rates the
    same way for the lemma / lift prompts (`gasp_max_new_tokens`: their gold is up to ~400 tokens).
    """
    from gasp_jax import sampling

    prep = prepare(ws)
    mesh = _local_mesh(ws)
    model, params = models.load_hf(path, dtype=ws.model.dtype, mesh=mesh)
    tokenizer = models.load_tokenizer(path)
    key = jax.random.key(seed)

    def generate(prompts: list[str], k: int, bucket: int = int(ws.max_length), new: int = max_new_tokens) -> list[str]:
        nonlocal key
        key, sub = jax.random.split(key)
        texts = sampling.generate_text(model, params, tokenizer, prompts, num_samples=k, temperature=temperature,
                                       max_new_tokens=new, rng=sub, mesh=mesh,
                                       prompt_buckets=(bucket,), max_cache_length=bucket + new)
        return [t for row in texts for t in row]

    def fits(text: str, limit: int = int(ws.max_length)) -> bool:
        return len(tokenizer.encode(text, add_special_tokens=False)) <= limit

    out: dict[str, Any] = {"path": path, "temperature": temperature, "samples": samples}
    for split, recs_by_kind in (("train", prep.seed.train), ("holdout", prep.seed.holdout)):
        for kind in tasks.KINDS:
            rows = [(r, solve_row(kind, r, ws, tokenizer if ws.chat else None)) for r in recs_by_kind[kind][:max_tasks]]
            rows = [(r, row) for r, row in rows if fits(row.prompt)]
            if not rows:
                continue
            texts = generate([row.prompt for _, row in rows], samples)
            answers = [tasks.extract_answer(kind, t) for t in texts]
            items = [(kind, r, a) for (r, _), a in zip([x for x in rows for _ in range(samples)], answers)]
            verdicts = tasks.judge_many(sandbox, items, config=judge_config)
            scored = [v for v in verdicts if v is not None]
            out[f"solve/{split}/{kind}"] = {
                "tasks": len(rows), "answers": len(texts), "format_rate": _rate([a is not None for a in answers]),
                "correct_rate": _rate([bool(v) for v in scored]), "infra_errors": len(verdicts) - len(scored),
                "example": texts[0][:200]}
    rng = np.random.default_rng([seed, 3])
    train_keys = {k: {tasks.record_key(k, r) for r in v} for k, v in prep.seed.train.items()}
    for kind in tasks.KINDS:
        recs = prep.seed.train[kind]
        if not recs:
            continue
        rows = []
        for rec in recs[:max_tasks]:
            others = [r for r in recs if r is not rec]
            k = min(int(ws.data.references), len(others))
            refs = [others[j] for j in rng.choice(len(others), size=k, replace=False)] if k else []
            rows.append((rec, propose_row(kind, rec, refs, ws, tokenizer if ws.chat else None)))
        rows = [(r, row) for r, row in rows if fits(row.prompt)]
        texts = generate([row.prompt for _, row in rows], samples)
        progs = [r for r, _ in rows for _ in range(samples)]
        n = int(ws.data.induction_inputs)
        parsed = [tasks.parse_proposal(kind, t, program=p if kind == "induction" else None, num_inputs=n)
                  for t, p in zip(texts, progs)]
        ok = [(kind, p) for p in parsed if p]
        results = tasks.validate_proposals(sandbox, ok, config=validation_config) if ok else []
        valid = [v.record for v in results if v.ok]
        out[f"propose/{kind}"] = {
            "prompts": len(rows), "proposals": len(texts), "parse_rate": _rate([bool(p) for p in parsed]),
            "valid_rate": len(valid) / max(len(texts), 1),
            "novel_rate": sum(tasks.record_key(kind, r) not in train_keys[kind] for r in valid) / max(len(texts), 1),
            "infra_errors": sum(v.ok is None for v in results),
            "reasons": _top_reasons([v.reason for v in results if not v.ok]), "example": texts[0][:200]}
    if "gasp" in ws.data.roles:
        out.update(_measure_gasp(prep, ws, sandbox, functools.partial(generate, new=gasp_max_new_tokens), fits,
                                 samples=samples, max_tasks=max_tasks, validation_config=validation_config,
                                 tokenizer=tokenizer if ws.chat else None))
    return out


def _measure_gasp(prep: Prepared, ws, sandbox, generate, fits, *, samples, max_tasks, validation_config,
                  tokenizer) -> dict:
    """GASP teacher rates, parsed exactly as GaspSource parses (induction, program written, N inputs):
    `gasp/lemma` on the trained lemma prompts, `gasp/lemma_unseen` on lemma prompts of pre-cutoff LCB
    statements the warm start never saw, `gasp/lift` on the trained lift prompts."""
    from gasp_jax.gasp import prompts as gasp_prompts

    # Prompts only (lemma ~270, lift ~320 byte tokens): + the answer budget stays within a tiny model's 1024.
    limit, n = GASP_PROMPT_BUCKET, int(ws.data.induction_inputs)
    seen = {r.record_id.split("@lcb:")[-1] for r in prep.rows if r.role == "lemma"}
    unseen = [(pid, text) for pid, text in lcb_statements(ws) if pid not in seen][:max_tasks]
    gold_keys = {tasks.record_key("induction", r) for r in prep.gasp_gold}
    sets = {
        "lemma": [r.prompt for r in prep.rows if r.role == "lemma"][:max_tasks],
        "lemma_unseen": [gasp_lemma_prompt(ws, text, gasp_prompts.AXES[i % 2], tokenizer)
                         for i, (_, text) in enumerate(unseen)],
        "lift": [r.prompt for r in prep.rows if r.role == "lift"][:max_tasks],
    }
    out = {}
    for name, prompts in sets.items():
        prompts = [p for p in prompts if fits(p, limit)]
        if not prompts:
            continue
        texts = generate(prompts, samples, limit)
        parsed = [tasks.parse_proposal("induction", t, program=None, num_inputs=n) for t in texts]
        ok = [("induction", p) for p in parsed if p]
        results = tasks.validate_proposals(sandbox, ok, config=validation_config) if ok else []
        valid = [v.record for v in results if v.ok]
        out[f"gasp/{name}"] = {
            "prompts": len(prompts), "proposals": len(texts), "parse_rate": _rate([bool(p) for p in parsed]),
            "valid_rate": len(valid) / len(texts),
            "novel_rate": sum(tasks.record_key("induction", r) not in gold_keys for r in valid) / len(texts),
            "infra_errors": sum(v.ok is None for v in results),
            "reasons": _top_reasons([v.reason for v in results if not v.ok]), "example": texts[0][:200]}
    return out


def _top_reasons(reasons: Sequence[str], k: int = 4) -> dict[str, int]:
    heads = [r.split(":")[0] for r in reasons]
    vals, counts = np.unique(heads, return_counts=True) if heads else ([], [])
    order = np.argsort(-np.asarray(counts))[:k] if heads else []
    return {str(vals[i]): int(counts[i]) for i in order}


# ------------------------------------------------------------------------------------------------- job


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Job `warmstart`: ensure the cached checkpoint, then (unless `measure.samples` is 0) measure its
    rates with the real sandbox; `workdir/warmstart` links the checkpoint, `workdir/rates.json` the rates."""
    t0 = time.perf_counter()
    path = ensure_warmstart(config)
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {"path": path, "ensure_seconds": round(seconds, 2),
                               "train_seconds": read_manifest(path).get("train_seconds")}
    if multihost.is_main():
        os.makedirs(workdir, exist_ok=True)
        link = os.path.join(workdir, "warmstart")
        if os.path.islink(link):
            os.unlink(link)
        if not os.path.exists(link):
            os.symlink(path, link)
    m = config.get("measure", None)
    if m is not None and int(m.samples) > 0 and multihost.is_main():
        from gasp_jax.sandbox import Limits, Sandbox

        vcfg = tasks.ValidationConfig(limits=Limits(cpu_s=float(m.cpu_s)))
        jcfg = tasks.JudgeConfig(limits=Limits(cpu_s=float(m.cpu_s)))
        with Sandbox(workers=int(m.workers) or (os.cpu_count() or 1), allow_unsafe=bool(m.allow_unsafe)) as sb:
            rates = measure(path, config, sb, samples=int(m.samples), temperature=float(m.temperature),
                            max_new_tokens=int(m.max_new_tokens), max_tasks=int(m.max_tasks), seed=int(config.seed),
                            validation_config=vcfg, judge_config=jcfg,
                            gasp_max_new_tokens=int(m.get("gasp_max_new_tokens", 416)))
        with open(os.path.join(workdir, "rates.json"), "w") as f:
            json.dump(rates, f, indent=1)
        for name, r in rates.items():
            if isinstance(r, dict):
                log.info("%s: %s", name, {k: v for k, v in r.items() if k not in ("example", "reasons")})
        summary["rates"] = {k: {m_: v for m_, v in r.items() if m_.endswith("rate")}
                            for k, r in rates.items() if isinstance(r, dict)}
    return summary
