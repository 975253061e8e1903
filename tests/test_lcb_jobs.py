"""LCB jobs with a fake generator and grader: reports, resume, bad input, goalpost selection."""

import importlib.util
import json
from pathlib import Path

import pytest

from gasp_jax.evaluation import eval_job, goalposts
from gasp_jax.data import paths
from gasp_jax.evaluation.grading import SampleGrade
from gasp_jax.evaluation.runner import SampleStore

SAMPLE = paths.data_file(paths.LCB_PUBLIC_V5)
ENCODED = paths.data_file(paths.LCB_ENCODED_PRIVATE)
REPO = Path(__file__).resolve().parents[1]

IDS = ["2777", "abc301_a", "abc301_b", "2779", "abc302_a", "abc302_b"]


def load_config(name, arg=None):
    spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def fake_grader(problem, tests, codes):
    """PASS iff the program says CORRECT; INFRA marks an infrastructure failure (not judged)."""
    assert tests and tests == problem.tests
    out = []
    for code in codes:
        if "INFRA" in code:
            out.append(SampleGrade("INFRA_ERROR", None, -5))
        elif "CORRECT" in code:
            out.append(SampleGrade("PASS", True, None))
        else:
            out.append(SampleGrade("WA", False, -2))
    return out


class FakeGenerator:
    """Problem i (in prompt text order of IDS) gets `plan[id]` correct completions out of n."""

    def __init__(self, plan, *, refuse=()):
        self.plan, self.refuse, self.calls, self.prompts = plan, set(refuse), 0, []

    def __call__(self, prompts, n):
        self.calls += 1
        out = []
        for prompt in prompts:
            self.prompts.append(prompt)
            pid = prompt.split("\x00")[1]
            if pid in self.refuse:
                raise ValueError(f"prompt of {pid} is too long")
            spec = self.plan.get(pid, 0)
            good, infra = (spec, 0) if isinstance(spec, int) else spec
            texts = ["```python\nprint('CORRECT')\n```"] * good + ["```python\nINFRA\n```"] * infra
            out.append((texts + ["```python\nprint('wrong')\n```"] * n)[:n])
        return out


class IdTemplater:
    """A chat 'tokenizer' that tags prompts with the problem id (via the statement) for the fake generator."""

    chat_template = "x"

    def __init__(self, statements):
        self.by_statement = statements

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        user = messages[-1]["content"]
        pid = next(i for s, i in self.by_statement.items() if s in user)
        return f"\x00{pid}\x00" + user


@pytest.fixture(scope="module")
def statements():
    rows = [json.loads(line) for line in paths.open_text(SAMPLE)]
    return {r["question_content"]: r["question_id"] for r in rows if r["question_id"] in IDS + ["1873_A"]}


def eval_config(tmp_path, n=4, ids=IDS, sources=(str(SAMPLE),)):
    c = load_config("lcb_eval", "smoke")
    c.data.sources = sources
    c.data.problem_ids = tuple(ids)
    c.sampling.n = n
    c.sampling.batch_problems = 4
    c.ks = (1, 2, 4, 20)
    return c


