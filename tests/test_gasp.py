"""GASP building blocks: rewards, goalposts, prompts, dedup, curriculum, dynamic goalposts, eval report."""

import json

import numpy as np
import pytest

from gasp_jax import gasp
from gasp_jax.data.livecodebench import Problem, Test
from gasp_jax.data import paths
from gasp_jax.evaluation.grading import SampleGrade
from gasp_jax.evaluation.runner import ProblemRecord
from gasp_jax.gasp import curriculum, dedup, evaluation, goalposts, prompts, rewards

LCB_FILE = paths.data_file(paths.LCB_PUBLIC_V5)

# ---------------------------------------------------------------------------------------------- rewards

# The research note's table (paper.md section 5.1), values at the discrete pass rates of n = 8 and 16.
N8 = {0: (-0.5, -0.5), 1: (-0.5, 0.9701), 2: (-0.5, 0.4845), 3: (0.7242, 0.1409), 4: (1.0, 0.0252),
      5: (0.7242, -0.5), 6: (-0.5, -0.5), 7: (-0.5, -0.5), 8: (-0.5, -0.5)}


@pytest.mark.parametrize("k", range(9))
def test_rewards_at_n8_pass_rates(k):
    lemma, lift = N8[k]
    assert gasp.lemma_reward(k / 8) == pytest.approx(lemma, abs=5e-5)
    assert gasp.lift_reward(k / 8) == pytest.approx(lift, abs=5e-5)
    assert isinstance(gasp.lemma_reward(k / 8), float)


def test_rewards_at_n16_pass_rates():
    assert gasp.lemma_reward(5 / 16) == pytest.approx(0.4687, abs=5e-5)
    assert gasp.lemma_reward(7 / 16) == pytest.approx(0.9243, abs=5e-5)
    assert gasp.lift_reward(3 / 16) == pytest.approx(0.7468, abs=5e-5)
    assert gasp.lift_reward(5 / 16) == pytest.approx(0.2768, abs=5e-5)
    # Every n=16 rate: acceptance exactly on the windows (5..11 lemma, 2..8 lift), peaks where stated.
    p = np.arange(17) / 16
    lemma, lift = gasp.lemma_reward(p), gasp.lift_reward(p)
    assert lemma.shape == lift.shape == (17,)
    np.testing.assert_array_equal(np.flatnonzero(lemma > -0.5), np.arange(5, 12))
    np.testing.assert_array_equal(np.flatnonzero(lift > -0.5), np.arange(2, 9))
    assert lemma[8] == 1.0 and lemma.argmax() == 8
    assert lift.argmax() == 2  # 2/16 = 0.125, nearest to the lift's peak at 0.1


def test_rewards_window_edges_and_arrays():
    assert gasp.lemma_reward(0.3) == pytest.approx((4 * 0.3 * 0.7) ** 5)
    assert gasp.lemma_reward(3 / 10) > 0  # 0.30000000000000004 still inside
    assert gasp.lemma_reward(0.7) == pytest.approx((4 * 0.3 * 0.7) ** 5)
    assert gasp.lemma_reward(0.2999) == -0.5 and gasp.lemma_reward(0.7001) == -0.5
    assert gasp.lift_reward(0.1) == pytest.approx(1.0)
    assert gasp.lift_reward(0.5) == pytest.approx(5 * (0.5 / 0.9) ** 9)
    assert gasp.lift_reward(0.0999) == -0.5 and gasp.lift_reward(0.5001) == -0.5
    grid = np.array([[0.0, 0.5], [0.1, 1.0]])
    np.testing.assert_allclose(gasp.lift_reward(grid), [[-0.5, 5 * (0.5 / 0.9) ** 9], [1.0, -0.5]])
    with pytest.raises(ValueError):
        gasp.lemma_reward(1.5)
    with pytest.raises(ValueError):
        gasp.lift_reward(float("nan"))


