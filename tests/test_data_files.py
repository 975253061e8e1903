"""The shipped data and its one resolver: checksums and provenance, `$GASP_DATA`, damaged files, the
LCB release through `datasets` (a local directory stands in for the Hub: tests never reach it)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from gasp_jax import tasks
from gasp_jax.data import load_problems, paths
from gasp_jax.data.livecodebench import DataError, HubUnavailableError, hub_data_files
from gasp_jax.evaluation.common import load_config_problems

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_resolver(monkeypatch):
    """The resolver without its per-process caches (and without a `$GASP_DATA` of the caller)."""
    monkeypatch.delenv(paths.ENV, raising=False)
    paths.shipped_names.cache_clear()
    paths._verified_shipped.cache_clear()
    yield monkeypatch
    paths.shipped_names.cache_clear()
    paths._verified_shipped.cache_clear()


def test_every_shipped_file_is_listed_and_verifies(fresh_resolver):
    listed = paths.shipped_names()
    on_disk = {str(p.relative_to(paths.SHIPPED_DIR)) for p in paths.SHIPPED_DIR.rglob("*") if p.is_file()}
    documentation = {paths.CHECKSUMS, "SOURCES.md"} | {n for n in on_disk if n.startswith("LICENSES/")}
    assert set(listed) == on_disk - documentation
    for name in listed:
        assert paths.data_file(name).is_file()
    for name in (paths.LCB_PUBLIC_V5, paths.LCB_O1_SUBMISSION, paths.HUMANEVAL, paths.MBPP_PLUS, *paths.LCB_FEW_SHOT):
        assert name in listed
    assert len(paths.azr_seed_files()) == 14


def test_compressed_files_are_the_upstream_files_of_sources_md():
    """`zcat` of each compressed copy has the upstream sha256 recorded in SOURCES.md (provenance)."""
    sources = (paths.SHIPPED_DIR / "SOURCES.md").read_text()
    recorded = set(re.findall(r"\b[0-9a-f]{64}\b", sources))
    for name in paths.shipped_names():
        if name.endswith(".gz") and name != paths.HUMANEVAL:  # HumanEval ships upstream's own .gz
            with gzip.open(paths.SHIPPED_DIR / name, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() in recorded, name
    assert hashlib.sha256((paths.SHIPPED_DIR / paths.HUMANEVAL).read_bytes()).hexdigest() in recorded
    licences = {p.name for p in (paths.SHIPPED_DIR / "LICENSES").iterdir()}
    assert {"Apache-2.0.txt", "MIT-LiveCodeBench.txt", "MIT-Absolute-Zero-Reasoner.txt", "MIT-human-eval.txt"} <= licences


def test_shipped_files_load_through_every_loader():
    problems = load_problems(paths.data_file(paths.LCB_PUBLIC_V5))
    assert len(problems) == 879  # abc350_c has no tests in the public-test copy
    recs = tasks.load_seed_file(paths.azr_seed_file("7b_seed_io.jsonl"))
    assert recs[0]["id"] == "7b_seed_io.jsonl:1" and recs[0]["origin"] == "seed:7b_seed_io.jsonl"
    assert len(paths.read_json(paths.data_file(paths.LCB_O1_SUBMISSION))) == 880


def _damaged_copy(tmp_path, monkeypatch, name, damage):
    shipped = tmp_path / "files"
    shutil.copytree(paths.SHIPPED_DIR, shipped)
    damage(shipped / name)
    monkeypatch.setattr(paths, "SHIPPED_DIR", shipped)
    return shipped / name


@pytest.mark.parametrize("damage, what", [
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated or altered"),
    (lambda p: p.unlink(), "is missing"),
])
def test_damaged_shipped_file_is_one_error_naming_it_and_the_fix(tmp_path, fresh_resolver, damage, what):
    path = _damaged_copy(tmp_path, fresh_resolver, paths.LCB_PUBLIC_V5, damage)
    with pytest.raises(paths.DataFileError) as e:
        paths.data_file(paths.LCB_PUBLIC_V5)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and what in message
    assert "git checkout -- " in message and paths.ENV in message


def test_gasp_data_dir_is_used_and_a_missing_file_is_an_error_not_a_fallback(tmp_path, fresh_resolver):
    fresh_resolver.setenv(paths.ENV, str(tmp_path))
    with pytest.raises(paths.DataFileError, match=re.escape(f"${paths.ENV}={tmp_path} has no {paths.LCB_PUBLIC_V5}")):
        paths.data_file(paths.LCB_PUBLIC_V5)
    # A bigger local copy may keep files uncompressed, in the same layout.
    seed = tmp_path / "azr_seed" / "7b_seed_io.jsonl"
    seed.parent.mkdir()
    with gzip.open(paths.SHIPPED_DIR / "azr_seed" / "7b_seed_io.jsonl.gz", "rt") as f:
        seed.write_text("".join(f.readlines()[:3]))
    assert paths.azr_seed_file("7b_seed_io.jsonl") == seed
    assert len(tasks.load_seed_file(paths.azr_seed_file("7b_seed_io.jsonl"))) == 3
    fresh_resolver.setenv(paths.ENV, str(tmp_path / "absent"))
    with pytest.raises(paths.DataFileError, match="is not a directory"):
        paths.data_file(paths.HUMANEVAL)


def test_unknown_shipped_name_is_an_error(fresh_resolver):
    with pytest.raises(paths.DataFileError, match="not a shipped data file"):
        paths.data_file("livecodebench/leaderboard/performances_generation.json")


def test_config_files_resolve_through_gasp_data(tmp_path, fresh_resolver):
    """An evaluation config names the missing file when `$GASP_DATA` lacks it (no silent fallback)."""
    fresh_resolver.setenv(paths.ENV, str(tmp_path))
    env = dict(os.environ, **{paths.ENV: str(tmp_path), "PYTHONPATH": str(REPO)})
    out = subprocess.run([sys.executable, "-c", "import importlib.util as u; s = u.spec_from_file_location('c', "
                          "'configs/lcb_eval.py'); m = u.module_from_spec(s); s.loader.exec_module(m); m.get_config('smoke')"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and f"has no {paths.LCB_PUBLIC_V5}" in out.stderr


# ------------------------------------------------------------------------------------------- the hub


def _release_dir(tmp_path) -> Path:
    """A directory laid out like `livecodebench/code_generation_lite` (test.jsonl, test2.jsonl)."""
    rows = [json.loads(line) for line in paths.open_text(paths.data_file(paths.LCB_PUBLIC_V5))][:6]
    encoded = paths.read_json(paths.data_file(paths.LCB_ENCODED_PRIVATE))[0]  # a real encoded private blob
    root = tmp_path / "code_generation_lite"
    root.mkdir()
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3] + [encoded]))
    (root / "test2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[3:]))
    return root


def test_hub_release_files_are_the_hub_repositorys():
    assert hub_data_files("release_v5") == [
        f"hf://datasets/livecodebench/code_generation_lite/{n}"
        for n in ("test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl")]
    with pytest.raises(ValueError, match="unknown LCB version_tag"):
        hub_data_files("release_v99")


def test_hub_flag_loads_a_release_through_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    data = ml_collections.ConfigDict(dict(sources=(), hub=True, hub_repo=str(_release_dir(tmp_path)), release="release_v1",
                                          loader="stream", start="", end="", problem_ids=(), max_problems=0,
                                          max_private_mb=512))
    problems, report, _ = load_config_problems(data)
    assert len(problems) == 4 and report.rows_read == 4  # release_v1 = test.jsonl only
    (p,) = [q for q in problems if q.id == "1873_A"]
    assert p.has_private_tests and len(p.private_tests) == 4  # decoded from the Arrow-cached row
    data.release = "release_v2"
    assert len(load_config_problems(data)[0]) == 7


def test_hub_flag_offline_is_one_line_naming_the_flag(tmp_path, monkeypatch):
    """conftest sets HF_HUB_OFFLINE=1: the Hub call fails at once, as on a machine without internet."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    data = ml_collections.ConfigDict(dict(sources=(), hub=True, hub_repo="livecodebench/code_generation_lite",
                                          release="release_v5", start="", end=""))
    with pytest.raises(HubUnavailableError) as e:
        load_config_problems(data, where="config.data")
    message = str(e.value)
    assert "\n" not in message and "--config.data.hub=False" in message and "code_generation_lite" in message


