"""The AZR phases as reusable functions: generate, parse, validate, estimate learnability, build the
student batch, solve, judge, and the per-(type, role) metrics.

`AzrSource` (azr.py) is these calls in order; GASP's source replaces only the proposal prompts and
the proposer reward and calls the same functions, so validation, learnability, the student phase and
judging exist once. Sandbox work is split over processes (`multihost.shard_for_process`), submitted
without blocking, and gathered when a `Pending` is resolved: every process then holds the same results
and feeds the update the same rewards. The time a caller blocks in `Pending.result()` is the sandbox
time not hidden behind device work (`time/sandbox_wait_s`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any, Callable, Hashable, Mapping, Sequence

import jax
import numpy as np

from gasp_jax import multihost, tasks
from gasp_jax.selfplay.buffers import KINDS, TaskBuffers, task_key
from gasp_jax.selfplay.types import ROLE_MODEL, Completion, Episode, Pending, RolloutContext

# "infra_error": the sandbox could not validate it; such proposals are dropped (never scored).
PROPOSAL_STATUSES = ("valid", "duplicate", "invalid", "format_error", "infra_error")

# One host thread runs blocking sandbox calls for the trainer thread (the sandbox itself fans out over
# its worker pool); the trainer keeps issuing device work meanwhile.
_HOST_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="gasp-selfplay-host")


@dataclasses.dataclass
class Proposal:
    """A teacher completion and what validation made of it."""

    kind: str  # the task type it is validated as
    completion: Completion
    status: str = "format_error"  # one of PROPOSAL_STATUSES
    record: dict | None = None  # the validated record with gold outputs (valid / duplicate only)
    reason: str = ""
    parsed: Any = None  # the tasks layer's parsed proposal (None on a format error)
    meta: dict = dataclasses.field(default_factory=dict)  # source-specific (references, GASP stage, ...)

    @property
    def accepted(self) -> bool:
        """Passed validation (a duplicate of a buffered task is valid, just not stored again)."""
        return self.status in ("valid", "duplicate")


# ------------------------------------------------------------------------------------------- host fan-out


def sharded_call(ctx: RolloutContext, fn: Callable[[list], list], items: Sequence) -> Pending[list]:
    """`fn(items)` -> list (same length), computed on this process's shard in a host thread; the
    returned `Pending` gathers every process's shard in order. Collective when resolved."""
    items = list(items)
    mine = multihost.shard_for_process(items)
    future = _HOST_POOL.submit(_annotated, f"sandbox:{getattr(fn, '__name__', 'host')}", fn, mine) if mine else None

    def finish():
        local = list(future.result()) if future is not None else []
        if len(local) != len(mine):
            raise RuntimeError(f"{getattr(fn, '__name__', fn)} returned {len(local)} results for {len(mine)} items")
        return multihost.all_gather_objects(local)

    return Pending(finish, ctx.timers)  # the one timed wait (the wrappers below do not time again)


def _annotated(name: str, fn, items):
    """`fn(items)` under a named trace annotation: the host thread's row in a profile."""
    with jax.profiler.TraceAnnotation(name):
        return fn(items)


# ------------------------------------------------------------------------------------------------ phases


def generate(ctx: RolloutContext, role: str, prompts: Sequence[str], *, num_samples: int = 1,
             temperature: float | None = None, max_new_tokens: int | None = None) -> list[Completion]:
    """Samples with the policy playing `role` (teacher proposes, student solves), timed per model."""
    model = ROLE_MODEL[role]
    with ctx.timers.phase(f"{model}_generate"):
        return ctx.policies[model].generate(list(prompts), num_samples=num_samples, temperature=temperature,
                                            max_new_tokens=max_new_tokens, rng=ctx.next_key())


@jax.profiler.annotate_function  # host work: a named row in a profile
def parse_proposals(kinds: Sequence[str], completions: Sequence[Completion], *,
                    metas: Sequence[dict] | None = None) -> list[Proposal]:
    """Parses each teacher completion as a proposal of its kind (garbage -> status "format_error").

    `meta["parse_kwargs"]` go to `tasks.parse_proposal` (AZR induction: `program=` the given program;
    GASP: `num_inputs=`)."""
    metas = metas if metas is not None else [{} for _ in completions]
    out = []
    for kind, c, meta in zip(kinds, completions, metas, strict=True):
        parsed = tasks.parse_proposal(kind, c.text, **meta.get("parse_kwargs", {}))
        ok = bool(parsed)  # a ProposalError is falsy
        out.append(Proposal(kind=kind, completion=c, parsed=parsed if ok else None,
                            status="invalid" if ok else "format_error",
                            reason="" if ok else f"format: {getattr(parsed, 'reason', 'unparsable')}", meta=dict(meta)))
    return out


