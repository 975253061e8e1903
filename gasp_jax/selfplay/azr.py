"""AZR self-play as a rollout source (Absolute Zero, paper.md section 9.6): one iteration per `collect`.

    propose   the teacher writes one task per prompt, per task type, each prompt showing K references
              sampled from that type's buffer (induction: one program from the deduction/abduction buffers)
    validate  the sandbox runs every parsed proposal (integrity, banned imports, determinism) and
              computes its gold output(s)
    learn     n student samples per accepted task (one prefill, rollout temperature) -> pass rate p;
              not trained on
    reward    proposer: -1 invalid, 1 - p when 0 < p < 1, else -0.5
    buffers   every newly valid task is stored (regardless of reward)
    student   per type: this iteration's new tasks first, then the buffer
    solve     one student rollout per task, judged by execution; correct 1, wrong -0.5, format -1

The learnability judging runs in the sandbox while the student batch is generated.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Mapping, Sequence

import ml_collections
import numpy as np

from gasp_jax import tasks, warmstart
from gasp_jax.selfplay import phases
from gasp_jax.selfplay.buffers import KINDS, TaskBuffers, identity_records
from gasp_jax.selfplay.types import RolloutContext, SourceResult

log = logging.getLogger(__name__)


def default_config() -> ml_collections.ConfigDict:
    """The `sources.azr` block with AZR's settings (paper.md section 9.7)."""
    c = ml_collections.ConfigDict()
    c.type = "azr"
    c.every = 1  # collect on iterations start, start + every, ...
    c.start = 0
    c.kinds = ",".join(KINDS)  # comma-separated subset of KINDS
    c.propose_per_kind = 64  # teacher prompts per task type per iteration (AZR: 64)
    c.solve_per_kind = 64  # student tasks per task type per iteration (AZR: 64)
    c.references = 6  # K references per proposer prompt (AZR: 6)
    c.induction_inputs = 10  # inputs an induction proposal must give (AZR: 10; half are shown to the solver)
    c.learnability_samples = 8  # n student samples per accepted proposal (AZR: 8)
    c.seed_file = ""  # deduction/abduction seed jsonl ("" = the identity program)
    c.induction_seed_file = ""  # induction seed jsonl ("" = the identity program)
    c.seed_max_snippet_chars = 0  # seed records with longer programs are left out (0: keep all)
    # Seed the buffers with the warm start's training tasks (init.warmstart.data), which the warm-started
    # model can read and answer, instead of the seed files.
    c.seed_from_warmstart = False
    c.buffer_max_size = 16384  # per type (AZR max_programs)
    c.buffer_drop = "newest"  # AZR keeps the oldest entries (see buffers.py)
    c.banned_modules = ""  # comma-separated; "" = the sandbox policy's default list
    return c


def _kinds(block, name: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in str(block.kinds).split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"sources.{name}.kinds: unknown task type(s) {bad or kinds}; expected a subset of {KINDS}")
    return kinds


@dataclasses.dataclass(frozen=True)
class AzrSettings:
    """A `sources.<name>` block of type "azr", checked and typed once at set-up (see `default_config`)."""

    kinds: tuple[str, ...]
    propose_per_kind: int
    solve_per_kind: int
    references: int
    induction_inputs: int
    learnability_samples: int
    seed_file: str
    induction_seed_file: str
    seed_max_snippet_chars: int
    seed_from_warmstart: bool
    buffer_max_size: int
    buffer_drop: str
    banned_modules: tuple[str, ...]  # empty: the sandbox policy's default list

    @classmethod
    def from_config(cls, block: Mapping, name: str = "azr") -> "AzrSettings":
        """Errors are one line naming the key."""
        for field in ("propose_per_kind", "solve_per_kind", "references", "learnability_samples", "buffer_max_size"):
            if int(block[field]) < (0 if field == "propose_per_kind" else 1):
                raise ValueError(f"sources.{name}.{field} must be positive, got {block[field]}")
        return cls(
            kinds=_kinds(block, name), propose_per_kind=int(block.propose_per_kind), solve_per_kind=int(block.solve_per_kind),
            references=int(block.references), induction_inputs=int(block.induction_inputs),
            learnability_samples=int(block.learnability_samples), seed_file=str(block.seed_file or ""),
            induction_seed_file=str(block.induction_seed_file or ""),
            seed_max_snippet_chars=int(block.get("seed_max_snippet_chars", 0)),
            seed_from_warmstart=bool(block.get("seed_from_warmstart", False)),
            buffer_max_size=int(block.buffer_max_size), buffer_drop=str(block.buffer_drop),
            banned_modules=tuple(m.strip() for m in str(block.banned_modules).split(",") if m.strip()))


