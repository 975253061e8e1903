"""RLVR on LiveCodeBench: a rollout source whose rewards are the LCB grader's verdicts on real problems.

Each collecting iteration takes the next `problems_per_step` problems of the training window (default:
contest date before 2024-08-01, the paper's 601-problem split) in a per-epoch shuffled order, renders
LCB's prompt, samples `samples_per_problem` completions per problem (one prefill each), extracts the
code as LCB does and grades it in the sandbox on the problem's tests (public + private where present).
Reward: `rewards.correct` for a program passing every test, `rewards.wrong` otherwise,
`rewards.no_code` when no code block could be extracted. Samples the sandbox could not judge give no
episode. Episodes are grouped per problem (GRPO-style, `group_by="problem"`: group key
`("lcb", problem_id)`) or all together (`group_by="source"`: `("lcb", "solve")`, TRR++'s per-type
group); the run's `rl.advantage.estimator` whitens each group.

A problem whose group had the same reward for every sample `zero_signal.after` visits in a row (all
pass or all fail: no gradient) is *dead*: `zero_signal.policy` = "keep" (still trained), "downweight"
(drawn with probability `zero_signal.weight` when its turn comes) or "skip" (never drawn again while
any live problem is left). A later non-constant group revives it. Counts are logged every iteration
(`rlvr/dead_problems`, `rlvr/skipped_dead`); the order, the cursor and the streaks are in
`state_dict()`, so a resumed run draws the same problems as a straight one.

Grading is process-sharded and gathered (`phases.sharded_call`), like every reward in the trainer.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from ml_collections import config_dict

from gasp_jax.config_checks import checker
from gasp_jax.data.livecodebench import HUB_DATASET, LCB_CUTOFF, DataError, Problem
from gasp_jax.evaluation.common import load_config_problems
from gasp_jax.evaluation.extraction import extract_code
from gasp_jax.evaluation.grading import SampleGrade, SandboxGrader
from gasp_jax.evaluation.periodic import policy_prompt_fn
from gasp_jax.sandbox import GradeJob, Limits
from gasp_jax.selfplay import phases
from gasp_jax.selfplay.types import Episode, Pending, RolloutContext, SourceResult

log = logging.getLogger(__name__)

GROUP_BY = ("problem", "source")
ZERO_SIGNAL_POLICIES = ("keep", "downweight", "skip")
KIND = "lcb"  # the task-type name in metrics and group keys


def default_config() -> ml_collections.ConfigDict:
    """The `sources.<name>` block of an LCB RLVR source (type "lcb_rlvr")."""
    c = ml_collections.ConfigDict()
    c.type = "lcb_rlvr"
    c.every = 1
    c.start = 0
    c.data = ml_collections.ConfigDict()
    c.data.sources = ()  # LCB JSONL files or a release directory (configs set the shipped sample)
    c.data.release = ""  # with hub: the version_tag (default release_v5)
    c.data.hub = False  # True: the full release (private tests) from `hub_repo` through `datasets`
    c.data.hub_repo = HUB_DATASET
    c.data.loader = "stream"
    c.data.start = ""  # half-open [start, end) on contest_date
    c.data.end = LCB_CUTOFF
    c.data.problem_ids = ()
    c.data.max_problems = 0
    c.data.max_private_mb = 512
    c.prompt_style = "auto"  # "auto" | "chat" | "chat_no_system" | "base" (LCB's formats)
    c.max_prompt_tokens = 0  # problems whose prompt is longer are left out (logged); 0 = only the KV-cache bound
    c.problems_per_step = 16
    c.samples_per_problem = 8  # the group size
    c.temperature = config_dict.placeholder(float)  # None: the run's sampling.temperature (0 would be greedy)
    c.max_new_tokens = config_dict.placeholder(int)  # None: the run's sampling.max_new_tokens
    c.group_by = "problem"  # "problem" (GRPO groups) | "source" (one group, TRR++ style)
    c.extraction = "lcb"  # "lcb" (LCB parity) | "lenient"
    c.tests = "all"  # "all" (public + private) | "public"
    c.rewards = ml_collections.ConfigDict(dict(correct=1.0, wrong=0.0, no_code=0.0))
    c.limits = ml_collections.ConfigDict(dict(cpu_s=6.0, memory_mb=2048))  # LCB's per-test timeout
    c.infra_retries = 1
    c.zero_signal = ml_collections.ConfigDict(dict(after=3, policy="downweight", weight=0.25))
    return c


@dataclasses.dataclass(frozen=True)
class ZeroSignal:
    """What happens to a problem whose groups had one reward for every sample `after` visits in a row."""

    after: int
    policy: str  # one of ZERO_SIGNAL_POLICIES
    weight: float  # "downweight": the chance a dead problem is still drawn on its turn


@dataclasses.dataclass(frozen=True)
class LcbRewards:
    correct: float
    wrong: float
    no_code: float


@dataclasses.dataclass(frozen=True)
class LcbSettings:
    """A `sources.<name>` block of type "lcb_rlvr", checked and typed once at set-up (see `default_config`).

    `temperature` / `max_new_tokens` None: the run's `sampling` values. `data` stays the loader's block
    (`evaluation.common.load_config_problems` reads it)."""

    data: Any
    prompt_style: str
    max_prompt_tokens: int
    problems_per_step: int
    samples_per_problem: int
    temperature: float | None
    max_new_tokens: int | None
    group_by: str
    extraction: str
    tests: str
    rewards: LcbRewards
    limits: Limits
    infra_retries: int
    zero_signal: ZeroSignal

    @classmethod
    def from_config(cls, block: Mapping, name: str = "lcb") -> "LcbSettings":
        """Errors are one line naming the key (`sources.<name>.<key>: ...`)."""
        need = checker(f"sources.{name}.")
        known = set(default_config().keys())
        extra = sorted(set(block.keys()) - known)
        need(not extra, extra[0] if extra else "", f"unknown field (known: {', '.join(sorted(known))})")
        need(int(block.problems_per_step) >= 1, "problems_per_step", "must be >= 1")
        need(int(block.samples_per_problem) >= 1, "samples_per_problem", "must be >= 1")
        need(block.group_by in GROUP_BY, "group_by", f"must be one of {GROUP_BY}, got {block.group_by!r}")
        need(block.extraction in ("lcb", "lenient"), "extraction", f"must be 'lcb' or 'lenient', got {block.extraction!r}")
        need(block.tests in ("all", "public"), "tests", f"must be 'all' or 'public', got {block.tests!r}")
        need(block.zero_signal.policy in ZERO_SIGNAL_POLICIES, "zero_signal.policy",
             f"must be one of {ZERO_SIGNAL_POLICIES}, got {block.zero_signal.policy!r}")
        need(int(block.zero_signal.after) >= 1, "zero_signal.after", "must be >= 1")
        need(0.0 <= float(block.zero_signal.weight) <= 1.0, "zero_signal.weight", "must be in [0, 1]")
        need(bool(block.data.sources) or block.data.get("hub", False), "data.sources",
             "is empty: give LCB JSONL files or a release directory (or data.hub=True)")
        temperature, max_new = block.get("temperature"), block.get("max_new_tokens")
        need(temperature is None or float(temperature) > 0, "temperature",
             f"must be > 0 (0 is greedy: PPO on greedy samples has no ratio) or unset, None (the run's "
             f"sampling.temperature), got {temperature}")
        # 0 new tokens samples nothing: a 0 here (what configs wrote for "the run's value") still means that.
        need(max_new is None or int(max_new) >= 0, "max_new_tokens",
             f"must be > 0 or None (the run's sampling.max_new_tokens), got {max_new}")
        return cls(
            data=block.data, prompt_style=str(block.prompt_style), max_prompt_tokens=int(block.max_prompt_tokens),
            problems_per_step=int(block.problems_per_step), samples_per_problem=int(block.samples_per_problem),
            temperature=None if temperature is None else float(temperature),
            max_new_tokens=int(max_new or 0) or None,
            group_by=str(block.group_by), extraction=str(block.extraction), tests=str(block.tests),
            rewards=LcbRewards(**{k: float(block.rewards[k]) for k in ("correct", "wrong", "no_code")}),
            limits=Limits(cpu_s=float(block.limits.cpu_s), memory_bytes=int(block.limits.memory_mb) << 20),
            infra_retries=int(block.infra_retries),
            zero_signal=ZeroSignal(after=int(block.zero_signal.after), policy=str(block.zero_signal.policy),
                                   weight=float(block.zero_signal.weight)))


class LcbSource:
    """RLVR rollout source on LiveCodeBench problems (see the module docstring)."""

    def __init__(self, name: str, config: ml_collections.ConfigDict | LcbSettings,
                 run_config: ml_collections.ConfigDict):
        """`config`: the `sources.<name>` block, or its `LcbSettings` already resolved."""
        self.name = name
        self.settings = config if isinstance(config, LcbSettings) else LcbSettings.from_config(config, name)
        self.run_config = run_config
        data = self.settings.data
        problems, self.load_report, self.window = load_config_problems(data, where=f"config.sources.{name}.data")
        if not problems:
            raise ValueError(f"sources.{name}.data: no LCB problem in {self.window} of {list(data.sources)}")
        self.problems: dict[str, Problem] = {p.id: p for p in problems}
        self.seed = int(run_config.get("seed", 0))
        self.epoch = 0
        self.cursor = 0
        self.streak: dict[str, int] = {}  # consecutive constant-reward visits
        self.visits: dict[str, int] = {}
        self.unusable: dict[str, str] = {}  # problem id -> reason (bad tests, prompt too long)
        self._prompts: dict[str, str] | None = None  # rendered lazily (needs the policy's tokenizer)
        self._tests: dict[str, tuple] = {}
        self.last_grading = {"programs": 0, "seconds": 0.0}  # this process's grading work of the last collect

    # ------------------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "streak": dict(sorted(self.streak.items())),
                "visits": dict(sorted(self.visits.items())), "unusable": dict(sorted(self.unusable.items()))}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", 0))
        self.cursor = int(state.get("cursor", 0))
        self.streak = {str(k): int(v) for k, v in state.get("streak", {}).items()}
        self.visits = {str(k): int(v) for k, v in state.get("visits", {}).items()}
        self.unusable = {str(k): str(v) for k, v in state.get("unusable", {}).items()}

    # ----------------------------------------------------------------------- problem choice

    def order(self, epoch: int) -> list[str]:
        """The epoch's shuffled problem order, a function of (run seed, epoch) only."""
        ids = sorted(self.problems)
        perm = np.random.default_rng([self.seed, epoch, 0x4C4342]).permutation(len(ids))
        return [ids[i] for i in perm]

    def dead(self, pid: str) -> bool:
        return self.streak.get(pid, 0) >= self.settings.zero_signal.after

    def choose(self, rng: np.random.Generator) -> tuple[list[str], int]:
        """The next `problems_per_step` usable problems (walking epochs), and how many dead ones were passed over."""
        policy = self.settings.zero_signal.policy
        want = min(self.settings.problems_per_step, len(self.problems) - len(self.unusable))
        live_left = any(not self.dead(p) for p in self.problems if p not in self.unusable)
        chosen: list[str] = []
        passed_over = 0
        scanned = 0
        while len(chosen) < want and scanned < 2 * len(self.problems) + want:
            order = self.order(self.epoch)
            if self.cursor >= len(order):
                self.epoch, self.cursor = self.epoch + 1, 0
                continue
            pid = order[self.cursor]
            self.cursor += 1
            scanned += 1
            if pid in self.unusable or pid in chosen:
                continue
            if self.dead(pid) and live_left and policy != "keep":
                if policy == "skip" or rng.random() >= self.settings.zero_signal.weight:
                    passed_over += 1
                    continue
            chosen.append(pid)
        return chosen, passed_over

    # ------------------------------------------------------------------------------ collect

    def _prepare(self, ctx: RolloutContext) -> None:
        """Render every prompt once (the tokenizer is the policy's) and drop the ones that do not fit."""
        if self._prompts is not None:
            return
        policy = ctx.policies["student"]
        prompt_fn = policy_prompt_fn(self.settings.prompt_style, policy.tokenizer, run_config=self.run_config)
        limit = self.settings.max_prompt_tokens
        sampling = self.run_config.get("sampling", {})
        cache = int(sampling.get("max_cache_length", 0) or 0)
        if cache:  # the prompt and its completion must fit the sampler's KV cache
            room = cache - (self.settings.max_new_tokens or int(sampling.get("max_new_tokens", 0)))
            limit = min(limit, room) if limit else room
        self._prompts = {}
        for pid, problem in sorted(self.problems.items()):
            text = prompt_fn(problem)
            if limit and len(policy.tokenizer.encode(text, add_special_tokens=False)) > limit:
                self.unusable.setdefault(pid, f"prompt longer than {limit} tokens (max_prompt_tokens / KV cache)")
                continue
            self._prompts[pid] = text
        if self.unusable:
            log.warning("sources.%s: %d of %d problems unusable (%s)", self.name, len(self.unusable), len(self.problems),
                        "; ".join(f"{k}: {v}" for k, v in list(self.unusable.items())[:5]))
        if len(self.unusable) == len(self.problems):
            raise ValueError(f"sources.{self.name}: no usable problem ({next(iter(self.unusable.values()))})")

    def _tests_of(self, pid: str) -> tuple:
        if pid not in self._tests:
            problem = self.problems[pid]
            try:
                tests = problem.public_tests if self.settings.tests == "public" else problem.tests
            except DataError as e:
                tests = ()
                log.warning("sources.%s: %s: bad tests: %s", self.name, pid, e)
            self._tests[pid] = tests
        return self._tests[pid]

    def collect(self, ctx: RolloutContext) -> SourceResult:
        self._prepare(ctx)
        cfg = self.settings
        chosen, passed_over = self.choose(ctx.rng)
        for pid in chosen:
            if not self._tests_of(pid):
                self.unusable[pid] = "bad tests: none decodable"
        chosen = [p for p in chosen if p not in self.unusable]
        n = cfg.samples_per_problem
        completions = phases.generate(ctx, "solve", [self._prompts[p] for p in chosen], num_samples=n,
                                     temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
        codes = [extract_code(c.text, cfg.extraction) for c in completions]
        pending = self.grade(ctx, chosen, codes, n)
        grades = pending.result()
        episodes, scalars = self.episodes(chosen, completions, codes, grades, n)
        scalars[f"{self.name}/skipped_dead"] = float(passed_over)
        scalars[f"{self.name}/epoch"] = float(self.epoch)
        kind_scalars, hists = phases.kind_metrics(episodes)
        scalars.update(kind_scalars)
        texts = phases.sample_texts((), episodes, per_kind=2)
        return SourceResult(episodes=episodes, scalars=scalars, histograms=hists, texts=texts)

    def grade(self, ctx: RolloutContext, chosen: Sequence[str], codes: Sequence[str], n: int) -> Pending[list[list[SampleGrade]]]:
        """Grades of each chosen problem's `n` programs (process-sharded over problems, gathered)."""
        grader = SandboxGrader(LimitedSandbox(ctx.sandbox, self.settings.limits), infra_retries=self.settings.infra_retries)
        items = [(self.problems[p], self._tests_of(p), list(codes[i * n:(i + 1) * n])) for i, p in enumerate(chosen)]
        self.last_grading = {"programs": 0, "seconds": 0.0}

        def run(batch):
            t0 = time.perf_counter()
            out = []
            for result, (problem, _, batch_codes) in zip(grader.grade_batch(batch), batch):
                if isinstance(result, DataError):  # tests the sandbox rejects: the problem is unusable
                    out.append([SampleGrade("INFRA_ERROR", None, -5, f"bad tests: {result}")] * len(batch_codes))
                else:
                    out.append(result)
            self.last_grading["seconds"] += time.perf_counter() - t0
            self.last_grading["programs"] += sum(len(b[2]) for b in batch)
            return out

        return phases.sharded_call(ctx, run, items)

    def episodes(self, chosen: Sequence[str], completions: Sequence[Any], codes: Sequence[str],
                 grades: Sequence[Sequence[SampleGrade]], n: int) -> tuple[list[Episode], dict[str, float]]:
        """Scored episodes (and source-level scalars); updates the zero-signal streaks."""
        r = self.settings.rewards
        episodes: list[Episode] = []
        constant_groups = 0
        no_code = 0
        infra = 0
        for i, pid in enumerate(chosen):
            group_rewards = []
            for j, grade in enumerate(grades[i]):
                c, code = completions[i * n + j], codes[i * n + j]
                if grade.message.startswith("bad tests"):
                    self.unusable[pid] = grade.message
                if grade.passed is None:
                    infra += 1
                    continue
                if not code.strip():
                    reward, outcome = r.no_code, "format_error"
                    no_code += 1
                elif grade.passed:
                    reward, outcome = r.correct, "correct"
                else:
                    reward, outcome = r.wrong, "wrong"
                group = (KIND, pid) if self.settings.group_by == "problem" else (KIND, "solve")
                episodes.append(Episode.from_completion(
                    c, role="solve", group=group, reward=reward, source=self.name, kind=KIND, outcome=outcome,
                    truncated=c.truncated, task_id=pid, status=grade.status, text=c.text))
                group_rewards.append(reward)
            self.visits[pid] = self.visits.get(pid, 0) + 1
            if len(group_rewards) >= 2 and len(set(group_rewards)) == 1:
                self.streak[pid] = self.streak.get(pid, 0) + 1
                constant_groups += 1
            elif len(group_rewards) >= 2:
                self.streak[pid] = 0
        usable = [p for p in self.problems if p not in self.unusable]
        seconds, programs = self.last_grading["seconds"], self.last_grading["programs"]
        scalars = {
            f"{self.name}/problems": float(len(chosen)),
            f"{self.name}/constant_group_frac": constant_groups / max(1, len(chosen)),
            f"{self.name}/dead_problems": float(sum(self.dead(p) for p in usable)),
            f"{self.name}/unusable_problems": float(len(self.unusable)),
            f"{self.name}/no_code_frac": no_code / max(1, len(codes)),
            f"{self.name}/infra_dropped": float(infra),
            f"{self.name}/solved_problem_frac": float(np.mean([any(g.passed for g in gs) for gs in grades])) if grades else 0.0,
            f"{self.name}/grade_s": seconds,
            f"{self.name}/grade_programs_per_s": programs / seconds if seconds > 0 else 0.0,
        }
        return episodes, scalars


class LimitedSandbox:
    """A view of a shared sandbox whose `grade_many` applies given limits (e.g. LCB's 6 s per test), for
    `SandboxGrader`."""

    def __init__(self, sandbox: Any, limits: Any):
        self._sandbox = sandbox
        self._limits = limits

    def grade_many(self, jobs):
        return self._sandbox.grade_many([GradeJob(code, tests, fn_name, limits=self._limits) for code, tests, fn_name in jobs])
