"""Process-level setup shared by every job: logging, distributed init, compile cache, mesh, model."""

from __future__ import annotations

import logging
import os
import sys

import jax
import ml_collections

from gasp_jax import models
from gasp_jax import multihost
from gasp_jax import sharding as shd

log = logging.getLogger("gasp_jax")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )
    for noisy in ("absl", "jax._src", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def initialize(config: ml_collections.ConfigDict) -> None:
    """Distributed JAX (multi-host pods) and the persistent compilation cache, once, from main().

    `config.runtime.distributed`: "auto" (default: initialise when the launcher environment describes
    several processes), True or False; see `multihost.maybe_initialize`.
    """
    runtime = config.get("runtime", ml_collections.ConfigDict())
    multihost.maybe_initialize(runtime.get("distributed", "auto"))
    cache_dir = runtime.get("compilation_cache_dir", "")
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    log.info(
        "JAX %s: process %d/%d, %d devices (%s)",
        jax.__version__, jax.process_index(), jax.process_count(), jax.device_count(),
        jax.devices()[0].platform,
    )


def mesh_from_config(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    shape = {axis: int(config.mesh.get(axis, 1)) for axis in shd.MESH_AXES}
    mesh = shd.make_mesh(shape)
    log.info("mesh %s", dict(mesh.shape))
    return mesh


def rules_from_config(config: ml_collections.ConfigDict) -> shd.Rules:
    rules = config.get("sharding", {}).get("rules", None)
    return shd.DEFAULT_RULES if rules is None else shd.rules_from_config(rules)


def model_from_config(model_cfg: ml_collections.ConfigDict, mesh, rules, rng: jax.Array):
    """`(model, params)` from `model_cfg.hf_path` (a local HF directory) or a random-init preset."""
    overrides = dict(dtype=model_cfg.dtype, remat_policy=model_cfg.get("remat_policy", "none"))
    if model_cfg.get("hf_path"):
        model, params = models.load_hf(
            model_cfg.hf_path, mesh=mesh, rules=rules, param_dtype=model_cfg.get("param_dtype") or None, **overrides
        )
        log.info("loaded %s (%s params)", model_cfg.hf_path, f"{models.count_params(params):,}")
        return model, params
    config = models.get_preset(model_cfg.preset, param_dtype=model_cfg.get("param_dtype") or model_cfg.dtype, **overrides)
    if model_cfg.get("vocab_size"):
        config = config.replace(vocab_size=int(model_cfg.vocab_size))
    model = models.build_model(config, mesh=mesh, rules=rules)
    params = models.init_params(model, rng)
    log.info("random-init preset %r (%s params)", model_cfg.preset, f"{models.count_params(params):,}")
    return model, params
