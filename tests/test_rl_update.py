"""The jitted update step: exact accumulation, sharding, skip-on-non-finite, bad input, train state."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gasp_jax import models, rl, sharding
from gasp_jax.rl.logprobs import reference_token_logprobs
from gasp_jax.rl.losses import rl_loss
from gasp_jax.rl.update import accumulate_gradients

CFG = models.get_preset("tiny")


def _config(micro_batches=1, **loss):
    c = rl.default_config()
    c.optimizer.learning_rate = 1e-3
    # Adam divides by sqrt(v) + eps; with the usual 1e-8 a param whose gradient is ~1e-8 (a rarely used
    # embedding row) turns fp32 summation-order noise into a visible update difference. eps = 1e-4 keeps
    # the update a smooth function of the gradient, so comparing params compares gradients.
    c.optimizer.eps = 1e-4
    c.optimizer.weight_decay = 0.1
    c.logprob_chunk_size = 5  # several chunks, last one padded
    c.micro_batches = micro_batches
    c.loss.update(loss)
    return c


@functools.lru_cache(maxsize=None)
def _step(micro_batches=1, sharded=False):
    """(model, config, update) shared across tests, so each compiled update is built once."""
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}) if sharded else None
    model = models.build_model(CFG, mesh=mesh)
    c = _config(micro_batches)
    return model, c, rl.make_update_step(model, c, mesh)


@pytest.fixture(scope="module")
def host_params():
    model = models.build_model(CFG)
    return jax.device_get(models.init_params(model, jax.random.key(0)))


@jax.jit
def _reference_logprobs(params, tokens, attention_mask):
    return reference_token_logprobs(models.build_model(CFG), params, tokens, attention_mask=attention_mask)


def _batch(params, n=16, seed=0, noise=0.3):
    """Random prompts/completions of varied lengths; sampler log-probs = true log-probs + noise."""
    rng = np.random.default_rng(seed)
    prompts = [list(rng.integers(1, CFG.vocab_size, rng.integers(2, 6))) for _ in range(n)]
    comps = [list(rng.integers(1, CFG.vocab_size, rng.integers(1, 8))) for _ in range(n)]
    batch = rl.make_batch(prompts, comps, [np.zeros(len(c)) for c in comps], rng.normal(size=n),
                          length_buckets=(16,))
    lp, _ = _reference_logprobs(params, batch.tokens, batch.attention_mask)
    old = np.where(batch.completion_mask, np.asarray(lp) + rng.normal(scale=noise, size=lp.shape), 0).astype(np.float32)
    return batch.replace(old_logprobs=old)


def test_make_batch_layout():
    b = rl.make_batch([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], [[-0.5, -1.0], [-2.0, -3.0, -4.0]],
                      [1.5, -2.0], length_buckets=(4, 8), batch_multiple=4)
    assert b.tokens.shape == (4, 8) and b.tokens.dtype == np.int32
    np.testing.assert_array_equal(b.tokens[0], [5, 6, 7, 9, 10, 0, 0, 0])
    np.testing.assert_array_equal(b.tokens[1], [8, 11, 12, 13, 0, 0, 0, 0])
    np.testing.assert_array_equal(b.completion_mask[1], [0, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(b.attention_mask[0], [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(b.old_logprobs[0], [0, 0, 0, -0.5, -1.0, 0, 0, 0])
    np.testing.assert_array_equal(b.positions[2], np.arange(8))
    np.testing.assert_array_equal(b.advantages, [1.5, -2.0, 0, 0])
    assert not b.completion_mask[2:].any() and not b.attention_mask[2:].any()  # padding rows
    # Rewards -> TRR++ advantages -> batch in one call (token-weighted by completion length).
    b2, stats = rl.batch_from_rollouts([[5, 6, 7], [8], [9]], [[9, 10], [11, 12, 13], [1]], [[0.0] * 2, [0.0] * 3, [0.0]],
                                       [1.0, 0.0, 0.5], [("ded", "solve")] * 2 + [("ind", "propose")],
                                       rl.default_config().advantage, length_buckets=(8,), batch_multiple=4)
    expected = rl.advantages.trr_plus_plus([1.0, 0.0, 0.5], [0, 0, 1], np.array([2, 3, 1])).advantages
    np.testing.assert_allclose(b2.advantages, np.r_[expected, 0.0])
    assert stats["zero_adv_frac"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="largest bucket"):
        rl.make_batch([[1] * 9], [[2]], [[0.0]], [1.0], length_buckets=(4, 8))
    with pytest.raises(ValueError, match="non-finite advantages"):
        rl.make_batch([[1]], [[2]], [[0.0]], [float("nan")])
    with pytest.raises(ValueError, match="1 completion tokens but 2 sampler"):
        rl.make_batch([[1]], [[2]], [[0.0, 0.0]], [1.0])


# token-mean is covered end to end (k = 1 vs k = 4 params) below; the row-split property for every mode
# is in test_rl_losses.py.
@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_accumulated_gradient_equals_full_batch_gradient(host_params, agg):
    model = models.build_model(CFG)
    batch = _batch(host_params)
    batch = batch.replace(advantages=np.broadcast_to(batch.advantages[:, None], batch.tokens.shape).copy())

    c = _config(micro_batches=4, agg=agg)
    g, loss, denom, metrics = jax.jit(lambda p, b: accumulate_gradients(p, b, model=model, rl_config=c))(host_params, batch)

    # Independent full-batch reference: unchunked log-probs, one loss over all rows, plain jax.grad.
    def full_loss(p):
        lp, ent = reference_token_logprobs(model, p, batch.tokens, attention_mask=batch.attention_mask)
        s, d, _ = rl_loss(lp, ent, batch.old_logprobs, batch.advantages, batch.completion_mask, _config(agg=agg).loss)
        return s / d

    loss_ref, g_ref = jax.jit(jax.value_and_grad(full_loss))(host_params)
    np.testing.assert_allclose(float(loss), float(loss_ref), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g, g_ref)
    assert float(denom) == batch.completion_mask.any(-1).sum() * (1 if agg == "seq-mean-token-mean" else batch.tokens.shape[1])
    assert float(metrics["clip_frac"]) > 0  # the noisy sampler log-probs exercise the clip


def test_accumulation_k_micro_batches_gives_same_params(host_params):
    # Micro-batches get different token counts, so a mean of micro-batch means would differ.
    batches = [_batch(host_params, seed=s) for s in (0, 1)]
    results = []
    for k in (1, 4):
        model, c, update = _step(k)
        state = rl.create_train_state(model, c, params=jax.tree.map(jnp.array, host_params))
        for b in batches:
            state, metrics = update(state, b)
        results.append((jax.device_get(state.params), {n: float(v) for n, v in metrics.items()}))
    (p1, m1), (p4, m4) = results
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=0), p1, p4)
    for name in ("loss", "grad_norm", "clip_frac", "entropy", "approx_kl", "sampler_logp_abs_diff_mean",
                 "sampler_logp_abs_diff_max"):
        np.testing.assert_allclose(m4[name], m1[name], rtol=1e-5, err_msg=name)
    changed = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p1, host_params)
    assert min(jax.tree.leaves(changed)) > 1e-5  # every param actually moved


def test_sharded_update_equals_single_device(host_params):
    batches = [_batch(host_params, seed=s) for s in (2, 3)]
    outs = []
    for sharded in (False, True):
        model, c, update = _step(4, sharded)
        state = rl.create_train_state(model, c, params=jax.tree.map(np.array, host_params))
        for b in batches:
            state, metrics = update(state, b)
        outs.append((state, metrics))
    (s1, m1), (s8, m8) = outs
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0),
                 s1.params, s8.params)
    for name in m1:
        np.testing.assert_allclose(float(m8[name]), float(m1[name]), rtol=1e-5, atol=1e-7, err_msg=name)
    # The state stays in its logical-rule shardings; Adam moments are sharded exactly like the params.
    model, c, _ = _step(4, True)
    expected = rl.train_state_shardings(model, c)
    jax.tree.map(lambda x, sh: x.sharding.is_equivalent_to(sh, x.ndim) or pytest.fail(f"{x.sharding} != {sh}"),
                 s8, expected)
    mu = s8.opt_state[1][0].mu
    assert mu["layers"]["mlp"]["up_proj"].sharding.spec == s8.params["layers"]["mlp"]["up_proj"].sharding.spec
    assert s8.params["layers"]["mlp"]["up_proj"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    with pytest.raises(ValueError, match="data-parallel"):  # 8 rows / 4 micro-batches on 4 batch shards
        update(s8, _batch(host_params, n=8))


def test_non_finite_loss_skips_the_update(host_params):
    model, c, update = _step(1)
    state = rl.create_train_state(model, c, params=jax.tree.map(jnp.array, host_params))
    good = _batch(host_params)
    # Device arrays bypass the host value checks, as a NaN produced on device would.
    bad = jax.tree.map(jnp.asarray, good.replace(advantages=np.where(np.arange(16) == 3, np.nan, good.advantages).astype(np.float32)))
    state, metrics = update(state, bad)
    assert float(metrics["skipped"]) == 1.0 and not np.isfinite(float(metrics["loss"]))
    assert int(state.step) == 0
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), state.params, host_params)
    assert int(state.opt_state[1][0].count) == 0  # optimizer state untouched too
    state, metrics = update(state, good)
    assert float(metrics["skipped"]) == 0.0 and int(state.step) == 1


def _bad_batches(good):
    n, t = good.tokens.shape
    return {
        "int64 tokens": (good.replace(tokens=good.tokens.astype(np.int64)), "tokens must be int32"),
        "float mask": (good.replace(completion_mask=good.completion_mask.astype(np.float32)), "completion_mask must be bool"),
        "short logprobs": (good.replace(old_logprobs=good.old_logprobs[:, :-1]), r"old_logprobs must have shape"),
        "empty": (good.replace(**{f: getattr(good, f)[:0] for f in ("tokens", "positions", "attention_mask",
                  "completion_mask", "old_logprobs", "advantages", "temperature")}), "empty batch"),
        "no trained token": (good.replace(completion_mask=np.zeros_like(good.completion_mask)), "no completion token"),
        "nan advantage": (good.replace(advantages=np.full(n, np.nan, np.float32)), "non-finite advantages"),
        "indivisible": (good.replace(**{f: getattr(good, f)[:15] for f in ("tokens", "positions", "attention_mask",
                        "completion_mask", "old_logprobs", "advantages", "temperature")}), "not divisible by micro_batches"),
        "vocab": (good.replace(tokens=good.tokens + CFG.vocab_size), "outside"),
        "mask on padding": (good.replace(completion_mask=np.ones_like(good.completion_mask) & (np.arange(t) > 0)),
                            "padding"),
    }


def test_bad_input_raises_before_the_device_step(host_params):
    model, c, update = _step(4)
    state = rl.create_train_state(model, c, params=jax.tree.map(jnp.array, host_params))
    good = _batch(host_params)
    for name, (bad, match) in _bad_batches(good).items():
        with pytest.raises(ValueError, match=match):
            update(state, bad)
    kl_update = rl.make_update_step(model, _config(kl_coef=0.1))
    with pytest.raises(ValueError, match="ref_logprobs"):
        kl_update(state, good)
    # Nothing was donated or dispatched: the state is still alive and usable.
    state, metrics = update(state, good)
    assert float(metrics["skipped"]) == 0.0


def test_kl_term_and_trainer_old_logprobs(host_params):
    model = models.build_model(CFG)
    batch = _batch(host_params)
    c = _config(kl_coef=0.5, kl_estimator="k3", old_logprobs="trainer")
    state = rl.create_train_state(model, c, params=jax.tree.map(jnp.array, host_params))
    ref = np.where(batch.completion_mask, batch.old_logprobs - 0.5, 0).astype(np.float32)
    update_kl = rl.make_update_step(model, c)
    _, metrics = update_kl(state, batch.replace(ref_logprobs=ref))
    assert float(metrics["ratio"]) == pytest.approx(1.0, abs=1e-6)  # pi_old = the trainer's own log-probs
    assert float(metrics["clip_frac"]) == 0.0
    assert float(metrics["kl_ref"]) > 0.05
    np.testing.assert_allclose(float(metrics["loss"]), float(metrics["pg_loss"]) + 0.5 * float(metrics["kl_ref"]), rtol=1e-5)
    # Reference log-probs of the same weights (make_logprob_step) give KL = 0 and match the unchunked ones.
    ref_same = np.asarray(rl.make_logprob_step(model, c)(host_params, batch))
    expected, _ = _reference_logprobs(host_params, batch.tokens, batch.attention_mask)
    np.testing.assert_allclose(ref_same, np.where(batch.completion_mask, expected, 0), atol=1e-5)
    state = rl.create_train_state(model, c, params=jax.tree.map(jnp.array, host_params))
    _, metrics = update_kl(state, batch.replace(ref_logprobs=ref_same))
    assert abs(float(metrics["kl_ref"])) < 1e-6
    # With kl_coef = 0 the reference is never read: NaN reference log-probs change nothing.
    model0, c0, update0 = _step(1)
    state0 = rl.create_train_state(model0, c0, params=jax.tree.map(jnp.array, host_params))
    _, m0 = update0(state0, batch.replace(ref_logprobs=np.full_like(ref, np.nan)))
    assert float(m0["skipped"]) == 0.0 and "kl_ref" not in m0


def test_weight_decay_mask_and_schedules(host_params):
    model, c, update = _step(1)  # lr 1e-3, weight decay 0.1
    state = rl.create_train_state(model, c, params=jax.tree.map(jnp.array, host_params))
    batch = _batch(host_params)
    batch = batch.replace(advantages=np.zeros_like(batch.advantages))  # zero gradient: only decay acts
    state, metrics = update(state, batch)
    p = jax.device_get(state.params)
    shrink = 1 - 1e-3 * 0.1
    np.testing.assert_allclose(p["embedding"], host_params["embedding"] * shrink, rtol=1e-6)
    np.testing.assert_allclose(p["layers"]["attn"]["q_proj"], host_params["layers"]["attn"]["q_proj"] * shrink, rtol=1e-6)
    assert not np.array_equal(p["embedding"], host_params["embedding"])
    np.testing.assert_array_equal(p["layers"]["attn"]["q_bias"], host_params["layers"]["attn"]["q_bias"])
    np.testing.assert_array_equal(p["final_norm"]["scale"], host_params["final_norm"]["scale"])
    assert float(metrics["learning_rate"]) == pytest.approx(1e-3)
    c = _config()
    c.optimizer.update(learning_rate=0.1, schedule="warmup_cosine", warmup_steps=10, total_steps=110, final_lr_fraction=0.1)
    sched = rl.make_schedule(c.optimizer)
    np.testing.assert_allclose([float(sched(s)) for s in (0, 5, 10, 60, 110)], [0, 0.05, 0.1, 0.055, 0.01], rtol=1e-5, atol=1e-9)
    c.optimizer.total_steps = 5
    with pytest.raises(ValueError, match="total_steps"):
        rl.validate_config(c)


def test_separate_teacher_and_student_states(host_params):
    model, c, update = _step(1)
    assert list(rl.create_role_states(model, c, params=jax.tree.map(jnp.array, host_params))) == ["policy"]
    c = _config()
    c.separate_teacher_student = True
    states = rl.create_role_states(model, c, params=jax.tree.map(jnp.array, host_params))
    states["teacher"], _ = update(states["teacher"], _batch(host_params))  # donates the teacher state
    states["student"], _ = update(states["student"], _batch(host_params, seed=5))  # student buffers intact
    diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), states["teacher"].params, states["student"].params)
    assert max(jax.tree.leaves(diff)) > 0


def test_bf16_compute_with_remat_and_fp32_master_weights(host_params):
    """The GPU benchmark's configuration (bf16 activations, fp32 params and Adam, remat, k > 1) runs,
    keeps fp32 params, and its log-probs stay close to the fp32 sampler's."""
    model = models.build_model(CFG.replace(dtype="bfloat16", remat_policy="full"))
    c = _config(micro_batches=2)
    state = rl.create_train_state(model, c, params=jax.tree.map(jnp.array, host_params))
    batch = _batch(host_params, noise=0.0)  # old_logprobs = exact fp32 log-probs
    state, metrics = rl.make_update_step(model, c)(state, batch)
    assert float(metrics["skipped"]) == 0.0 and int(state.step) == 1
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
    assert 1e-4 < float(metrics["sampler_logp_abs_diff_mean"]) < 0.1  # bf16 noise, visible but small


