"""GASP benchmarks: near-duplicate search as the buffer grows, and GASP iterations with their phase
breakdown (the cost of pass-rate estimation for lemmas and lifts relative to the student phase).

    python -m gasp_jax.gasp.bench --sizes=1000,10000,100000 --dim=512 --queries=64
    python -m gasp_jax.gasp.bench --pass_rate      # lemma/lift pass-rate estimation vs the student phase
    python -m gasp_jax.benchmarks.iteration --preset gasp          # whole iterations; GASP lines from here

Dedup search: the index is filled with N random unit vectors (the search cost does not depend on what
the vectors encode) and a batch of Q candidates (a step's lemmas) is checked against it, in-batch
comparison included; the hashed embedder's own cost per text is measured on real task texts.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence

import jax
import numpy as np

from gasp_jax import config_files, models, tasks
from gasp_jax.data import paths
from gasp_jax.gasp import dedup
from gasp_jax.gasp.source import GaspSource
from gasp_jax.sandbox import Sandbox
from gasp_jax.selfplay.policy import SamplerPolicy, ScriptedPolicy
from gasp_jax.selfplay.types import RolloutContext, Timers
from gasp_jax.tokenizer import build_byte_tokenizer

def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def dedup_search(sizes: Sequence[int], *, dim: int = 512, queries: int = 64, repeats: int = 5,
                 seed: int = 0) -> list[dict]:
    """Per size N: the time to check ``queries`` candidates against N accepted vectors, and to add them."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sorted(int(s) for s in sizes):
        index = dedup.DedupIndex(dim)
        chunk = 8192
        start = time.perf_counter()
        for lo in range(0, n, chunk):
            m = min(chunk, n - lo)
            index.add(rng.standard_normal((m, dim), dtype=np.float32), [str(i) for i in range(lo, lo + m)])
        fill_s = time.perf_counter() - start
        q = rng.standard_normal((queries, dim), dtype=np.float32)
        index.check(q)  # warm-up (page faults of a freshly grown matrix)
        check_s = _median_time(lambda: index.check(q), repeats)
        rows.append({"accepted": n, "dim": dim, "queries": queries, "check_ms": 1e3 * check_s,
                     "check_us_per_candidate": 1e6 * check_s / queries, "fill_s": fill_s,
                     "index_mb": index.capacity * dim * 4 / 2**20})
    return rows


def embed_cost(dim: int = 512, texts: int = 500) -> dict:
    """The hashed embedder's time per task text (a ~300-character program plus message)."""
    sample = ("Return the length of the longest run of equal neighbours.\n"
              "def f(s):\n    best = cur = 1\n    for i in range(1, len(s)):\n"
              "        cur = cur + 1 if s[i] == s[i - 1] else 1\n        best = max(best, cur)\n    return best")
    emb = dedup.HashedNgramEmbedder(dim=dim)
    batch = [sample + f"\n# {i}" for i in range(texts)]
    emb.embed(batch[:10])
    seconds = _median_time(lambda: emb.embed(batch), 3)
    return {"embedder": "hashed", "dim": dim, "chars": len(sample), "us_per_text": 1e6 * seconds / texts}


PHASES = ("iteration", "gasp_lemma", "gasp_lemma_pass_rate", "gasp_lift", "gasp_lift_pass_rate", "gasp_dedup",
          "gasp_student", "goalposts_eval", "teacher_generate", "student_generate", "sandbox_wait", "update",
          "reshard", "checkpoint")


def iteration_breakdown(metrics_rows: Sequence[dict], *, skip_first: int = 1) -> dict:
    """Mean seconds per phase over the iterations of a trainer ``metrics.jsonl`` (the first ``skip_first``
    compile), and the pass-rate estimation cost relative to the student phase."""
    rows = list(metrics_rows)[skip_first:]
    if not rows:
        raise ValueError("no iterations left to average (run more steps)")
    out = {"iterations": len(rows)}
    for phase in PHASES:
        values = [r.get(f"time/{phase}_s", 0.0) for r in rows]
        out[f"{phase}_s"] = float(np.mean(values))
    out["compile_s"] = float(np.mean([r.get("time/compile_s", 0.0) for r in rows]))
    estimate = out["gasp_lemma_pass_rate_s"] + out["gasp_lift_pass_rate_s"]
    out["pass_rate_over_student"] = estimate / out["gasp_student_s"] if out["gasp_student_s"] > 0 else float("nan")
    for key in ("gasp/lemma/count", "gasp/lift/count", "gasp/lemma/valid_rate", "gasp/lemma/accept_rate"):
        out[key] = float(np.mean([r.get(key, 0.0) for r in rows]))
    return out


