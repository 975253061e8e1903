"""`GaspSource`: GASP's lemma -> lift curriculum as a rollout source of the self-play trainer.

One iteration (``collect``), read top to bottom:

    goalposts  draw ``lemmas_per_step`` active goalposts uniformly, each with an axis uniform over ``axes``
    lemma      the teacher sees one goalpost + axis and writes an easier induction task (program f,
               ``num_inputs`` inputs, a message)
    check      parse + sandbox validation (tasks layer, via selfplay.phases), then the near-duplicate filter
               (cosine >= threshold to any accepted question or to an earlier candidate) and the
               goalpost-copy check (a message that reproduces the goalpost statement)
    learn      n student samples of the induction form per valid, new lemma -> pass rate p (not trained on)
               over the samples the sandbox judged; a student prompt over ``prompts.token_budget`` makes the
               lemma invalid (AZR), a sandbox infrastructure failure drops it (never scored, counted)
    reward     lemma_reward(p); invalid / duplicate -> the format penalty
    accept     p inside [0.3, 0.7] -> the lemma enters the question buffer and the dedup index
    lift       per accepted lemma, the teacher sees ONLY the lemma + the same axis and writes a harder
               variant; check / learn / reward (lift_reward, window [0.1, 0.5]) / accept as above
    student    this iteration's accepted lemmas and lifts first, then uniform draws from the buffer, up to
               ``solve_batch`` tasks; each presented uniformly as induction, deduction or abduction
    solve      one student rollout per task, judged by execution (selfplay.phases.solve)
    record     one curriculum.jsonl line per lemma and lift; TensorBoard scalars, histograms, lineages
    evaluate   after the update of every ``eval.every``-th iteration and the last (``after_step``, the one
               periodic evaluation of ``evaluation/periodic.py``): the student's pass@k on the active goalposts
               with the LCB grader and the running union of goalposts solved; with dynamic goalposts, solved
               ones are retired and replacements promoted

The phases that exist for every task source (generate, parse, validate, learnability, solve, judge,
metrics) are `gasp_jax.selfplay.phases`; this module adds only what is GASP's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

import ml_collections
import numpy as np

from gasp_jax import multihost, tasks, warmstart
from gasp_jax.data.livecodebench import HUB_DATASET, LCB_CUTOFF
from gasp_jax.evaluation import periodic
from gasp_jax.gasp import dedup as dedup_lib
from gasp_jax.gasp import evaluation as gasp_eval
from gasp_jax.gasp import prompts as gasp_prompts
from gasp_jax.gasp import tensorboard
from gasp_jax.gasp.curriculum import CurriculumLog, QuestionBuffer, make_row
from gasp_jax.gasp.dynamic import POLICIES, GoalpostSchedule
from gasp_jax.gasp.goalposts import Goalpost, load_goalposts
from gasp_jax.gasp.rewards import FORMAT_PENALTY, STAGES, accepted_rate, teacher_reward
from gasp_jax.selfplay import phases
from gasp_jax.selfplay.types import SourceResult

log = logging.getLogger(__name__)

STUDENT_KINDS = ("induction", "deduction", "abduction")
PROPOSE_GROUPS = ("per_stage", "shared")
SOLVE_GROUPS = ("per_type", "shared")
LIFT_FROM = ("accepted", "valid")


def default_config() -> ml_collections.ConfigDict:
    """The ``sources.gasp`` block. Paper values where known (paper.md sections 3-6), else documented choices."""
    c = ml_collections.ConfigDict()
    c.type = "gasp"
    c.every = 1
    c.start = 0

    c.goalposts = ml_collections.ConfigDict()
    c.goalposts.report = ""  # an lcb_goalposts goalposts.json; "" = every problem of the window (or `ids`)
    c.goalposts.sources = ()  # LCB JSONL files / release directory holding the goalposts' statements + tests
    c.goalposts.release = ""  # with hub: the version_tag (default release_v5)
    c.goalposts.hub = False  # True: the full release (private tests) from `hub_repo` through `datasets`
    c.goalposts.hub_repo = HUB_DATASET
    c.goalposts.start = ""  # [start, end) on contest_date; the paper: LCB before 2024-08 (601 problems)
    c.goalposts.end = LCB_CUTOFF
    c.goalposts.ids = ()  # explicit goalpost ids (used when there is no report)
    c.goalposts.allow_all = True  # no report and no ids: every problem of the window (the paper preset: False)
    c.goalposts.max_goalposts = 0  # 0 = all
    c.goalposts.decode_tests = True  # decode every goalpost's private tests at start-up (fail early)
    c.goalposts.dynamic = False  # the paper: fixed goalposts
    c.goalposts.promote = "hardest"  # "hardest" | "nearest" (dynamic goalposts only)

    c.axes = "io,algorithm"  # drawn uniformly per lemma; the lift keeps the lemma's axis
    c.lemmas_per_step = 64  # teacher lemma prompts per iteration (the paper does not say; AZR: 64 per type)
    c.num_inputs = 10  # inputs per induction task (AZR: 10, half shown to the solver)
    c.lifts_per_lemma = 1
    c.lift_from = "accepted"  # "accepted": lemmas inside the window (the paper's wording); "valid": any new valid lemma
    c.learnability_samples = 8  # n student samples per proposal (AZR: 8; GASP: not stated)
    c.solve_batch = 64  # student tasks per iteration: new accepted questions first, then the buffer
    c.student_kinds = "induction,deduction,abduction"  # presentation, uniform per task
    c.propose_groups = "per_stage"  # advantage groups: ("lemma"|"lift", "propose") or one ("induction", "propose")
    c.solve_groups = "per_type"  # (kind, "solve") per presented type, or one ("gasp", "solve")
    c.format_penalty = FORMAT_PENALTY  # invalid or duplicate proposals (AZR's -1)
    c.buffer_max_size = 0  # accepted-question buffer (and dedup index); 0 = unbounded
    c.seed_file = ""  # optional induction seed tasks that pre-fill the buffer (student back-fill only)
    c.seed_max_snippet_chars = 0  # keep seed programs up to this length (0 = all); tiny contexts need short ones
    c.seed_from_warmstart = False  # seed with the warm start's training induction tasks (what a tiny model knows)

    c.prompt = ml_collections.ConfigDict()  # template and chat come from the run's `prompts` block
    c.prompt.max_statement_chars = 0  # cut long goalpost statements in the lemma prompt (0 = never)
    c.prompt.lift_shown_pairs = 5  # lemma input/output pairs shown in the lift prompt

    c.dedup = ml_collections.ConfigDict()
    c.dedup.embedder = "hashed"  # "hashed" (no dependencies) | "policy" (frozen policy, JAX) | "encoder"
    c.dedup.dim = 512  # hashed embedder dimension
    c.dedup.threshold = 0.95  # reject at cosine >= threshold (the paper: 0.95)
    c.dedup.block_rows = 4096  # index capacity grows in multiples of this
    c.dedup.copy_threshold = 0.5  # reject when >= this fraction of the goalpost's 8-word shingles reappear
    c.dedup.encoder_path = ""  # embedder="encoder": a local HF checkpoint directory
    c.dedup.max_tokens = 512
    c.dedup.batch_size = 16

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 0  # goalposts-solved evaluation every N iterations (0 = off)
    c.eval.num_samples = 16
    c.eval.ks = "1,16"
    c.eval.temperature = 1.0
    c.eval.max_new_tokens = 1024
    c.eval.batch_problems = 4
    c.eval.solved_min_correct = 1
    c.eval.prompt_style = "auto"  # LCB prompt: "auto" | "chat" | "chat_no_system" | "base" | "question" (user text only)

    c.log = ml_collections.ConfigDict()
    c.log.lineages = 3  # whole lineages (goalpost -> lemma -> lift) per text summary
    return c


def _csv(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v) for v in value)


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: unknown value {value!r}; expected one of {tuple(allowed)}")
    return value


@dataclasses.dataclass(frozen=True)
class DedupSettings:
    """The `dedup` block: the near-duplicate filter's thresholds, typed; `block` is what
    `dedup.build_embedder` reads (embedder dimension, encoder path, batch sizes)."""

    embedder: str
    threshold: float
    copy_threshold: float
    block_rows: int
    block: Any


@dataclasses.dataclass(frozen=True)
class GaspEvalSettings:
    """The `eval` block: the goalposts-solved evaluation every `every` completed iterations (0: off)."""

    every: int
    prompt_style: str
    measure: gasp_eval.GoalpostSettings


@dataclasses.dataclass(frozen=True)
class GaspSettings:
    """A `sources.<name>` block of type "gasp", checked and typed once at set-up (see `default_config`).
    `goalposts` stays the loader's block (`goalposts.load_goalposts` reads it)."""

    goalposts: Any
    dynamic: bool
    promote: str
    axes: tuple[str, ...]
    lemmas_per_step: int
    num_inputs: int
    lifts_per_lemma: int
    lift_from: str
    learnability_samples: int
    solve_batch: int
    student_kinds: tuple[str, ...]
    propose_groups: str
    solve_groups: str
    format_penalty: float
    buffer_max_size: int
    seed_file: str
    seed_max_snippet_chars: int
    seed_from_warmstart: bool
    max_statement_chars: int
    lift_shown_pairs: int
    dedup: DedupSettings
    eval: GaspEvalSettings
    log_lineages: int

    @classmethod
    def from_config(cls, c: Any, name: str = "gasp") -> "GaspSettings":
        """Errors are one line naming the key."""
        axes = tuple(gasp_prompts.check_axis(a) for a in _csv(c.axes)) or gasp_prompts.AXES
        student_kinds = tuple(_choice(f"sources.{name}.student_kinds", k, STUDENT_KINDS) for k in _csv(c.student_kinds))
        if not student_kinds:
            raise ValueError(f"sources.{name}.student_kinds is empty")
        _choice(f"sources.{name}.propose_groups", c.propose_groups, PROPOSE_GROUPS)
        _choice(f"sources.{name}.solve_groups", c.solve_groups, SOLVE_GROUPS)
        _choice(f"sources.{name}.lift_from", c.lift_from, LIFT_FROM)
        _choice(f"sources.{name}.goalposts.promote", c.goalposts.promote, POLICIES)
        for field in ("lemmas_per_step", "num_inputs", "learnability_samples"):
            if int(c[field]) < 1:
                raise ValueError(f"sources.{name}.{field} must be >= 1, got {c[field]}")
        for field in ("lifts_per_lemma", "solve_batch"):
            if int(c[field]) < 0:
                raise ValueError(f"sources.{name}.{field} must be >= 0, got {c[field]}")
        _choice(f"sources.{name}.eval.prompt_style", c.eval.prompt_style, periodic.PROMPT_STYLES)
        e = c.eval
        measure = gasp_eval.GoalpostSettings(
            num_samples=int(e.num_samples), ks=tuple(int(k) for k in _csv(e.ks)), temperature=float(e.temperature),
            max_new_tokens=int(e.max_new_tokens), batch_problems=int(e.batch_problems),
            solved_min_correct=int(e.solved_min_correct))
        d = c.dedup
        return cls(
            goalposts=c.goalposts, dynamic=bool(c.goalposts.dynamic), promote=str(c.goalposts.promote), axes=axes,
            lemmas_per_step=int(c.lemmas_per_step), num_inputs=int(c.num_inputs), lifts_per_lemma=int(c.lifts_per_lemma),
            lift_from=str(c.lift_from), learnability_samples=int(c.learnability_samples), solve_batch=int(c.solve_batch),
            student_kinds=student_kinds, propose_groups=str(c.propose_groups), solve_groups=str(c.solve_groups),
            format_penalty=float(c.format_penalty), buffer_max_size=int(c.buffer_max_size),
            seed_file=str(c.seed_file or ""), seed_max_snippet_chars=int(c.seed_max_snippet_chars),
            seed_from_warmstart=bool(c.seed_from_warmstart), max_statement_chars=int(c.prompt.max_statement_chars),
            lift_shown_pairs=int(c.prompt.lift_shown_pairs),
            dedup=DedupSettings(embedder=str(d.embedder), threshold=float(d.threshold),
                                copy_threshold=float(d.copy_threshold), block_rows=int(d.block_rows), block=d),
            eval=GaspEvalSettings(every=int(e.every), prompt_style=str(e.prompt_style), measure=measure),
            log_lineages=int(c.log.lineages))


