"""Sampler: HF greedy parity, logprobs vs full forward, top-k/top-p statistics, stopping, num_samples,
sharding, compile reuse, bad input, and the text-level wrapper."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gasp_jax import models, sampling, sharding
from gasp_jax.sampling import buckets, core, sampler
from gasp_jax.sampling.core import SamplingMode, sample_tokens
from tests.hf_utils import make_hf_checkpoint

VOCAB = 320  # tests/hf_utils.BASE
RAGGED = [[5, 17, 250, 3], [9], [44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54], [300, 1, 7], [12, 12, 99, 7, 8, 100, 2]]


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("qwen2"))
    hf_model = make_hf_checkpoint(path, "qwen2", num_key_value_heads=2, seed=3)
    model, params = models.load_hf(path)
    return path, hf_model, model, params


@contextlib.contextmanager
def count_compiles():
    """Counts XLA backend compilations inside the block (every jit program, eager ops included)."""
    counter = {"n": 0}

    def listener(name, *_args, **_kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            counter["n"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def hf_greedy(hf_model, prompts, max_new_tokens, eos_id):
    """`transformers` greedy generation with left padding, right-padded with 0 to `max_new_tokens`."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    with torch.no_grad():
        out = hf_model.generate(
            ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=eos_id, pad_token_id=0,
        )
    new = out[:, width:].numpy()
    return np.pad(new, ((0, 0), (0, max_new_tokens - new.shape[1])))


def expected_lengths(tokens, eos_ids, max_new_tokens):
    lengths = []
    for row in tokens:
        stops = [t for t, tok in enumerate(row) if tok in eos_ids]
        lengths.append(stops[0] + 1 if stops else max_new_tokens)
    return np.asarray(lengths)


# ---------------------------------------------------------------------------------- parity with HF


@pytest.mark.parametrize("family,overrides", [
    ("qwen2", dict(num_key_value_heads=2)),
    ("llama", dict(num_key_value_heads=1, tie_word_embeddings=True)),
])
def test_greedy_matches_transformers_with_ragged_prompts_and_eos(tmp_path, family, overrides):
    hf_model = make_hf_checkpoint(str(tmp_path), family, seed=1, **overrides)
    model, params = models.load_hf(str(tmp_path))
    n = 10
    free = sampling.generate(model, params, RAGGED, max_new_tokens=n, temperature=0.0, rng=jax.random.key(0))
    np.testing.assert_array_equal(free.tokens, hf_greedy(hf_model, RAGGED, n, eos_id=None))
    assert (free.lengths == n).all()
    # A stop id taken from the middle of one row's greedy output: that row stops there, the others
    # stop wherever they emit it (or never), independently.
    eos = int(free.tokens[0, 4])
    out = sampling.generate(model, params, RAGGED, max_new_tokens=n, temperature=0.0, eos_ids=(eos,), rng=jax.random.key(0))
    ref = hf_greedy(hf_model, RAGGED, n, eos_id=eos)
    np.testing.assert_array_equal(out.tokens, ref)
    np.testing.assert_array_equal(out.lengths, expected_lengths(ref, {eos}, n))
    assert out.lengths[0] <= 5 and out.lengths.max() == n  # some row stopped early, some did not


def test_batch_of_one_matches_transformers(qwen2):
    _, hf_model, model, params = qwen2
    prompt = [[7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]]  # 17 tokens: bucket 32
    out = sampling.generate(model, params, prompt, max_new_tokens=8, temperature=0.0, rng=jax.random.key(0))
    assert out.tokens.shape == (1, 8) and out.tokens.dtype == np.int32
    assert out.logprobs.dtype == np.float32 and out.lengths.dtype == np.int32
    np.testing.assert_array_equal(out.tokens, hf_greedy(hf_model, prompt, 8, eos_id=None))