def test_teacher_reward_penalises_invalid_and_duplicates():
    assert rewards.teacher_reward("lemma", valid=False, duplicate=False, p=None) == -1.0
    assert rewards.teacher_reward("lift", valid=True, duplicate=True, p=0.125) == -1.0
    assert rewards.teacher_reward("lift", valid=True, duplicate=False, p=0.125) == pytest.approx(0.9701, abs=5e-5)
    assert rewards.teacher_reward("lemma", valid=False, duplicate=False, p=None, format_penalty=-0.7) == -0.7
    with pytest.raises(ValueError, match="stage"):
        rewards.teacher_reward("medium", valid=True, duplicate=False, p=0.5)


# ---------------------------------------------------------------------------------------------- goalposts


def _cfg(**kw):
    import ml_collections

    base = dict(sources=(str(LCB_FILE),), release="", start="", end="2024-08-01", report="", ids=(),
                max_goalposts=0, decode_tests=True)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_goalposts_from_ids_and_report(tmp_path):
    pool = gasp.load_goalposts(_cfg(ids=("abc361_f", "3466")))
    assert [g.id for g in pool.goalposts] == ["abc361_f", "3466"]
    assert all(g.problem.date.year < 2025 for g in pool.reserve) and len(pool.reserve) > 500
    report = {"goalpost_ids": ["3466", "abc361_f"],
              "goalposts": [{"question_id": "3466", "evidence": {"a": {"n": 10, "correct": 0}}}],
              "solved": {"3453": {"by": "a", "correct": 3, "n": 10}}}
    path = tmp_path / "goalposts.json"
    path.write_text(json.dumps(report))
    pool = gasp.load_goalposts(_cfg(report=str(path)))
    assert [g.id for g in pool.goalposts] == ["3466", "abc361_f"]
    assert pool.goalposts[0].base_pass_rate == 0.0 and pool.goalposts[1].base_pass_rate is None
    assert pool.by_id()["3453"].base_pass_rate == pytest.approx(0.3)


