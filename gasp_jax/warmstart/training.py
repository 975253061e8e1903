"""Training and caching: token ids -> SFT steps -> an HF checkpoint under a content-hash key."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from gasp_jax import models, multihost, rl
from gasp_jax import sharding as shd
from gasp_jax.rl import sft
from gasp_jax.tokenizer import build_bpe_tokenizer, build_byte_tokenizer
from gasp_jax.warmstart.config import CACHE_VERSION, MANIFEST, cache_root, rl_config, validate_config
from gasp_jax.warmstart.gasp_rows import gasp_gold_tasks, gasp_rows, lcb_statements
from gasp_jax.warmstart.rows import Row, SeedTasks, build_rows, encode_rows, row_limit, seed_tasks

log = logging.getLogger(__name__)


def base_tokenizer(ws, rows: Sequence[Row] = ()):
    """The checkpoint's tokenizer; for a preset the byte tokenizer, or (`model.tokenizer="bpe"`) a
    byte-level BPE trained on `rows`' text (deterministic: the rows are; saved with the checkpoint)."""
    if ws.model.hf_path:
        return models.load_tokenizer(ws.model.hf_path)

    if ws.model.get("tokenizer", "byte") == "bpe" and rows:
        return build_bpe_tokenizer([r.prompt + r.response for r in rows], int(ws.model.bpe_vocab_size))
    return build_byte_tokenizer()


def base_model_config(ws, tokenizer) -> models.ModelConfig:
    overrides = dict(dtype=ws.model.dtype, param_dtype=ws.model.get("param_dtype") or ws.model.dtype,
                     remat_policy=ws.model.get("remat_policy", "none"))
    if ws.model.hf_path:
        return models.ModelConfig.from_hf_dict(models.hf.read_hf_config(ws.model.hf_path), **overrides)
    # The byte tokenizer's ids only: no never-trained logits the sampler could draw.
    return models.get_preset(ws.model.preset, vocab_size=len(tokenizer), **overrides)


def _model_identity(ws, config: models.ModelConfig) -> dict:
    ident = {"config": dataclasses.asdict(config)}
    if ws.model.hf_path:  # the weights by name, size and mtime (hashing GBs of weights is too slow)
        files = sorted(f for f in os.listdir(ws.model.hf_path) if f.endswith((".safetensors", ".json")))
        ident["files"] = [(f, os.path.getsize(os.path.join(ws.model.hf_path, f)),
                           int(os.path.getmtime(os.path.join(ws.model.hf_path, f)))) for f in files]
        ident["path"] = os.path.abspath(ws.model.hf_path)
    return ident


