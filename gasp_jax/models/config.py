"""Model configuration: one frozen dataclass for every supported decoder family, plus presets.

The same `ModelConfig` describes Qwen2 / Qwen2.5 (q/k/v bias), Qwen3 (per-head q/k RMSNorm) and
Llama 3 (llama3 RoPE scaling). `from_hf_dict` / `to_hf_dict` translate `config.json`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims", "save_attn_out")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling. `type="llama3"` follows Meta's Llama 3.1 recipe."""

    type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a decoder-only transformer.

    `dtype` is the activation/compute dtype, `param_dtype` the storage dtype of the weights.
    Parameters always store layer weights stacked on a leading `layers` axis; whether the layers run as a
    scan or an unrolled loop is the `Transformer`'s `scan_layers` (decode unrolls them over per-layer caches).
    """

    model_type: str = "qwen2"
    vocab_size: int = 256
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    qkv_bias: bool = False
    qk_norm: bool = False
    max_position_embeddings: int = 32768
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat_policy: str = "none"
    # HF metadata kept for a faithful export.
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unsupported model_type {self.model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy {self.remat_policy!r} not in {REMAT_POLICIES}")
        if self.rope_scaling is not None and self.rope_scaling.type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"unsupported rope scaling {self.rope_scaling.type!r}; supported: {SUPPORTED_ROPE_TYPES}"
            )
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"{name} must be float32, bfloat16 or float16, got {getattr(self, name)!r}")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @property
    def num_params(self) -> int:
        """Parameter count (the embedding counted once when tied)."""
        e, f, h, k, d = self.hidden_size, self.intermediate_size, self.num_heads, self.num_kv_heads, self.head_dim
        attn = e * h * d + 2 * e * k * d + h * d * e
        if self.qkv_bias:
            attn += h * d + 2 * k * d
        if self.qk_norm:
            attn += 2 * d
        layer = attn + 3 * e * f + 2 * e
        embed = self.vocab_size * e * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + embed + e

    # ---------------------------------------------------------------- HF config.json translation

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any], **overrides) -> "ModelConfig":
        """Builds a config from a `transformers` config.json dict (v4 or v5 layout)."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"unsupported model_type {model_type!r} in config.json; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        if hf.get("use_sliding_window"):
            raise ValueError("sliding-window attention (use_sliding_window=true) is not supported")
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"only hidden_act='silu' is supported, got {hf.get('hidden_act')!r}")
        if hf.get("mlp_bias"):
            raise ValueError("mlp_bias=true is not supported")
        # transformers v5 folds theta and scaling into `rope_parameters`; v4 uses rope_theta + rope_scaling.
        rope = dict(hf.get("rope_parameters") or {})
        legacy = hf.get("rope_scaling") or {}
        theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
        rope_kind = rope.get("rope_type") or legacy.get("rope_type") or legacy.get("type") or "default"
        params = {**legacy, **rope}
        scaling = None
        if rope_kind not in SUPPORTED_ROPE_TYPES:
            raise ValueError(f"unsupported rope scaling {rope_kind!r}; supported: {SUPPORTED_ROPE_TYPES}")
        if rope_kind != "default":
            scaling = RopeScaling(
                type=rope_kind,
                factor=float(params.get("factor", 1.0)),
                low_freq_factor=float(params.get("low_freq_factor", 1.0)),
                high_freq_factor=float(params.get("high_freq_factor", 4.0)),
                original_max_position_embeddings=int(params.get("original_max_position_embeddings", 8192)),
            )
        num_heads = int(hf["num_attention_heads"])
        head_dim = hf.get("head_dim") or hf["hidden_size"] // num_heads
        qkv_bias = {"qwen2": True, "qwen3": False, "llama": False}[model_type]
        qkv_bias = bool(hf.get("attention_bias", qkv_bias))
        kwargs = dict(
            model_type=model_type,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
            head_dim=int(head_dim),
            rope_theta=float(theta),
            rope_scaling=scaling,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=qkv_bias,
            qk_norm=model_type == "qwen3",
            max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json `transformers` needs to rebuild this model (legacy keys, read by v4 and v5)."""
        arch = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}
        out: dict[str, Any] = dict(
            architectures=[arch[self.model_type]],
            model_type=self.model_type,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            tie_word_embeddings=self.tie_word_embeddings,
            torch_dtype=self.param_dtype,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
        )
        if self.model_type != "qwen2":  # Qwen2's bias is implied by the architecture.
            out["attention_bias"] = self.qkv_bias
        if self.model_type == "qwen2":
            out["use_sliding_window"] = False
        if self.rope_scaling is not None:
            s = self.rope_scaling
            out["rope_scaling"] = {"rope_type": s.type, "factor": s.factor}
            if s.type == "llama3":
                out["rope_scaling"].update(
                    low_freq_factor=s.low_freq_factor,
                    high_freq_factor=s.high_freq_factor,
                    original_max_position_embeddings=s.original_max_position_embeddings,
                )
        return out


def _qwen25_coder(hidden, inter, layers, heads, kv_heads, tied) -> ModelConfig:
    return ModelConfig(
        model_type="qwen2", vocab_size=151936, hidden_size=hidden, intermediate_size=inter,
        num_layers=layers, num_heads=heads, num_kv_heads=kv_heads, head_dim=hidden // heads,
        rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=tied, qkv_bias=True,
        max_position_embeddings=32768, bos_token_id=151643, eos_token_id=151643,
    )


PRESETS: dict[str, ModelConfig] = {
    # Shapes of the released Qwen2.5-Coder checkpoints (config.json of each).
    "qwen2.5-coder-0.5b": _qwen25_coder(896, 4864, 24, 14, 2, tied=True),
    "qwen2.5-coder-1.5b": _qwen25_coder(1536, 8960, 28, 12, 2, tied=True),
    "qwen2.5-coder-7b": _qwen25_coder(3584, 18944, 28, 28, 4, tied=False),
    # A model that compiles and runs in seconds on a laptop CPU.
    "tiny": ModelConfig(
        model_type="qwen2", vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, qkv_bias=True, tie_word_embeddings=True,
        max_position_embeddings=2048,
    ),
    # The supervised warm start's model for the tiny self-play presets (gasp_jax/warmstart/): big
    # enough to learn the compact task formats and a few dozen short seed tasks in a CPU minute or two.
    "warmstart_tiny": ModelConfig(
        model_type="qwen2", vocab_size=1024, hidden_size=128, intermediate_size=384, num_layers=3,
        num_heads=4, num_kv_heads=2, head_dim=32, qkv_bias=True, tie_word_embeddings=True,
        max_position_embeddings=1024,
    ),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """Returns a preset `ModelConfig`, optionally with fields replaced (e.g. dtype="bfloat16")."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name].replace(**overrides)
