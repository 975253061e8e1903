"""Continuous-batching engine: same results as the static sampler (greedy tokens, sampled draws, log-probs),
num_samples sharing one prefill, stop ids mid-chunk, per-request settings, sharding, compile reuse, bad input,
and the model's per-row cache index it relies on."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gasp_jax import models, sampling, sharding
from gasp_jax.kernels import cpu_gemm, cpu_layer
from gasp_jax.models.transformer import pack_decode_params, unstack_layer_params
from gasp_jax.sampling import buckets as bk, core, engine
from tests.test_sampling import count_compiles

VOCAB = 320
RAGGED = [[5, 17, 250, 3], [9], [44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54], [300, 1, 7], [12, 12, 99, 7, 8, 100, 2]]
LIMITS = [12, 3, 20, 1, 7]  # ragged limits: a row of 1 token (first token only), rows spanning many chunks


def _config():
    return models.ModelConfig(
        model_type="qwen2", vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=12, qkv_bias=True, tie_word_embeddings=False, max_position_embeddings=512,
    )


@pytest.fixture(scope="module")
def tiny():
    model = models.build_model(_config())
    # Scaled-up random weights: peaked next-token distributions, so greedy picks have clear margins.
    params = jax.tree.map(lambda x: x * 4.0, models.init_params(model, jax.random.key(3)))
    return model, params


def _assert_same(out, ref, atol=1e-5):
    np.testing.assert_array_equal(out.lengths, ref.lengths)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=atol, rtol=0)


# ------------------------------------------------------------------------------- model: per-row index


def test_model_per_row_cache_index_equals_separate_rows(tiny):
    """Rows at different cache depths in one call equal each row decoded on its own (scalar index)."""
    model, params = tiny
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (3, 10)), jnp.int32)
    apply = jax.jit(lambda p, x, pos, c, i: model.apply({"params": p}, x, pos, cache=c, cache_index=i))
    depths = [3, 7, 5]  # row r has its first depths[r] tokens cached
    single = []
    for r, d in enumerate(depths):
        cache = models.init_cache(model.config, 1, 16)
        _, cache = apply(params, tokens[r : r + 1, :d], jnp.arange(d, dtype=jnp.int32)[None], cache, jnp.int32(0))
        logits, _ = apply(params, tokens[r : r + 1, d : d + 1], jnp.full((1, 1), d, jnp.int32), cache, jnp.int32(d))
        single.append(np.asarray(logits[0, 0]))
    # Batched: prefill each row's prefix at slot 0 (the longest prefix bounds the block; the extra
    # slots of shorter rows are overwritten by their next token or lie beyond it, so causality hides them).
    cache = models.init_cache(model.config, 3, 16)
    _, cache = apply(params, tokens[:, :7], jnp.broadcast_to(jnp.arange(7, dtype=jnp.int32), (3, 7)), cache, jnp.int32(0))
    index = jnp.asarray(depths, jnp.int32)
    step = jnp.take_along_axis(tokens, index[:, None], axis=1)
    logits, _ = apply(params, step, index[:, None], cache, index)
    np.testing.assert_allclose(np.asarray(logits[:, 0]), np.stack(single), atol=1e-4)
    # Each row writes its key at its own slot and nowhere else (seen on an empty cache).
    _, written = apply(params, step, index[:, None], models.init_cache(model.config, 3, 16), index)
    written = np.asarray(written.k != 0).any(axis=(0, 2, 4))  # [B, S]
    assert [np.flatnonzero(w).tolist() for w in written] == [[3], [7], [5]]


# ------------------------------------------------------------------------------ equality with static


def test_greedy_equals_static_on_ragged_requests_with_stop_ids_mid_chunk(tiny):
    model, params = tiny
    kwargs = dict(max_new_tokens=LIMITS, temperature=0.0, rng=jax.random.key(0))
    free = sampling.generate(model, params, RAGGED, **kwargs)
    assert free.tokens.shape == (5, 20) and free.lengths.tolist() == LIMITS  # no stop ids: every row to its limit
    # 2 slots and 4-step chunks: rows finish at different steps, slots are refilled several times.
    out = sampling.generate(model, params, RAGGED, engine="continuous", max_slots=2, chunk_steps=4, **kwargs)
    _assert_same(out, free)
    # A stop id taken from row 2's greedy output at step 9 (inside a chunk): row 2 stops there, after the
    # stop token; later columns are PAD_ID / 0; other rows stop wherever they emit it, or at their limit.
    eos = int(free.tokens[2, 9])
    ref = sampling.generate(model, params, RAGGED, eos_ids=(eos,), **kwargs)
    out = sampling.generate(model, params, RAGGED, eos_ids=(eos,), engine="continuous", max_slots=2, chunk_steps=4,
                            **kwargs)
    _assert_same(out, ref)
    first = int(np.flatnonzero(free.tokens[2] == eos)[0])
    assert out.lengths[2] == first + 1 <= 10 and first % 4 != 3  # stopped mid-chunk
    assert (out.tokens[2, first + 1 :] == sampling.PAD_ID).all() and (out.logprobs[2, first + 1 :] == 0).all()
    assert out.lengths[4] == 7 or eos in out.tokens[4].tolist()


def test_sampled_rows_equal_static_and_num_samples_share_one_prefill(tiny):
    """Same RNG streams as the static sampler: every sampled row equals it, whatever the admission
    order (which changes the order rows finish in and the slots they land in)."""
    model, params = tiny
    kwargs = dict(max_new_tokens=LIMITS, temperature=1.0, top_p=0.9, num_samples=3, eos_ids=tuple(range(3, 40)),
                  rng=jax.random.key(7))
    ref = sampling.generate(model, params, RAGGED, **kwargs)
    assert len(set(ref.lengths.tolist())) >= 4  # rows stop at many different steps
    requests = [engine.Request(prompt=p, max_new_tokens=n, num_samples=3, temperature=1.0, top_p=0.9,
                               eos_ids=tuple(range(3, 40))) for p, n in zip(RAGGED, LIMITS)]
    for longest_first in (True, False):  # different admission orders: rows finish in a different order
        out, stats = engine.run_requests(model, params, requests, rng=jax.random.key(7), max_slots=4, chunk_steps=4,
                                         longest_first=longest_first)
        # Float rounding: the engine pads prompts to its own buckets and samples a row's first token in a
        # decode step, the static sampler in its prefill.
        _assert_same(out, ref, atol=3e-5)
        assert stats.slots == 4 and stats.prefilled_prompts == len(RAGGED)  # one prefill per prompt, 3 rows
        assert stats.tokens == int(ref.lengths.sum())
    # The three samples of a prompt are different draws.
    assert all(len({tuple(ref.tokens[3 * i + j]) for j in range(3)}) > 1 for i in (0, 2))


def test_per_request_settings_and_log_probs_equal_a_forward_pass(tiny):
    """Greedy, T=0.7 and T=1.3 with top-k in one call: each row equals the static sampler with its own
    settings, and its log-probs are log_softmax(logits / T) of a full forward at the sampled tokens."""
    model, params = tiny
    settings = [dict(temperature=0.0), dict(temperature=0.7), dict(temperature=1.3, top_k=20)]
    requests = [engine.Request(prompt=RAGGED[i], max_new_tokens=LIMITS[i] + 2, num_samples=2, **settings[i % 3])
                for i in range(len(RAGGED))]
    out, _ = engine.run_requests(model, params, requests, rng=jax.random.key(4), max_slots=4, chunk_steps=4)
    forward = jax.jit(lambda t: model.apply({"params": params}, t))
    for i, req in enumerate(requests):
        rows = slice(2 * i, 2 * i + 2)
        n = req.max_new_tokens
        seqs = np.asarray([list(req.prompt) + list(out.tokens[r, :n]) for r in range(rows.start, rows.stop)], np.int32)
        logits = np.asarray(forward(jnp.asarray(seqs)))[:, len(req.prompt) - 1 : len(req.prompt) - 1 + n]
        t = req.temperature or 1.0
        ref = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits / t, axis=-1)), out.tokens[rows, :n, None], -1)
        np.testing.assert_allclose(out.logprobs[rows, :n], ref[..., 0], atol=2e-4, rtol=0)
        if req.temperature == 0.0:
            np.testing.assert_array_equal(out.tokens[rows, :n], logits.argmax(-1))
    # The top-k rows (requests 2, picked per slot among three variants) equal the static sampler run
    # with their settings: same draws (request index k = prompt index).
    ref = sampling.generate(model, params, RAGGED, max_new_tokens=[n + 2 for n in LIMITS], num_samples=2,
                            rng=jax.random.key(4), **settings[2])
    np.testing.assert_array_equal(out.tokens[4:6], ref.tokens[4:6])
    np.testing.assert_allclose(out.logprobs[4:6], ref.logprobs[4:6], atol=1e-5)


@pytest.mark.parametrize("mesh_shape", [{"fsdp": 4, "tensor": 2}])
def test_sharded_engine_equals_single_device(tiny, mesh_shape):
    model, params = tiny
    mesh = sharding.make_mesh(mesh_shape)
    common = dict(max_new_tokens=LIMITS, rng=jax.random.key(1), engine="continuous", chunk_steps=4, max_slots=4,
                  temperature=1.0, num_samples=2)
    ref = sampling.generate(model, params, RAGGED, **common)
    out = sampling.generate(model, params, RAGGED, mesh=mesh, **common)
    _assert_same(out, ref, atol=1e-4)


# ----------------------------------------------------------------------- packed CPU projections

needs_kernel = pytest.mark.skipif(not cpu_gemm.available(), reason="no packed CPU GEMM here (see its log line)")


@needs_kernel
@pytest.mark.parametrize("tied", [False, True])
def test_packed_decode_model_equals_the_unrolled_one(tied):
    """`pack_decode_params` + `packed_weights=True` (each layer one `cpu_layer` call, the LM head packed from
    the embedding when tied): the same logits and KV cache as the unrolled model, prefill and a decode step."""
    cfg = _config().replace(tie_word_embeddings=tied)
    model = models.build_model(cfg)
    params = unstack_layer_params(models.init_params(model, jax.random.key(5)), cfg.num_layers)
    unrolled, packed = core.decode_model(model), core.decode_model(model, packed=True)
    packed_params = pack_decode_params(params, cfg)
    assert "lm_head_packed" in packed_params and "lm_head" not in packed_params
    assert set(packed_params["layers_0"]) == set(cpu_layer.LayerWeights._fields)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, VOCAB, (3, 7)), jnp.int32)
    step = jnp.asarray([[4], [9], [300]], jnp.int32)

    def run(m, p):
        apply = jax.jit(lambda p, x, pos, c, i: m.apply({"params": p}, x, pos, cache=c, cache_index=i))
        cache = models.init_cache(cfg, 3, 16, per_layer=True)
        first, cache = apply(p, tokens, None, cache, jnp.int32(0))
        second, cache = apply(p, step, jnp.full((3, 1), 7, jnp.int32), cache, jnp.int32(7))
        return first, second, cache

    for got, want in zip(jax.tree.leaves(run(packed, packed_params)), jax.tree.leaves(run(unrolled, params))):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=1e-5)


@needs_kernel
def test_engine_with_cpu_kernels_gives_the_same_rows(tiny):
    """The packed projections change no token and log-probs only by float rounding; both engines use them."""
    model, params = tiny
    requests = [engine.Request(prompt=p, max_new_tokens=n, temperature=0.0) for p, n in zip(RAGGED, LIMITS)]
    on, _ = engine.run_requests(model, params, requests, rng=jax.random.key(0), max_slots=2, chunk_steps=4,
                                cpu_kernels=True)
    off, _ = engine.run_requests(model, params, requests, rng=jax.random.key(0), max_slots=2, chunk_steps=4,
                                 cpu_kernels=False)
    _assert_same(on, off, atol=1e-4)


def test_cpu_kernels_apply_to_fp32_on_one_cpu_device(tiny, monkeypatch):
    model, _ = tiny
    assert core.use_cpu_kernels(model) == cpu_gemm.available()
    assert not core.use_cpu_kernels(model, False)
    bf16 = model.clone(config=model.config.replace(dtype="bfloat16", param_dtype="bfloat16"))
    assert not core.use_cpu_kernels(bf16)
    with pytest.raises(ValueError, match="not fp32"):
        core.use_cpu_kernels(bf16, True)
    sharded = model.clone(mesh=sharding.make_mesh({"fsdp": 2}, devices=jax.devices()[:2]))
    assert not core.use_cpu_kernels(sharded)
    with pytest.raises(ValueError, match="not one CPU device"):
        core.use_cpu_kernels(sharded, True)
    monkeypatch.setattr(cpu_gemm, "available", lambda: False)
    assert not core.use_cpu_kernels(model)
    with pytest.raises(ValueError, match="kernel is not built"):
        core.use_cpu_kernels(model, True)


@needs_kernel
def test_decode_params_packs_the_same_params_once(tiny):
    """The packed copy is reused for the very same params arrays, made anew for other arrays (with their
    values), and the unpacked split (device memory on an accelerator) is never kept."""
    model, params = tiny
    packed = core.decode_params(model, params, True)
    assert core.decode_params(model, params, True) is packed
    doubled = jax.tree.map(lambda x: x * 2, params)
    repacked = core.decode_params(model, doubled, True)
    assert repacked is not packed
    np.testing.assert_allclose(repacked["lm_head_packed"], 2 * np.asarray(packed["lm_head_packed"]), rtol=1e-6)
    assert core.decode_params(model, doubled, True) is repacked
    assert core.decode_params(model, params, False) is not core.decode_params(model, params, False)


# ------------------------------------------------------------------------------------ compilation


def test_no_recompilation_within_buckets(tiny):
    """New prompts (same bucket), limits (same cache bucket), weights, temperature, top-p and stop ids
    reuse every program; the refill pattern is the same (every row finishes inside its first chunk)."""
    model, params = tiny
    rng = np.random.default_rng(0)

    def call(params, lengths, limits, temperature, top_p, eos, key):
        prompts = [rng.integers(3, VOCAB, n).tolist() for n in lengths]
        return sampling.generate(model, params, prompts, max_new_tokens=limits, temperature=temperature, top_p=top_p,
                                 eos_ids=eos, num_samples=2, rng=jax.random.key(key), engine="continuous",
                                 max_slots=4, chunk_steps=4)

    call(params, [3, 9, 16, 1], [5, 2, 4, 3], 0.9, 0.95, (2,), 0)
    programs = sampling.compiled_program_count()
    with count_compiles() as compiles:
        call(jax.tree.map(lambda x: x * 1.01, params), [12, 2, 7, 16], [3, 5, 5, 2], 0.5, 0.8, (2, 3, 4), 1)
        call(params, [1, 1, 15, 4], [4, 4, 4, 4], 1.3, 0.99, (), 2)
    assert compiles["n"] == 0
    assert sampling.compiled_program_count() == programs


def _ragged_requests(seed: int, num: int = 24):
    """Prompts over the 16 / 32 / 64 buckets and ragged limits; the first request fixes the cache bucket."""
    r = np.random.default_rng(seed)
    lengths = [60] + r.integers(1, 61, num - 1).tolist()
    limits = [24] + r.integers(1, 25, num - 1).tolist()
    return [engine.Request(prompt=r.integers(3, VOCAB, n).tolist(), max_new_tokens=int(m), temperature=0.0)
            for n, m in zip(lengths, limits)]


def test_ragged_call_compiles_a_bounded_set_of_programs(tiny):
    """8 slots admit in batches of 4 and 1 prompts: every ragged call over prompt buckets 16/24/32/48/64
    draws from at most 2 sizes x 5 buckets admit programs plus decode, state init and layer split (the
    old batch buckets 1, 2, 3, 4, 6, 8 gave a prefill and an insert program each); a repeated call with
    new weights compiles none."""
    model, params = tiny
    sampling.clear_program_cache()
    assert engine.admit_sizes(8) == (4, 1) and engine.admit_sizes(16) == (16, 4, 1)
    assert engine.admit_sizes(8, shards=4) == (4,)
    call = lambda p, seed: engine.run_requests(model, p, _ragged_requests(seed), rng=jax.random.key(seed),
                                               max_slots=8, chunk_steps=4)
    out, stats = call(params, 0)
    assert 4 <= stats.programs_compiled == sampling.compiled_program_count()
    windows = engine.attention_windows(stats.cache_len, 4)
    assert windows == (24, 48, 96) and stats.cache_len == 96
    _, other = call(params, 1)  # other lengths and limits: at most the admit shapes the first call missed
    assert bk.fine_prompt_buckets(64) == (16, 24, 32, 48, 64)  # the buckets of prompts up to 60 tokens
    assert stats.programs_compiled + other.programs_compiled <= 2 * 5 + len(windows) + 2
    with count_compiles() as compiles:
        _, again = call(jax.tree.map(lambda x: x * 1.01, params), 0)
    assert again.programs_compiled == 0 and compiles["n"] == 0
    ref = sampling.generate(model, params, [r.prompt for r in _ragged_requests(0)],
                            max_new_tokens=[r.max_new_tokens for r in _ragged_requests(0)], temperature=0.0,
                            rng=jax.random.key(0))
    _assert_same(out, ref, atol=3e-5)  # 24 rows over 96 cache slots vs 87: float rounding of the reductions


def test_decode_chunks_attend_over_the_smallest_window_that_holds_their_writes(tiny):
    """Early chunks (every slot near its prompt) run a window of a quarter or half the slot cache, later
    ones the whole cache; every step runs in some window and the tokens and log-probs are the static
    sampler's (attention over the window is attention over the whole cache: the rest is masked)."""
    model, params = tiny
    prompts = [[7] * 14, [9, 4], [3] * 12, [11] * 5]
    limits = [70, 6, 40, 3]
    requests = [engine.Request(prompt=p, max_new_tokens=n, temperature=0.0) for p, n in zip(prompts, limits)]
    out, stats = engine.run_requests(model, params, requests, rng=jax.random.key(0), max_slots=2, chunk_steps=4,
                                     cpu_kernels=False)  # XLA's attention: the windows are for it
    assert stats.cache_len == 96  # prompt bucket 16 + 70 - 1 = 85 slots
    assert set(stats.window_steps) == {24, 48, 96}
    assert sum(stats.window_steps.values()) == stats.decode_steps
    ref = sampling.generate(model, params, prompts, max_new_tokens=limits, temperature=0.0, rng=jax.random.key(0))
    _assert_same(out, ref, atol=3e-5)
    if core.use_cpu_kernels(model):  # the kernel reads only valid slots: one window, the whole cache
        packed, packed_stats = engine.run_requests(model, params, requests, rng=jax.random.key(0), max_slots=2,
                                                   chunk_steps=4)
        assert set(packed_stats.window_steps) == {96}
        _assert_same(packed, ref, atol=3e-5)
    assert engine.pick_window((24, 48, 96), 25) == 48 and engine.pick_window((24, 48, 96), 200) == 96
    assert engine.attention_windows(24, 4) == (24,) and engine.attention_windows(512, 16) == (128, 256, 512)


