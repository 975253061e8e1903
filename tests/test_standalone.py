"""A `git clone` of the committed project runs the README's commands with nothing beside it: no data
directory next to the clone, no `$GASP_DATA`, the package imported from the clone itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                                reason="needs git and a git checkout of the project")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> tuple[Path, dict]:
    """The committed HEAD cloned alone into an empty directory, and an environment that points nowhere else."""
    root = tmp_path_factory.mktemp("standalone")
    dest = root / "gasp_jax"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(dest)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("GASP_DATA", "PYTHONPATH")}
    env.update(PYTHONPATH=str(dest), JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    where = subprocess.run([sys.executable, "-c", "import gasp_jax; print(gasp_jax.__file__)"], cwd=dest, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(dest.resolve()), where  # not this checkout's editable install
    assert sorted(p.name for p in root.iterdir()) == ["gasp_jax"]  # nothing beside the clone
    return dest, env


def test_lcb_eval_smoke_runs_in_a_bare_clone(clone, tmp_path):
    dest, env = clone
    out = subprocess.run([sys.executable, "-m", "gasp_jax.main", "--config=configs/lcb_eval.py:smoke",
                          f"--workdir={tmp_path / 'lcb_smoke'}"], cwd=dest, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "lcb_smoke" / "report.json").read_text())
    assert report["problems"] == {"selected": 4, "graded": 4, "skipped": 0}
    assert report["samples"]["judged"] == 8 and not report["samples"]["dropped_infra"]


_MAIN_CONFIG = r"""
import json
from absl import flags
from ml_collections import config_flags
from gasp_jax import gasp, tasks
from gasp_jax.data import load_problems, paths
config_flags.DEFINE_config_file("config")
flags.FLAGS(["x", "--config=configs/gasp.py:tiny"])
c = flags.FLAGS.config
ws = c.init.warmstart.data
files = [c.sources.gasp.seed_file, *c.sources.gasp.goalposts.sources, ws.seed_file, ws.induction_seed_file,
         ws.gasp.problems_file, *ws.gasp.induction_seed_files]
print(json.dumps({
    "files": files, "shipped": str(paths.SHIPPED_DIR),
    "goalposts": len(gasp.load_goalposts(c.sources.gasp.goalposts).goalposts),
    "seeds": len(tasks.load_seed_files([c.sources.gasp.seed_file, ws.seed_file, ws.induction_seed_file])),
    "warmstart_pool": len(tasks.load_seed_files(ws.gasp.induction_seed_files)),
    "statements": len(load_problems(ws.gasp.problems_file)),
}))
"""


def test_main_commands_config_resolves_to_the_clones_data(clone):
    """The README's main command (`configs/gasp.py:tiny`): every data file it names is the clone's shipped
    copy and loads (goalposts, seed tasks, the warm start's rows). The whole command: docs/benchmarks.md."""
    dest, env = clone
    out = subprocess.run([sys.executable, "-c", _MAIN_CONFIG], cwd=dest, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    shipped = (dest / "gasp_jax" / "data" / "files").resolve()
    assert Path(result["shipped"]).resolve() == shipped
    assert all(Path(f).resolve().is_relative_to(shipped) for f in result["files"]), result["files"]
    assert result["goalposts"] == 5 and result["seeds"] == 3 * 256 and result["statements"] == 879
    assert result["warmstart_pool"] == 5 * 256 + 64