def test_hub_flag_offline_from_the_command_line(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "gasp_jax.main", "--config=configs/lcb_eval.py:smoke",
                          "--config.data.hub=True", f"--workdir={tmp_path / 'w'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: config.data.hub=True") and "--config.data.hub=False" in last


def test_truncated_gzip_source_is_a_data_error_naming_it(tmp_path):
    """A truncated `.jsonl.gz` given as a source (not a shipped file, so no checksum) fails naming it."""
    bad = tmp_path / "lcb.jsonl.gz"
    good = (paths.SHIPPED_DIR / paths.LCB_PUBLIC_V5).read_bytes()
    bad.write_bytes(good[: len(good) // 3])
    with pytest.raises(DataError, match=re.escape(f"{bad}: the compressed file is truncated or corrupt")):
        load_problems(bad)


def test_every_lcb_block_takes_the_hub_flag(tmp_path, monkeypatch):
    """The goalpost loader (GASP, periodic evaluation) reads the release through `datasets` too; offline it
    names its own block's flag."""
    from gasp_jax import gasp
    from gasp_jax.evaluation import periodic
    from gasp_jax.gasp import source as gasp_source
    from gasp_jax.rlvr import source as rlvr_source

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    for block in (gasp_source.default_config().goalposts, periodic.default_config().goalposts.select,
                  periodic.default_config().lcb.data, rlvr_source.default_config().data):
        assert block.hub is False and block.hub_repo == "livecodebench/code_generation_lite"
    g = gasp_source.default_config().goalposts
    g.hub, g.hub_repo, g.release, g.end, g.ids = True, str(_release_dir(tmp_path)), "release_v2", "", ("1873_A",)
    pool = gasp.load_goalposts(g, where="sources.gasp.goalposts")
    assert [p.problem.id for p in pool.goalposts] == ["1873_A"] and len(pool.goalposts[0].problem.private_tests) == 4
    g.hub_repo = "livecodebench/code_generation_lite"
    with pytest.raises(HubUnavailableError, match=r"--config\.sources\.gasp\.goalposts\.hub=False"):
        gasp.load_goalposts(g, where="sources.gasp.goalposts")
