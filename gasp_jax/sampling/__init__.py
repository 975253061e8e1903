"""Jitted KV-cache sampling for rollouts and evaluation.

    from gasp_jax import sampling
    out = sampling.generate(model, params, token_id_lists, max_new_tokens=256, temperature=1.0,
                            eos_ids=(eos,), num_samples=8, rng=jax.random.key(0))
    texts = sampling.generate_text(model, params, tokenizer, ["def f():"], num_samples=4,
                                   max_new_tokens=256, temperature=0.8, rng=jax.random.key(0))

See `sampler.py` for the design and docs/sampling.md for buckets and the compile cache.
"""

from gasp_jax.sampling.buckets import batch_bucket, default_prompt_buckets, pick_bucket
from gasp_jax.sampling.sampler import (
    PAD_ID,
    SampleOutput,
    SamplingMode,
    clear_program_cache,
    compiled_program_count,
    generate,
    sample_tokens,
    token_logprobs,
)
from gasp_jax.sampling.text import default_eos_ids, encode_prompts, generate_text

__all__ = [
    "PAD_ID", "SampleOutput", "SamplingMode", "batch_bucket", "clear_program_cache", "compiled_program_count",
    "default_eos_ids", "default_prompt_buckets", "encode_prompts", "generate", "generate_text", "pick_bucket", "sample_tokens", "token_logprobs",
]