def test_unrolled_prefill_equals_the_scanned_one(tiny):
    """The engine's admits prefill with the unrolled model over the split layers (no per-layer weight
    slices): a per-layer prompt cache and last-slot logits equal to the scanned prefill's."""
    model, params = tiny
    tokens = np.array([[0, 0, 5, 17, 250, 3], [9, 44, 45, 46, 47, 48]], np.int32)
    pad_lens = np.array([2, 0], np.int32)
    cache, logits = core.prefill(params, tokens, pad_lens, model=model)
    unrolled = model.clone(scan_layers=False)
    cache_u, logits_u = core.prefill(unstack_layer_params(params, model.config.num_layers), tokens, pad_lens,
                                     model=unrolled)
    assert isinstance(cache_u.k, tuple) and len(cache_u.k) == model.config.num_layers
    np.testing.assert_allclose(logits_u, logits, atol=1e-5, rtol=0)
    for i in range(model.config.num_layers):
        np.testing.assert_allclose(cache_u.k[i], cache.k[i], atol=1e-5, rtol=0)
        np.testing.assert_allclose(cache_u.v[i], cache.v[i], atol=1e-5, rtol=0)


def test_finished_slots_refill_before_the_chunk_ends(tiny):
    """With long chunks, a chunk ends as soon as a slot frees while requests wait: the same tokens as the
    static sampler, and fewer idle slot-steps than when every chunk runs to its end."""
    model, params = tiny
    requests = [engine.Request(prompt=p, max_new_tokens=n, temperature=0.0) for p, n in zip(RAGGED, LIMITS)]
    ref = sampling.generate(model, params, RAGGED, max_new_tokens=LIMITS, temperature=0.0, rng=jax.random.key(0))
    early, early_stats = engine.run_requests(model, params, requests, rng=jax.random.key(0), max_slots=2,
                                             chunk_steps=32)
    late, late_stats = engine.run_requests(model, params, requests, rng=jax.random.key(0), max_slots=2,
                                           chunk_steps=32, refill_slots=3)  # never reached with 2 slots
    _assert_same(early, ref)
    _assert_same(late, ref)
    assert early_stats.chunks > late_stats.chunks
    assert early_stats.slot_utilisation > late_stats.slot_utilisation