def test_eval_report_pass_at_k_and_groups(tmp_path, statements):
    plan = {"2777": 4, "abc301_a": 2, "abc301_b": 0, "2779": 1, "abc302_a": (1, 2), "abc302_b": 0}
    gen = FakeGenerator(plan)
    report = eval_job.run(eval_config(tmp_path), str(tmp_path), generate_fn=gen, tokenizer=IdTemplater(statements), grader=fake_grader)
    assert report["ks"] == [1, 2, 4]  # k=20 > n=4 is not reported
    per = json.loads((tmp_path / "report.json").read_text())["per_problem"]
    assert per["2777"]["pass@1"] == 1.0 and per["abc301_a"]["pass@1"] == 0.5 and per["abc301_b"]["pass@4"] == 0.0
    # abc302_a: 2 of 4 samples dropped as infrastructure errors -> n=2, so pass@4 undefined for it.
    assert per["abc302_a"]["n"] == 2 and per["abc302_a"]["dropped"] == 2 and "pass@4" not in per["abc302_a"]
    overall = report["pass_at_k"]["overall"]
    assert overall["pass@1"] == pytest.approx((1 + 0.5 + 0 + 0.25 + 0.5 + 0) / 6)
    assert overall["excluded@4"] == 1 and overall["pass@4"] == pytest.approx(3 / 5)
    assert set(report["pass_at_k"]["platform"]) == {"leetcode", "atcoder"}
    assert set(report["pass_at_k"]["difficulty"]) <= {"easy", "medium", "hard"}
    assert report["samples"]["dropped_infra"] == 2 and report["samples"]["statuses"]["PASS"] == 8
    assert report["report_path"] == str(tmp_path / "report.json") and "per_problem" not in report
    assert report["samples"]["lcb_codes"] == {"True": 8, "-2": 14, "-5": 2}
    lcb_rows = {r["question_id"]: r for r in json.loads((tmp_path / "lcb_eval_all.json").read_text())}
    assert sorted(lcb_rows) == sorted(IDS)
    assert lcb_rows["2777"]["graded_list"] == [True] * 4 and lcb_rows["2777"]["metadata"] == ["{}"] * 4
    assert lcb_rows["abc302_a"]["graded_list"] == [True, False]  # the 2 dropped samples are left out
    assert json.loads(lcb_rows["abc302_a"]["metadata"][1]) == {"error_code": -2, "status": "WA"}
    lcb_pass1 = sum(r["pass@1"] for r in lcb_rows.values()) / len(lcb_rows)
    assert lcb_pass1 == pytest.approx(overall["pass@1"])  # LCB's scoring of the export agrees with ours
    assert any((tmp_path / "tensorboard").iterdir())
    assert gen.calls == 2  # 6 problems in batches of 4


def test_eval_resumes_and_redoes_a_torn_record(tmp_path, statements):
    cfg = eval_config(tmp_path)
    tok = IdTemplater(statements)
    first = eval_job.run(cfg, str(tmp_path), generate_fn=FakeGenerator({"2777": 2}), tokenizer=tok, grader=fake_grader)

    def must_not_run(prompts, n):
        raise AssertionError("resumed run must not sample finished problems")

    again = eval_job.run(cfg, str(tmp_path), generate_fn=must_not_run, tokenizer=tok, grader=fake_grader)
    assert again["pass_at_k"] == first["pass_at_k"]
    samples = tmp_path / "samples.jsonl"
    data = samples.read_bytes()
    samples.write_bytes(data[: len(data) - 40])  # killed mid-write of the last record
    gen = FakeGenerator({"2777": 2})
    third = eval_job.run(cfg, str(tmp_path), generate_fn=gen, tokenizer=tok, grader=fake_grader)
    assert gen.calls == 1 and len(gen.prompts) == 1
    assert third["pass_at_k"] == first["pass_at_k"]
    assert len(SampleStore(tmp_path).load()) == len(IDS)
    cfg.sampling.temperature = 0.5
    with pytest.raises(ValueError, match="different settings"):
        eval_job.run(cfg, str(tmp_path), generate_fn=gen, tokenizer=tok, grader=fake_grader)


def test_eval_skips_bad_problems_with_reasons(tmp_path, statements):
    row = json.loads(ENCODED.read_text())[0]
    row["private_test_cases"] = row["private_test_cases"][:-12]  # corrupt the real blob
    rows = [json.loads(line) for line in paths.open_text(SAMPLE) if json.loads(line)["question_id"] in ("2777", "abc301_a")]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [*rows, row]) + "{broken\n")
    cfg = eval_config(tmp_path, ids=(), sources=(str(data),))
    gen = FakeGenerator({"2777": 4, "abc301_a": 4, "1873_A": 4}, refuse={"abc301_a"})
    report = eval_job.run(cfg, str(tmp_path / "run"), generate_fn=gen, tokenizer=IdTemplater(statements), grader=fake_grader)
    skipped = {s["problem_id"]: s["reason"] for s in report["skipped_problems"]}
    assert set(skipped) == {"abc301_a", "1873_A"}
    assert "too long" in skipped["abc301_a"] and "bad tests" in skipped["1873_A"]
    assert not any("\x001873_A\x00" in p for p in gen.prompts)  # no samples wasted on untestable problems
    assert report["problems"] == {"selected": 3, "graded": 1, "skipped": 2}
    assert report["pass_at_k"]["overall"]["pass@1"] == 1.0  # only 2777 counts; no silent pass/fail
    full = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["load"]["skipped"] == 1 and full["load"]["skipped_rows"][0]["problem_id"].startswith("<data.jsonl")


