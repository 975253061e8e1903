"""GASP benchmarks: near-duplicate search as the buffer grows, and GASP iterations with their phase
breakdown (the cost of pass-rate estimation for lemmas and lifts relative to the student phase).

    python -m gasp_jax.gasp.bench --sizes=1000,10000,100000 --dim=512 --queries=64
    python -m gasp_jax.benchmarks.iteration --preset gasp          # iterations; GASP lines from here

Dedup search: the index is filled with N random unit vectors (the search cost does not depend on what
the vectors encode) and a batch of Q candidates (a step's lemmas) is checked against it, in-batch
comparison included; the hashed embedder's own cost per text is measured on real task texts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from gasp_jax.gasp import dedup

_SIZES = flags.DEFINE_list("sizes", ["1000", "10000", "100000"], "accepted-question counts to measure at")
_DIM = flags.DEFINE_integer("dim", 512, "embedding dimension")
_QUERIES = flags.DEFINE_integer("queries", 64, "candidates checked per search (one iteration's lemmas)")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed searches per size (the median is reported)")


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


def main(argv):
    del argv
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    rows = dedup_search([int(s) for s in _SIZES.value], dim=_DIM.value, queries=_QUERIES.value, repeats=_REPEATS.value)
    for r in rows:
        print(json.dumps(r))
    print(json.dumps(embed_cost(_DIM.value)))


if __name__ == "__main__":
    app.run(main)