# ------------------------------------------------------------------------------------------ benchmark


def test_peer_benchmark_skips_vllm_cleanly_when_absent(monkeypatch, capsys):
    """`--peers vllm` without a vLLM Python prints one skip line and still runs and compares our engines."""
    from gasp_jax.benchmarks import sampler as bench

    python, line = bench.find_vllm_python("/nonexistent/vllm-venv/bin/python")
    assert python is None and line.startswith("vllm: skipped (no Python with vLLM at /nonexistent")
    monkeypatch.setitem(bench.PEER_SHAPES, "tiny", (1, 32, 64, 256))
    bench.main(["--workload", "ragged", "--peers", "vllm", "--vllm-python", "/nonexistent/python", "--shapes", "tiny",
                "--dtypes", "float32", "--rounds", "1", "--peer-requests", "6", "--slots", "4", "--settle-s", "0"])
    printed = capsys.readouterr().out
    assert printed.count("vllm: skipped") == 1 and "vllm_given" not in printed
    rows = [json.loads(l) for l in printed.splitlines() if l.startswith("{")]
    assert len(rows) == 1 and rows[0]["static"]["token_agreement"] == 1.0
    assert rows[0]["continuous"]["calls"] == 1 and rows[0]["compiles_after_first_calls"] == 0
    # With the packed CPU GEMM on, the same engine over XLA's dot runs beside it, with the same tokens.
    assert rows[0]["cpu_kernels"] == cpu_gemm.available()
    assert ("continuous_xla_dot" in rows[0]) == rows[0]["cpu_kernels"]
    if rows[0]["cpu_kernels"]:
        assert rows[0]["continuous_xla_dot"]["token_agreement"] == 1.0
    with pytest.raises(SystemExit, match="unknown peer"):
        bench.main(["--workload", "ragged", "--peers", "sglang"])