def goal_config(n=3, k=3):
    c = load_config("lcb_goalposts", "smoke")
    c.data.sources = (str(SAMPLE),)
    c.data.problem_ids = ("2777", "abc301_a", "abc301_b", "2779")
    c.sampling.n, c.k = n, k
    return c


def test_goalposts_selection_evidence_and_resume(tmp_path, statements):
    plans = {
        "tiny0": {"2777": 1, "abc301_a": 0, "abc301_b": 0, "2779": (0, 1)},
        "tiny1": {"2777": 3, "abc301_a": 2, "abc301_b": 0, "2779": 0},
    }
    gens = {}

    def factory(ckpt_cfg):
        gens[ckpt_cfg.name] = FakeGenerator(plans[ckpt_cfg.name])
        return gens[ckpt_cfg.name], IdTemplater(statements)

    summary = goalposts.run(goal_config(), str(tmp_path), generate_fn_factory=factory, grader=fake_grader)
    out = json.loads((tmp_path / "goalposts.json").read_text())
    assert summary["goalpost_ids"] == out["goalpost_ids"] == ["abc301_b"]
    assert summary["undetermined"] == out["undetermined"] and summary["summary"]["solved"] == 2
    assert out["solved"]["2777"]["by"] == "00_tiny0" and out["solved"]["abc301_a"]["by"] == "01_tiny1"
    assert "only 2 judged samples < k=3" in out["undetermined"]["2779"]
    # skip_solved: the second checkpoint never saw 2777 (solved by the first).
    assert not any("\x002777\x00" in p for p in gens["tiny1"].prompts)
    (gp,) = out["goalposts"]
    ev = gp["evidence"]
    assert set(ev) == {"00_tiny0", "01_tiny1"}
    assert all(e["n"] == 3 and e["correct"] == 0 and e["pass@3"] == 0.0 for e in ev.values())
    assert ev["00_tiny0"]["sample_codes"] == ["print('wrong')"] * 2
    assert (tmp_path / ev["01_tiny1"]["samples_file"]).exists()
    assert out["summary"]["goalposts"] == 1 and out["summary"]["problems"] == 4

    def no_model(ckpt_cfg):
        raise AssertionError("a finished checkpoint must not be loaded again")

    again = goalposts.run(goal_config(), str(tmp_path), generate_fn_factory=no_model, grader=fake_grader)
    assert again["goalpost_ids"] == out["goalpost_ids"]
    assert json.loads((tmp_path / "goalposts.json").read_text())["solved"] == out["solved"]


def test_goalposts_need_n_at_least_k(tmp_path):
    with pytest.raises(ValueError, match="must be >= k"):
        goalposts.run(goal_config(n=2, k=3), str(tmp_path), generate_fn_factory=lambda c: None, grader=fake_grader)


def test_resume_refuses_other_test_data_and_datasets_loader_matches(tmp_path, statements):
    rows = [json.loads(line) for line in paths.open_text(SAMPLE) if json.loads(line)["question_id"] in IDS]
    public_only = tmp_path / "public.jsonl"
    public_only.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = IdTemplater(statements)
    cfg = eval_config(tmp_path, sources=(str(public_only),))
    first = eval_job.run(cfg, str(tmp_path / "run"), generate_fn=FakeGenerator({"2777": 1}), tokenizer=tok, grader=fake_grader)
    # The same problems with (here: fake) private tests added: earlier verdicts must not be reused.
    with_private = tmp_path / "full.jsonl"
    extra = json.dumps([{"input": "[1]", "output": "[1]", "testtype": "functional"}])
    with_private.write_text("".join(json.dumps(dict(r, private_test_cases=extra if r["platform"] == "leetcode" else None)) + "\n" for r in rows))
    cfg.data.sources = (str(with_private),)
    with pytest.raises(ValueError, match="data_files"):
        eval_job.run(cfg, str(tmp_path / "run"), generate_fn=FakeGenerator({}), tokenizer=tok, grader=fake_grader)
    cfg.data.sources = (str(public_only),)
    cfg.data.loader = "datasets"  # same files through `datasets`: resuming is fine, nothing resampled
    resumed = eval_job.run(cfg, str(tmp_path / "run"), generate_fn=FakeGenerator({}, refuse=IDS), tokenizer=tok, grader=fake_grader)
    assert resumed["pass_at_k"] == first["pass_at_k"] and resumed["problems"]["skipped"] == 0
    via_ds = eval_job.run(cfg, str(tmp_path / "run_ds"), generate_fn=FakeGenerator({"2777": 1}), tokenizer=tok, grader=fake_grader)
    assert via_ds["pass_at_k"] == first["pass_at_k"]