def validate(ctx: RolloutContext, proposals: Sequence[Proposal], *, buffers: TaskBuffers | None = None,
             step: int | None = None, origin: str = "propose") -> Pending[list[Proposal]]:
    """Executes every parsed proposal in the sandbox (integrity, safety, determinism; gold outputs filled).

    Resolves to the same proposals with `status` / `record` / `reason` set: "valid", "duplicate" (valid
    and already in `buffers` or earlier in this batch), "invalid", "format_error" (unchanged), or
    "infra_error" (the sandbox failed: drop it, never score it).
    """
    config = ctx.settings.validation
    step = ctx.step if step is None else step
    todo = [i for i, p in enumerate(proposals) if p.parsed is not None]
    items = [(proposals[i].kind, proposals[i].parsed,
              {"id": f"{origin}-{step}-{i}", "origin": origin, "step": int(step),
               "parent_ids": list(proposals[i].meta.get("parent_ids", []))}) for i in todo]

    def run(batch):
        return [f.result() for f in tasks.validate_proposals_async(ctx.sandbox, batch, config=config)]

    pending = sharded_call(ctx, run, items)

    def finish():
        seen: set[str] = set()
        for i, res in zip(todo, pending.result(), strict=True):
            p = proposals[i]
            if res.ok is None:
                p.status, p.reason = "infra_error", str(res.reason)
            elif not res.ok:
                p.status, p.reason = "invalid", str(res.reason)
            else:
                key = task_key(p.kind, res.record)
                duplicate = key in seen or (buffers is not None and p.kind in buffers and res.record in buffers[p.kind])
                seen.add(key)
                p.status, p.record = ("duplicate" if duplicate else "valid"), dict(res.record)
        return list(proposals)

    return Pending(finish)


def judge(ctx: RolloutContext, items: Sequence[tuple[str, Mapping, str | None]]) -> Pending[list[bool | None]]:
    """`(kind, record, answer)` -> correct? with `answer = tasks.extract_answer(kind, response)` (None:
    format error -> False). None: the sandbox could not judge (drop the sample). Process-sharded,
    submitted now, gathered when resolved."""
    config = ctx.settings.judge

    def run(batch):
        return [f.result() for f in tasks.judge_many_async(ctx.sandbox, batch, config=config)]

    return sharded_call(ctx, run, [(k, dict(r), a) for k, r, a in items])


def solve_prompts(ctx: RolloutContext, tasks_: Sequence[tuple[str, Mapping]]) -> list[str | None]:
    """Student prompts (None where a task does not fit the prompt budget: it is skipped, not truncated)."""
    opts = prompt_kwargs(ctx)
    n_visible = ctx.settings.judge.n_visible
    out = []
    for kind, record in tasks_:
        try:
            out.append(tasks.solve_prompt(kind, dict(record), n_visible=n_visible, **opts).text)
        except tasks.PromptTooLong:
            out.append(None)
    return out


def estimate_learnability(ctx: RolloutContext, tasks_: Sequence[tuple[str, Mapping]], *, n: int,
                          temperature: float | None = None, with_counts: bool = False) -> Pending[np.ndarray]:
    """Student pass rate of each task from `n` samples of one prefill at the rollout temperature.

    Never greedy (AZR's code can end up greedy here, which collapses every rate to 0 or 1). The samples
    are not trained on. Resolves to float `[len(tasks)]` (nan where every judgement failed or the task
    does not fit the prompt budget); `with_counts=True`: to `(rates, judged)`, `judged` the int `[len(tasks)]`
    samples the sandbox judged (what each rate averages)."""
    if temperature is not None and temperature <= 0:
        raise ValueError("learnability samples must be drawn at a temperature > 0 (greedy gives rates of 0 or 1)")
    prompts = solve_prompts(ctx, tasks_)
    live = [i for i, p in enumerate(prompts) if p is not None]
    if not live:
        rates = np.full(len(tasks_), np.nan)
        return Pending.ready((rates, np.zeros(len(tasks_), np.int64)) if with_counts else rates)
    completions = generate(ctx, "solve", [prompts[i] for i in live], num_samples=n, temperature=temperature)
    items = []
    for row, i in enumerate(live):
        kind, record = tasks_[i]
        items += [(kind, record, tasks.extract_answer(kind, completions[row * n + j].text)) for j in range(n)]
    pending = judge(ctx, items)

    def finish():
        verdicts = pending.result()
        rates = np.full(len(tasks_), np.nan)
        judged = np.zeros(len(tasks_), np.int64)
        for row, i in enumerate(live):
            scored = [v for v in verdicts[row * n:(row + 1) * n] if v is not None]
            judged[i] = len(scored)
            if scored:
                rates[i] = float(np.mean(scored))
        return (rates, judged) if with_counts else rates

    return Pending(finish)