@dataclasses.dataclass
class _Candidate:
    """One lemma or lift the teacher wrote, followed through every check of one iteration."""

    stage: str
    goalpost: Goalpost
    axis: str
    prompt: str
    parent: dict | None = None  # the lemma's buffer entry (lifts)
    proposal: Any = None  # selfplay.phases.Proposal
    duplicate: bool = False
    duplicate_reason: str = ""
    p: float | None = None
    n: int = 0  # student samples judged (what p averages)
    reward: float | None = None  # None: dropped (sandbox infrastructure failure), never scored
    accepted: bool = False
    too_long: bool = False  # its student prompt exceeds prompts.token_budget: invalid

    @property
    def valid(self) -> bool:
        return self.proposal is not None and self.proposal.status in ("valid", "duplicate")

    @property
    def qid(self) -> str | None:
        return self.proposal.record["id"] if self.valid else None


def iteration_summary(lemmas: list[_Candidate], lifts: list[_Candidate]) -> str:
    """One console line of an iteration's curriculum: per stage written / valid / duplicates / accepted,
    and each accepted question's goalpost and pass rate (what TensorBoard's lineages show in full)."""
    parts = []
    for stage, cands in (("lemmas", lemmas), ("lifts", lifts)):
        accepted = [x for x in cands if x.accepted]
        line = (f"{stage} {len(cands)} written, {sum(x.valid for x in cands)} valid, "
                f"{sum(x.duplicate for x in cands)} duplicate, {len(accepted)} accepted")
        if accepted:
            line += " (" + ", ".join(f"{x.goalpost.id} p={x.p:.2f}" for x in accepted) + ")"
        parts.append(line)
    return " | ".join(parts)


