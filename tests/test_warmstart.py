"""Supervised warm start: the SFT step (exact cross-entropy and gradient, learns), the cache key, cache
reuse, the rows built by the tasks layer, and a warm-started tiny model that answers in the format."""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gasp_jax import models, rl, sampling, sharding, tasks
from gasp_jax import warmstart
from gasp_jax.rl import sft

CFG = models.get_preset("tiny", vocab_size=48)


def _rl_config(micro_batches=1, lr=1e-2):
    c = rl.default_config()
    c.optimizer.learning_rate = lr
    c.logprob_chunk_size = 5  # several chunks, the last one padded
    c.micro_batches = micro_batches
    return c


@functools.lru_cache(maxsize=None)
def _model(sharded: bool):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}) if sharded else None
    return models.build_model(CFG, mesh=mesh)


def _toy_batch(seed=0, n=16, multiple=1):
    rng = np.random.default_rng(seed)
    prompts = [list(rng.integers(1, CFG.vocab_size, rng.integers(2, 7))) for _ in range(n)]
    targets = [list(rng.integers(1, CFG.vocab_size, rng.integers(1, 9))) for _ in range(n)]
    return sft.make_sft_batch(prompts, targets, length_buckets=(16,), batch_multiple=multiple)


def _reference_ce(params, batch):
    """Token-mean cross-entropy of the completion tokens from full logits (independent of rl.logprobs)."""
    logits = _model(False).apply({"params": params}, batch.tokens, batch.positions, kv_mask=batch.attention_mask)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], batch.tokens[:, 1:])
    mask = batch.completion_mask[:, 1:].astype(jnp.float32)
    return (ce * mask).sum() / mask.sum()


@pytest.fixture(scope="module")
def params():
    return jax.device_get(models.init_params(_model(False), jax.random.key(0)))