def pass_rate_cost(*, config_path: str = "configs/gasp.py:tiny", steps: int = 3, lemmas: int = 8, n: int = 4,
                   solve_batch: int = 8, max_new_tokens: int = 96, allow_unsafe: bool = False) -> dict:
    """GASP's phases with proposals that validate: a scripted teacher writes distinct valid induction
    tasks (AZR seed programs) as lemmas and lifts (``lift_from="valid"``), the student is the real sampler
    on a random-init tiny model (it writes ``max_new_tokens`` almost always: the worst case). Returns mean
    seconds per phase over ``steps - 1`` iterations (the first compiles) and the ratio of pass-rate
    estimation (lemmas + lifts) to the student phase."""
    config = config_files.load(config_path)
    config.steps = steps
    config.init.warmstart.enabled = False
    config.sampling.max_new_tokens = max_new_tokens
    g = config.sources.gasp
    g.lemmas_per_step, g.learnability_samples, g.solve_batch, g.lift_from = lemmas, n, solve_batch, "valid"
    # The student batch is back-filled from the seed tasks (a random student accepts nothing).
    g.seed_from_warmstart, g.seed_file, g.seed_max_snippet_chars, g.eval.every = False, "", 200, 0
    g.seed_file = str(paths.azr_seed_file("7b_coder_code_f_seed_io.jsonl"))
    seeds = [r for r in tasks.load_seed_file(g.seed_file)
             if len(r["snippet"]) <= 200 and len(r["inputs"]) >= int(g.num_inputs)]
    answers = iter([tasks.format_proposal("induction", dict(r, inputs=r["inputs"][: int(g.num_inputs)],
                                                            outputs=r["outputs"][: int(g.num_inputs)]),
                                          template="compact", with_program=True) for r in seeds * 4])
    teacher = ScriptedPolicy(build_byte_tokenizer(), lambda prompt, j: next(answers), max_new_tokens=4096)
    tokenizer = build_byte_tokenizer()
    model = models.build_model(models.get_preset("tiny", vocab_size=len(tokenizer)))
    student = SamplerPolicy(model, tokenizer, config.sampling)
    student.set_params(models.init_params(model, jax.random.key(0)))
    source = GaspSource("gasp", g, config, workdir=tempfile.mkdtemp(prefix="gasp_passrate_"))
    phases: list[dict] = []
    with Sandbox(workers=int(config.sandbox.workers), allow_unsafe=allow_unsafe) as sandbox:
        for step in range(steps):
            timers = Timers()
            ctx = RolloutContext(step=step, rng=np.random.default_rng(step), key=jax.random.key(step),
                                 policies={"teacher": teacher, "student": student}, sandbox=sandbox, timers=timers,
                                 config=config, source_config=g, workdir=source.workdir)
            start = time.perf_counter()
            result = source.collect(ctx)
            phases.append({**timers.reset(), "collect": time.perf_counter() - start,
                           "lemmas_valid": result.scalars.get("gasp/lemma/valid_rate", 0.0),
                           "lifts": result.scalars.get("gasp/lift/count", 0.0)})
    steady = phases[1:] or phases
    keys = sorted({k for p in steady for k in p})
    out = {k: float(np.mean([p.get(k, 0.0) for p in steady])) for k in keys}
    out["pass_rate_over_student"] = (out.get("gasp_lemma_pass_rate", 0.0) + out.get("gasp_lift_pass_rate", 0.0)) / max(
        out.get("gasp_student", 0.0), 1e-9)
    out.update(lemmas=lemmas, n=n, solve_batch=solve_batch, max_new_tokens=max_new_tokens, iterations=len(steady))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    # argparse, not absl flags: this module is imported by other tools and tests, and absl flags are
    # process-global (a second `--config` definition collides with gasp_jax.main's).
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="accepted-question counts to measure at")
    ap.add_argument("--dim", type=int, default=512, help="embedding dimension")
    ap.add_argument("--queries", type=int, default=64, help="candidates checked per search (one iteration's lemmas)")
    ap.add_argument("--repeats", type=int, default=5, help="timed searches per size (the median is reported)")
    ap.add_argument("--pass_rate", action="store_true", help="measure GASP's phases with valid proposals (scripted teacher)")
    ap.add_argument("--allow_unsafe", action="store_true", help="sandbox without namespaces (--pass_rate)")
    ap.add_argument("--config", default="configs/gasp.py:tiny", help="the GASP config measured (--pass_rate), path[:arg]")
    args = ap.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    if args.pass_rate:
        print(json.dumps(pass_rate_cost(config_path=args.config, allow_unsafe=args.allow_unsafe), indent=1))
        print(f"load average {os.getloadavg()[0]:.2f} after")
        return
    rows = dedup_search([int(s) for s in args.sizes.split(",")], dim=args.dim, queries=args.queries,
                        repeats=args.repeats)
    for r in rows:
        print(json.dumps(r))
    print(json.dumps(embed_cost(args.dim)))


if __name__ == "__main__":
    main()
