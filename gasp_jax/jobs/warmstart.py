"""Job `warmstart`: train (or find cached) the supervised warm start, then measure its rates.

    python -m gasp_jax.main --config=configs/warmstart.py --workdir=runs/warmstart        # + measured rates
    python -m gasp_jax.main --config=configs/warmstart.py --workdir=runs/ws_real \\
        --config.model.hf_path=/ckpts/Qwen2.5-Coder-0.5B --config.chat=True              # a real model

The library is `gasp_jax.warmstart` (rows, GASP rows, training, measurement; docs/warmstart.md). The job
measures what the warm start is for (`rates.json` in the workdir): at the rollout temperature, the share
of solver answers that parse and are judged correct (training tasks and held-out programs) and the share
of proposals that parse and validate in the sandbox.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import ml_collections

from gasp_jax import multihost, profiling, tasks, warmstart
from gasp_jax.sandbox import Limits, Sandbox

log = logging.getLogger(__name__)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Job `warmstart`: ensure the cached checkpoint, then (unless `measure.samples` is 0) measure its
    rates with the real sandbox; `workdir/warmstart` links the checkpoint, `workdir/rates.json` the rates."""
    t0 = time.perf_counter()
    observer = profiling.StepObserver(config.get("profile"), logdir=os.path.join(workdir, "tb"), first_step=0,
                                      last_step=int(config.steps), name="warmstart")
    path = warmstart.ensure_warmstart(config, observer=observer)  # traces only when it trains (no cache)
    observer.close()
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {"path": path, "ensure_seconds": round(seconds, 2),
                               "train_seconds": warmstart.read_manifest(path).get("train_seconds")}
    if multihost.is_main():
        os.makedirs(workdir, exist_ok=True)
        link = os.path.join(workdir, "warmstart")
        if os.path.islink(link):
            os.unlink(link)
        if not os.path.exists(link):
            os.symlink(path, link)
    m = config.get("measure", None)
    if m is not None and int(m.samples) > 0 and multihost.is_main():
        vcfg = tasks.ValidationConfig(limits=Limits(cpu_s=float(m.cpu_s)))
        jcfg = tasks.JudgeConfig(limits=Limits(cpu_s=float(m.cpu_s)))
        with Sandbox(workers=int(m.workers) or (os.cpu_count() or 1), allow_unsafe=bool(m.allow_unsafe)) as sb:
            rates = warmstart.measure(path, config, sb, samples=int(m.samples), temperature=float(m.temperature),
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