@jax.profiler.annotate_function  # buffer work: a named row in a profile
def student_tasks(buffers: TaskBuffers, new: Mapping[str, Sequence[Mapping]], *, per_kind: int,
                  rng: np.random.Generator, kinds: Sequence[str] = KINDS) -> list[tuple[str, dict]]:
    """AZR's `max_new` student batch: per kind, this iteration's new tasks first (shuffled, at most
    `per_kind`), then uniform draws from the whole buffer (with replacement) to fill the rest."""
    out = []
    for kind in kinds:
        fresh = list(new.get(kind, ()))
        order = rng.permutation(len(fresh)) if fresh else []
        chosen = [fresh[int(i)] for i in order[:per_kind]]
        missing = per_kind - len(chosen)
        if missing > 0:
            chosen += buffers[kind].sample(missing, rng, replace=True)
        out.extend((kind, dict(r)) for r in chosen)
    return out


def solve(ctx: RolloutContext, tasks_: Sequence[tuple[str, Mapping]], *,
          group: Callable[[str], Hashable] = lambda kind: (kind, "solve"), source: str = "azr",
          ) -> Pending[list[Episode]]:
    """Student rollouts (one per task, trained on) now; judged asynchronously; resolves to episodes
    rewarded by `tasks.solver_reward` (AZR: correct 1, wrong -0.5, format error -1). Samples the sandbox
    could not judge, and tasks that do not fit the prompt budget, yield no episode."""
    prompts = solve_prompts(ctx, tasks_)
    live = [i for i, p in enumerate(prompts) if p is not None]
    if not live:
        return Pending.ready([])
    completions = generate(ctx, "solve", [prompts[i] for i in live])
    answers = [tasks.extract_answer(tasks_[i][0], c.text) for i, c in zip(live, completions)]
    pending = judge(ctx, [(tasks_[i][0], tasks_[i][1], a) for i, a in zip(live, answers)])
    rewards = ctx.settings.rewards

    def finish():
        episodes = []
        for i, c, answer, verdict in zip(live, completions, answers, pending.result(), strict=True):
            kind, record = tasks_[i]
            reward = tasks.solver_reward(verdict, formatted=answer is not None, config=rewards)
            if reward is None:
                continue  # infrastructure error: never scored
            episodes.append(Episode.from_completion(
                c, role="solve", group=group(kind), reward=reward, source=source, kind=kind,
                outcome=tasks.solver_outcome(answer, verdict), truncated=c.truncated,
                task_id=str(record.get("id", "")), text=c.text))
        return episodes

    return Pending(finish)


def proposer_episodes(proposals: Sequence[Proposal], rewards: Sequence[float], *,
                      group: Callable[[Proposal], Hashable] = lambda p: (p.kind, "propose"),
                      source: str = "azr") -> list[Episode]:
    """One propose-role episode per proposal with its reward (None reward: dropped, never scored)."""
    out = []
    for p, r in zip(proposals, rewards, strict=True):
        if r is None:
            continue
        out.append(Episode.from_completion(p.completion, role="propose", group=group(p), reward=float(r),
                                           source=source, kind=p.kind, outcome=p.status,
                                           truncated=p.completion.truncated))
    return out


def azr_proposer_rewards(ctx: RolloutContext, proposals: Sequence[Proposal], pass_rates: Mapping[int, float]
                         ) -> list[float | None]:
    """AZR: -1 unparsable/invalid; accepted tasks 1 - p if 0 < p < 1 else -0.5 (`tasks.proposer_reward`).
    None (dropped): the sandbox failed on the proposal, or on every learnability sample of it."""
    config = ctx.settings.rewards
    out: list[float | None] = []
    for i, p in enumerate(proposals):
        if p.status == "infra_error":
            out.append(None)
        elif not p.accepted:
            out.append(tasks.proposer_reward(False, None, config=config))
        else:
            out.append(tasks.proposer_reward(True, pass_rates.get(i, float("nan")), config=config))
    return out


