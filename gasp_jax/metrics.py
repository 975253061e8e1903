"""Metric writing: TensorBoard (tensorboardX) + a JSONL file + console lines, from process 0 only.

    writer = MetricWriter(os.path.join(workdir, "tb"))
    writer.write(step, {"deduction/solve/reward_mean": 0.3, ...}, echo=False)   # TB scalars + metrics.jsonl
    writer.histogram(step, "deduction/propose/est_pass_rate", rates)
    writer.text(step, "samples/deduction/propose", markdown)
    log.info(progress_line(step, total, seconds_per_step, {"reward": 0.3}))     # one terminal line with ETA

`CompileTimer` sums the seconds JAX spends tracing, lowering and compiling (jax.monitoring events), so a
trainer reports compilation separately instead of folding it into the first step's time.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Mapping

import jax
import numpy as np

log = logging.getLogger(__name__)


class MetricWriter:
    """`write(step, {"name": scalar})` -> TensorBoard event file, `metrics.jsonl` and a log line."""

    def __init__(self, logdir: str, *, enabled: bool | None = None):
        self.logdir = logdir
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        self._jsonl = None
        if self.enabled:
            from tensorboardX import SummaryWriter  # heavy (protobuf): only the process that writes loads it

            os.makedirs(logdir, exist_ok=True)
            self._tb = SummaryWriter(logdir)
            self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")

    def write(self, step: int, scalars: Mapping[str, float], *, echo: bool = True) -> None:
        if not self.enabled:
            return
        clean = {k: float(np.asarray(v)) for k, v in scalars.items()}
        for name, value in clean.items():
            self._tb.add_scalar(name, value, step)
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        self._jsonl.flush()
        if echo:
            shown = "  ".join(f"{k}={v:.4g}" for k, v in sorted(clean.items()))
            log.info("step %d  %s", step, shown)

    def histogram(self, step: int, name: str, values) -> None:
        values = np.asarray(values, np.float64).reshape(-1)
        if self.enabled and values.size:
            self._tb.add_histogram(name, values, step)

    def text(self, step: int, name: str, value: str) -> None:
        if self.enabled:
            self._tb.add_text(name, value, step)

    def layout(self, layout: Mapping) -> None:
        """A custom-scalars layout (`{category: {chart: ["Multiline", [tag regexes]]}}`): the CUSTOM
        SCALARS tab's charts, in this order."""
        if self.enabled:
            self._tb.add_custom_scalars(dict(layout))

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self.enabled = False


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def progress_line(step: int, total: int, seconds_per_step: float, shown: Mapping[str, float], *,
                  compile_s: float = 0.0, width: int = 120) -> str:
    """`step 3/20 | 4.1s/it | ETA 1m10s | compile 35s | k=v ...`, cut to `width` characters."""
    head = f"step {step}/{total} | {seconds_per_step:.1f}s/it | ETA {format_duration((total - step) * seconds_per_step)}"
    if compile_s:
        head += f" | compile {format_duration(compile_s)}"
    body = " ".join(f"{k} {v:.3g}" for k, v in shown.items())
    line = f"{head} | {body}" if body else head
    return line if len(line) <= width else line[: width - 3] + "..."


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


class CompileTimer:
    """Seconds spent compiling (trace + lower + XLA compile) since the last `take()`, all threads.

    Registers one process-wide jax.monitoring listener on first use; every CompileTimer reads it."""

    _lock = threading.Lock()
    _total = 0.0
    _registered = False

    def __init__(self):
        with CompileTimer._lock:
            if not CompileTimer._registered:
                jax.monitoring.register_event_duration_secs_listener(CompileTimer._listen)
                CompileTimer._registered = True
            self._mark = CompileTimer._total

    @staticmethod
    def _listen(event: str, duration: float, **_) -> None:
        if event in _COMPILE_EVENTS:
            _THREAD.seconds = getattr(_THREAD, "seconds", 0.0) + float(duration)
            with CompileTimer._lock:
                CompileTimer._total += float(duration)

    def take(self) -> float:
        """Compile seconds since the previous call (or construction)."""
        with CompileTimer._lock:
            out, self._mark = CompileTimer._total - self._mark, CompileTimer._total
        return out


_THREAD = threading.local()


def thread_compile_seconds() -> float:
    """Seconds this thread has spent compiling so far (a running total; phase timers take differences)."""
    CompileTimer()  # the listener, registered once
    return getattr(_THREAD, "seconds", 0.0)
