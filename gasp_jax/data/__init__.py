"""Datasets for gasp_jax (local files only; nothing is fetched from a hub)."""

from gasp_jax.data.livecodebench import (
    DataError,
    DateWindow,
    LoadReport,
    Problem,
    SkippedRow,
    Test,
    decode_private_tests,
    iter_problems,
    load_problems,
    load_problems_with_datasets,
)

__all__ = [
    "DataError",
    "DateWindow",
    "LoadReport",
    "Problem",
    "SkippedRow",
    "Test",
    "decode_private_tests",
    "iter_problems",
    "load_problems",
    "load_problems_with_datasets",
]