def test_goalpost_errors_at_startup(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(gasp.GoalpostError, match="empty"):
        gasp.load_goalposts(_cfg(report=str(empty)))
    with pytest.raises(gasp.GoalpostError, match="unreadable"):
        gasp.load_goalposts(_cfg(report=str(tmp_path / "missing.json")))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(gasp.GoalpostError, match="not JSON"):
        gasp.load_goalposts(_cfg(report=str(tmp_path / "bad.json")))
    (tmp_path / "none.json").write_text(json.dumps({"goalpost_ids": []}))
    with pytest.raises(gasp.GoalpostError, match="lists no goalposts"):
        gasp.load_goalposts(_cfg(report=str(tmp_path / "none.json")))
    (tmp_path / "lcb_empty.jsonl").write_text("")
    with pytest.raises(gasp.GoalpostError, match="empty"):
        gasp.load_goalposts(_cfg(sources=(str(tmp_path / "lcb_empty.jsonl"),)))
    with pytest.raises(gasp.GoalpostError, match="cannot read"):
        gasp.load_goalposts(_cfg(sources=(str(tmp_path / "absent.jsonl"),)))
    # abc350_c has no tests at all: the loader skips the row, and asking for it as a goalpost says why.
    with pytest.raises(gasp.GoalpostError, match="abc350_c: no tests"):
        gasp.load_goalposts(_cfg(ids=("abc361_f", "abc350_c")))
    with pytest.raises(gasp.GoalpostError, match="outside the date window"):
        gasp.load_goalposts(_cfg(ids=("abc361_f", "abc333_a"), start="2024-05-01"))
    with pytest.raises(gasp.GoalpostError, match="no LCB problems"):
        gasp.load_goalposts(_cfg(ids=("abc361_f",), end="2023-01-01", start="2022-01-01"))


def _problem(pid, statement="s", tests=(Test("1\n", "1\n", "stdin"),), difficulty="hard", date="2024-01-01"):
    import datetime as dt

    return Problem(id=pid, title=pid, statement=statement, platform="atcoder", difficulty=difficulty,
                   date=dt.datetime.fromisoformat(date), contest_id="c", starter_code="", fn_name=None,
                   public_tests=tuple(tests))


def test_goalpost_without_tests_is_an_error():
    with pytest.raises(gasp.GoalpostError, match="no tests"):
        goalposts.check_tests(gasp.Goalpost(_problem("x", tests=())))
    assert goalposts.check_tests(gasp.Goalpost(_problem("y"))) == 1


# ---------------------------------------------------------------------------------------------- prompts

STATEMENT = ("You are given a grid of N rows and M columns of lanterns. Zebulon wants to light the "
             "maximum number of lanterns such that no two lit lanterns share a row or a column.")
LEMMA = {"snippet": "def f(xs):\n    return sorted(set(xs))[:2]", "inputs": ["[3, 1, 2]", "[5, 5, 4]"],
         "outputs": ["[1, 2]", "[4, 5]"], "message": "Smallest distinct values.", "imports": []}


@pytest.mark.parametrize("template", prompts.TEMPLATES)
@pytest.mark.parametrize("axis", gasp.AXES)
def test_lemma_and_lift_prompts(axis, template):
    lemma = gasp.lemma_prompt(STATEMENT, axis, num_inputs=6, banned_modules=("random",), template=template)
    lift = gasp.lift_prompt(LEMMA, axis, num_inputs=6, banned_modules=("random",), template=template)
    assert STATEMENT in lemma and LEMMA["snippet"] in lift
    if template == "full":
        assert "easier" in lemma and "```input" in lemma and "```message" in lemma and "random" in lemma
        assert "f([3, 1, 2]) == [1, 2]" in lift and "harder" in lift
        assert prompts.AXIS_TEXT[axis]["lemma"] in lemma and prompts.AXIS_TEXT[axis]["lift"] in lift
    else:
        assert lemma.startswith(f"#lemma {axis} 6\n") and lift.startswith(f"#lift {axis} 6\n")
        assert ">>> f([3, 1, 2])\n[1, 2]" in lift
    # The lift prompt is built from the lemma only: nothing of the goalpost can appear in it.
    for word in ("Zebulon", "lanterns", "grid"):
        assert word not in lift


def test_prompt_errors_and_truncation():
    with pytest.raises(ValueError, match="unknown GASP axis"):
        gasp.lemma_prompt(STATEMENT, "f", num_inputs=4)
    with pytest.raises(ValueError, match="unknown GASP axis"):
        gasp.lift_prompt(LEMMA, "IO", num_inputs=4)
    with pytest.raises(ValueError, match="template"):
        gasp.lemma_prompt(STATEMENT, "io", num_inputs=4, template="long")
    short = gasp.lemma_prompt(STATEMENT, "io", num_inputs=4, template="compact", max_statement_chars=40)
    assert STATEMENT[:30] in short and "Zebulon" not in short


# ---------------------------------------------------------------------------------------------- dedup

TASKS = [
    "Sum of the even numbers.\ndef f(xs):\n    return sum(x for x in xs if x % 2 == 0)",
    "Count vowels in a word.\ndef f(s):\n    return sum(c in 'aeiou' for c in s)",
    "Longest run of equal neighbours.\ndef f(s):\n    best = cur = 1\n    for i in range(1, len(s)):\n"
    "        cur = cur + 1 if s[i] == s[i - 1] else 1\n        best = max(best, cur)\n    return best",
    "Reverse the words of a sentence.\ndef f(s):\n    return ' '.join(reversed(s.split()))",
    "Number of pairs i < j with a[i] + a[j] divisible by k.\ndef f(a, k):\n    return sum((a[i] + a[j]) % k == 0 "
    "for i in range(len(a)) for j in range(i + 1, len(a)))",
]


def test_dedup_rejects_near_copies_and_keeps_distinct_tasks():
    emb = gasp.HashedNgramEmbedder(dim=512)
    index = gasp.DedupIndex(emb.dim, threshold=0.95, block_rows=2)
    first = index.check(emb.embed(TASKS))
    assert not first.duplicate.any()  # five different tasks: all kept
    index.add(emb.embed(TASKS), [f"q{i}" for i in range(len(TASKS))])
    assert len(index) == 5 and index.capacity >= 5  # grew past its first 2-row block
    near = [TASKS[0].replace("    ", "  ").upper(),   # re-indented, re-cased copy
            TASKS[2] + "\n",                          # trailing whitespace
            "Product of the odd numbers.\ndef f(xs):\n    p = 1\n    for x in xs:\n        if x % 2:\n"
            "            p *= x\n    return p"]         # a new task
    res = index.check(emb.embed(near))
    assert res.duplicate.tolist() == [True, True, False]
    assert res.match[:2] == ["q0", "q2"] and res.similarity[0] >= 0.95 and res.similarity[2] < 0.95


def test_dedup_within_batch_and_invalid_candidates():
    emb = gasp.HashedNgramEmbedder(dim=256)
    index = gasp.DedupIndex(emb.dim)
    batch = emb.embed([TASKS[1], TASKS[1], TASKS[3], TASKS[3]])
    res = index.check(batch, usable=[True, True, False, True])
    # The 2nd copies the 1st; the 3rd is unusable (invalid), so the 4th is not its duplicate.
    assert res.duplicate.tolist() == [False, True, False, False]
    assert res.match[1] == "batch:0"


def test_dedup_search_is_exact_cosine():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(1000, 64)).astype(np.float32)
    index = gasp.DedupIndex(64, block_rows=128)
    for start in range(0, 1000, 100):
        index.add(data[start : start + 100], [str(i) for i in range(start, start + 100)])
    q = rng.normal(size=(7, 64)).astype(np.float32)
    sim, row = index.search(q)
    ref = dedup.normalize_rows(q) @ dedup.normalize_rows(data).T
    np.testing.assert_allclose(sim, ref.max(1), rtol=1e-5)
    np.testing.assert_array_equal(row, ref.argmax(1))


