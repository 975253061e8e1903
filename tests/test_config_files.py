"""configs/ is a leaf: no library module imports it, and config files load by path through one loader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gasp_jax import config_files

PACKAGE = Path(__file__).resolve().parents[1] / "gasp_jax"


def test_no_library_module_imports_configs():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for n in names
                          if n == "configs" or n.startswith("configs.")]
    assert not offenders, f"library modules import configs/: {offenders}"


def test_config_files_load_by_path_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # neither configs/ nor the checkout here
    smoke = config_files.load("configs/lcb_eval.py:smoke")
    assert smoke.job == "lcb_eval" and smoke.sampling.n == 2
    tiny = config_files.load(str(config_files.SOURCE_ROOT / "configs" / "gasp.py") + ":tiny,steps=2")  # imports configs.common
    assert tiny.steps == 2 and "gasp" in tiny.sources
    with pytest.raises(config_files.ConfigFileError, match=r"config file configs/nope\.py does not exist"):
        config_files.load("configs/nope.py")
