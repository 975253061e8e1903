"""Metric writing: TensorBoard (tensorboardX) + a JSONL file + console progress, from process 0 only."""

from __future__ import annotations

import json
import logging
import os
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
            from tensorboardX import SummaryWriter

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

    def text(self, step: int, name: str, value: str) -> None:
        if self.enabled:
            self._tb.add_text(name, value, step)

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self.enabled = False
