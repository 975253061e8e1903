"""Temperature-exact log-probs: the trainer evaluates log_softmax(logits / T), the sampler's quantity."""

import jax
import numpy as np

from gasp_jax import models, rl, sampling

CFG = models.get_preset("tiny", max_position_embeddings=64)


def _sample_and_score(temperatures):
    """Samples prompt i at temperatures[i]; returns (sampler log-probs, trainer log-probs at the rows' T,
    trainer log-probs at T = 1), each a list of per-row arrays over the completion tokens."""
    model = models.build_model(CFG)
    params = models.init_params(model, jax.random.key(0))
    prompts = [[5, 9, 17, 3], [40, 2], [7, 7, 7, 100, 200]]
    rows = []
    for i, t in enumerate(temperatures):
        out = sampling.generate(model, params, [prompts[i]], max_new_tokens=12, temperature=t, num_samples=2,
                                rng=jax.random.key(i), prompt_buckets=(8,), max_cache_length=24)
        toks, lps = rl.unpad_samples(out.tokens, out.logprobs, out.lengths)
        rows += [(prompts[i], tk, lp, t) for tk, lp in zip(toks, lps)]
    c = rl.default_config()
    c.logprob_chunk_size = 7  # several chunks, the last one padded
    logprob_step = rl.make_logprob_step(model, c)

    def score(temps):
        batch = rl.make_batch([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                              np.zeros(len(rows)), temperature=temps, length_buckets=(32,))
        lp = np.asarray(logprob_step(params, batch))
        return [lp[i][batch.completion_mask[i]] for i in range(len(rows))], batch

    at_t, batch = score([r[3] for r in rows])
    at_one, _ = score(1.0)
    return [r[2] for r in rows], at_t, at_one, batch


def test_trainer_logprobs_match_the_sampler_at_t_not_one():
    temps = (0.6, 1.7, 1.0)  # per-row temperatures in one batch
    sampler, at_t, at_one, batch = _sample_and_score(temps)
    np.testing.assert_allclose(batch.temperature[:6], np.repeat(temps, 2).astype(np.float32))
    assert (batch.temperature[6:] == 1.0).all()  # padding rows
    gap = max(np.abs(s - t).max() for s, t in zip(sampler, at_t))
    assert gap < 2e-4, gap
    # Ignoring T (the old trainer) is visibly wrong on the T != 1 rows and exact on the T = 1 rows.
    wrong = max(np.abs(s - o).max() for s, o in zip(sampler[:4], at_one[:4]))
    assert wrong > 0.05, wrong
    assert max(np.abs(s - o).max() for s, o in zip(sampler[4:], at_one[4:])) < 2e-4


def test_update_metrics_see_no_sampler_gap_at_t_not_one():
    sampler, _, _, batch = _sample_and_score((0.6, 1.7, 1.0))
    model = models.build_model(CFG)
    params = models.init_params(model, jax.random.key(0))
    c = rl.default_config()
    c.logprob_chunk_size = 7
    state = rl.create_train_state(model, c, params=params)
    batch = batch.replace(advantages=np.linspace(-1, 1, batch.shape[0]).astype(np.float32))
    _, metrics = rl.make_update_step(model, c)(state, batch)
    assert float(metrics["sampler_logp_abs_diff_max"]) < 2e-4
    assert abs(float(metrics["ratio"]) - 1.0) < 1e-3