def test_model_per_layer_cache_and_unrolled_layers_match_scanned(qwen2):
    """The model hooks the sampler uses: `scan_layers=False` with a per-layer cache, vs the scanned
    stack with a stacked cache, vs a cache-free forward; prefill then one-token decode steps."""
    from gasp_jax.models.transformer import unstack_layer_params

    _, _, model, params = qwen2
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (3, 12)), jnp.int32)
    full = np.asarray(jax.jit(model.apply)({"params": params}, tokens))
    unrolled, flat = model.clone(scan_layers=False), unstack_layer_params(params, model.config.num_layers)
    np.testing.assert_allclose(np.asarray(jax.jit(unrolled.apply)({"params": flat}, tokens)), full, atol=1e-5)
    for m, p, per_layer in ((model, params, False), (unrolled, flat, True)):
        apply = jax.jit(lambda p, x, pos, c, i, m=m: m.apply({"params": p}, x, pos, cache=c, cache_index=i))
        cache = models.init_cache(m.config, 3, 16, per_layer=per_layer)
        prefill_pos = jnp.broadcast_to(jnp.arange(7, dtype=jnp.int32), (3, 7))
        logits, cache = apply(p, tokens[:, :7], prefill_pos, cache, jnp.int32(0))
        steps = [logits]
        for t in range(7, 12):
            pos = jnp.full((3, 1), t, jnp.int32)
            step, cache = apply(p, tokens[:, t : t + 1], pos, cache, jnp.int32(t))
            steps.append(step)
        np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-4)
    with pytest.raises(ValueError, match="per-layer cache"):
        unrolled.apply({"params": flat}, tokens, cache=models.init_cache(model.config, 3, 16), cache_index=0)


def test_scanned_decode_equals_unrolled_decode(qwen2):
    _, _, model, params = qwen2
    kwargs = dict(max_new_tokens=8, temperature=1.0, top_k=50, num_samples=2, rng=jax.random.key(8))
    unrolled = sampling.generate(model, params, RAGGED, **kwargs)
    scanned = sampling.generate(model, params, RAGGED, unroll_layers=False, **kwargs)
    np.testing.assert_array_equal(scanned.tokens, unrolled.tokens)
    np.testing.assert_allclose(scanned.logprobs, unrolled.logprobs, atol=1e-5)


# --------------------------------------------------------------------- logprobs vs a full forward


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 20, 0.9)])
def test_logprobs_equal_full_forward_log_softmax(qwen2, temperature, top_k, top_p):
    _, _, model, params = qwen2
    n = 8
    out = sampling.generate(
        model, params, RAGGED, max_new_tokens=n, temperature=temperature, top_k=top_k, top_p=top_p,
        num_samples=2, rng=jax.random.key(4),
    )
    forward = jax.jit(lambda t: model.apply({"params": params}, t))
    scale = temperature if temperature > 0 else 1.0
    # One causal forward over [prompt + generated], right-padded to a common width (padding after a
    # sequence cannot change the logits before it).
    width = max(len(p) for p in RAGGED) + n
    seqs = np.zeros((out.tokens.shape[0], width), np.int32)
    for row in range(out.tokens.shape[0]):
        prompt = RAGGED[row // 2]
        seqs[row, : len(prompt) + n] = prompt + list(out.tokens[row])
    all_logits = np.asarray(forward(jnp.asarray(seqs)))
    for row in range(out.tokens.shape[0]):
        prompt = RAGGED[row // 2]
        logits = all_logits[row, len(prompt) - 1 : len(prompt) - 1 + n]  # the logits predicting each new token
        ref = np.asarray(jax.nn.log_softmax(logits / scale, axis=-1))[np.arange(n), out.tokens[row]]
        np.testing.assert_allclose(out.logprobs[row], ref, atol=2e-4, rtol=0)
        if temperature == 0.0:  # the cached decode picks the full forward's argmax at every step
            np.testing.assert_array_equal(out.tokens[row], logits.argmax(-1))


# ------------------------------------------------------------------------- top-k / top-p statistics


def _truncated(logits, temperature, top_k, top_p):
    """NumPy reference: softmax(logits / T) restricted to the top-k, then to the nucleus, renormalised."""
    scaled = logits / temperature
    order = np.argsort(-scaled, kind="stable")
    keep = np.zeros_like(scaled, bool)
    keep[order[: top_k or len(scaled)]] = True
    probs = np.where(keep, np.exp(scaled - scaled.max()), 0.0)
    probs /= probs.sum()
    sorted_probs = probs[order]
    before = np.cumsum(sorted_probs) - sorted_probs
    nucleus = np.zeros_like(keep)
    nucleus[order[(before < top_p) & keep[order]]] = True
    probs = np.where(nucleus, probs, 0.0)
    return probs / probs.sum()


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.0, 4, 1.0), (1.0, 0, 0.8), (1.5, 6, 0.7)])
def test_sampled_frequencies_match_truncated_distribution(temperature, top_k, top_p):
    draws = 40_000
    logits = np.asarray([2.0, 1.5, 1.4, 0.3, 0.0, -0.5, -1.0, -3.0, 0.9, 1.0], np.float32)
    mode = SamplingMode(greedy=False, top_k=top_k, use_top_p=top_p < 1.0)
    keys = jax.random.split(jax.random.key(123), draws)
    tokens, logprobs = jax.jit(sample_tokens, static_argnums=4)(
        jnp.broadcast_to(logits, (draws, logits.size)), keys, jnp.float32(temperature), jnp.float32(top_p), mode
    )
    freq = np.bincount(np.asarray(tokens), minlength=logits.size) / draws
    expected = _truncated(logits.astype(np.float64), temperature, top_k, top_p)
    # Tolerance: 5 standard errors of a frequency at p = 0.5 (sqrt(0.25 / 40000) = 0.0025).
    np.testing.assert_allclose(freq, expected, atol=0.0125, rtol=0)
    assert (freq[expected == 0] == 0).all(), "a token outside the top-k / nucleus was sampled"
    assert (expected > 0).sum() < logits.size or (top_k == 0 and top_p == 1.0)
    full = np.log(np.exp(logits / temperature) / np.exp(logits / temperature).sum())
    np.testing.assert_allclose(np.asarray(logprobs), full[np.asarray(tokens)], atol=1e-5)


