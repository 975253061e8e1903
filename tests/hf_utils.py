"""Tiny random `transformers` checkpoints written to local directories, for parity tests."""

from __future__ import annotations

import os

import torch
import transformers

FAMILIES = {
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
}

BASE = dict(
    vocab_size=320,
    hidden_size=48,
    intermediate_size=112,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=1,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def make_hf_checkpoint(out_dir: str, family: str, *, seed: int = 0, dtype=torch.float32, **overrides):
    """Writes a randomly initialised HF model of `family` to `out_dir`; returns the torch model (eval)."""
    config_cls, model_cls = FAMILIES[family]
    kwargs = {**BASE, **overrides}
    if family == "qwen3":
        kwargs.setdefault("head_dim", kwargs["hidden_size"] // kwargs["num_attention_heads"])
    config = config_cls(**kwargs)
    torch.manual_seed(seed)
    model = model_cls(config).to(dtype).eval()
    # Random init leaves norms at 1 and biases at 0; perturb them so the mapping is really tested.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight") or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    return model


def torch_logits(model, tokens) -> "np.ndarray":
    import numpy as np

    with torch.no_grad():
        out = model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits
    return out.float().numpy()
