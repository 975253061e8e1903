"""The GASP tiny preset (the README's main command) end to end through `python -m gasp_jax.main`: it runs
and resumes, it visibly plays GASP from the warm start, and TensorBoard shows the story first."""

import json
import re

import pytest

from gasp_jax.data import paths
from tests.test_sandbox_support import CAN_ISOLATE

needs_lcb = pytest.mark.skipif(not paths.data_file(paths.LCB_PUBLIC_V5).exists(), reason="LCB sample data not present")


def _config(steps: int | None = None, *, warmstart: bool = False, seed: int = 0):
    """The tiny preset (`steps=None`: its own step count, as the README's main command runs it)."""
    from configs import gasp as gasp_config

    c = gasp_config.get_config(f"tiny,seed={seed}" + ("" if steps is None else f",steps={steps}"))
    c.init.warmstart.enabled = warmstart
    if not warmstart:  # the byte tokenizer of a random init: eval prompts up to ~970 tokens + 64 new
        c.sampling.max_cache_length = 2048
    c.sandbox.allow_unsafe = not CAN_ISOLATE
    return c


@pytest.mark.slow  # compiles the tiny model's sampler and update: minutes on 2 shared cores
@needs_lcb
def test_tiny_preset_runs_and_resumes(tmp_path):
    from gasp_jax import main

    # Random init instead of the cached warm start keeps the test's cost bounded and independent of it.
    c = _config(2)
    c.sources.gasp.eval.every = 2
    c.checkpoint.every = 2
    per_step = int(c.sources.gasp.lemmas_per_step)
    summary = main.run_job(c, str(tmp_path))
    assert summary["final_step"] == 2
    rows = [json.loads(line) for line in (tmp_path / "curriculum.jsonl").read_text().splitlines()]
    # A random-init teacher never gets a lemma accepted, so no lifts: one row per lemma prompt.
    assert [r["step"] for r in rows] == [0] * per_step + [1] * per_step
    # Evaluated after 2 completed iterations (eval.every = 2): files are named by completed iterations.
    report = json.loads((tmp_path / "goalposts_eval" / "step_000002.json").read_text())
    assert report["goalposts"] == 5 and set(report["per_goalpost"]) == {"3466", "3453", "3337", "3394", "3374"}
    metrics = [json.loads(line) for line in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    assert "gasp/lemma/accept_rate" in metrics[-1] and "gasp/goalposts/solved_count" in metrics[-1]

    # A second run with more steps resumes from step 2: steps 2-3 are appended once.
    c = _config(4)
    c.sources.gasp.eval.every = 2
    c.checkpoint.every = 2
    summary = main.run_job(c, str(tmp_path))
    assert summary["start_step"] == 2 and summary["final_step"] == 4
    rows = [json.loads(line) for line in (tmp_path / "curriculum.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [s for s in range(4) for _ in range(per_step)]


@pytest.mark.slow  # the warm start (trained once, cached) + the default run: minutes on 2 cores
@needs_lcb
def test_main_command_plays_gasp_from_the_warm_start(tmp_path):
    """The README's main command on seed 0: accepted lemmas, lifts written from them that validate in the
    sandbox, and a lineage goalpost -> lemma -> lift in the TEXT tab. Nothing is scripted: the warm-started
    model writes every question, the sandbox validates it, student samples give its p."""
    from gasp_jax import main

    c = _config(warmstart=True)
    main.run_job(c, str(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "curriculum.jsonl").read_text().splitlines()]
    accepted = [r for r in rows if r["stage"] == "lemma" and r["accepted"]]
    lifts = [r for r in rows if r["stage"] == "lift"]
    assert accepted, "no accepted lemma"
    assert {r["parent_id"] for r in lifts} <= {r["id"] for r in accepted}
    assert any(r["valid"] for r in lifts), "no lift passed validation"
    for r in accepted:
        assert r["valid"] and not r["duplicate"] and 0.3 <= r["p"] <= 0.7


def test_tensorboard_layout_tells_the_story_first(tmp_path):
    from gasp_jax.gasp.tensorboard import custom_scalars_layout
    from gasp_jax.metrics import MetricWriter

    layout = custom_scalars_layout()
    story = layout[next(iter(layout))]
    tags = [tag for _, (kind, tags) in story.items() for tag in tags]
    want = ["gasp/lemma/accept_rate", "gasp/lift/accept_rate", "gasp/lemma/valid_rate", "gasp/lift/valid_rate",
            "gasp/lemma/reward_mean", "gasp/lift/reward_mean", "induction/solve/pass_rate",
            "deduction/solve/pass_rate", "abduction/solve/pass_rate", "gasp/goalposts/solved_count",
            "gasp/goalposts/solved_union"]
    # Each wanted scalar is charted, in this order, and no per-axis variant sneaks into the first charts.
    assert [next(name for name in want if re.search(tag, name)) for tag in tags] == want
    assert not any(re.search(tag, "gasp/lemma/accept_rate/io") for tag in tags)
    assert all(kind == "Multiline" for kind, _ in story.values())

    writer = MetricWriter(str(tmp_path))
    writer.layout(layout)
    writer.close()
    (event,) = list(tmp_path.glob("events.out.tfevents.*"))
    assert b"custom_scalars" in event.read_bytes() and b"gasp/goalposts/solved_union" in event.read_bytes()


def test_lineage_text_shows_goalpost_lemma_and_its_lift():
    from types import SimpleNamespace as NS

    from gasp_jax.gasp.source import GaspSource, _Candidate

    goalpost = NS(id="3466", title="Count Subarrays", statement="Given an integer array nums, count ...")
    lemma = {"id": "q-7", "stage": "lemma", "p": 0.5, "record": {
        "snippet": "def f(xs):\n    return sum(xs)", "message": "Add the numbers up.", "id": "q-7"}}
    lift_record = {"snippet": "def f(rows):\n    return [sum(r) for r in rows]", "message": "Add up each row.",
                   "id": "q-9"}
    lift = _Candidate("lift", goalpost, "io", "prompt", parent=lemma, p=0.25, accepted=True,
                      proposal=NS(status="valid", record=lift_record))
    text = GaspSource._lineage_text(NS(settings=NS(log_lineages=3)), [lift])
    chain = ["goalpost 3466", "**lemma** `q-7` p=0.5", "Add the numbers up.", "return sum(xs)",
             "**lift** `q-9` p=0.25", "Add up each row.", "return [sum(r) for r in rows]"]
    at = [text.find(part) for part in chain]
    assert -1 not in at and at == sorted(at), text


def test_iteration_summary_names_each_accepted_question():
    from types import SimpleNamespace as NS

    from gasp_jax.gasp.source import _Candidate, iteration_summary

    valid, invalid = NS(status="valid", record={"id": "q"}), NS(status="invalid", record={})
    g1, g2 = NS(id="3394"), NS(id="3337")
    lemmas = [_Candidate("lemma", g1, "io", "", proposal=valid, p=0.375, accepted=True),
              _Candidate("lemma", g2, "io", "", proposal=valid, duplicate=True),
              _Candidate("lemma", g2, "algorithm", "", proposal=invalid)]
    lifts = [_Candidate("lift", g1, "io", "", proposal=valid, p=1.0)]
    assert iteration_summary(lemmas, lifts) == (
        "lemmas 3 written, 2 valid, 1 duplicate, 1 accepted (3394 p=0.38) | lifts 1 written, 1 valid, 0 duplicate, 0 accepted")
