"""Jitted KV-cache sampling for rollouts and evaluation.

    from gasp_jax import sampling
    out = sampling.generate(model, params, token_id_lists, max_new_tokens=256, temperature=1.0,
                            eos_ids=(eos,), num_samples=8, rng=jax.random.key(0))
    texts = sampling.generate_text(model, params, tokenizer, ["def f():"], num_samples=4,
                                   max_new_tokens=256, temperature=0.8, rng=jax.random.key(0))
    out = sampling.generate(..., max_new_tokens=[16, 2048, 300], engine="continuous", max_slots=128)
    out, stats = sampling.run_requests(model, params, [sampling.Request(prompt=ids, max_new_tokens=64)],
                                       rng=jax.random.key(0))    # per-request settings, slot statistics

See `api.py` (`generate`, the one dispatch), `core.py` (what both engines share: token choice, prefill,
keys, the program cache), `sampler.py` (static engine), `engine.py` (continuous batching) and
docs/sampling.md.
"""

from gasp_jax.sampling.api import ENGINES, generate
from gasp_jax.sampling.buckets import batch_bucket, default_prompt_buckets, pick_bucket
from gasp_jax.sampling.core import (
    PAD_ID,
    SampleOutput,
    SamplingMode,
    clear_program_cache,
    compiled_program_count,
    sample_tokens,
    token_logprobs,
)
from gasp_jax.sampling.engine import EngineStats, Request, run_requests
from gasp_jax.sampling.text import default_eos_ids, encode_prompts, generate_text

__all__ = [
    "ENGINES", "EngineStats", "PAD_ID", "Request", "SampleOutput", "run_requests", "SamplingMode", "batch_bucket", "clear_program_cache", "compiled_program_count",
    "default_eos_ids", "default_prompt_buckets", "encode_prompts", "generate", "generate_text", "pick_bucket", "sample_tokens", "token_logprobs",
]