def _rows(batch, index):
    return jax.tree.map(lambda x: np.asarray(x)[index], batch)


def test_ppo_two_mini_batches_equal_two_sequential_updates(host_params):
    model, c, _ = _step(1)
    batch = _batch(host_params, n=16, seed=4)
    ppo_config = _config()
    ppo_config.ppo_mini_batch_size = 8
    ppo = rl.make_ppo_update(model, ppo_config)
    update = ppo.update  # the plain one-step update (one compile serves both sides)
    fresh = lambda: rl.create_train_state(model, c, params=jax.tree.map(jnp.array, host_params))
    state, metrics, per_step = ppo(fresh(), batch, np.random.default_rng(7))

    steps = rl.minibatch_indices(16, 8, 1, np.random.default_rng(7))
    assert len(steps) == 2 and sorted(np.concatenate(steps).tolist()) == list(range(16))
    assert steps[0].tolist() != list(range(8))  # shuffled, not the sampler's order
    ref = fresh()
    ref_metrics = []
    for index in steps:  # the same rows, one plain single-batch update each
        ref, m = update(ref, _rows(batch, index))
        ref_metrics.append({k: float(v) for k, v in m.items()})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=0),
                 jax.device_get(state.params), jax.device_get(ref.params))
    assert int(state.step) == 2 and metrics["optimizer_steps"] == 2 and len(per_step) == 2
    for name in ("loss", "clip_frac", "grad_norm"):
        np.testing.assert_allclose([m[name] for m in per_step], [m[name] for m in ref_metrics], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(metrics[name], np.mean([m[name] for m in ref_metrics]), rtol=1e-5, atol=1e-7)
    assert metrics["num_tokens"] == sum(m["num_tokens"] for m in ref_metrics) == batch.completion_mask.sum()
    assert metrics["sampler_logp_abs_diff_max"] == ref_metrics[0]["sampler_logp_abs_diff_max"]


def test_ppo_clip_acts_from_the_second_step(host_params):
    """pi_old recomputed once (loss.old_logprobs="trainer"): the first step is on-policy (ratio 1, nothing
    clipped); the second starts from moved params, so its ratios leave the clip range."""
    model = models.build_model(CFG)
    c = _config(old_logprobs="trainer")
    c.optimizer.learning_rate = 1e-2
    c.ppo_mini_batch_size = 8
    c.ppo_epochs = 2
    ppo = rl.make_ppo_update(model, c)
    state = rl.create_train_state(model, c, params=jax.tree.map(jnp.array, host_params))
    state, metrics, per_step = ppo(state, _batch(host_params, n=16, seed=5), np.random.default_rng(0))
    clip = [m["clip_frac"] for m in per_step]
    assert len(clip) == 4 and metrics["optimizer_steps"] == 4
    assert clip[0] == 0.0 and per_step[0]["approx_kl"] < 1e-6
    assert all(x > 0 for x in clip[1:]), clip
    # Epochs draw fresh permutations from the run's generator.
    a, b, c2, d = rl.minibatch_indices(16, 8, 2, np.random.default_rng(0))
    assert sorted(np.r_[a, b].tolist()) == sorted(np.r_[c2, d].tolist()) == list(range(16))
    assert a.tolist() != c2.tolist()
    with pytest.raises(ValueError, match="ppo_mini_batch_size"):
        bad = rl.default_config()
        bad.ppo_mini_batch_size = -1
        rl.make_ppo_update(model, bad)