# ----------------------------------------------------------------------------------------------- metrics


def _mean(xs) -> float:
    return float(np.mean(xs)) if len(xs) else 0.0


def kind_metrics(episodes: Sequence[Episode], proposals: Sequence[Proposal] = (),
                 pass_rates: Mapping[int, float] | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Scalars `<type>/<role>/<metric>` and histograms for the episodes and proposals of one iteration."""
    scalars: dict[str, float] = {}
    hists: dict[str, np.ndarray] = {}
    by_group: dict[tuple[str, str], list[Episode]] = {}
    for e in episodes:
        by_group.setdefault((str(e.tags.get("kind", e.group)), e.role), []).append(e)
    for (kind, role), eps in sorted(by_group.items()):
        prefix = f"{kind}/{role}"
        scalars[f"{prefix}/count"] = float(len(eps))
        scalars[f"{prefix}/reward_mean"] = _mean([e.reward for e in eps])
        scalars[f"{prefix}/completion_len_mean"] = _mean([len(e.tokens) for e in eps])
        scalars[f"{prefix}/truncated_frac"] = _mean([bool(e.tags.get("truncated", False)) for e in eps])
        if role == "solve":
            scalars[f"{prefix}/pass_rate"] = _mean([e.tags.get("outcome") == "correct" for e in eps])
            scalars[f"{prefix}/format_error_frac"] = _mean([e.tags.get("outcome") == "format_error" for e in eps])
    by_kind: dict[str, list[int]] = {}
    for i, p in enumerate(proposals):
        by_kind.setdefault(p.kind, []).append(i)
    for kind, idx in sorted(by_kind.items()):
        prefix = f"{kind}/propose"
        statuses = [proposals[i].status for i in idx]
        for status in PROPOSAL_STATUSES:
            scalars[f"{prefix}/{status}_frac"] = _mean([s == status for s in statuses])
        # Inputs that are not literals are outside the judge's contract (docs/tasks.md): invalid.
        scalars[f"{prefix}/non_literal_input_frac"] = _mean(
            [proposals[i].reason.startswith(tasks.NON_LITERAL_INPUT) for i in idx])
        if pass_rates is not None:
            rates = np.array([pass_rates[i] for i in idx if i in pass_rates and np.isfinite(pass_rates[i])])
            if rates.size:
                scalars[f"{prefix}/est_pass_rate_mean"] = float(rates.mean())
                scalars[f"{prefix}/learnable_frac"] = float(np.mean((rates > 0) & (rates < 1)))
                hists[f"{prefix}/est_pass_rate"] = rates
    return scalars, hists


def sample_texts(proposals: Sequence[Proposal], episodes: Sequence[Episode], *, per_kind: int = 2) -> dict[str, str]:
    """A few proposals (with their validation status) and student answers (with their outcome) per task
    type, as markdown for TensorBoard text summaries."""
    texts: dict[str, list[str]] = {}
    for p in proposals:
        lines = texts.setdefault(f"samples/{p.kind}/propose", [])
        if len(lines) < per_kind:
            lines.append(f"**{p.status}** {p.reason}\n\n```\n{p.completion.text}\n```")
    for e in episodes:
        if e.role != "solve" or "text" not in e.tags:
            continue
        lines = texts.setdefault(f"samples/{e.tags.get('kind', e.group)}/solve", [])
        if len(lines) < per_kind:
            lines.append(f"**{e.tags.get('outcome')}** (reward {e.reward:g})\n\n```\n{e.tags['text']}\n```")
    return {k: "\n\n---\n\n".join(v) for k, v in texts.items()}


# ----------------------------------------------------------------------------------------------- helpers


def prompt_kwargs(ctx: RolloutContext) -> dict:
    """Keyword arguments of the tasks layer's prompt builders from the run's prompt options (template,
    chat, token budget counted with the teacher's tokenizer)."""
    prompts = ctx.settings.prompts
    return prompts.builder_kwargs(ctx.policies["teacher"].tokenizer if prompts.token_budget else None)
