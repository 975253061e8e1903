"""The trainer's host-side vocabulary: completions, episodes, rollout sources and their context.

A *rollout source* turns the current policies into scored episodes for one iteration (AZR self-play,
GASP lemma/lift, RLVR on LiveCodeBench). The trainer concatenates every source's episodes, computes
advantages per group and updates each train state once. Everything here is plain host data (NumPy,
Python); nothing in this module touches a device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from typing import Any, Callable, Generic, Hashable, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

import jax
import ml_collections
import numpy as np

from gasp_jax.metrics import thread_compile_seconds
from gasp_jax.selfplay.settings import RolloutSettings

T = TypeVar("T")

ROLES = ("propose", "solve")
# Which model plays a role. With one shared model both names map to the single train state "policy".
ROLE_MODEL = {"propose": "teacher", "solve": "student"}
SHARED_STATE = "policy"


def state_name(role: str, separate: bool) -> str:
    """The train state an episode of `role` updates: "policy" when shared, else "teacher"/"student"."""
    if role not in ROLE_MODEL:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    return ROLE_MODEL[role] if separate else SHARED_STATE


@dataclasses.dataclass(frozen=True)
class Completion:
    """One sampled continuation of a prompt (host data)."""

    text: str  # decoded, stop token removed, special tokens skipped
    prompt_tokens: np.ndarray  # int32 [P]: the prompt exactly as the model saw it (template applied)
    tokens: np.ndarray  # int32 [L]: generated ids, stop token included
    logprobs: np.ndarray  # float32 [L]: sampler log-probs under softmax(logits / temperature)
    truncated: bool  # hit max_new_tokens without a stop token
    temperature: float  # the T the tokens were drawn at; the update evaluates log-probs at the same T


@dataclasses.dataclass(frozen=True)
class Episode:
    """One trained sequence: a completion, its scalar reward and the advantage group it is whitened in."""

    role: str  # "propose" | "solve"
    group: Hashable  # advantage-group key; TRR++: (task type, role), e.g. ("deduction", "solve")
    prompt_tokens: np.ndarray  # int32 [P]
    tokens: np.ndarray  # int32 [L]
    logprobs: np.ndarray  # float32 [L]
    reward: float
    temperature: float = 1.0
    tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # "source", "kind", "outcome": metrics only

    def __post_init__(self):
        if self.role not in ROLE_MODEL:
            raise ValueError(f"Episode.role must be one of {ROLES}, got {self.role!r}")
        if len(self.tokens) != len(self.logprobs) or len(self.tokens) == 0:
            raise ValueError(f"Episode needs >= 1 token and one log-prob per token, got {len(self.tokens)} "
                             f"tokens and {len(self.logprobs)} log-probs")
        if not np.isfinite(self.reward):
            raise ValueError(f"Episode.reward must be finite, got {self.reward!r}")

    @classmethod
    def from_completion(cls, c: Completion, *, role: str, group: Hashable, reward: float, **tags) -> "Episode":
        return cls(role=role, group=group, prompt_tokens=c.prompt_tokens, tokens=c.tokens, logprobs=c.logprobs,
                   reward=float(reward), temperature=float(c.temperature), tags=tags)


@dataclasses.dataclass
class SourceResult:
    """What a source hands the trainer for one iteration."""

    episodes: list[Episode] = dataclasses.field(default_factory=list)
    scalars: dict[str, float] = dataclasses.field(default_factory=dict)  # full tags "<type>/<role>/<metric>"
    histograms: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    texts: dict[str, str] = dataclasses.field(default_factory=dict)  # tag -> markdown


class Timers:
    """Per-phase wall-clock seconds of one iteration (host side). Thread-safe; phases may nest.

    `seconds[name]` is a phase's whole time; `exclusive[path]` ("outer>inner") is the time of the
    innermost phase alone, less the compilation it waited for, which is what the goodput split sums.
    Each phase is also a named `jax.profiler.TraceAnnotation`, so it shows as a row in a trace."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.exclusive: dict[str, float] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def phase(self, name: str):
        stack = self._local.__dict__.setdefault("stack", [])
        frame = {"name": name, "child_s": 0.0, "child_compile_s": 0.0}
        stack.append(frame)
        start, compile0 = time.perf_counter(), thread_compile_seconds()
        try:
            with jax.profiler.TraceAnnotation(name):
                yield
        finally:
            elapsed, compiled = time.perf_counter() - start, thread_compile_seconds() - compile0
            path = ">".join(f["name"] for f in stack)
            stack.pop()
            if stack:
                stack[-1]["child_s"] += elapsed
                stack[-1]["child_compile_s"] += compiled
            own = (elapsed - frame["child_s"]) - (compiled - frame["child_compile_s"])
            with self._lock:
                self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
                self.exclusive[path] = self.exclusive.get(path, 0.0) + own

    def reset(self) -> dict[str, float]:
        """The whole-phase seconds since the last reset (`exclusive` is cleared too)."""
        with self._lock:
            out, self.seconds, self.exclusive = self.seconds, {}, {}
        return out