def test_dedup_threshold_is_configurable():
    emb = gasp.HashedNgramEmbedder(dim=512)
    a, b = TASKS[0], TASKS[0].replace("xs", "values")
    index = gasp.DedupIndex(emb.dim, threshold=0.95)
    index.add(emb.embed([a]), ["a"])
    sim = float(index.search(emb.embed([b]))[0][0])
    assert 0.5 < sim < 0.95
    assert not index.check(emb.embed([b])).duplicate[0]
    loose = gasp.DedupIndex(emb.dim, threshold=sim - 0.01)
    loose.add(emb.embed([a]), ["a"])
    assert loose.check(emb.embed([b])).duplicate[0]
    with pytest.raises(ValueError):
        gasp.DedupIndex(8, threshold=1.5)


def test_copied_goalpost_statement_is_detected():
    proposal = "```message\n" + STATEMENT.upper() + "\n```\n```python\ndef f(g):\n    return 0\n```"
    assert dedup.copied_fraction(proposal, STATEMENT) == 1.0
    assert dedup.copied_fraction("```message\nLight lanterns on a board.\n```", STATEMENT) == 0.0


def test_transformer_embedder_pools_real_tokens_only(tmp_path):
    import jax
    import ml_collections

    from gasp_jax import models
    from gasp_jax.tokenizer import build_byte_tokenizer

    cfg = models.get_preset("tiny", vocab_size=260)
    model = models.build_model(cfg)
    params = models.init_params(model, jax.random.key(0))
    tok = build_byte_tokenizer()
    block = ml_collections.ConfigDict(dict(embedder="policy", max_tokens=64, batch_size=4))
    emb = gasp.build_embedder(block, model=model, params=params, tokenizer=tok)
    # The policy embedder holds its own frozen copy: a later (donating) update cannot touch it.
    leaf, copy = jax.tree.leaves(params)[0], jax.tree.leaves(emb.params)[0]
    assert copy is not leaf and np.array_equal(np.asarray(copy), np.asarray(leaf))
    texts = ["def f(x): return x", "def f(x): return x", "count the vowels of s", "a"]
    vecs = emb.embed(texts)
    assert vecs.shape == (4, cfg.hidden_size)
    np.testing.assert_allclose(vecs[0], vecs[1], rtol=1e-5)
    assert not np.allclose(vecs[0], vecs[2])
    # Batch composition (padding length) does not change a text's embedding.
    np.testing.assert_allclose(emb.embed(["a"])[0], vecs[3], rtol=1e-4, atol=1e-5)
    # The local-encoder option loads a HF checkpoint directory: the same weights give the same vectors.
    models.save_hf(model, params, str(tmp_path / "enc"))
    tok.save_pretrained(str(tmp_path / "enc"))
    enc = gasp.build_embedder(ml_collections.ConfigDict(dict(embedder="encoder", encoder_path=str(tmp_path / "enc"),
                                                             max_tokens=64, batch_size=4)))
    np.testing.assert_allclose(enc.embed(texts), vecs, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="encoder_path"):
        gasp.build_embedder(ml_collections.ConfigDict(dict(embedder="encoder", encoder_path="")))
    with pytest.raises(ValueError, match="unknown dedup.embedder"):
        gasp.build_embedder(ml_collections.ConfigDict(dict(embedder="bert")))


