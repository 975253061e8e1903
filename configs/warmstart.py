r"""Supervised warm start (job `warmstart`): the cached SFT checkpoint the tiny self-play presets start from.

    python -m gasp_jax.main --config=configs/warmstart.py --workdir=runs/warmstart
    python -m gasp_jax.main --config=configs/warmstart.py:quick --workdir=/tmp/ws        # seconds: plumbing
    python -m gasp_jax.main --config=configs/warmstart.py --workdir=runs/ws_qwen \
        --config.model.hf_path=/ckpts/Qwen2.5-Coder-0.5B-Instruct --config.chat=True \
        --config.optimizer.learning_rate=1e-5 --config.steps=100 --config.max_length=1024

Trains (or finds in the cache, `$GASP_JAX_CACHE/warmstart/<key>/`) the model of `configs/azr.py:tiny`
and `configs/gasp.py:tiny` -- the same block they hold as `init.warmstart` -- then measures it with the
real sandbox at T = 1: solver format/correct rates on the training tasks and on held-out programs, and
proposal parse/valid/novel rates. `WORKDIR/warmstart` links the checkpoint, `WORKDIR/rates.json` holds the
rates, and the GASP teacher's lemma/lift parse/valid rates. A second run with the same settings reuses the
cache (seconds).

Presets (`--config=configs/warmstart.py:PRESET`):
  (none)  the tiny CPU recipe (docs/warmstart.md: cost and measured rates)
  quick   a few steps of a smaller model, few measured samples: plumbing check, not a usable policy
"""

import ml_collections

from gasp_jax import profiling, warmstart

PRESETS = ("default", "quick")


def get_config(arg=None):
    preset = arg or "default"
    if preset not in PRESETS:
        raise ValueError(f"configs/warmstart.py: unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    c = warmstart.default_config()
    c.job = "warmstart"
    c.enabled = True
    c.measure = ml_collections.ConfigDict(dict(
        samples=4,  # answers / proposals per prompt (0: no measurement)
        temperature=1.0,  # self-play's rollout temperature
        max_new_tokens=96,  # the longest gold proposal of the default data is ~50 BPE tokens
        gasp_max_new_tokens=192,  # GASP rows: the longest gold lemma/lift answer is ~150 BPE tokens
        max_tasks=24,  # per (split, kind): a bound on the measurement's cost
        cpu_s=2.0,  # sandbox limits per validation / judge job
        workers=2,
        allow_unsafe=False,  # machines without user namespaces (see docs/sandbox.md)
    ))
    # "auto": JAX's persistent compilation cache under $GASP_JAX_CACHE/xla (~/.cache/gasp_jax/xla)
    c.runtime = ml_collections.ConfigDict(dict(distributed=False, compilation_cache_dir="auto",
                                               compilation_cache_min_compile_s=1.0))
    c.profile = profiling.default_config()  # SFT steps start_step.. traced when the job trains (docs/profiling.md)
    if preset == "quick":
        c.model.preset = "tiny"
        c.model.tokenizer = "byte"  # no BPE training: the plumbing check stays seconds
        c.steps = 4
        c.optimizer.warmup_steps = 1
        c.batch_size = 8
        c.log_every = 2
        c.data.max_io_records = 8
        c.data.max_induction_records = 2
        c.data.gasp.lemma_rows = 2
        c.data.gasp.lift_rows = 2
        c.measure.samples = 1
        c.measure.max_tasks = 2
        c.measure.max_new_tokens = 32
        c.measure.gasp_max_new_tokens = 32
    return c
