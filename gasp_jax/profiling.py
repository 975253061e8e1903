"""Profiler window, recompilation alarm, memory scalars and the goodput split of an iteration.

    observer = profiling.StepObserver(config.get("profile"), logdir=os.path.join(workdir, "tb"),
                                      first_step=start, last_step=steps, name="selfplay")
    for step in range(start, steps):
        observer.begin(step + 1)                        # profile.start_step: jax.profiler starts here
        ...                                             # timed phases (selfplay.types.Timers) are trace rows
        scalars.update(profiling.goodput(timers.exclusive, wall_s, compile_s))   # time/goodput/*, sums to wall
        scalars.update(observer.scalars(step + 1))      # perf/compilations (+ warning), memory/*
        observer.end(step + 1)                          # stops after profile.num_steps iterations
    observer.close()

The trace lands in `<logdir>/plugins/profile/<timestamp>/<host>.xplane.pb`, where TensorBoard's profile
plugin (`pip install -e .[tensorboard]`) lists it under the Profile tab. Every process traces its own
host (one `<host>.xplane.pb` per process in the same run directory on a shared file system).
`update_perf` / `generation_perf` turn `gasp_jax.perf` arithmetic into `perf/...` scalars;
`profile_calls` wraps an evaluation job's `generate_fn`. docs/profiling.md says how to read it all.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import resource
import sys
import threading
from typing import Mapping, Sequence

import jax
import ml_collections

from gasp_jax import perf

log = logging.getLogger(__name__)

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
HBM_WARN_FRACTION = 0.9


def default_config() -> ml_collections.ConfigDict:
    """`start_step` / `num_steps`: trace the iterations logged as steps start_step .. start_step +
    num_steps - 1 (0: off). `recompile_warmup`: iterations in which compiling new programs is expected;
    after them every new program is a warning."""
    return ml_collections.ConfigDict(dict(start_step=0, num_steps=0, recompile_warmup=3))


step_annotation = jax.profiler.StepTraceAnnotation
annotation = jax.profiler.TraceAnnotation


# ---------------------------------------------------------------------------------------- profiler


class ProfileWindow:
    """Starts `jax.profiler` before iteration `start_step` and stops it after `num_steps` iterations.

    A window that cannot be traced as asked (past the last step, or starting before the step a resumed
    run starts at) is one warning line; a profiler that fails to start or stop (another trace already
    running, no profiler in this jaxlib) is a warning too. Neither stops the run."""

    def __init__(self, block: ml_collections.ConfigDict | None, *, logdir: str, first_step: int, last_step: int):
        block = block if block is not None else default_config()
        self.logdir = logdir
        self.start = int(block.get("start_step", 0))
        self.num = int(block.get("num_steps", 0))
        self.active = False
        self.traced: list[int] = []
        if self.start < 0 or self.num < 0:
            log.warning("profile.start_step=%d / num_steps=%d: must be >= 0; profiling off", self.start, self.num)
            self.start = self.num = 0
        if not self.enabled:
            return
        stop = self.start + self.num - 1
        if self.start <= first_step:
            log.warning("profile window steps %d-%d overlaps the resume point (this run starts after step %d); "
                        "tracing only steps %d-%d", self.start, stop, first_step, first_step + 1, stop)
        if stop > last_step:
            log.warning("profile window steps %d-%d goes beyond the run's last step %d; tracing up to step %d",
                        self.start, stop, last_step, last_step)

    @property
    def enabled(self) -> bool:
        return self.start > 0 and self.num > 0

    def covers(self, step: int) -> bool:
        return self.enabled and self.start <= step < self.start + self.num

    def begin(self, step: int) -> None:
        """Call before iteration `step` (1-based, as logged)."""
        if self.active or not self.covers(step):
            return
        try:
            jax.profiler.start_trace(self.logdir)
        except Exception as e:  # a trace already running, no profiler backend: the run goes on
            log.warning("profiler did not start at step %d (%s: %s); continuing without a trace",
                        step, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            self.start = self.num = 0
            return
        self.active = True
        log.info("profiling steps %d-%d into %s", step, self.start + self.num - 1,
                 os.path.join(self.logdir, "plugins", "profile"))

    def end(self, step: int) -> None:
        """Call after iteration `step`; stops the trace after the window's last step."""
        if not self.active:
            return
        self.traced.append(step)
        if step >= self.start + self.num - 1:
            self.close()

    def close(self) -> None:
        """Stops a running trace (end of the window, of the run, or preemption)."""
        if not self.active:
            return
        self.active = False
        try:
            jax.profiler.stop_trace()
        except Exception as e:
            log.warning("profiler did not stop cleanly (%s: %s)", type(e).__name__, e)
            return
        log.info("profile of steps %s written under %s", self.traced,
                 os.path.join(self.logdir, "plugins", "profile"))


