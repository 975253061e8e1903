"""Tiny CPU run: the README's main command. Finishes in well under a minute on a 2-core laptop.

    python -m gasp_jax.main --config=configs/tiny_cpu.py --workdir=runs/tiny_cpu
    tensorboard --logdir runs/tiny_cpu/tb

Expect: a random-init `tiny` model on all local devices (fsdp mesh), TensorBoard scalars under
`runs/tiny_cpu/tb` and an orbax checkpoint under `runs/tiny_cpu/checkpoints`.
"""

import ml_collections

from gasp_jax.sharding import DEFAULT_RULES


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.job = "demo"
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"  # a gasp_jax.models.PRESETS name, used when hf_path is empty
    c.model.hf_path = ""  # a local HF checkpoint directory; overrides the preset
    c.model.dtype = "float32"
    c.model.param_dtype = "float32"
    c.model.remat_policy = "none"

    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    c.sharding = ml_collections.ConfigDict()
    c.sharding.rules = [list(rule) for rule in DEFAULT_RULES]

    c.runtime = ml_collections.ConfigDict(dict(distributed=False, compilation_cache_dir=""))
    return c
