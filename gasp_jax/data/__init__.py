"""Datasets for gasp_jax: the shipped files (`gasp_jax.data.paths`), local releases, or the LCB release
through `datasets` (`load_problems_from_hub`, only when asked for)."""

from gasp_jax.data import paths
from gasp_jax.data.livecodebench import (
    LCB_CUTOFF,
    DataError,
    DateWindow,
    LoadReport,
    Problem,
    SkippedRow,
    Test,
    HubUnavailableError,
    decode_private_tests,
    iter_problems,
    load_problems,
    load_problems_from_hub,
    load_problems_with_datasets,
)

__all__ = [
    "LCB_CUTOFF",
    "DataError",
    "DateWindow",
    "LoadReport",
    "Problem",
    "SkippedRow",
    "Test",
    "HubUnavailableError",
    "decode_private_tests",
    "iter_problems",
    "load_problems",
    "load_problems_from_hub",
    "load_problems_with_datasets",
    "paths",
]
