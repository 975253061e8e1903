"""It learns: a random-init model, trained only through the RL update step, learns a verifiable task.

Task: the prompt is `[BOS, a, b, SEP]` with digits a, b drawn from 4 digit tokens; the answer is the
digits reversed, `[b, a]`. A Python checker scores each sampled completion (fraction of positions
right). Rollouts come from the project sampler (`gasp_jax.sampling.generate`, temperature 1, full
16-token vocab, so chance is ~1/16 per position), advantages from TRR++ on the host, then one
`rl.make_update_step` update per batch: the same path the self-play trainer takes.

Negative controls run the identical loop with one classic bug injected and must NOT learn:
advantage sign flipped, completion mask off by one, importance ratio inverted (pi_old / pi).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gasp_jax import models, rl, sampling
from gasp_jax.rl import losses

BOS, SEP, DIGIT0, NUM_DIGITS = 1, 2, 3, 4
PROMPTS_PER_STEP, SAMPLES_PER_PROMPT, STEPS = 32, 4, 120
CONFIG = models.ModelConfig(vocab_size=16, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                            num_kv_heads=2, head_dim=16, max_position_embeddings=16)


def _rl_config():
    c = rl.default_config()
    c.optimizer.update(learning_rate=3e-3, schedule="warmup_cosine", warmup_steps=10, total_steps=STEPS,
                       final_lr_fraction=0.1)
    c.logprob_chunk_size = 4
    return c


def reward_fn(prompt: list[int], completion: np.ndarray) -> float:
    """The Python checker: fraction of answer positions equal to the prompt's digits reversed."""
    target = prompt[1:-1][::-1]
    return float(np.mean([int(c) == t for c, t in zip(completion, target)]))


@functools.lru_cache(maxsize=None)
def _update_step(tag: str):
    # One compiled update per distinct loss code (the inverted-ratio control re-traces).
    del tag
    model = models.build_model(CONFIG)
    return rl.make_update_step(model, _rl_config())


def train(corruption: str | None, seed: int = 0) -> tuple[list[float], list[float]]:
    """Runs the loop; returns per-step mean reward and sampler-vs-trainer max |delta logp|."""
    model = models.build_model(CONFIG)
    state = rl.create_train_state(model, _rl_config(), rng=jax.random.key(seed))
    update = _update_step("inverted_ratio" if corruption == "inverted_ratio" else "clean")
    rng, key = np.random.default_rng(seed), jax.random.key(seed + 1)
    rewards, sync = [], []
    for _ in range(STEPS):
        digits = rng.integers(0, NUM_DIGITS, size=(PROMPTS_PER_STEP, 2))
        prompts = [[BOS, *(DIGIT0 + d).tolist(), SEP] for d in digits]
        key, sample_key = jax.random.split(key)
        out = sampling.generate(model, state.params, prompts, max_new_tokens=2, temperature=1.0,
                                num_samples=SAMPLES_PER_PROMPT, rng=sample_key, prompt_buckets=(8,),
                                max_cache_length=10)
        rows = [p for p in prompts for _ in range(SAMPLES_PER_PROMPT)]  # prompt-major, as generate
        completions, sampler_logprobs = rl.unpad_samples(out.tokens, out.logprobs, out.lengths)
        reward = np.array([reward_fn(p, c) for p, c in zip(rows, completions)])
        adv = rl.advantages.trr_plus_plus(reward, [("reverse", "solve")] * len(rows), out.lengths).advantages
        if corruption == "advantage_sign":
            adv = -adv
        batch = rl.make_batch(rows, completions, sampler_logprobs, adv, length_buckets=(8,))
        if corruption == "mask_off_by_one":  # trains [SEP, first answer token] instead of the answer
            batch = batch.replace(completion_mask=np.roll(batch.completion_mask, -1, axis=1))
        state, metrics = update(state, batch)
        rewards.append(float(reward.mean()))
        sync.append(float(metrics["sampler_logp_abs_diff_max"]))
    return rewards, sync


def _inverted_log_ratio(logp, old_logp, clamp):
    return jnp.clip(old_logp - logp, -clamp, clamp)


@pytest.mark.parametrize("corruption", [None, "advantage_sign", "mask_off_by_one", "inverted_ratio"])
def test_learns_to_reverse_digits_and_controls_do_not(corruption, monkeypatch):
    if corruption == "inverted_ratio":
        monkeypatch.setattr(losses, "_log_ratio", _inverted_log_ratio)
    rewards, sync = train(corruption)
    start, end = np.mean(rewards[:3]), np.mean(rewards[-10:])
    assert start < 0.2, f"not at chance at the start: {start:.3f}"
    if corruption is None:
        assert end >= 0.9, f"did not learn: final mean reward {end:.3f}; curve {np.round(rewards[::10], 2)}"
        # Sampler and trainer agree on the old policy (same weights, positions and masks): fp32 noise only.
        assert max(sync) < 1e-4, f"sampler-vs-trainer log-prob gap {max(sync):.2e}"
    else:
        assert end < 0.6, f"{corruption} still learned: final mean reward {end:.3f}"