# ----------------------------------------------------------------------------------- recompilation


@dataclasses.dataclass(frozen=True)
class CompiledProgram:
    name: str  # the jitted function's name, e.g. "update" or "_decode"
    shapes: str  # its argument shapes and dtypes (integer arguments first: token batches), shortened
    seconds: float


def _describe_avals(avals) -> str:
    strs = [str(a) for a in avals]
    distinct = sorted(set(strs), key=lambda s: (not s.startswith(("i32", "int", "u32", "bool")), strs.index(s)))
    text = ", ".join(distinct)
    return f"{len(strs)} args: {text if len(text) <= 240 else text[:237] + '...'}"


class _CompileLog(logging.Filter):
    """Reads the argument shapes from jax's own "Compiling <fun> with global shapes" debug record (the
    record is dropped here unless jax_log_compiles asked for it at WARNING)."""

    def __init__(self):
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg.startswith("Compiling %s with global shapes") and len(record.args) >= 2:
            self.local.shapes = _describe_avals(record.args[1])
        return record.levelno >= logging.INFO


class CompileWatch:
    """Every XLA program built in this process (from jax.monitoring's backend-compile event, which also
    fires on a persistent-cache hit) since the last `take()`, with its name and argument shapes."""

    _lock = threading.Lock()
    _watches: list["CompileWatch"] = []
    _registered = False
    _filter = _CompileLog()
    total = 0  # programs built in this process since the first watch (or `compile_count` call)

    def __init__(self):
        self._programs: list[CompiledProgram] = []
        with CompileWatch._lock:
            CompileWatch._register()
            CompileWatch._watches.append(self)

    @staticmethod
    def _register() -> None:  # under _lock
        if not CompileWatch._registered:
            jax.monitoring.register_event_duration_secs_listener(CompileWatch._listen)
            pxla = logging.getLogger("jax._src.interpreters.pxla")
            pxla.addFilter(CompileWatch._filter)
            if pxla.getEffectiveLevel() > logging.DEBUG:
                pxla.setLevel(logging.DEBUG)  # the filter above keeps its debug records off the console
            CompileWatch._registered = True

    @staticmethod
    def _listen(event: str, duration: float, **kwargs) -> None:
        if event != BACKEND_COMPILE_EVENT:
            return
        shapes = getattr(CompileWatch._filter.local, "shapes", "")
        CompileWatch._filter.local.shapes = ""
        program = CompiledProgram(str(kwargs.get("fun_name", "?")), shapes, float(duration))
        with CompileWatch._lock:
            CompileWatch.total += 1
            for watch in CompileWatch._watches:
                watch._programs.append(program)

    def take(self) -> list[CompiledProgram]:
        """Programs compiled since the previous call (or construction)."""
        with CompileWatch._lock:
            out, self._programs = self._programs, []
        return out

    def close(self) -> None:
        with CompileWatch._lock:
            if self in CompileWatch._watches:
                CompileWatch._watches.remove(self)


def compile_count() -> int:
    """XLA programs built in this process so far (counted from the first call or `CompileWatch`): the
    difference around a call is what it compiled (or loaded from the persistent cache). Unlike a jit
    cache's size, a new cache entry for an executable built before does not count."""
    with CompileWatch._lock:
        CompileWatch._register()
        return CompileWatch.total


def alarm_recompilation(programs: Sequence[CompiledProgram], step: int, *, warmup: int, first_step: int = 0) -> None:
    """After `warmup` iterations of this run, each new program is a warning naming it and its shapes."""
    if step - first_step <= warmup:
        return
    for p in programs:
        log.warning("recompilation at step %d (after %d warm-up steps): %s (%s) compiled in %.1fs", step, warmup,
                    p.name, p.shapes or "shapes unknown", p.seconds)


# ------------------------------------------------------------------------------------------ memory