class AzrSource:
    """AZR's propose/solve loop over deduction, abduction and induction (see the module docstring)."""

    def __init__(self, name: str, config: ml_collections.ConfigDict | AzrSettings,
                 run_config: ml_collections.ConfigDict):
        """`config`: the `sources.<name>` block, or its `AzrSettings` already resolved."""
        self.name = name
        self.settings = config if isinstance(config, AzrSettings) else AzrSettings.from_config(config, name)
        self.run_config = run_config
        self.kinds = self.settings.kinds
        self.buffers = TaskBuffers(max_size=self.settings.buffer_max_size, drop=self.settings.buffer_drop, kinds=KINDS)
        self.seeds_validated = False
        self.seed_rejected = 0
        self._seed()

    # --------------------------------------------------------------------------------------------- seeding

    def _seed(self) -> None:
        """Buffers from the shipped AZR seed files (the same io file seeds deduction and abduction, as in
        AZR), or from the identity program."""
        c = self.settings
        if c.seed_from_warmstart:
            seeds = warmstart.seed_tasks(self.run_config.init.warmstart.data).train
            for kind in KINDS:
                self.buffers[kind].add(_tag_seed(seeds[kind], kind) if seeds[kind] else identity_records(kind))
            return
        limit = c.seed_max_snippet_chars
        keep = lambda records: [r for r in records if not limit or len(r["snippet"]) <= limit]
        io = keep(tasks.load_seed_file(c.seed_file)) if c.seed_file else None
        ind = keep(tasks.load_seed_file(c.induction_seed_file)) if c.induction_seed_file else None
        for kind in ("deduction", "abduction"):
            self.buffers[kind].add(_tag_seed(io, kind) if io else identity_records(kind))
        self.buffers["induction"].add(_tag_seed(ind, "induction") if ind else identity_records("induction"))

    def validate_seeds(self, ctx: RolloutContext) -> None:
        """Once per run, at the first collect: the seed records go through the sandbox like proposals.
        AZR's raw rows include outputs that are not plain data, truncated ("abc...xyz") or hash-order
        dependent; only records that validate stay, with outputs recomputed in full and `gold` filled."""
        config = ctx.settings.validation
        io = self.buffers["deduction"].records
        induction = self.buffers["induction"].records
        items = [("deduction", r) for r in io] + [("induction", r) for r in induction]
        results = phases.sharded_call(ctx, lambda batch: tasks.validate_records(ctx.sandbox, batch, config=config),
                                     items).result()
        valid_io = [v.record for v in results[: len(io)] if v.ok]
        valid_ind = [v.record for v in results[len(io):] if v.ok]
        self.seed_rejected = len(items) - len(valid_io) - len(valid_ind)
        fresh = TaskBuffers(max_size=self.buffers["deduction"].max_size, drop=self.buffers["deduction"].drop, kinds=KINDS)
        for kind, records in (("deduction", valid_io), ("abduction", valid_io), ("induction", valid_ind)):
            fresh[kind].add(records or identity_records(kind))
        self.buffers = fresh
        self.seeds_validated = True
        log.info("%s: %d seed records kept, %d rejected by validation", self.name, len(valid_io) + len(valid_ind),
                 self.seed_rejected)

    # ----------------------------------------------------------------------------------------------- state

    def state_dict(self) -> dict:
        return {"buffers": self.buffers.state_dict(), "seeds_validated": self.seeds_validated}

    def load_state_dict(self, state: dict) -> None:
        self.buffers.load_state_dict(state["buffers"])
        self.seeds_validated = bool(state.get("seeds_validated", False))

    # --------------------------------------------------------------------------------------------- collect

    def propose_prompts(self, ctx: RolloutContext) -> tuple[list[str], list[str], list[dict]]:
        """(kinds, prompt texts, metas): `propose_per_kind` prompts per task type with K references."""
        c = self.settings
        opts = phases.prompt_kwargs(ctx)
        if c.banned_modules:
            opts["banned_modules"] = c.banned_modules
        kinds, prompts, metas = [], [], []
        self.too_long = 0
        for kind in self.kinds:
            for _ in range(c.propose_per_kind):
                for _attempt in range(8):  # a drawn program may not fit the prompt budget: draw again
                    try:
                        prompt, meta = self._propose_prompt(kind, ctx.rng, opts)
                        break
                    except tasks.PromptTooLong:
                        prompt = None
                if prompt is None:
                    self.too_long += 1
                    continue
                kinds.append(kind)
                prompts.append(prompt.text)
                metas.append(meta)
        return kinds, prompts, metas

    def _propose_prompt(self, kind: str, rng: np.random.Generator, opts: dict):
        c = self.settings
        if kind == "induction":
            # AZR: the proposer gets one program drawn from the deduction and abduction buffers and
            # writes inputs + a message for it.
            pool = self.buffers["deduction"].records + self.buffers["abduction"].records
            program = pool[int(rng.integers(len(pool)))]
            n = c.induction_inputs
            meta = {"parent_ids": [program.get("id", "")], "parse_kwargs": {"program": program, "num_inputs": n}}
            refs = self.buffers["induction"].sample(c.references, rng)
            return tasks.propose_prompt(kind, refs, program=program, num_inputs=n, **opts), meta
        refs = self.buffers[kind].sample(c.references, rng)
        return tasks.propose_prompt(kind, refs, **opts), {"parent_ids": [r.get("id", "") for r in refs]}

    def collect(self, ctx: RolloutContext) -> SourceResult:
        c = self.settings
        if not self.seeds_validated:
            self.validate_seeds(ctx)
        # 1. Propose.
        kinds, prompts, metas = self.propose_prompts(ctx)
        completions = phases.generate(ctx, "propose", prompts)
        proposals = phases.parse_proposals(kinds, completions, metas=metas)
        # 2. Validate (sandbox; this wait is not hidden: nothing can run before the tasks exist).
        proposals = phases.validate(ctx, proposals, buffers=self.buffers).result()
        accepted = [i for i, p in enumerate(proposals) if p.accepted]
        # 3. Learnability: generate now, judge in the background.
        learn = phases.estimate_learnability(ctx, [(proposals[i].kind, proposals[i].record) for i in accepted],
                                            n=c.learnability_samples)
        # 4. Buffers take every new valid task; 5. the student batch puts them first.
        new = {k: [p.record for p in proposals if p.status == "valid" and p.kind == k] for k in KINDS}
        for kind, records in new.items():
            self.buffers[kind].add(records)
        batch = phases.student_tasks(self.buffers, new, per_kind=c.solve_per_kind, rng=ctx.rng, kinds=self.kinds)
        # 6. Solve (student generation overlaps the learnability judging), then judge.
        solved = phases.solve(ctx, batch, source=self.name)
        pass_rates = dict(zip(accepted, learn.result()))
        rewards = phases.azr_proposer_rewards(ctx, proposals, pass_rates)
        episodes = phases.proposer_episodes(proposals, rewards, source=self.name) + solved.result()

        scalars, hists = phases.kind_metrics(episodes, proposals, pass_rates)
        for kind, size in self.buffers.sizes().items():
            scalars[f"buffer/{kind}/size"] = float(size)
        scalars[f"{self.name}/propose_prompts_too_long"] = float(self.too_long)
        scalars[f"{self.name}/seed_rejected"] = float(self.seed_rejected)
        return SourceResult(episodes=episodes, scalars=scalars, histograms=hists,
                            texts=phases.sample_texts(proposals, episodes))


SelfPlaySource = AzrSource  # the name before GASP and RLVR sources existed; configs and imports may use it


def _tag_seed(records: Sequence[dict], kind: str) -> list[dict]:
    out = []
    for i, r in enumerate(records):
        r = dict(r)
        r.setdefault("id", f"seed-{kind}-{i}")
        r.setdefault("origin", "seed")
        r.setdefault("step", -1)
        r.setdefault("parent_ids", [])
        out.append(r)
    return out
