"""Benchmark: wall time of one self-play iteration and its phase breakdown.

    python -m gasp_jax.benchmarks.iteration                       # CPU: configs/azr.py:tiny, 4 iterations
    python -m gasp_jax.benchmarks.iteration --arg tiny,steps=6 --json out.json
    python -m gasp_jax.benchmarks.iteration --gpu                 # GPU: Qwen2.5-Coder-1.5B shape, bf16, random init
    python -m gasp_jax.benchmarks.iteration --preset gasp         # CPU: configs/gasp.py:tiny (+ GASP phases)

Runs the real trainer (`selfplay.trainer.train`) in a fresh workdir and summarises its metrics.jsonl:
per phase (teacher_generate, student_generate, sandbox_wait, update, reshard, checkpoint) the mean
seconds per iteration over the steady iterations (the first, which compiles, is reported apart),
compile seconds (inside the phases: a phase's steady mean still includes a recompilation for a new
shape bucket), generated tokens/s, and `sandbox_unhidden_frac`: the share of an iteration spent
blocked on sandbox results, i.e. sandbox time NOT hidden behind device work (target <= 10%).
The rest of the iteration (`other`) is host work: prompts, parsing, batching, logging.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile

import jax
import numpy as np

from gasp_jax import config_files, runtime
from gasp_jax.gasp import bench as gasp_bench
from gasp_jax.selfplay import trainer

PHASES = ("teacher_generate", "student_generate", "sandbox_wait", "update", "reshard", "checkpoint")


def summarise(rows: list[dict]) -> dict:
    """Phase means over steady iterations (all but the first) of metrics.jsonl rows."""
    first, steady = rows[0], rows[1:] or rows
    mean = lambda key: float(np.mean([r.get(key, 0.0) for r in steady]))
    out = {
        "iterations": len(rows),
        "first_iteration_s": first["time/iteration_s"],
        "compile_s_total": float(sum(r.get("time/compile_s", 0.0) for r in rows)),
        "iteration_s": mean("time/iteration_s"),
        "steady_compile_s": mean("time/compile_s"),
        "phases_s": {p: mean(f"time/{p}_s") for p in PHASES},
        "sandbox_unhidden_frac": mean("time/sandbox_unhidden_frac"),
        "tokens_per_s": mean("perf/tokens_per_s"),
        "episodes": mean("episodes"),
    }
    # Compilation happens inside the phases (sampler, update): `other` is what no phase timer covers.
    out["phases_s"]["other"] = out["iteration_s"] - sum(out["phases_s"].values())
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=("azr", "gasp"), default="azr", help="configs/<preset>.py")
    p.add_argument("--arg", default=None, help="configs/<preset>.py argument (default: tiny,steps=4)")
    p.add_argument("--config_dir", default="configs", help="where the preset's config file is (path)")
    p.add_argument("--gpu", action="store_true", help="1.5B shape, bf16, random init, 2 iterations")
    p.add_argument("--workdir", default=None, help="default: a fresh temporary directory")
    p.add_argument("--allow-unsafe", action="store_true", help="sandbox without isolation (no namespaces)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)


    runtime.setup_logging("WARNING")
    if a.gpu and a.preset == "gasp":
        arg = a.arg or ("paper,steps=2,model.preset=qwen2.5-coder-1.5b,sampling.max_new_tokens=1024,"
                        "sources.gasp.lemmas_per_step=16,sources.gasp.solve_batch=16,checkpoint.every=100")
    elif a.gpu:
        arg = a.arg or ("paper,steps=2,model.preset=qwen2.5-coder-1.5b,sampling.max_new_tokens=1024,"
                        "sources.azr.propose_per_kind=16,sources.azr.solve_per_kind=16,checkpoint.every=100")
    else:
        arg = a.arg or "tiny,steps=4"
    config = config_files.load(f"{a.config_dir}/{a.preset}.py:{arg}")
    config.sandbox.allow_unsafe = bool(a.allow_unsafe)
    workdir = a.workdir or tempfile.mkdtemp(prefix="gasp_iteration_")
    runtime.initialize(config)
    trainer.train(config, workdir)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "tb", "metrics.jsonl"))]
    result = {"config": f"configs/{a.preset}.py:{arg}", "machine": platform.node(), "cpus": os.cpu_count(),
              "backend": jax.default_backend(), "load_avg_1m": os.getloadavg()[0], **summarise(rows)}
    if a.preset == "gasp":  # lemma/lift/pass-rate/student phases and pass-rate cost vs the student phase

        result["gasp"] = gasp_bench.iteration_breakdown(rows)
    print(json.dumps(result, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