def cache_key(ws, model_config: models.ModelConfig, encoded: Sequence[tuple[list[int], list[int]]], tokenizer) -> str:
    """sha256 (24 hex) of everything that determines the trained weights."""
    h = hashlib.sha256()
    for p, t in encoded:
        h.update(np.asarray(p, np.int32).tobytes() + b"|" + np.asarray(t, np.int32).tobytes() + b"\n")
    vocab = sorted(tokenizer.get_vocab().items())
    spec = {
        "version": CACHE_VERSION,
        "model": _model_identity(ws, model_config),
        "tokenizer": hashlib.sha256(json.dumps(vocab).encode()).hexdigest(),
        "rows": h.hexdigest(),
        "steps": int(ws.steps), "batch_size": int(ws.batch_size), "buckets": length_buckets(ws),
        "seed": int(ws.seed), "rl": rl_config(ws).to_dict(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:24]


# -------------------------------------------------------------------------------------------- training


def length_buckets(ws) -> tuple[int, ...]:
    """The padded lengths of training batches: `max_length`, and GASP rows' own when they are trained."""
    extra = (int(ws.data.gasp.max_length),) if "gasp" in ws.data.roles else ()
    return tuple(sorted({int(ws.max_length), *extra}))


def train(ws, model, params, encoded: Sequence[tuple[list[int], list[int]]], *, log_fn=None, observer=None):
    """SFT steps over shuffled epochs of `encoded`; returns `(params, history)` (one dict per logged step).

    Each row belongs to the shortest length bucket it fits and a batch holds one bucket's rows, padded to
    it (one compiled step per bucket): the short solve/propose rows never pay for GASP's long prompts.
    A longer bucket's batch has proportionally fewer rows (`batch_size` rows of `max_length` tokens per
    step, i.e. about the same tokens and cost per step). A step draws its bucket with probability
    proportional to the bucket's batches per epoch, so every row is seen about equally often; within a
    bucket, epochs (every row once before any row twice). `observer` (a `profiling.StepObserver`, job
    `warmstart`): the profile window, recompilation warnings and memory in the logged history."""
    sft_config = rl_config(ws)
    step_fn = sft.make_sft_step(model, sft_config, model.mesh)
    state = rl.create_train_state(model, sft_config, params=params)
    multiple = step_fn.micro_batches * step_fn.batch_divisor
    rng = np.random.default_rng([int(ws.seed), 11])
    buckets = length_buckets(ws)
    sizes = [max(multiple, int(ws.batch_size) * int(ws.max_length) // b // multiple * multiple) for b in buckets]
    sizes[0] = -(-int(ws.batch_size) // multiple) * multiple
    members = [[i for i, (p, t) in enumerate(encoded) if _bucket(len(p) + len(t), buckets) == b] for b in buckets]
    live = [k for k, m in enumerate(members) if m]
    weights = np.asarray([len(members[k]) / sizes[k] for k in live], np.float64)
    orders: dict[int, list[int]] = {k: [] for k in live}
    history = []
    t0 = time.perf_counter()
    for step in range(int(ws.steps)):
        k = live[0] if len(live) == 1 else live[int(rng.choice(len(live), p=weights / weights.sum()))]
        batch_size = sizes[k]
        while len(orders[k]) < batch_size:
            orders[k] += [members[k][j] for j in rng.permutation(len(members[k]))]
        idx, orders[k] = orders[k][:batch_size], orders[k][batch_size:]
        batch = sft.make_sft_batch([encoded[i][0] for i in idx], [encoded[i][1] for i in idx],
                                   length_buckets=(buckets[k],), batch_multiple=multiple)
        if observer is not None:
            observer.begin(step + 1)
        state, metrics = step_fn(state, batch)
        observed = observer.scalars(step + 1) if observer is not None else {}
        if observer is not None:
            observer.end(step + 1)
        last = step + 1 == int(ws.steps)
        if (step + 1) % int(ws.log_every) == 0 or last or step == 0:
            m = {k: float(v) for k, v in jax.device_get(metrics).items() if k != "sampler_logp_abs_diff_max"}
            m.update(step=step + 1, elapsed_s=round(time.perf_counter() - t0, 2), **observed)
            history.append(m)
            (log_fn or log.info)("warmstart step %d/%d: loss %.4f, confident %.3f, grad_norm %.3f (%.1fs)",
                                 step + 1, int(ws.steps), m["loss"], m["confident_frac"], m["grad_norm"], m["elapsed_s"])
    return state.params, history


def _bucket(length: int, buckets: Sequence[int]) -> int:
    return next(b for b in buckets if length <= b)


def local_mesh(ws):
    """The warm start trains on this process's devices only (process 0 in a multi-host job)."""
    shape = {axis: int(ws.mesh.get(axis, 1)) for axis in shd.MESH_AXES}
    return shd.make_mesh(shape, devices=jax.local_devices())


@contextlib.contextmanager
def _file_lock(path: str):
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST)) and os.path.isfile(os.path.join(path, "config.json"))


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What `ensure_warmstart` computes before any training: rows, their ids, the key and the path."""

    seed: SeedTasks
    rows: list[Row]
    encoded: list[tuple[list[int], list[int]]]
    dropped: int
    tokenizer: Any
    model_config: models.ModelConfig
    key: str
    path: str
    gasp_gold: list[dict]  # the validated gold induction tasks of the GASP rows ([] without them)


def prepare(ws) -> Prepared:
    """Host-only and cheap (no weights, no device): data, token ids, cache key and directory."""
    validate_config(ws)
    render = base_tokenizer(ws)  # chat rendering only (a BPE's chat template is the byte tokenizer's)
    seed = seed_tasks(ws.data)
    rows = build_rows(seed, ws, render if ws.chat else None)
    gold: list[dict] = []
    if "gasp" in ws.data.roles:
        gold = gasp_gold_tasks(ws, seed)
        rows += gasp_rows(ws, gold, lcb_statements(ws), render if ws.chat else None)
    tokenizer = base_tokenizer(ws, rows)
    encoded, dropped = encode_rows(rows, tokenizer, [row_limit(r, ws) for r in rows])
    if not encoded:
        raise ValueError(f"warmstart: no training row fits max_length={ws.max_length} "
                         f"({len(rows)} rows from {sum(map(len, seed.train.values()))} records)")
    model_config = base_model_config(ws, tokenizer)
    key = cache_key(ws, model_config, encoded, tokenizer)
    return Prepared(seed, rows, encoded, dropped, tokenizer, model_config, key, os.path.join(cache_root(ws), key), gold)


def ensure_warmstart(ws: ml_collections.ConfigDict, *, wait_s: float = 3600.0, observer=None) -> str:
    """The warm-started HF checkpoint directory for block `ws`, trained and cached first if missing.

    Safe for concurrent callers on one machine (a file lock; the directory appears atomically by
    rename). Multi-host: process 0 trains on its local devices; the others wait for the directory
    (on a shared filesystem) up to `wait_s` seconds.
    """
    prep = prepare(ws)
    if _complete(prep.path):
        log.info("warmstart: cached %s", prep.path)
        return prep.path
    if multihost.process_count() > 1 and not multihost.is_main():
        deadline = time.monotonic() + wait_s
        while not _complete(prep.path):
            if time.monotonic() > deadline:
                raise TimeoutError(f"warmstart: {prep.path} did not appear within {wait_s:.0f}s (process 0 trains it;"
                                   " is cache_dir on a filesystem every host sees?)")
            time.sleep(2.0)
        return prep.path
    os.makedirs(cache_root(ws), exist_ok=True)
    with _file_lock(prep.path + ".lock"):
        if _complete(prep.path):  # another caller finished it while we waited for the lock
            return prep.path
        _train_and_save(ws, prep, observer)
    return prep.path


def _train_and_save(ws, prep: Prepared, observer=None) -> None:
    t0 = time.perf_counter()
    mesh = local_mesh(ws)
    model = models.build_model(prep.model_config, mesh=mesh)
    if ws.model.hf_path:
        _, params = models.load_hf(ws.model.hf_path, dtype=prep.model_config.dtype,
                                   param_dtype=prep.model_config.param_dtype, mesh=mesh,
                                   remat_policy=prep.model_config.remat_policy)
    else:
        params = models.init_params(model, jax.random.key(int(ws.seed)))
    log.info("warmstart: training %s (%s params) on %d rows (%d dropped as longer than their limit), length buckets %s,"
             " %d steps -> %s", ws.model.hf_path or ws.model.preset, f"{models.count_params(params):,}",
             len(prep.encoded), prep.dropped, length_buckets(ws), int(ws.steps), prep.path)
    params, history = train(ws, model, params, prep.encoded, observer=observer)
    tmp = tempfile.mkdtemp(prefix=prep.key + ".tmp-", dir=cache_root(ws))
    try:
        models.save_hf(model, params, tmp, tokenizer=prep.tokenizer)
        manifest = {
            "key": prep.key, "version": CACHE_VERSION, "created": time.time(),
            "train_seconds": round(time.perf_counter() - t0, 2),
            "block": ws.to_dict(), "rows": len(prep.encoded), "rows_dropped": prep.dropped,
            "records": {k: [r["id"] for r in v] for k, v in prep.seed.train.items()},
            "rows_by_role": {role: sum(r.role == role for r in prep.rows) for role in sorted({r.role for r in prep.rows})},
            "gasp_gold": [r["id"] for r in prep.gasp_gold],
            "holdout": {k: [r["id"] for r in v] for k, v in prep.seed.holdout.items()},
            "history": history,
        }
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, default=str)
        os.replace(tmp, prep.path) if not os.path.exists(prep.path) else shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("warmstart: saved %s (%.1fs)", prep.path, time.perf_counter() - t0)


def read_manifest(path: str) -> dict:
    with open(os.path.join(path, MANIFEST)) as f:
        return json.load(f)