# ---------------------------------------------------------------------------------------------- curriculum


def test_curriculum_rows_have_exactly_the_fields_and_resume_truncates(tmp_path):
    row = dict(step=0, goalpost_id="3466", axis="io", stage="lemma", prompt="P", proposal="X", valid=True,
               duplicate=False, n=8, p=0.5, reward=1.0, accepted=True, id="q1", parent_id=None)
    assert list(curriculum.make_row(**row)) == list(curriculum.FIELDS)
    with pytest.raises(ValueError, match="missing"):
        curriculum.make_row(**{k: v for k, v in row.items() if k != "axis"})
    log = gasp.CurriculumLog(tmp_path / "curriculum.jsonl")
    log.append([curriculum.make_row(**row)])
    size = log.size
    log.append([curriculum.make_row(**{**row, "step": 1, "id": "q2"})])
    log.truncate(size)
    assert [r["id"] for r in log.read()] == ["q1"]
    with pytest.raises(ValueError, match="lost"):
        log.truncate(size + 10)


def test_question_buffer_lineage_and_eviction():
    buf = gasp.QuestionBuffer(max_size=2)
    buf.add({"id": "l", "parent_id": None, "stage": "lemma"})
    buf.add({"id": "t", "parent_id": "l", "stage": "lift"})
    assert [e["id"] for e in buf.lineage("t")] == ["l", "t"]
    assert buf.add({"id": "x", "parent_id": None}) == ["l"]
    restored = gasp.QuestionBuffer(max_size=2)
    restored.load_state_dict(json.loads(json.dumps(buf.state_dict())))
    assert [e["id"] for e in restored.entries()] == ["t", "x"]


# ---------------------------------------------------------------------------------------------- dynamic


def _pool():
    gps = (gasp.Goalpost(_problem("g1", "count inversions in an array", date="2024-02-01"), 0.0),
           gasp.Goalpost(_problem("g2", "shortest path in a weighted grid", date="2024-03-01"), 0.0))
    reserve = (gasp.Goalpost(_problem("r_easy", "sum two numbers", difficulty="easy"), 0.9),
               gasp.Goalpost(_problem("r_hard", "shortest path in a weighted grid with teleports"), 0.05),
               gasp.Goalpost(_problem("r_unknown", "count inversions in an array with updates", difficulty="hard"), None))
    return gasp.GoalpostPool(gps, reserve, "test")


def test_fixed_goalposts_never_change():
    sched = gasp.GoalpostSchedule(_pool())
    assert sched.update(5, {"g1": "pass@8 > 0"}) == []
    assert sched.active == ["g1", "g2"]