def test_inverse_cdf_draws_across_vocabulary_blocks():
    """The two-level (128-token block, then token) search: frequencies match over a vocabulary of
    several blocks and a partial last one, and zero-mass tokens and blocks are never drawn."""
    from gasp_jax.sampling.core import CDF_BLOCK, sample_from_probs

    vocab, draws = 3 * CDF_BLOCK + 37, 40_000
    probs = np.zeros(vocab, np.float32)
    support = [0, CDF_BLOCK - 1, CDF_BLOCK + 5, 3 * CDF_BLOCK, vocab - 1]  # block 2 has no mass
    probs[support] = [0.1, 0.25, 0.2, 0.05, 0.4]
    probs *= 3.0  # unnormalised input is fine
    keys = jax.random.split(jax.random.key(7), draws)
    tokens = np.asarray(jax.jit(sample_from_probs)(keys, jnp.broadcast_to(jnp.asarray(probs), (draws, vocab))))
    freq = np.bincount(tokens, minlength=vocab) / draws
    assert set(np.flatnonzero(freq)) <= set(support), "a zero-mass token was drawn"
    np.testing.assert_allclose(freq[support], probs[support] / probs.sum(), atol=0.0125, rtol=0)


def test_greedy_takes_the_first_of_tied_maxima_and_its_log_prob():
    logits = np.asarray([[0.0, 3.0, 1.0, 3.0], [5.0, 5.0, 5.0, 5.0], [-1.0, -2.0, -3.0, -0.5]], np.float32)
    mode = SamplingMode(greedy=True, top_k=0, use_top_p=False)
    tokens, logprobs = jax.jit(sample_tokens, static_argnums=4)(
        jnp.asarray(logits), jax.random.split(jax.random.key(0), 3), jnp.float32(0.0), jnp.float32(1.0), mode)
    assert np.asarray(tokens).tolist() == [1, 0, 3]
    full = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))
    np.testing.assert_allclose(np.asarray(logprobs), full[np.arange(3), [1, 0, 3]], atol=1e-6)


def test_nucleus_threshold_is_exact_on_random_and_tied_rows():
    from gasp_jax.sampling.core import nucleus_threshold

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 300)).astype(np.float32) * rng.uniform(0.1, 4.0, size=(64, 1)).astype(np.float32)
    logits[:8, :40] = 1.5  # rows with a block of exactly tied tokens
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
    for top_p in (0.05, 0.5, 0.9, 0.999):
        threshold = np.asarray(jax.jit(nucleus_threshold)(jnp.asarray(probs), jnp.float32(top_p)))
        for row, c in zip(probs, threshold):
            kept = row >= c
            assert c in row  # the threshold is one of the row's probabilities
            assert row[kept].sum(dtype=np.float32) >= np.float32(top_p) * (1 - 1e-6)
            # Minimal: dropping every token tied with the least likely kept one leaves too little mass.
            assert row[row > c].sum(dtype=np.float32) < top_p


