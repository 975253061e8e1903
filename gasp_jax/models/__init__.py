"""Decoder-only transformers (Qwen2 / Qwen2.5 / Qwen3 / Llama 3) with HF weight import/export.

    from gasp_jax import models
    model, params = models.load_hf("/path/to/Qwen2.5-Coder-1.5B", dtype="bfloat16", mesh=mesh)
    logits = model.apply({"params": params}, tokens)            # fp32 [B, T, vocab]

    config = models.get_preset("tiny")
    model = models.build_model(config, mesh=mesh)
    params = models.init_params(model, jax.random.key(0))       # created sharded on the mesh
"""

from gasp_jax.models.config import PRESETS, ModelConfig, RopeScaling, get_preset
from gasp_jax.models.hf import load_hf, load_tokenizer, save_hf
from gasp_jax.models.init import (
    abstract_params,
    build_model,
    count_params,
    init_params,
    param_logical_axes,
    param_shardings,
)
from gasp_jax.models.safetensors_io import SafetensorsError
from gasp_jax.models.transformer import KVCache, Transformer, init_cache

__all__ = [
    "PRESETS", "ModelConfig", "RopeScaling", "get_preset", "load_hf", "load_tokenizer", "save_hf",
    "abstract_params", "build_model", "count_params", "init_params", "param_logical_axes",
    "param_shardings", "SafetensorsError", "KVCache", "Transformer", "init_cache",
]
