"""End to end: a tiny random model, our sampler, the real sandbox, a handful of real LCB problems."""

import importlib.util
import json
from pathlib import Path

import pytest

from gasp_jax.evaluation import eval_job, goalposts
from gasp_jax.data import paths
from gasp_jax.evaluation.runner import SampleStore

SAMPLE = paths.data_file(paths.LCB_PUBLIC_V5)
REPO = Path(__file__).resolve().parents[1]


def load_config(name, arg=None):
    spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)

# Short statements (they fit the tiny model's 2048-token context with the byte tokenizer):
# LeetCode (functional) and AtCoder (stdin), on both sides of 2024-08-01.
PROBLEMS = ("3676", "abc383_d", "3453", "abc333_a")



def test_eval_job_tiny_random_model(tmp_path):
    pytest.importorskip("gasp_jax.sandbox").Sandbox
    pytest.importorskip("gasp_jax.sampling").generate
    config = load_config("lcb_eval", "smoke")
    config.data.problem_ids = PROBLEMS
    report = eval_job.run(config, str(tmp_path))

    assert report["problems"] == {"selected": 4, "graded": 4, "skipped": 0}
    assert report["ks"] == [1, 2] and set(report["pass_at_k"]["platform"]) == {"leetcode", "atcoder"}
    records = SampleStore(tmp_path).load()
    assert sorted(records) == sorted(PROBLEMS)
    for rec in records.values():
        assert len(rec.completions) == 2 and len(rec.codes) == 2 and len(rec.grades) == 2
        # Random weights: nothing can be correct; every sample gets a definite verdict.
        assert all(g.passed is False and g.status in ("WA", "RE", "CE", "TLE") for g in rec.grades)
    assert report["pass_at_k"]["overall"]["pass@1"] == 0.0
    assert report["samples"]["judged"] == 8
    full = json.loads((tmp_path / "report.json").read_text())
    assert sorted(full["per_problem"]) == sorted(PROBLEMS)
    assert any((tmp_path / "tensorboard").iterdir())

    eval_job.run(config, str(tmp_path))  # resumed: everything reused
    assert json.loads((tmp_path / "report.json").read_text())["per_problem"] == full["per_problem"]


def test_goalposts_job_two_tiny_checkpoints(tmp_path):
    pytest.importorskip("gasp_jax.sandbox").Sandbox
    pytest.importorskip("gasp_jax.sampling").generate
    config = load_config("lcb_goalposts", "smoke")
    config.data.problem_ids = PROBLEMS[2:]  # the two pre-2024-08-01 ones
    config.use_mesh = True  # model and sampler sharded over the 8 faked CPU devices (fsdp)
    summary = goalposts.run(config, str(tmp_path))
    out = json.loads((tmp_path / "goalposts.json").read_text())
    assert summary["summary"] == out["summary"] and out["summary"]["problems"] == 2
    assert sorted(out["goalpost_ids"]) == sorted(PROBLEMS[2:])  # a random model solves nothing
    for gp in out["goalposts"]:
        assert set(gp["evidence"]) == {"00_tiny0", "01_tiny1"}
        assert all(e["n"] == 2 and e["correct"] == 0 and e["pass@2"] == 0.0 for e in gp["evidence"].values())


def test_default_generate_fn_shapes_chunking_and_determinism():
    pytest.importorskip("gasp_jax.sampling").generate_text
    from gasp_jax.evaluation.generation import build_generate_fn

    config = load_config("lcb_eval", "smoke")
    config.sampling.max_rows = 2  # 3 prompts x n=2 -> three sampler calls
    prompts = ["print(", "def f(x):", "import sys\n"]
    fn_a, tok = build_generate_fn(config.model, config.sampling)
    fn_b, _ = build_generate_fn(config.model, config.sampling)
    out_a, out_b = fn_a(prompts, 2), fn_b(prompts, 2)
    assert len(out_a) == 3 and all(len(row) == 2 and all(isinstance(t, str) for t in row) for row in out_a)
    assert out_a == out_b  # same seed, same call sequence -> same samples
    assert fn_a(prompts, 2) != out_a or fn_a(prompts, 2) != out_a  # later calls draw new keys
    assert tok.eos_token is not None


def test_eval_job_real_sandbox_scores_official_solutions(tmp_path):
    """The job + the real sandbox on known programs: official O1-Mini passes score 1, a WA scores 0."""
    pytest.importorskip("gasp_jax.sandbox").Sandbox
    official = {
        r["question_id"]: r
        for r in paths.read_json(paths.data_file(paths.LCB_O1_SUBMISSION))
    }
    # 2777 (functional) and abc301_a (stdin) pass officially; 1899_C fails officially (WA) on a public test.
    ids = ("2777", "abc301_a", "1899_C")
    assert [bool(official[i]["graded_list"][0]) for i in ids] == [True, True, False]
    by_statement = {official[i]["question_content"]: i for i in ids}

    class Templater:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return next(i for s, i in by_statement.items() if s in messages[-1]["content"])

    def generate_fn(prompts, n):  # the prompt is the id here; answer with the official output twice
        return [[official[pid]["output_list"][0]] * n for pid in prompts]

    config = load_config("lcb_eval", "smoke")
    config.data.problem_ids = ids
    report = eval_job.run(config, str(tmp_path), generate_fn=generate_fn, tokenizer=Templater())
    per = json.loads((tmp_path / "report.json").read_text())["per_problem"]
    assert {i: per[i]["pass@1"] for i in ids} == {"2777": 1.0, "abc301_a": 1.0, "1899_C": 0.0}
    assert report["samples"]["lcb_codes"]["True"] == 4 and report["pass_at_k"]["overall"]["pass@2"] == pytest.approx(2 / 3)