def test_dynamic_goalposts_hardest_policy():
    sched = gasp.GoalpostSchedule(_pool(), dynamic=True, policy="hardest")
    changes = sched.update(10, {"g1": "3/8 samples correct"})
    assert changes == [{"step": 10, "retired": "g1", "promoted": "r_hard", "reason": "3/8 samples correct",
                        "policy": "hardest", "promoted_base_pass_rate": 0.05}]
    assert sched.active == ["r_hard", "g2"]
    sched.update(20, {"r_hard": "solved"})
    assert sched.active == ["r_easy", "g2"]  # known rates rank before unknown ones
    state = json.loads(json.dumps(sched.state_dict()))
    again = gasp.GoalpostSchedule(_pool(), dynamic=True)
    again.load_state_dict(state)
    assert again.active == ["r_easy", "g2"] and len(again.history) == 2 and set(again.retired) == {"g1", "r_hard"}


def test_dynamic_goalposts_nearest_policy():
    emb = gasp.HashedNgramEmbedder(dim=512)
    sched = gasp.GoalpostSchedule(_pool(), dynamic=True, policy="nearest", embed=emb.embed)
    (change,) = sched.update(3, {"g2": "solved"})
    assert change["promoted"] == "r_hard"  # the other shortest-path problem
    (change,) = sched.update(4, {"g1": "solved"})
    assert change["promoted"] == "r_unknown"
    with pytest.raises(ValueError, match="policy"):
        gasp.GoalpostSchedule(_pool(), dynamic=True, policy="random")


# ---------------------------------------------------------------------------------------------- eval report


def test_goalpost_report_pass_at_k_and_solved():
    gps = [gasp.Goalpost(_problem("a")), gasp.Goalpost(_problem("b")), gasp.Goalpost(_problem("c"))]
    ok, bad = SampleGrade("PASS", True, None), SampleGrade("WA", False, -2)
    records = {"a": ProblemRecord("a", [], [], [ok, bad, bad, bad]),
               "b": ProblemRecord("b", [], [], [bad] * 4),
               "c": ProblemRecord("c", [], [], [], error="bad tests: none")}
    rep = evaluation.goalpost_report(gps, records, (1, 4), step=7)
    assert rep["solved"] == ["a"] and rep["solved_count"] == 1
    assert rep["per_goalpost"]["a"]["pass@1"] == pytest.approx(0.25) and rep["per_goalpost"]["a"]["pass@4"] == 1.0
    assert rep["pass_at_k"]["pass@1"] == pytest.approx(0.125)
    assert rep["per_goalpost"]["c"]["error"] == "bad tests: none"
    scalars = evaluation.report_scalars(rep)
    assert scalars["gasp/goalposts/solved_count"] == 1.0 and scalars["gasp/goalpost/a/pass_at_4"] == 1.0


def test_iteration_breakdown_and_dedup_benchmark_rows():
    from gasp_jax.gasp import bench

    rows = [{"time/iteration_s": 100.0, "time/compile_s": 90.0},  # the compiling iteration is skipped
            {"time/iteration_s": 10.0, "time/gasp_lemma_pass_rate_s": 2.0, "time/gasp_lift_pass_rate_s": 1.0,
             "time/gasp_student_s": 4.0, "gasp/lemma/count": 4.0},
            {"time/iteration_s": 12.0, "time/gasp_lemma_pass_rate_s": 4.0, "time/gasp_student_s": 2.0,
             "gasp/lemma/count": 4.0}]
    out = bench.iteration_breakdown(rows)
    assert out["iterations"] == 2 and out["iteration_s"] == 11.0
    assert out["pass_rate_over_student"] == pytest.approx((3.0 + 0.5) / 3.0)
    with pytest.raises(ValueError):
        bench.iteration_breakdown(rows[:1])
    (row,) = bench.dedup_search([200], dim=16, queries=4, repeats=1)
    assert row["accepted"] == 200 and row["check_ms"] > 0 and row["index_mb"] > 0