def host_rss_bytes() -> int:
    """This process's resident set size now (/proc), else its peak (getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class MemoryMonitor:
    """`memory/...` scalars: the largest bytes-in-use and peak over this process's devices (when the
    backend reports `memory_stats()`; CPU does not) and the host RSS. Warns once when a device's peak
    passes 90% of its memory (the backend's limit, else the peaks table's HBM size)."""

    def __init__(self, devices: Sequence[jax.Device] | None = None):
        self.devices = list(devices if devices is not None else jax.local_devices())
        self.warned = False

    def scalars(self) -> dict[str, float]:
        out = {"memory/host_rss_bytes": float(host_rss_bytes())}
        in_use, peak, limit = [], [], []
        for d in self.devices:
            try:
                stats = d.memory_stats()
            except Exception:  # backends without the query
                stats = None
            if not stats:
                continue
            in_use.append(stats.get("bytes_in_use", 0))
            peak.append(stats.get("peak_bytes_in_use", stats.get("bytes_in_use", 0)))
            table = perf.device_peak(d.device_kind)
            limit.append(stats.get("bytes_limit") or (table.hbm_bytes if table else 0))
        if in_use:
            out["memory/device_bytes_in_use"] = float(max(in_use))
            out["memory/device_peak_bytes"] = float(max(peak))
            frac = max((p / l for p, l in zip(peak, limit) if l), default=0.0)
            if frac:
                out["memory/device_peak_frac"] = float(frac)
            if frac > HBM_WARN_FRACTION and not self.warned:
                self.warned = True
                log.warning("device memory peak %.1f GiB is %.0f%% of the device's %.1f GiB: close to OOM "
                            "(lower the batch / KV budget or raise remat)", max(peak) / 2**30, 100 * frac,
                            max(limit) / 2**30)
        return out


# ------------------------------------------------------------------------------------- per-chip perf


def update_perf(mc, seq_lens: Sequence[int], seconds: float, *, passes: int = 1,
                devices: Sequence[jax.Device] | None = None) -> dict[str, float]:
    """`perf/update_*` scalars of `passes` forward+backward passes over sequences of these lengths in
    `seconds` (compile time excluded): tokens/s per device, model FLOPs and, on a chip in `perf.PEAKS`,
    MFU (model FLOPs) and HFU (model + remat recompute)."""
    devices = list(devices if devices is not None else jax.devices())
    tokens = float(sum(seq_lens)) * passes
    flops = perf.update_flops(mc, seq_lens)
    out = {"perf/update_tokens": tokens, "perf/update_model_flops": flops.model * passes}
    if seconds <= 0 or not tokens:
        return out
    out["perf/update_tokens_per_s_per_device"] = tokens / seconds / len(devices)
    peak = perf.device_peak(devices[0].device_kind)
    if peak is not None:
        out["perf/mfu"] = perf.utilisation(flops.model * passes, seconds, len(devices), peak.bf16_flops)
        out["perf/hfu"] = perf.utilisation(flops.hardware * passes, seconds, len(devices), peak.bf16_flops)
    return out


def generation_perf(mc, *, tokens: int, seconds: float, weight_bytes: float, decode_steps: int,
                    kv_positions_read: int, weight_shards: int,
                    devices: Sequence[jax.Device] | None = None) -> dict[str, float]:
    """`perf/generate_*` scalars: tokens/s per device and the achieved HBM bandwidth per device (a lower
    bound, `perf.decode_bytes_per_device`) and, on a known chip, its fraction of the HBM peak: the
    decode roofline (1.0 = every byte moved at peak bandwidth)."""
    devices = list(devices if devices is not None else jax.devices())
    if seconds <= 0 or not tokens:
        return {}
    out = {"perf/generate_tokens_per_s_per_device": tokens / seconds / len(devices)}
    moved = perf.decode_bytes_per_device(mc, weight_bytes=weight_bytes, decode_steps=decode_steps,
                                         kv_positions_read=kv_positions_read, num_devices=len(devices),
                                         weight_shards=weight_shards)
    out["perf/generate_hbm_bytes_per_s_per_device"] = moved / seconds
    peak = perf.device_peak(devices[0].device_kind)
    if peak is not None:
        out["perf/generate_hbm_roofline_frac"] = moved / seconds / peak.hbm_bytes_per_s
    return out


# ------------------------------------------------------------------------------------------- a job


class StepObserver:
    """What every training or sampling job does around its iterations: the profile window with a
    `StepTraceAnnotation` per iteration, the compile watch (`perf/compilations`, warnings after
    `profile.recompile_warmup` iterations) and the memory scalars.

        observer = StepObserver(config.get("profile"), logdir=..., first_step=start, last_step=steps, name="toy_rl")
        observer.begin(step)          # step: 1-based, as logged
        ...
        scalars.update(observer.scalars(step))
        observer.end(step)
        observer.close()
    """

    def __init__(self, block: ml_collections.ConfigDict | None, *, logdir: str, first_step: int, last_step: int,
                 name: str):
        block = block if block is not None else default_config()
        self.name = name
        self.first_step = int(first_step)
        self.warmup = int(block.get("recompile_warmup", 3))
        self.window = ProfileWindow(block, logdir=logdir, first_step=first_step, last_step=last_step)
        self.compiles = CompileWatch()
        self.memory = MemoryMonitor()
        self._step_trace = None

    def begin(self, step: int) -> None:
        self.window.begin(step)
        self._step_trace = step_annotation(self.name, step_num=step)
        self._step_trace.__enter__()

    def scalars(self, step: int) -> dict[str, float]:
        programs = self.compiles.take()
        alarm_recompilation(programs, step, warmup=self.warmup, first_step=self.first_step)
        return {"perf/compilations": float(len(programs)), **self.memory.scalars()}

    def end(self, step: int) -> None:
        if self._step_trace is not None:
            self._step_trace.__exit__(None, None, None)
            self._step_trace = None
        self.window.end(step)

    def close(self) -> None:
        if self._step_trace is not None:
            self._step_trace.__exit__(None, None, None)
            self._step_trace = None
        self.window.close()
        self.compiles.close()


def profile_calls(fn, block: ml_collections.ConfigDict | None, *, logdir: str, name: str):
    """`fn` whose calls are the profiled steps: for the evaluation jobs, whose unit of work is one sampler
    call (`generate_fn(prompts, n)`), call K .. K+M-1 is traced (`profile.start_step/num_steps`). The
    returned callable has `close()` (also run at exit), which stops a trace the job ended inside of."""
    window = ProfileWindow(block, logdir=logdir, first_step=0, last_step=2**31)  # the call count is unknown
    calls = 0

    def profiled(*args, **kwargs):
        nonlocal calls
        calls += 1
        if not window.enabled:
            return fn(*args, **kwargs)
        window.begin(calls)
        try:
            with step_annotation(name, step_num=calls):
                return fn(*args, **kwargs)
        finally:
            window.end(calls)

    closed = False

    def close():  # once: explicitly or at exit
        nonlocal closed
        if closed:
            return
        closed = True
        if window.enabled and not window.traced:
            log.warning("profile window starts at call %d but the job made %d sampler calls; nothing traced",
                        window.start, calls)
        window.close()

    profiled.close = close
    if window.enabled:
        atexit.register(close)  # a job that ends inside the window still writes its trace
    return profiled


# ----------------------------------------------------------------------------------------- goodput

# Goodput buckets of an iteration's wall clock, from the exclusive seconds of the timed phases (a phase
# nested in another counts only in the inner one, except that everything under an evaluation phase is
# evaluation). `host_other` is the rest: batching, advantages, logging, untimed host work.
EVAL_PHASES = ("eval", "goalposts_eval", "hooks")
GOODPUT = ("generate", "update", "reshard", "sandbox", "checkpoint", "evaluation", "compile", "host_other")


def goodput_bucket(path: str) -> str:
    """`"gasp_lemma>teacher_generate"` -> "generate"; names not listed count as host work."""
    names = path.split(">")
    if any(n in EVAL_PHASES for n in names):
        return "evaluation"
    inner = names[-1]
    if inner.endswith("_generate"):
        return "generate"
    if inner == "sandbox_wait":
        return "sandbox"
    if inner in ("update", "reshard", "checkpoint"):
        return inner
    return "host_other"


def goodput(exclusive: Mapping[str, float], wall_s: float, compile_s: float) -> dict[str, float]:
    """`time/goodput/<bucket>_s` scalars that sum to `wall_s`. Compile seconds spent inside a phase are
    already out of its exclusive time (Timers), so `compile` is its own bucket."""
    out = {b: 0.0 for b in GOODPUT}
    for path, seconds in exclusive.items():
        out[goodput_bucket(path)] += seconds
    out["compile"] = compile_s
    out["host_other"] += wall_s - sum(out.values())
    return {f"time/goodput/{b}_s": v for b, v in out.items()}


def goodput_line(scalars: Mapping[str, float]) -> str:
    """`gen 3.1s upd 1.2s ... other 0.2s`: the console's breakdown of one iteration's wall clock."""
    short = {"generate": "gen", "update": "upd", "reshard": "reshard", "sandbox": "sandbox", "checkpoint": "ckpt",
             "evaluation": "eval", "compile": "compile", "host_other": "other"}
    parts = [f"{short[b]} {scalars[f'time/goodput/{b}_s']:.1f}s" for b in GOODPUT
             if scalars.get(f"time/goodput/{b}_s", 0.0) >= 0.05 or b == "host_other"]
    return " ".join(parts)