def test_top_k_one_and_tiny_top_p_equal_greedy(qwen2):
    _, _, model, params = qwen2
    kwargs = dict(max_new_tokens=8, rng=jax.random.key(9))
    greedy = sampling.generate(model, params, RAGGED, temperature=0.0, **kwargs)
    top1 = sampling.generate(model, params, RAGGED, temperature=1.0, top_k=1, **kwargs)
    nucleus = sampling.generate(model, params, RAGGED, temperature=0.8, top_p=1e-6, **kwargs)
    np.testing.assert_array_equal(top1.tokens, greedy.tokens)
    np.testing.assert_array_equal(nucleus.tokens, greedy.tokens)
    # Same temperature (1) as greedy's logprob convention: identical logprobs too.
    np.testing.assert_allclose(top1.logprobs, greedy.logprobs, atol=1e-6)


# ---------------------------------------------------------------------------- stopping and samples


def test_eos_stops_rows_independently_without_changing_earlier_draws(qwen2):
    _, _, model, params = qwen2
    n, eos = 8, tuple(range(3, 83))  # 80 of 320 ids: most rows stop, at different steps
    kwargs = dict(max_new_tokens=n, temperature=1.0, num_samples=2, rng=jax.random.key(2))
    free = sampling.generate(model, params, RAGGED, **kwargs)
    out = sampling.generate(model, params, RAGGED, eos_ids=eos, **kwargs)
    np.testing.assert_array_equal(out.lengths, expected_lengths(free.tokens, set(eos), n))
    assert len(set(out.lengths.tolist())) >= 4, "rows should stop at different steps"
    for row, length in enumerate(out.lengths):
        np.testing.assert_array_equal(out.tokens[row, :length], free.tokens[row, :length])
        np.testing.assert_array_equal(out.logprobs[row, :length], free.logprobs[row, :length])
        assert (out.tokens[row, length:] == sampling.PAD_ID).all() and (out.logprobs[row, length:] == 0).all()


def test_decode_loop_exits_when_every_row_is_done(qwen2):
    """When every token is a stop token all rows finish with their first token, so the while loop runs
    no decode step (its step count says so) instead of its 127 remaining ones; the programs are driven
    through their builders, as an ahead-of-time compile would."""
    _, _, model, params = qwen2
    arrays = [np.asarray(p, np.int32) for p in RAGGED]
    plan = sampler._plan(model, arrays, max_new_tokens=128, temperature=1.0, top_k=0, top_p=1.0, prompt_buckets=None,
                         max_cache_length=None)
    tokens, pad_lens, prompt_lens, live = sampler._left_pad(arrays, plan)
    decode_model, decode_params = core.decode_model(model), core.unstack_program(model)(params)
    prompt_cache, last_logits = core.prefill_program(decode_model)(decode_params, tokens, pad_lens)
    decode = sampler.decode_program(decode_model, num_samples=1, max_new_tokens=128, mode=plan.mode)
    rows = np.arange(plan.padded_prompts, dtype=np.int32)
    run = lambda stop_ids: decode(decode_params, prompt_cache, last_logits, pad_lens, prompt_lens, live, rows,
                                  np.full_like(rows, 128), jax.random.key(0), np.float32(1.0), np.float32(1.0),
                                  core.padded_stop_ids(stop_ids))
    out_tokens, _, lengths, steps = run(tuple(range(VOCAB)))
    assert int(steps) == 1 and (np.asarray(lengths)[live] == 1).all()
    assert (np.asarray(out_tokens)[:, 1:] == sampling.PAD_ID).all()
    *_, lengths, steps = run(())
    assert int(steps) == 128 and (np.asarray(lengths)[live] == 128).all()


