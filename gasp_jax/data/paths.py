"""Where the project's data files are: the one resolver every config, job, benchmark and test uses.

The files a job or a test needs ship inside the package (``gasp_jax/data/files/``, provenance and
licences in its ``SOURCES.md``), so a clone or an installed wheel runs without anything beside it.
``$GASP_DATA`` points at another copy instead (e.g. a bigger local mirror with the same layout); a
file it lacks is an error naming it, never a silent fallback to the shipped one. Names are paths
relative to the data root, as shipped (``azr_seed/7b_coder_seed_io.jsonl.gz``); in a ``$GASP_DATA``
copy the uncompressed twin (``azr_seed/7b_coder_seed_io.jsonl``) is accepted too.

Every shipped file's sha256 is listed in ``files/SHA256SUMS``; a missing, truncated or altered file is
one error naming it and how to restore it (checked once per file and process: the files are small).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import IO, Any

ENV = "GASP_DATA"
SHIPPED_DIR = Path(__file__).resolve().parent / "files"
CHECKSUMS = "SHA256SUMS"

# The files the project uses, by what they are.
LCB_PUBLIC_V5 = "livecodebench/problems/lcb_release_v5_880_public.jsonl.gz"  # 880 problems, public tests only
LCB_QWQ_WINDOW = "livecodebench/problems/qwq_livecodebench_v5_2408_2502.jsonl.gz"  # ids of the 2408-2502 window
LCB_O1_SUBMISSION = "livecodebench/official_submissions/O1-Mini-2024-09-12_N1_codegeneration_1_0.2_eval_all.json.gz"
LCB_QWEN_SUBMISSION = ("livecodebench/generations_thirdparty/"
                       "gu-ni_test6_Qwen2.5-Coder-Ins-7B_codegeneration_10_0.2_eval_all.json.gz")
LCB_FEW_SHOT = ("livecodebench/few_shot/func.json", "livecodebench/few_shot/stdin.json")
LCB_ENCODED_PRIVATE = "livecodebench/private_tests/lcb_1873_A_with_encoded_private.json"
LCB_DECODED_PRIVATE = "livecodebench/private_tests/lcb_1873_A_private_decoded.json"
HUMANEVAL = "humaneval/HumanEval.jsonl.gz"
MBPP_PLUS = "mbpp/MbppPlus.jsonl.gz"
AZR_SEED_DIR = "azr_seed"


class DataUnavailableError(OSError):
    """Data a job needs cannot be read; the message is one line saying what and how to fix it."""


class DataFileError(DataUnavailableError, FileNotFoundError):
    """A data file the project needs is absent, truncated or altered."""


def root() -> Path:
    """The data root: ``$GASP_DATA`` when set, else the shipped files."""
    env = os.environ.get(ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataFileError(f"${ENV}={env} is not a directory: unset it to use the shipped data files")
        return path
    return SHIPPED_DIR


def data_file(name: str) -> Path:
    """The path of data file ``name`` (a path relative to the data root, as shipped)."""
    env = os.environ.get(ENV)
    if env:
        base = root()
        for candidate in (name, name.removesuffix(".gz")):
            if (base / candidate).is_file():
                return base / candidate
        raise DataFileError(f"${ENV}={env} has no {name} (nor its uncompressed form): add it there, or unset "
                            f"${ENV} to use the shipped copy")
    return _verified_shipped(name)


def azr_seed_file(name: str) -> Path:
    """One of AZR's seed files, e.g. ``7b_coder_seed_io.jsonl`` (``.gz`` optional)."""
    name = name if name.endswith(".gz") else name + ".gz"
    return data_file(f"{AZR_SEED_DIR}/{name}")


def azr_seed_files() -> list[Path]:
    """Every AZR seed file, sorted by name."""
    return [data_file(n) for n in sorted(shipped_names()) if n.startswith(AZR_SEED_DIR + "/")]


def few_shot_dir() -> Path:
    """The directory holding LCB's few-shot examples (``func.json``, ``stdin.json``)."""
    files = [data_file(n) for n in LCB_FEW_SHOT]
    return files[0].parent


def open_text(path: str | os.PathLike) -> IO[str]:
    """A UTF-8 text handle on a file, decompressed when its name ends in ``.gz``."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    """A whole JSON document (``.json`` or ``.json.gz``)."""
    with open_text(path) as f:
        return json.load(f)


def stem(path: str | os.PathLike) -> str:
    """The file name without a ``.gz`` suffix: what a compressed file is called in ids and reports."""
    return Path(path).name.removesuffix(".gz")


@functools.cache
def shipped_names() -> dict[str, str]:
    """Shipped file name -> sha256, from ``files/SHA256SUMS`` (``sha256sum`` format)."""
    listing = SHIPPED_DIR / CHECKSUMS
    if not listing.is_file():
        raise DataFileError(f"{listing} is missing: restore it with `git checkout -- {_repo_relative(listing)}` "
                            "or reinstall gasp_jax")
    out = {}
    for line in listing.read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, _, name = line.partition("  ")
            out[name.strip()] = digest.strip()
    return out


@functools.cache
def _verified_shipped(name: str) -> Path:
    expected = shipped_names().get(name)
    if expected is None:
        raise DataFileError(f"{name} is not a shipped data file (see {SHIPPED_DIR / 'SOURCES.md'}); put it in a "
                            f"directory and point ${ENV} there")
    path = SHIPPED_DIR / name
    restore = f"restore it with `git checkout -- {_repo_relative(path)}` or reinstall gasp_jax, or point ${ENV} at a copy"
    if not path.is_file():
        raise DataFileError(f"shipped data file {path} is missing: {restore}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise DataFileError(f"shipped data file {path} is truncated or altered ({path.stat().st_size} bytes, sha256 "
                            f"{digest[:12]}... != {expected[:12]}... in {CHECKSUMS}): {restore}")
    return path


def _repo_relative(path: Path) -> str:
    try:
        return str(path.relative_to(SHIPPED_DIR.parents[2]))
    except ValueError:
        return str(path)
