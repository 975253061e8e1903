"""Process-level setup shared by every job: logging, distributed init, compile cache, mesh, model."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import jax
import ml_collections

from gasp_jax import models
from gasp_jax.cache_dirs import CACHE_ENV, cache_root  # noqa: F401 (runtime.cache_root is public)
from gasp_jax import multihost
from gasp_jax import sharding as shd

log = logging.getLogger("gasp_jax")

COMPILATION_CACHE_ENV = "GASP_JAX_COMPILATION_CACHE"  # "off", or a directory: what "auto" means here


def compilation_cache_dir(value: str) -> str:
    """`runtime.compilation_cache_dir` as a directory ("" = off). "auto" (the tiny presets) is
    `$GASP_JAX_COMPILATION_CACHE` when set ("off" turns it off: the test suite does, so compile counts
    never depend on the disk), else `cache_root("xla")`. Anything else is a path (`~` expanded; a
    `gs://` URL works too: jax writes through its own file layer)."""
    value = str(value or "")
    if value != "auto":
        return os.path.expanduser(value) if value and "://" not in value else value
    override = os.environ.get(COMPILATION_CACHE_ENV, "")
    if override:
        return "" if override == "off" else os.path.expanduser(override)
    return cache_root("xla")


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
    `config.runtime.compilation_cache_dir`: "" (off), "auto" or a directory (`compilation_cache_dir`);
    programs that took at least `compilation_cache_min_compile_s` (default 1.0, jax's) to compile are
    written there and loaded by later runs of the same program, jax/XLA version and device kind.
    """
    runtime = config.get("runtime", ml_collections.ConfigDict())
    multihost.maybe_initialize(runtime.get("distributed", "auto"))
    cache_dir = compilation_cache_dir(runtime.get("compilation_cache_dir", ""))
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(runtime.get("compilation_cache_min_compile_s", 1.0)))
        log.info("persistent compilation cache: %s", cache_dir)
    log.info(
        "JAX %s: process %d/%d, %d devices (%s)",
        jax.__version__, jax.process_index(), jax.process_count(), jax.device_count(),
        jax.devices()[0].platform,
    )


def mesh_from_config(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """`config.mesh` (data/fsdp/tensor sizes, one may be -1) and, for multi-slice runs, `config.mesh.dcn`.

    With `mesh.dcn` (e.g. `{"data": 2}` for two slices) the data/fsdp/tensor sizes describe ONE slice
    and the mesh is the hybrid ICI x DCN mesh (`sharding.make_mesh(dcn_shape=...)`).
    """
    unknown = set(config.mesh) - set(shd.MESH_AXES) - {"dcn"}
    if unknown:
        raise shd.MeshError(f"config.mesh: unknown axes {sorted(unknown)}; expected {shd.MESH_AXES} and 'dcn'")
    shape = {axis: int(config.mesh.get(axis, 1)) for axis in shd.MESH_AXES}
    dcn = config.mesh.get("dcn", None)
    dcn = {axis: int(v) for axis, v in dict(dcn).items()} if dcn else None
    mesh = shd.make_mesh(shape, dcn_shape=dcn)
    log.info("mesh %s%s", dict(mesh.shape), f" ({dcn} across slices)" if dcn else "")
    return mesh


def rules_from_config(config: ml_collections.ConfigDict) -> shd.Rules:
    rules = config.get("sharding", {}).get("rules", None)
    return shd.DEFAULT_RULES if rules is None else shd.rules_from_config(rules)


def check_sharding(model, sharding_cfg: Any = None) -> int:
    """Start-up check before any weight is read: reports params replicated on an axis their rule names,
    fails when params per device exceed `sharding.max_param_memory_fraction` of a device's memory
    (`sharding.device_memory_gb`, 0 = ask the runtime; unknown on CPU). Returns param bytes per device."""
    if model.mesh is None:
        return 0
    cfg = sharding_cfg or {}
    gb = float(cfg.get("device_memory_gb", 0) or 0)
    device_bytes = int(gb * 2**30) if gb else shd.device_memory_bytes()
    placements = shd.param_placements(models.abstract_params(model), model.mesh, model.rules)
    return shd.check_param_placements(
        placements, device_bytes=device_bytes, max_fraction=float(cfg.get("max_param_memory_fraction", 0.5))
    )


def model_from_config(model_cfg: ml_collections.ConfigDict, mesh, rules, rng: jax.Array, sharding_cfg: Any = None):
    """`(model, params)` from `model_cfg.hf_path` (a local HF directory) or a random-init preset.

    The sharding check (`check_sharding`) runs first, so a model that cannot fit fails before loading.
    """
    overrides = dict(dtype=model_cfg.dtype, remat_policy=model_cfg.get("remat_policy", "none"))
    param_dtype = model_cfg.get("param_dtype") or None
    if model_cfg.get("hf_path"):
        config = models.ModelConfig.from_hf_dict(
            models.hf.read_hf_config(model_cfg.hf_path), param_dtype=param_dtype or model_cfg.dtype, **overrides
        )
        check_sharding(models.build_model(config, mesh=mesh, rules=rules), sharding_cfg)
        model, params = models.load_hf(model_cfg.hf_path, mesh=mesh, rules=rules, param_dtype=param_dtype, **overrides)
        log.info("loaded %s (%s params)", model_cfg.hf_path, f"{models.count_params(params):,}")
        return model, params
    config = models.get_preset(model_cfg.preset, param_dtype=param_dtype or model_cfg.dtype, **overrides)
    if model_cfg.get("vocab_size"):
        config = config.replace(vocab_size=int(model_cfg.vocab_size))
    model = models.build_model(config, mesh=mesh, rules=rules)
    check_sharding(model, sharding_cfg)
    params = models.init_params(model, rng)
    log.info("random-init preset %r (%s params)", model_cfg.preset, f"{models.count_params(params):,}")
    return model, params