def test_num_samples_rows_and_keys(qwen2):
    _, _, model, params = qwen2
    kwargs = dict(max_new_tokens=8, temperature=1.0, rng=jax.random.key(5))
    one = sampling.generate(model, params, RAGGED, **kwargs)
    many = sampling.generate(model, params, RAGGED, num_samples=2, **kwargs)
    assert many.tokens.shape == (len(RAGGED) * 2, 8)
    # Row (prompt i, sample j) uses key fold_in(fold_in(rng, i), j): sample 0 is the num_samples=1 draw.
    np.testing.assert_array_equal(many.tokens[0::2], one.tokens)
    np.testing.assert_allclose(many.logprobs[0::2], one.logprobs, atol=1e-5)
    for i in range(len(RAGGED)):  # the other sample is a different draw from the same prompt
        assert not np.array_equal(many.tokens[2 * i + 1], many.tokens[2 * i])
    again = sampling.generate(model, params, RAGGED, num_samples=2, **kwargs)
    np.testing.assert_array_equal(again.tokens, many.tokens)
    other = sampling.generate(model, params, RAGGED, num_samples=2, **{**kwargs, "rng": jax.random.key(6)})
    assert not np.array_equal(other.tokens, many.tokens)
    # A prompt's draws do not depend on the batch it is in, only on its index (batch buckets 6 vs 1).
    alone = sampling.generate(model, params, RAGGED[:1], num_samples=2, **kwargs)
    np.testing.assert_array_equal(alone.tokens, many.tokens[:2])


# ----------------------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("mesh_shape", [{"fsdp": 4, "tensor": 2}, {"data": 2, "fsdp": 2, "tensor": 2}])
def test_sharded_sampler_matches_single_device(qwen2, mesh_shape):
    path, _, model, params = qwen2
    mesh = sharding.make_mesh(mesh_shape)
    smodel, sparams = models.load_hf(path, mesh=mesh)
    greedy = None
    for kwargs in (dict(temperature=0.0), dict(temperature=1.0, top_p=0.9, num_samples=2)):
        ref = sampling.generate(model, params, RAGGED, max_new_tokens=8, rng=jax.random.key(1), **kwargs)
        out = sampling.generate(smodel, sparams, RAGGED, max_new_tokens=8, rng=jax.random.key(1), **kwargs)
        np.testing.assert_array_equal(out.tokens, ref.tokens)
        np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-4)
        greedy = ref if greedy is None else greedy
    # `mesh=` on an unsharded model: the model is rebound to the mesh and the params placed on it.
    out = sampling.generate(model, params, RAGGED, max_new_tokens=8, temperature=0.0, rng=jax.random.key(1), mesh=mesh)
    np.testing.assert_array_equal(out.tokens, greedy.tokens)


def test_batch_bucket_divides_over_batch_shards():
    assert [buckets.batch_bucket(n) for n in (1, 2, 3, 4, 5, 7, 9, 13, 17, 25)] == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
    assert [buckets.batch_bucket(n, 4) for n in (1, 5, 9, 13)] == [4, 8, 12, 16]
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert sampling.core.batch_shards(mesh, sharding.DEFAULT_RULES) == 4


def test_prompt_buckets():
    assert buckets.default_prompt_buckets(100) == (16, 32, 64, 100)
    assert buckets.fine_prompt_buckets(100) == (16, 24, 32, 48, 64, 96, 100)
    assert buckets.fine_prompt_buckets(40) == (16, 24, 32, 40) and buckets.fine_prompt_buckets(8) == (8,)
    assert buckets.effective_prompt_buckets((16, 64, 256), 100) == (16, 64, 100)
    assert buckets.pick_bucket(17, (16, 32, 64)) == 32 and buckets.pick_bucket(16, (16, 32)) == 16


# ------------------------------------------------------------------------------------ compilation