class Pending(Generic[T]):
    """A host result still being computed (sandbox jobs in flight). `result()` blocks once, timing the wait
    as `sandbox_wait`: the sandbox time *not* hidden behind device work."""

    def __init__(self, finish: Callable[[], T], timers: Timers | None = None, phase: str = "sandbox_wait"):
        self._finish = finish
        self._timers = timers
        self._phase = phase
        self._done = False
        self._value: Any = None

    @classmethod
    def ready(cls, value: T) -> "Pending[T]":
        p = cls(lambda: value)
        p.result()
        return p

    def result(self) -> T:
        if not self._done:
            if self._timers is None:
                self._value = self._finish()
            else:
                with self._timers.phase(self._phase):
                    self._value = self._finish()
            self._done, self._finish = True, None
        return self._value


@runtime_checkable
class Policy(Protocol):
    """Something that samples completions of prompt strings (a model + live params, or a test double)."""

    tokenizer: Any

    def generate(self, prompts: Sequence[str], *, num_samples: int = 1, temperature: float | None = None,
                 max_new_tokens: int | None = None, rng: jax.Array) -> list[Completion]:
        """Prompt-major completions: row `i * num_samples + j` is prompt i, sample j."""
        ...


@dataclasses.dataclass
class RolloutContext:
    """Everything a source may use while collecting one iteration."""

    step: int  # iteration being collected (0-based)
    rng: np.random.Generator  # host rng from (seed, step, source): identical on every process
    key: jax.Array  # jax key from (seed, step, source)
    policies: Mapping[str, Policy]  # "teacher", "student" (the same object when the model is shared)
    sandbox: Any  # gasp_jax.sandbox.Sandbox
    timers: Timers
    config: ml_collections.ConfigDict  # the whole resolved run config (read-only)
    source_config: ml_collections.ConfigDict  # this source's block
    workdir: str = ""  # the run's workdir (write files there only when multihost.is_main())
    # "teacher" / "student" -> (model, params) of that model at step 0, re-derived by the trainer (the same
    # after a resume); None when the caller has none (tests with scripted policies).
    initial_model: Callable[[str], tuple[Any, Any]] | None = None
    # The typed validation / judge / rewards / prompts blocks the phases read (settings.py). The trainer
    # resolves them once per run; a context built without them resolves them from `config` here.
    settings: RolloutSettings | None = None
    _key_count: int = 0

    def __post_init__(self):
        if self.settings is None and self.config is not None and all(
                b in self.config for b in ("validation", "judge", "rewards", "prompts")):
            self.settings = RolloutSettings.from_config(self.config)

    def next_key(self) -> jax.Array:
        """A fresh key per call, in a fixed sequence (so a rerun of the step draws the same samples)."""
        self._key_count += 1
        return jax.random.fold_in(self.key, self._key_count)


@runtime_checkable
class RolloutSource(Protocol):
    """A producer of scored episodes. Constructor convention: `Cls(name, config_block, run_config)`."""

    name: str

    def collect(self, ctx: RolloutContext) -> SourceResult:
        ...

    def state_dict(self) -> dict:
        """JSON-able state (buffers, iterator positions), saved in every checkpoint."""
        ...

    def load_state_dict(self, state: dict) -> None:
        ...