def test_sft_batch_masks_exactly_the_targets():
    batch = sft.make_sft_batch([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], length_buckets=(8,))
    np.testing.assert_array_equal(batch.completion_mask[0], [0, 0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(batch.completion_mask[1], [0, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch.tokens[1, :4], [8, 11, 12, 13])


def test_sft_step_loss_and_gradient_match_reference_cross_entropy(params):
    """On a (data, fsdp, tensor) = (2, 2, 2) mesh with 2 micro-batches: accumulation and sharding included."""
    micro_batches = 2
    model = _model(True)
    c = _rl_config(micro_batches)
    batch = _toy_batch(multiple=micro_batches * 4)
    ref_loss, ref_grads = jax.value_and_grad(_reference_ce)(params, batch)

    grads, loss, denom, _ = jax.jit(functools.partial(
        rl.accumulate_gradients, model=model, rl_config=c, loss_fn=sft.sft_loss_fn))(params, batch)
    assert float(denom) == batch.completion_mask.sum()
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    flat_ref = jax.tree_util.tree_leaves_with_path(ref_grads)
    flat = dict(jax.tree_util.tree_leaves_with_path(grads))
    for path, g in flat_ref:
        np.testing.assert_allclose(np.asarray(flat[path]), np.asarray(g), rtol=2e-4, atol=2e-6, err_msg=str(path))

    # The jitted step reports the pre-update loss and applies one optimizer update.
    step = sft.make_sft_step(model, c, model.mesh)
    state = rl.create_train_state(model, c, params=jax.tree.map(jnp.array, params))
    state, metrics = step(state, batch)
    np.testing.assert_allclose(float(metrics["loss"]), float(ref_loss), rtol=1e-5)
    assert int(state.step) == 1 and float(metrics["skipped"]) == 0.0
    assert float(metrics["num_tokens"]) == batch.completion_mask.sum()


def test_sft_step_reduces_the_loss_on_a_toy_batch(params):
    model = _model(False)
    c = _rl_config(lr=1e-2)
    step = sft.make_sft_step(model, c)
    state = rl.create_train_state(model, c, params=jax.tree.map(jnp.array, params))
    batch = _toy_batch(seed=1)
    losses = []
    for _ in range(30):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[0] > 3.0  # ~log(48) at init
    assert losses[-1] < 0.5 * losses[0], losses


# ------------------------------------------------------------------------------------------- data + cache


def _quick_block(tmp_path, **changes):
    ws = warmstart.default_config()
    ws.cache_dir = str(tmp_path / "cache")
    ws.model.preset = "tiny"
    ws.model.tokenizer = "byte"  # the BPE has its own test
    ws.steps = 3
    ws.batch_size = 8
    ws.max_length = 224
    ws.log_every = 1
    ws.optimizer.warmup_steps = 1
    ws.data.max_io_records = 6
    ws.data.max_induction_records = 2
    ws.data.roles = ("solve", "propose")  # GASP rows (sandbox-validated gold) have their own test
    for k, v in changes.items():
        node = ws
        *parents, last = k.split(".")
        for p in parents:
            node = node[p]
        node[last] = v
    return ws


def test_rows_are_the_tasks_layer_prompts_and_gold_responses(tmp_path):
    ws = _quick_block(tmp_path)
    prep = warmstart.prepare(ws)
    kinds_roles = {(r.kind, r.role) for r in prep.rows}
    assert kinds_roles == {(k, role) for k in tasks.KINDS for role in ("solve", "propose")}
    by_id = {r["id"]: r for recs in prep.seed.train.values() for r in recs}
    for row in prep.rows:
        rec = by_id[row.record_id]
        if row.role == "solve":
            assert row.prompt == tasks.solve_prompt(row.kind, rec, template="compact").text
            assert tasks.extract_answer(row.kind, row.response) is not None
            continue
        program = rec if row.kind == "induction" else None
        parsed = tasks.parse_proposal(row.kind, row.response, program=program, num_inputs=ws.data.induction_inputs)
        assert parsed, (row.response, parsed)
        assert parsed.snippet.strip() == rec["snippet"].strip() or "def f" in parsed.snippet
    # Held-out programs never appear in training.
    train_programs = {tasks.program_text(r) for recs in prep.seed.train.values() for r in recs}
    held = {tasks.program_text(r) for recs in prep.seed.holdout.values() for r in recs}
    assert held and not held & train_programs
    # Every encoded row ends with the stop token and fits.
    eos = prep.tokenizer.eos_token_id
    assert all(t[-1] == eos and len(p) + len(t) <= ws.max_length for p, t in prep.encoded)


def test_cache_key_changes_with_every_input(tmp_path):
    base = warmstart.prepare(_quick_block(tmp_path)).key
    assert warmstart.prepare(_quick_block(tmp_path)).key == base  # deterministic
    assert warmstart.prepare(_quick_block(tmp_path, cache_dir=str(tmp_path / "other"))).key == base
    changed = {
        "steps": 4, "seed": 1, "batch_size": 16, "chat": True, "max_length": 250,
        "optimizer.learning_rate": 1e-3, "data.max_io_records": 3, "data.references": 2,
        "model.preset": "warmstart_tiny", "model.tokenizer": "bpe",
    }
    keys = {name: warmstart.prepare(_quick_block(tmp_path, **{name: v})).key for name, v in changed.items()}
    assert base not in keys.values(), keys
    assert len(set(keys.values())) == len(keys), keys


def test_bpe_tokenizer_is_trained_on_the_rows_deterministic_and_shorter(tmp_path):
    bpe_block = {"model.tokenizer": "bpe", "data.max_io_records": 32, "data.max_induction_records": 12}
    bpe = warmstart.prepare(_quick_block(tmp_path, **bpe_block))
    again = warmstart.prepare(_quick_block(tmp_path, **bpe_block))
    assert bpe.key == again.key and bpe.tokenizer.get_vocab() == again.tokenizer.get_vocab()
    # At most the asked size (merges stop when no pair repeats); the model has exactly its ids.
    tok = bpe.tokenizer
    assert 260 < len(tok) <= 1024
    assert bpe.model_config.vocab_size == len(tok)
    texts = [row.prompt + row.response for row in bpe.rows]
    for text in texts:  # every row decodes back to its text
        assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("é ≠ 🙂\t\x00")) == "é ≠ 🙂\t\x00"  # any byte still encodes
    assert sum(len(tok.encode(t)) for t in texts) < 0.5 * sum(len(t.encode()) for t in texts)
    assert tok.eos_token == "<|im_end|>" and all(t[-1] == tok.eos_token_id for _, t in bpe.encoded)
    with pytest.raises(ValueError, match=r"bpe vocab_size must be >= 260"):
        warmstart.prepare(_quick_block(tmp_path, **{"model.tokenizer": "bpe", "model.bpe_vocab_size": 100}))
    with pytest.raises(ValueError, match=r"warmstart\.model\.tokenizer"):
        warmstart.prepare(_quick_block(tmp_path, **{"model.tokenizer": "words"}))


def test_gasp_rows_are_gasp_prompts_with_valid_induction_gold(tmp_path, monkeypatch):
    """GASP teacher rows: GaspSource's lemma/lift prompt builders (the tiny preset's settings) and gold
    answers that GaspSource's parse reads back as induction tasks the sandbox validates; the statements are
    LCB problems before the cut-off; the validated gold pool is cached (no sandbox on the next prepare)."""
    from configs import azr as azr_config
    from configs import gasp as gasp_config
    from gasp_jax.data.livecodebench import load_problems, parse_date
    from gasp_jax.gasp import prompts as gasp_prompts
    from gasp_jax.sandbox import Limits, Sandbox

    # Both tiny presets hold the default block (one cached warm start) and GASP prompts as it trained them.
    gasp_tiny, azr_tiny = gasp_config.get_config("tiny"), azr_config.get_config("tiny")
    ws_default = warmstart.default_config()
    assert "gasp" in ws_default.data.roles
    for c in (gasp_tiny, azr_tiny):
        block = ml_collections.ConfigDict(c.init.warmstart.to_dict())
        block.enabled = ws_default.enabled
        assert block.to_dict() == ws_default.to_dict()
    g = gasp_tiny.sources.gasp
    assert g.prompt.max_statement_chars == ws_default.data.gasp.max_statement_chars
    assert g.prompt.lift_shown_pairs == ws_default.data.gasp.lift_shown_pairs
    assert g.num_inputs == ws_default.data.induction_inputs and gasp_tiny.prompts.template == ws_default.template

    ws = _quick_block(tmp_path, **{"data.roles": ("solve", "gasp"), "data.gasp.lemma_rows": 6,
                                   "data.gasp.lift_rows": 6})
    n = int(ws.data.induction_inputs)
    prep = warmstart.prepare(ws)
    lemmas = [r for r in prep.rows if r.role == "lemma"]
    lifts = [r for r in prep.rows if r.role == "lift"]
    assert len(lemmas) == 6 and len(lifts) == 6 and len(prep.gasp_gold) >= 2
    assert all(len(r["inputs"]) == n and 0 < len(r["message"]) <= ws.data.gasp.cut_message_chars for r in prep.gasp_gold)
    problems = {p.id: p for p in load_problems(ws.data.gasp.problems_file)}
    cutoff = warmstart.lcb_statements(ws)  # the pre-cutoff window only
    assert {pid for pid, _ in cutoff} < set(problems)

    def wrap(body):
        return gasp_prompts.wrap_prompt(body, template="compact")

    for row in lemmas:
        pid = row.record_id.split("@lcb:")[1]
        assert problems[pid].date < parse_date(warmstart.LCB_CUTOFF)  # never a held-out (later) problem
        assert row.prompt in {wrap(gasp_prompts.lemma_prompt(problems[pid].statement, axis, num_inputs=n,
                                                             template="compact", max_statement_chars=240))
                              for axis in gasp_prompts.AXES}
    for row in lifts:
        sources = [r for r in prep.gasp_gold for axis in gasp_prompts.AXES
                   if row.prompt == wrap(gasp_prompts.lift_prompt(r, axis, num_inputs=n, template="compact", shown_pairs=2))]
        assert sources and sources[0]["id"] != row.record_id  # the lift's gold is another task
    by_id = {r["id"]: r for r in prep.gasp_gold}
    parsed = []
    for row in lemmas + lifts:
        p = tasks.parse_proposal("induction", row.response, program=None, num_inputs=n)  # GaspSource's parse
        assert p, (row.response, p)
        gold = by_id[row.record_id.split("@lcb:")[0]]
        assert p.snippet.strip() == gold["snippet"].strip() and list(p.inputs) == gold["inputs"]
        parsed.append(("induction", p))
    with Sandbox(workers=2) as sb:
        results = tasks.validate_proposals(sb, parsed, config=tasks.ValidationConfig(limits=Limits(cpu_s=2.0)))
    assert all(v.ok for v in results), [v.reason for v in results if not v.ok]
    for v, row in zip(results, lemmas + lifts):
        assert v.record["outputs"] == by_id[row.record_id.split("@lcb:")[0]]["outputs"]

    # The gold pool is validated once: the next prepare starts no sandbox; GASP rows are in the key.
    def no_sandbox(*a, **k):
        raise AssertionError("validated the gold pool again")

    monkeypatch.setattr("gasp_jax.sandbox.Sandbox", no_sandbox)
    assert warmstart.prepare(ws).key == prep.key
    assert warmstart.prepare(_quick_block(tmp_path, **{"data.roles": ("solve",)})).key != prep.key
    assert prep.encoded and all(len(p) + len(t) <= ws.data.gasp.max_length for p, t in prep.encoded)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short warm start shared by the tests below: 80 steps on 4 deduction/abduction tasks."""
    ws = _quick_block(tmp_path_factory.mktemp("ws"), steps=80, batch_size=16, **{
        "data.roles": ("solve",), "data.max_io_records": 4, "data.max_induction_records": 0,
        "optimizer.learning_rate": 1e-2, "optimizer.warmup_steps": 5, "log_every": 20})
    ws.data.induction_seed_file = ""
    return ws, warmstart.ensure_warmstart(ws)


def test_ensure_warmstart_trains_once_then_reuses_the_cache(trained, monkeypatch):
    ws, path = trained
    manifest = warmstart.read_manifest(path)
    assert os.path.basename(path) == manifest["key"] and manifest["rows"] > 0
    assert [h["step"] for h in manifest["history"]] == [1, 20, 40, 60, 80]
    # A plain HF directory: the model and the byte tokenizer load like any checkpoint.
    model, params = models.load_hf(path)
    tok = models.load_tokenizer(path)
    assert model.config.vocab_size == len(tok) and tok.decode(tok.encode("def f(a):")) == "def f(a):"
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".tmp-" in f]

    def no_training(*a, **k):
        raise AssertionError("trained again although the cache holds this key")

    monkeypatch.setattr("gasp_jax.warmstart.training._train_and_save", no_training)
    assert warmstart.ensure_warmstart(ml_collections.ConfigDict(ws.to_dict())) == path
    changed = ml_collections.ConfigDict(ws.to_dict())
    changed.steps = 79
    with pytest.raises(AssertionError, match="trained again"):
        warmstart.ensure_warmstart(changed)


def test_warm_start_of_an_hf_checkpoint_keeps_its_shape_and_tokenizer(tmp_path):
    """`model.hf_path`: fine-tunes a local HF directory (here a tiny one written by save_hf) and keys the
    cache on it; the result has the checkpoint's shape and tokenizer."""
    from gasp_jax.tokenizer import build_byte_tokenizer

    tok = build_byte_tokenizer()
    base = models.build_model(models.get_preset("tiny", vocab_size=len(tok)))
    hf_dir = str(tmp_path / "base")
    models.save_hf(base, models.init_params(base, jax.random.key(3)), hf_dir, tokenizer=tok)
    ws = _quick_block(tmp_path, steps=2, **{"model.hf_path": hf_dir, "optimizer.learning_rate": 1e-5})
    path = warmstart.ensure_warmstart(ws)
    assert path != warmstart.prepare(_quick_block(tmp_path, steps=2)).path  # the checkpoint is in the key
    model, _ = models.load_hf(path)
    assert model.config == models.load_hf(hf_dir)[0].config
    assert models.load_tokenizer(path).get_vocab() == tok.get_vocab()


def test_bad_block_is_one_line_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"warmstart\.model\.preset"):
        warmstart.prepare(_quick_block(tmp_path, **{"model.preset": "nope"}))
    with pytest.raises(ValueError, match=r"warmstart\.data\.roles"):
        warmstart.prepare(_quick_block(tmp_path, **{"data.roles": ("teach",)}))
    with pytest.raises(ValueError, match=r"warmstart\.template"):
        warmstart.prepare(_quick_block(tmp_path, template="fancy"))
    with pytest.raises(ValueError, match=r"warmstart\.data\.gasp\.max_length"):
        warmstart.prepare(_quick_block(tmp_path, **{"data.roles": ("solve", "gasp"), "data.gasp.max_length": 100}))


def test_warm_started_tiny_model_answers_in_the_format(trained):
    """A short warm start on a few deduction/abduction tasks: most answers sampled at T = 1 parse (a
    random-init model's never do). Responses are <= 40 value bytes + 26 format bytes + stop: 80 new tokens."""
    ws, path = trained
    prep = warmstart.prepare(ws)
    model, params = models.load_hf(path)
    tok = models.load_tokenizer(path)
    rows = [r for r in prep.rows if r.kind in ("deduction", "abduction")]
    texts = sampling.generate_text(model, params, tok, [r.prompt for r in rows], num_samples=4, temperature=1.0,
                                   max_new_tokens=80, rng=jax.random.key(0), prompt_buckets=(224,),
                                   max_cache_length=304)
    answers = [tasks.extract_answer(r.kind, t) for r, ts in zip(rows, texts) for t in ts]
    assert np.mean([a is not None for a in answers]) >= 0.5, [t for ts in texts for t in ts][:4]
    assert warmstart.read_manifest(path)["history"][-1]["loss"] < 0.5 * warmstart.read_manifest(path)["history"][0]["loss"]


@pytest.mark.slow  # the default recipe: 250 steps (~1-2 CPU minutes idle, far more on a loaded box) + sandbox
def test_default_warm_start_gives_valid_proposals_and_correct_answers():
    """What the tiny self-play presets rely on: at T = 1 some io proposals validate and some answers on
    known tasks are judged correct (so rewards differ within the (kind, role) groups)."""
    from gasp_jax.sandbox import Limits, Sandbox

    ws = warmstart.default_config()  # the shared cache ($GASP_JAX_CACHE/warmstart): trained once per machine
    path = warmstart.ensure_warmstart(ws)
    with Sandbox(workers=2) as sb:
        rates = warmstart.measure(path, ws, sb, samples=2, max_tasks=12, max_new_tokens=160,
                                  validation_config=tasks.ValidationConfig(limits=Limits(cpu_s=2.0)),
                                  judge_config=tasks.JudgeConfig(limits=Limits(cpu_s=2.0)))
    for kind in ("deduction", "abduction"):
        assert rates[f"solve/train/{kind}"]["format_rate"] > 0.5, rates
        assert 0 < rates[f"solve/train/{kind}"]["correct_rate"] < 1, rates
        assert 0 < rates[f"propose/{kind}"]["valid_rate"] < 1, rates