def test_no_recompilation_inside_a_bucket_or_for_new_weights(qwen2):
    _, _, model, params = qwen2
    kwargs = dict(max_new_tokens=6, temperature=0.9, top_p=0.95, eos_ids=(2,), num_samples=2)
    sampling.generate(model, params, [[1, 2, 3], [4] * 9], rng=jax.random.key(0), **kwargs)  # bucket 16, batch 2
    programs = sampling.compiled_program_count()
    new_params = jax.tree.map(lambda x: x * 1.01, params)
    with count_compiles() as compiles:
        sampling.generate(model, params, [[5] * 16, [6, 7]], rng=jax.random.key(1), **kwargs)
        sampling.generate(model, new_params, [[8] * 11, [9] * 13], rng=jax.random.key(2), **{**kwargs, "temperature": 0.5, "top_p": 0.8})
        sampling.generate(model, params, [[1, 2], [3]], rng=jax.random.key(3), **{**kwargs, "eos_ids": (2, 3, 4)})
    assert compiles["n"] == 0
    assert sampling.compiled_program_count() == programs
    with count_compiles() as compiles:  # a longer prompt (bucket 32) is a new prefill and decode program
        sampling.generate(model, params, [[1] * 17, [2]], rng=jax.random.key(0), **kwargs)
    assert compiles["n"] >= 2 and sampling.compiled_program_count() == programs + 2


# -------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("change,match", [
    (dict(prompts=[]), "prompts is empty"),
    (dict(prompts=[[1, 2], []]), "prompt 1 is empty"),
    (dict(prompts="hello"), "list of token-id lists"),
    (dict(prompts=[[1, VOCAB]]), "outside"),
    (dict(prompts=[[1] * 40], prompt_buckets=(16, 32)), "longer than the largest prompt bucket"),
    (dict(max_new_tokens=512), "does not fit the cache"),
    (dict(prompts=[[1] * 300], max_new_tokens=300), "exceeds the cache"),
    (dict(max_cache_length=64, max_new_tokens=60, prompts=[[1] * 10]), "exceeds the cache"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(temperature=-0.1), "temperature"),
    (dict(top_k=-1), "top_k"),
    (dict(num_samples=0), "num_samples"),
    (dict(eos_ids=(VOCAB,)), "eos_ids"),
    (dict(rng=0), "rng"),
])
def test_bad_input_raises_before_compiling(qwen2, change, match):
    _, _, model, params = qwen2  # max_position_embeddings = 512
    kwargs = dict(prompts=[[1, 2, 3]], max_new_tokens=4, rng=jax.random.key(0))
    kwargs.update(change)
    prompts = kwargs.pop("prompts")
    with count_compiles() as compiles, pytest.raises(ValueError, match=match):
        sampling.generate(model, params, prompts, **kwargs)
    assert compiles["n"] == 0


# ------------------------------------------------------------------------------------------ text


def _word_tokenizer():
    """A WordLevel tokenizer over 'w0'..'w299' plus specials and role words (ids < VOCAB)."""
    import tokenizers
    import transformers

    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2, "system": 3, "user": 4, "assistant": 5}
    vocab.update({f"w{i}": 6 + i for i in range(VOCAB - 6)})
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    hf_tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant{% endif %}"
    )
    return hf_tok


def test_generate_text_round_trip_and_chat_template(qwen2):
    _, _, model, params = qwen2
    tok = _word_tokenizer()
    prompts = ["w1 w2 w3", "w40 w41"]
    kwargs = dict(max_new_tokens=7, temperature=1.0, rng=jax.random.key(3))
    texts = sampling.generate_text(model, params, tok, prompts, num_samples=2, **kwargs)
    ids = [tok.encode(p, add_special_tokens=False) for p in prompts]
    assert ids[0] == [7, 8, 9]
    out = sampling.generate(model, params, ids, num_samples=2, eos_ids=(2,), **kwargs)
    assert len(texts) == 2 and all(len(t) == 2 for t in texts)
    for row in range(4):
        toks = [int(t) for t in out.tokens[row, : out.lengths[row]] if t != 2]
        assert texts[row // 2][row % 2] == tok.decode(toks, skip_special_tokens=True)
    chat_ids = sampling.encode_prompts(tok, prompts, chat_template=True, system_prompt="w9")
    assert chat_ids[0] == [3, 15, 4, 7, 8, 9, 5]
    chat = sampling.generate_text(model, params, tok, prompts, chat_template=True, system_prompt="w9", **kwargs)
    ref = sampling.generate(model, params, chat_ids, eos_ids=(2,), **kwargs)
    assert chat[1][0] == tok.decode([int(t) for t in ref.tokens[1, : ref.lengths[1]] if t != 2])
    with pytest.raises(ValueError, match="single string"):
        sampling.generate_text(model, params, tok, "w1", **kwargs)