class GaspSource:
    """GASP guidance as a rollout source (see the module docstring)."""

    def __init__(self, name: str, config: ml_collections.ConfigDict | GaspSettings,
                 run_config: ml_collections.ConfigDict, *, workdir: str | None = None):
        """`config`: the `sources.<name>` block, or its `GaspSettings` already resolved."""
        self.name = name
        self.settings = c = config if isinstance(config, GaspSettings) else GaspSettings.from_config(config, name)
        self.run_config = run_config
        self.axes = c.axes
        self.student_kinds = c.student_kinds
        prompts_block = run_config.get("prompts", {})
        self.template = gasp_prompts.check_template(str(prompts_block.get("template", "full")))
        self.chat = bool(prompts_block.get("chat", False))
        self.prompts = gasp_prompts.TeacherPrompts(
            num_inputs=c.num_inputs, template=self.template, chat=self.chat,
            max_statement_chars=c.max_statement_chars, lift_shown_pairs=c.lift_shown_pairs)
        self.goalpost_eval = gasp_eval.GoalpostEvaluation(c.eval.measure, prefix="gasp/goalposts",
                                                          per_goalpost_prefix="gasp/goalpost")
        self._eval_texts: dict[str, str] = {}  # goalpost changes of the last evaluation, logged by the next collect
        self.pool = load_goalposts(c.goalposts, where=f"sources.{name}.goalposts")  # GoalpostError at start-up
        self.workdir = workdir or run_config.get("workdir", None)
        self.curriculum = CurriculumLog(Path(self.workdir) / "curriculum.jsonl") if self.workdir else None
        self.buffer = QuestionBuffer(c.buffer_max_size)
        self._tokenizer: Any = None  # the teacher's (chat prompts only), set on the first collect
        self._embedder: dedup_lib.Embedder | None = None
        self._index: dedup_lib.DedupIndex | None = None
        self._statement_vecs: dict[str, np.ndarray] = {}
        self.schedule: GoalpostSchedule | None = None
        self._pending_schedule: dict | None = None  # restored before the embedder exists
        self._pending_truncate: int | None = None  # restored before the workdir is known
        if c.dedup.embedder != "policy":  # the policy embedder waits for the teacher's params (first collect)
            self._init_embedder(None)
        self.counters: Counter[str] = Counter()
        self.progress: dict[str, dict[str, int]] = defaultdict(lambda: {"lemmas": 0, "lifts": 0})
        self._seeds_validated = not (c.seed_file or c.seed_from_warmstart)

    # ------------------------------------------------------------------------------------------- set-up

    def _init_embedder(self, policy: tuple[Any, Any, Any] | None) -> None:
        """Builds the embedder, the index and the goalpost schedule. The policy embedder needs the teacher
        (`(model, params, tokenizer)`), so it is built on the first collect from a frozen copy of the teacher's
        step-0 weights: the same weights after a resume, so dedup decisions do not change across one."""
        d = self.settings.dedup
        if policy is None:
            self._embedder = dedup_lib.build_embedder(d.block)
        else:
            model, params, tokenizer = policy
            self._embedder = dedup_lib.build_embedder(d.block, model=model, params=params, tokenizer=tokenizer)
        self._index = dedup_lib.DedupIndex(self._embedder.dim, threshold=d.threshold, block_rows=d.block_rows)
        self._statement_vecs = {}
        state = self._pending_schedule or (self.schedule.state_dict() if self.schedule is not None else None)
        self._pending_schedule = None
        self.schedule = GoalpostSchedule(self.pool, dynamic=self.settings.dynamic, policy=self.settings.promote,
                                         embed=self._embedder.embed)
        if state is not None:
            self.schedule.load_state_dict(state)
        self._reindex()

    def _ensure_ready(self, ctx: Any) -> None:
        self._tokenizer = ctx.policies["teacher"].tokenizer
        if self._embedder is None:
            teacher = ctx.policies["teacher"]
            if ctx.initial_model is not None:  # the trainer re-derives the step-0 weights (also after a resume)
                model, params = ctx.initial_model("teacher")
                self._init_embedder((model, params, teacher.tokenizer))
            else:
                self._init_embedder((teacher.model, teacher.params, teacher.tokenizer))
        if self.workdir is None:
            self.workdir = getattr(ctx, "workdir", None)
            if self.workdir is None:
                raise ValueError(f"sources.{self.name}: no workdir (the trainer passes it; needed for curriculum.jsonl)")
            self.curriculum = CurriculumLog(Path(self.workdir) / "curriculum.jsonl")
            if self._pending_truncate is not None and multihost.is_main():
                self.curriculum.truncate(self._pending_truncate)
            self._pending_truncate = None
        if not self._seeds_validated:
            self._seed(ctx)

    def _seed(self, ctx: Any) -> None:
        """Pre-fills the buffer with the seed file's induction tasks that pass validation (raw AZR rows can
        have non-plain or truncated outputs), once; through `phases.sharded_call`, so every process keeps
        the same records."""
        limit = self.settings.seed_max_snippet_chars
        if self.settings.seed_from_warmstart:
            rows, origin = warmstart.seed_tasks(self.run_config.init.warmstart.data).train["induction"], "the warm start"
        else:
            rows, origin = tasks.load_seed_file(self.settings.seed_file), self.settings.seed_file
        rows = [r for r in rows if "inputs" in r and (not limit or len(r["snippet"]) <= limit)]
        check = ctx.settings.validation
        results = phases.sharded_call(
            ctx, lambda items: tasks.validate_records(ctx.sandbox, items, config=check), [("induction", r) for r in rows]
        ).result()
        kept = 0
        for i, res in enumerate(results):
            if res.ok:
                qid = f"seed-{i}"
                self.buffer.add({"id": qid, "stage": "seed", "goalpost_id": None, "axis": None, "parent_id": None,
                                 "step": -1, "p": None, "record": dict(res.record, id=qid)})
                kept += 1
        self._seeds_validated = True
        log.info("gasp: %d/%d seed induction tasks from %s pass validation", kept, len(rows), origin)

    def _reindex(self) -> None:
        """Rebuilds the dedup index from the buffer (after a resume or an embedder change)."""
        assert self._embedder is not None and self._index is not None
        entries = [e for e in self.buffer.entries() if e["stage"] in STAGES]
        if entries:
            vecs = self._embedder.embed([dedup_lib.question_text(e["record"]) for e in entries])
            self._index.add(vecs, [e["id"] for e in entries])

    # -------------------------------------------------------------------------------------------- state

    def state_dict(self) -> dict:
        return {
            "buffer": self.buffer.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule is not None else self._pending_schedule,
            "counters": dict(self.counters),
            "seeds_validated": self._seeds_validated,
            "progress": {k: dict(v) for k, v in self.progress.items()},
            "curriculum_bytes": self.curriculum.size if self.curriculum is not None else 0,
            "goalposts_eval": self.goalpost_eval.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.goalpost_eval.load_state_dict(state.get("goalposts_eval", {}))
        self.counters = Counter(state.get("counters", {}))
        self._seeds_validated = bool(state.get("seeds_validated", True))
        self.progress = defaultdict(lambda: {"lemmas": 0, "lifts": 0}, {k: dict(v) for k, v in state.get("progress", {}).items()})
        size = int(state.get("curriculum_bytes", 0))
        if self.curriculum is None:
            self._pending_truncate = size
        elif multihost.is_main():
            self.curriculum.truncate(size)
        if self._embedder is None:
            self._pending_schedule = state.get("schedule")
            return
        self._index = dedup_lib.DedupIndex(self._embedder.dim, threshold=self.settings.dedup.threshold,
                                           block_rows=self.settings.dedup.block_rows)
        self._reindex()
        if state.get("schedule") is not None:
            assert self.schedule is not None
            self.schedule.load_state_dict(state["schedule"])

    def tensorboard_layout(self) -> dict:
        """The CUSTOM SCALARS layout: acceptance, valid rate, teacher reward, student pass rates, solved."""
        return tensorboard.custom_scalars_layout(self.axes, STUDENT_KINDS)

    # ------------------------------------------------------------------------------------------ prompts

    def lemma_prompt(self, goalpost: Goalpost, axis: str) -> str:
        return self.prompts.lemma(goalpost.statement, axis, self._tokenizer)

    def lift_prompt(self, lemma: dict, axis: str) -> str:
        return self.prompts.lift(lemma, axis, self._tokenizer)

    # --------------------------------------------------------------------------------------- one stage

    def _propose(self, ctx: Any, cands: list[_Candidate]) -> None:
        """Teacher rollouts -> parse -> validate -> dedup + goalpost copies -> learnability -> reward."""
        if not cands:
            return
        stage = cands[0].stage
        completions = phases.generate(ctx, "propose", [c.prompt for c in cands])
        metas = [{"stage": stage, "goalpost_id": c.goalpost.id, "axis": c.axis,
                  "parent_ids": [c.parent["id"]] if c.parent else [],
                  "parse_kwargs": {"program": None, "num_inputs": self.settings.num_inputs}} for c in cands]
        proposals = phases.parse_proposals(["induction"] * len(cands), completions, metas=metas)
        proposals = phases.validate(ctx, proposals, origin=f"{self.name}-{stage}").result()
        for cand, prop in zip(cands, proposals):
            cand.proposal = prop
            if prop.status == "duplicate":  # an exact copy of an earlier proposal of this batch
                cand.duplicate, cand.duplicate_reason = True, "exact copy within the batch"
        self._reject_too_long(ctx, cands)
        with ctx.timers.phase("gasp_dedup"):
            self._dedup(cands)
        todo = [c for c in cands if c.valid and not c.duplicate]
        with ctx.timers.phase(f"gasp_{stage}_pass_rate"):  # n student samples + judging per proposal
            rates, judged = phases.estimate_learnability(ctx, [("induction", c.proposal.record) for c in todo],
                                                        n=self.settings.learnability_samples,
                                                        with_counts=True).result()
        for cand, rate, count in zip(todo, rates, judged):
            cand.n = int(count)
            cand.p = float(rate) if np.isfinite(rate) else None
        for cand in cands:
            # The sandbox failed to validate it, or to judge every student sample: dropped, never scored
            # (as everywhere in the system), and counted.
            if cand.proposal.status == "infra_error" or (cand.valid and not cand.duplicate and cand.p is None):
                cand.reward = None
                self.counters[f"infra_error_{stage}"] += 1
                continue
            cand.reward = teacher_reward(stage, valid=cand.valid, duplicate=cand.duplicate, p=cand.p,
                                         format_penalty=self.settings.format_penalty)
            cand.accepted = cand.valid and not cand.duplicate and bool(accepted_rate(stage, cand.p))

    def _reject_too_long(self, ctx: Any, cands: list[_Candidate]) -> None:
        """A valid proposal whose student prompt (induction form) exceeds ``prompts.token_budget`` is
        invalid, as in AZR (a task must fit the solver's prompt): the format penalty, never estimated, never
        in the buffer. Checked before dedup, so it blocks no later candidate."""
        live = [c for c in cands if c.valid]
        prompts = phases.solve_prompts(ctx, [("induction", c.proposal.record) for c in live])
        for cand, prompt in zip(live, prompts):
            if prompt is None:
                cand.too_long = True
                cand.proposal.status = "invalid"
                cand.proposal.reason = "its student prompt exceeds prompts.token_budget"
                self.counters[f"too_long_{cand.stage}"] += 1

    def _dedup(self, cands: list[_Candidate]) -> None:
        """Near-duplicates of accepted questions (or of each other) and copies of the goalpost statement.
        One embedding call covers every candidate's question text and message."""
        assert self._embedder is not None and self._index is not None
        usable = [c.valid and not c.duplicate for c in cands]
        where = [i for i, ok in enumerate(usable) if ok]
        if not where:
            return
        records = [cands[i].proposal.record for i in where]
        messages = [str(r.get("message", "")) for r in records]
        vecs = self._embedder.embed([dedup_lib.question_text(r) for r in records] + messages)
        queries = np.zeros((len(cands), vecs.shape[1]), np.float32)
        queries[where] = vecs[: len(where)]
        message_vecs = dedup_lib.normalize_rows(vecs[len(where):])
        result = self._index.check(queries, usable=usable)
        threshold = self.settings.dedup.threshold
        for k, i in enumerate(where):
            cand, record = cands[i], records[k]
            if result.duplicate[i]:
                cand.duplicate = True
                cand.duplicate_reason = f"cosine {result.similarity[i]:.3f} to {result.match[i]}"
                self.counters[f"duplicate_{cand.stage}"] += 1
                continue
            # Copies of the goalpost statement: verbatim shingles, or the message embedding close to it.
            copied = dedup_lib.copied_fraction(f"{messages[k]}\n{record.get('snippet', '')}", cand.goalpost.statement)
            sim = float(message_vecs[k] @ self._statement_vec(cand.goalpost)) if messages[k].strip() else 0.0
            if copied >= self.settings.dedup.copy_threshold or sim >= threshold:
                cand.duplicate = True
                cand.duplicate_reason = f"copies goalpost {cand.goalpost.id} ({copied:.0%} of its shingles, cosine {sim:.3f})"
                self.counters["goalpost_copies"] += 1

    def _statement_vec(self, goalpost: Goalpost) -> np.ndarray:
        assert self._embedder is not None
        if goalpost.id not in self._statement_vecs:
            self._statement_vecs[goalpost.id] = dedup_lib.normalize_rows(self._embedder.embed([goalpost.statement]))[0]
        return self._statement_vecs[goalpost.id]

    def _accept(self, ctx: Any, cands: list[_Candidate]) -> list[dict]:
        """Accepted candidates -> buffer entries (+ dedup index)."""
        assert self._embedder is not None and self._index is not None
        entries, evicted = [], []
        for c in cands:
            if not c.accepted:
                continue
            entry = {"id": c.qid, "stage": c.stage, "goalpost_id": c.goalpost.id, "axis": c.axis,
                     "parent_id": c.parent["id"] if c.parent else None, "step": int(ctx.step), "p": c.p,
                     "record": c.proposal.record}
            evicted += self.buffer.add(entry)
            entries.append(entry)
            self.progress[c.goalpost.id]["lemmas" if c.stage == "lemma" else "lifts"] += 1
        # The index holds exactly the buffer's questions: an evicted one stops blocking new ones (as the
        # index rebuilt from the buffer on resume has it, so a resumed run decides as a straight one).
        kept = [e for e in entries if e["id"] in self.buffer]
        if kept:
            vecs = self._embedder.embed([dedup_lib.question_text(e["record"]) for e in kept])
            self._index.add(vecs, [e["id"] for e in kept])
        self._index.remove(evicted)
        return entries

    # ---------------------------------------------------------------------------------------- student

    def student_tasks(self, new: list[dict], rng: np.random.Generator) -> list[tuple[str, dict]]:
        """New accepted questions first (shuffled), then uniform buffer draws; each presented as a uniform
        random type (deduction/abduction from one uniformly chosen input/output pair)."""
        size = self.settings.solve_batch
        chosen = [new[int(i)] for i in rng.permutation(len(new))[:size]] if new else []
        pool = self.buffer.entries()
        if len(chosen) < size and pool:
            chosen += [pool[int(i)] for i in rng.integers(len(pool), size=size - len(chosen))]
        out = []
        for entry in chosen:
            record = entry["record"]
            kind = self.student_kinds[int(rng.integers(len(self.student_kinds)))]
            if kind != "induction":
                record = tasks.io_record_from_induction(record, int(rng.integers(len(record["inputs"]))))
            out.append((kind, record))
        return out

    def _propose_group(self, stage: str):
        return (stage, "propose") if self.settings.propose_groups == "per_stage" else ("induction", "propose")

    def _solve_group(self, kind: str):
        return (kind, "solve") if self.settings.solve_groups == "per_type" else ("gasp", "solve")

    # ---------------------------------------------------------------------------------------- collect

    def collect(self, ctx: Any):
        self._ensure_ready(ctx)
        assert self.schedule is not None
        c = self.settings
        active = self.schedule.active_goalposts()
        if not active:
            raise RuntimeError(f"sources.{self.name}: no active goalposts left (all retired, reserve empty)")

        # Lemmas: one goalpost + one axis per prompt, both uniform.
        lemmas = []
        for _ in range(c.lemmas_per_step):
            g = active[int(ctx.rng.integers(len(active)))]
            axis = self.axes[int(ctx.rng.integers(len(self.axes)))]
            lemmas.append(_Candidate("lemma", g, axis, self.lemma_prompt(g, axis)))
        with ctx.timers.phase("gasp_lemma"):
            self._propose(ctx, lemmas)
        new = self._accept(ctx, lemmas)

        # Lifts: from the lemma only (its validated record), same axis.
        parents = list(zip([x for x in lemmas if x.accepted], new))
        if c.lift_from == "valid":
            parents += [(x, self._pseudo_entry(ctx, x)) for x in lemmas
                        if x.valid and not x.duplicate and not x.accepted and x.p is not None]
        lifts = [_Candidate("lift", x.goalpost, x.axis, self.lift_prompt(entry["record"], x.axis), parent=entry)
                 for x, entry in parents for _ in range(c.lifts_per_lemma)]
        with ctx.timers.phase("gasp_lift"):
            self._propose(ctx, lifts)
        new += self._accept(ctx, lifts)

        # Student phase.
        with ctx.timers.phase("gasp_student"):
            batch = self.student_tasks(new, ctx.rng)
            solved = phases.solve(ctx, batch, group=self._solve_group, source=self.name)
            solve_episodes = solved.result()

        # Teacher episodes (proposals viewed as their stage for the metrics and groups).
        cands = lemmas + lifts
        staged = [dataclasses.replace(x.proposal, kind=x.stage) for x in cands]
        for p, x in zip(staged, cands):
            if x.duplicate:
                p.status, p.reason = "duplicate", x.duplicate_reason
        propose_eps = phases.proposer_episodes(staged, [x.reward for x in cands],
                                              group=lambda p: self._propose_group(p.kind), source=self.name)
        episodes = propose_eps + solve_episodes
        pass_rates = {i: (x.p if x.p is not None else float("nan")) for i, x in enumerate(cands) if x.valid and not x.duplicate}
        scalars, hists = phases.kind_metrics(episodes, staged, pass_rates)
        scalars.update(self._metrics(lemmas, lifts))
        texts = {"gasp/lineages": self._lineage_text(lifts + lemmas)}
        log.info("gasp: %s", iteration_summary(lemmas, lifts))
        self._record(ctx, cands)
        texts.update(self._eval_texts)
        self._eval_texts = {}
        return SourceResult(episodes=episodes, scalars=scalars, histograms=hists, texts=texts)

    def _pseudo_entry(self, ctx: Any, lemma: _Candidate) -> dict:
        """A buffer-shaped view of a valid lemma outside the window (``lift_from="valid"``); not stored."""
        return {"id": lemma.qid, "stage": "lemma", "goalpost_id": lemma.goalpost.id, "axis": lemma.axis,
                "parent_id": None, "step": int(ctx.step), "p": lemma.p, "record": lemma.proposal.record,
                "accepted": False}

    # ---------------------------------------------------------------------------------------- records

    def _record(self, ctx: Any, cands: list[_Candidate]) -> None:
        if self.curriculum is None or not multihost.is_main():
            return
        rows = [make_row(step=int(ctx.step), goalpost_id=x.goalpost.id, axis=x.axis, stage=x.stage, prompt=x.prompt,
                         proposal=x.proposal.completion.text, valid=x.valid, duplicate=x.duplicate, n=x.n, p=x.p,
                         reward=x.reward, accepted=x.accepted, id=x.qid,
                         parent_id=x.parent["id"] if x.parent else None) for x in cands]
        self.curriculum.append(rows)

    def _metrics(self, lemmas: list[_Candidate], lifts: list[_Candidate]) -> dict[str, float]:
        out: dict[str, float] = {}
        for stage, cands in (("lemma", lemmas), ("lift", lifts)):
            out[f"gasp/{stage}/count"] = float(len(cands))
            if not cands:
                continue
            out[f"gasp/{stage}/accept_rate"] = float(np.mean([x.accepted for x in cands]))
            out[f"gasp/{stage}/valid_rate"] = float(np.mean([x.valid for x in cands]))
            out[f"gasp/{stage}/duplicate_rejections"] = float(sum(x.duplicate for x in cands))
            out[f"gasp/{stage}/infra_errors"] = float(sum(x.reward is None for x in cands))
            out[f"gasp/{stage}/too_long"] = float(sum(x.too_long for x in cands))
            scored = [x.reward for x in cands if x.reward is not None]
            if scored:
                out[f"gasp/{stage}/reward_mean"] = float(np.mean(scored))
            for axis in self.axes:
                sub = [x for x in cands if x.axis == axis]
                if sub:
                    out[f"gasp/{stage}/accept_rate/{axis}"] = float(np.mean([x.accepted for x in sub]))
        out["gasp/buffer/size"] = float(len(self.buffer))
        out["gasp/dedup/index_size"] = float(len(self._index)) if self._index is not None else 0.0
        out["gasp/dedup/goalpost_copies_total"] = float(self.counters["goalpost_copies"])
        out["gasp/dedup/duplicates_total"] = float(self.counters["duplicate_lemma"] + self.counters["duplicate_lift"])
        out["gasp/infra_errors_total"] = float(self.counters["infra_error_lemma"] + self.counters["infra_error_lift"])
        out["gasp/goalposts/solved_union"] = float(len(self.goalpost_eval.solved_union))
        assert self.schedule is not None
        out["gasp/goalposts/active"] = float(len(self.schedule.active))
        out["gasp/goalposts/retired"] = float(len(self.schedule.retired))
        for gid in self.schedule.active:
            prog = self.progress.get(gid, {"lemmas": 0, "lifts": 0})
            out[f"gasp/goalpost/{gid}/accepted_lemmas"] = float(prog["lemmas"])
            out[f"gasp/goalpost/{gid}/accepted_lifts"] = float(prog["lifts"])
        return out

    def _lineage_text(self, cands: list[_Candidate]) -> str:
        """Markdown of whole lineages (goalpost -> lemma -> lift), accepted lifts first."""
        shown = []
        for x in sorted(cands, key=lambda x: (not x.accepted, x.stage != "lift")):
            if len(shown) >= self.settings.log_lineages or not x.valid:
                continue
            parts = [f"**goalpost {x.goalpost.id}** ({x.goalpost.title}, axis {x.axis}):\n\n> "
                     + x.goalpost.statement[:400].replace("\n", "\n> ")]
            chain = ([x.parent] if x.parent else []) + [{"stage": x.stage, "p": x.p, "record": x.proposal.record,
                                                        "accepted": x.accepted, "id": x.qid}]
            for e in chain:
                rec = e["record"]
                parts.append(f"**{e['stage']}** `{e['id']}` p={e['p']}"
                             + ("" if e.get("accepted", True) else " (not accepted)")
                             + f"\n\n{rec.get('message', '')}\n\n```python\n{rec.get('snippet', '')}\n```")
            shown.append("\n\n".join(parts))
        return "\n\n---\n\n".join(shown) or "(no valid lemma or lift this step)"

    # ------------------------------------------------------------------------------------- evaluation

    def after_step(self, step: int, ctx: Any) -> dict[str, float]:
        """After the update of iteration `step` (completed iterations): the periodic goalposts-solved
        evaluation (`evaluation.periodic`, every `eval.every` and after the last iteration), then goalpost
        retirement (dynamic goalposts). The trainer calls it with the updated student policy."""
        if not periodic.is_due(self.settings.eval.every, step, int(self.run_config.steps)):
            return {}
        self._ensure_ready(ctx)  # a source that has not collected yet (`start` > 0) still evaluates
        assert self.schedule is not None
        policy = ctx.policies["student"]
        prompt_fn = periodic.policy_prompt_fn(self.settings.eval.prompt_style, policy.tokenizer,
                                              run_config=self.run_config)
        with ctx.timers.phase("goalposts_eval"):
            report = self.goalpost_eval(ctx, self.schedule.active_goalposts(), step=step, prompt_fn=prompt_fn,
                                        out_dir=Path(self.workdir or ".") / "goalposts_eval")
        scalars = self.goalpost_eval.scalars(report)
        solved = {gid: f"{report['per_goalpost'][gid]['correct']}/{report['per_goalpost'][gid]['n']} samples correct "
                       f"at step {step}" for gid in report["solved"]}
        changes = self.schedule.update(step, solved)
        if changes:
            if multihost.is_main() and self.workdir:
                with open(Path(self.workdir) / "goalpost_changes.jsonl", "a", encoding="utf-8") as f:
                    f.writelines(json.dumps(ch) + "\n" for ch in changes)
            self._eval_texts["gasp/goalpost_changes"] = "\n".join(
                f"- step {ch['step']}: retired `{ch['retired']}` ({ch['reason']}); promoted `{ch['promoted']}` "
                f"by {ch['policy']}" for ch in changes)
        scalars["gasp/goalposts/changes"] = float(len(changes))
        return scalars