# -------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("change,match", [
    (dict(prompts=[[1] * 300], max_new_tokens=300), "exceeds the cache"),
    (dict(prompts=[[1] * 10], max_cache_length=64, max_new_tokens=60), "exceeds the cache"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=[4, 0]), "max_new_tokens"),
    (dict(max_new_tokens=[4]), "one per prompt"),
    (dict(prompts=[[1, 2], []]), "prompt 1 is empty"),
    (dict(prompts=[]), "prompts is empty"),
    (dict(prompts=[[1, VOCAB]]), "outside"),
    (dict(max_slots=6, mesh_shape={"fsdp": 4, "tensor": 2}), "does not divide"),
    (dict(max_slots=6, engine="static", mesh_shape={"fsdp": 4, "tensor": 2}), "does not divide"),
    (dict(max_slots=2, num_samples=3), "exceeds the 2 decode slots"),
    (dict(kv_cache_tokens=10), "holds no slot"),
    (dict(max_slots=8, kv_cache_tokens=64), "exceeds kv_cache_tokens"),
    (dict(chunk_steps=0), "chunk_steps"),
    (dict(engine="paged"), "engine must be"),
    (dict(engine="static", chunk_steps=4), "continuous' only"),
    (dict(temperature=-1.0), "temperature"),
    (dict(eos_ids=(VOCAB,)), "eos_ids"),
    (dict(rng=0), "rng"),
])
def test_bad_input_raises_before_compiling(tiny, change, match):
    model, params = tiny  # max_position_embeddings = 512
    kwargs = dict(prompts=[[1, 2, 3], [4]], max_new_tokens=4, rng=jax.random.key(0), engine="continuous")
    kwargs.update(change)
    if "mesh_shape" in kwargs:
        kwargs["mesh"] = sharding.make_mesh(kwargs.pop("mesh_shape"))
    prompts = kwargs.pop("prompts")
    with count_compiles() as compiles, pytest.raises(ValueError, match=match):
        sampling.generate(model, params, prompts, **kwargs)
    assert compiles["n"] == 0


def test_slots_from_a_token_budget(tiny):
    model, _ = tiny
    assert engine.cache_length_bucket(20, 512) == 24 and engine.cache_length_bucket(600, 512) == 512
    assert engine.slots_for_budget(1000, 24) == 41 and engine.slots_for_budget(1000, 24, shards=4) == 40
    requests = [engine.Request(prompt=p, max_new_tokens=5) for p in RAGGED]  # bucket 16 + 5 - 1 -> cache 24
    plan = lambda m, **kw: engine._plan(m, requests, prompt_buckets=None, max_cache_length=None, **kw)
    got = plan(model, max_slots=None, kv_cache_tokens=24 * 3)
    assert (got.cache_len, got.slots) == (24, 3)
    assert plan(model, max_slots=None, kv_cache_tokens=None).slots == 6  # the call's 5 rows, bucketed
    sharded = model.clone(mesh=sharding.make_mesh({"fsdp": 4, "tensor": 2}))
    assert plan(sharded, max_slots=None, kv_cache_tokens=24 * 7).slots == 4  # rounded down to the 4 batch shards