def test_sample_store_drops_unterminated_record(tmp_path):
    from gasp_jax.evaluation.runner import ProblemRecord

    store = SampleStore(tmp_path)
    assert store.open({"a": 1}) == {}
    rec = ProblemRecord("q1", ["c"], ["x"], [SampleGrade("PASS", True, None)])
    store.append(rec)
    with open(store.samples_path, "a") as f:  # a complete JSON object whose newline never made it
        f.write(json.dumps(dict(rec.to_json(), question_id="q2")))
    assert list(store.load()) == ["q1"]
    store.append(dataclasses_replace(rec, question_id="q3"))
    assert list(store.load()) == ["q1", "q3"]
    assert store.load()["q3"].correct == 1 and store.load(keep_samples=0)["q1"].codes == []
    with pytest.raises(ValueError, match="different settings"):
        store.open({"a": 2})
    assert list(store.open({"a": 2}, overwrite=True)) == []


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_sandbox_limits_take_memory_mb_and_the_deprecated_memory_bytes():
    from gasp_jax.evaluation.common import limit_fields, sandbox_limits

    assert sandbox_limits({"cpu_s": 6.0, "memory_mb": 2048, "memory_bytes": 0}).memory_bytes == 2 << 30
    with pytest.warns(DeprecationWarning, match="memory_mb"):
        assert sandbox_limits({"cpu_s": 6.0, "memory_mb": 0, "memory_bytes": 1 << 30}).memory_bytes == 1 << 30
    with pytest.raises(ValueError, match="disagree: set only memory_mb"):
        limit_fields({"memory_mb": 2048, "memory_bytes": 1 << 30})
    # Samples of a run made with the old key resume under the new one: the fingerprint is the same.
    assert limit_fields({"cpu_s": 6.0, "memory_mb": 2048, "memory_bytes": 0}) == {"cpu_s": 6.0, "memory_bytes": 2 << 30}
    assert sandbox_limits({}) is None
    for name in ("lcb_eval", "lcb_goalposts", "code_eval"):
        limits = load_config(name, "smoke").sandbox.limits
        assert limits.memory_mb == 2048 and sandbox_limits(limits).memory_bytes == 2 << 30


def test_evaluation_configs_take_the_common_argument_syntax():
    """`preset,key=value` as every config file (gasp_jax.overrides.parse_arg); the README's forms still work."""
    c = load_config("lcb_eval", "smoke,sampling.n=3,sandbox.limits.memory_mb=1024")
    assert c.model.preset == "tiny" and c.sampling.n == 3 and c.sandbox.limits.memory_mb == 1024
    assert load_config("lcb_eval").data.start == "2024-08-01" == load_config("lcb_goalposts").data.end
    g = load_config("lcb_goalposts", "/ckpt/a,/ckpt/b,k=10,sampling.n=10")
    assert [s.hf_path for s in g.checkpoints] == ["/ckpt/a", "/ckpt/b"] and (g.k, g.sampling.n) == (10, 10)
    assert len(load_config("lcb_goalposts", "3").checkpoints) == 3 and len(load_config("lcb_goalposts", "smoke").checkpoints) == 2
    e = load_config("code_eval", "mbpp_plus,smoke,sampling.n=3")
    assert (e.benchmark, e.model.preset, e.sampling.n) == ("mbpp_plus", "tiny", 3)
    with pytest.raises(ValueError, match=r"^configs/lcb_eval.py: unknown preset 'smok'; known presets: full, smoke$"):
        load_config("lcb_eval", "smok")
    with pytest.raises(ValueError, match=r"^configs/code_eval.py: unknown argument 'sampling.nn'"):
        load_config("code_eval", "humaneval,sampling.nn=2")
