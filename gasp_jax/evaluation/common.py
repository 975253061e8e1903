"""Config plumbing shared by the LCB jobs: problems, prompts, the sandbox, reports."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from gasp_jax.data import paths
from gasp_jax.data.livecodebench import (
    DEFAULT_HUB_RELEASE,
    DEFAULT_MAX_PRIVATE_BYTES,
    HUB_DATASET,
    DateWindow,
    HubUnavailableError,
    LoadReport,
    Problem,
    load_problems,
    load_problems_from_hub,
    load_problems_with_datasets,
    resolve_sources,
)
from gasp_jax.evaluation.prompts import load_few_shot, render_prompt
from gasp_jax.sandbox import Limits, Sandbox

log = logging.getLogger(__name__)


def load_config_problems(data_cfg: Any, *, where: str = "config.data") -> tuple[list[Problem], LoadReport, DateWindow]:
    """Problems selected by an LCB data block (``where`` names it in errors): ``sources`` (files or a
    release directory, default the shipped public-test problems) or, with ``hub=True``, the release
    ``release`` (default release_v5) of ``hub_repo`` through ``datasets``; then window, ids, max_problems."""
    window = DateWindow.of(data_cfg.get("start") or None, data_cfg.get("end") or None)
    report = LoadReport()
    max_bytes = int(data_cfg.get("max_private_mb", 0) * 1024 * 1024) or DEFAULT_MAX_PRIVATE_BYTES
    if data_cfg.get("hub", False):
        tag = data_cfg.get("release") or DEFAULT_HUB_RELEASE
        try:
            problems = load_problems_from_hub(tag, repo=data_cfg.get("hub_repo") or HUB_DATASET, window=window,
                                              report=report, max_private_bytes=max_bytes)
        except HubUnavailableError as e:
            raise HubUnavailableError(f"{where}.hub=True: {e}; connect to the internet (or fill the datasets cache), "
                                      f"or pass --{where}.hub=False to read local files") from None
    else:
        sources = _sources(data_cfg, where)
        if data_cfg.get("loader", "stream") == "datasets":
            files = [str(f) for f in resolve_sources(sources, data_cfg.get("release") or None)]
            problems = load_problems_with_datasets(files, window=window, report=report, max_private_bytes=max_bytes)
        else:
            problems = load_problems(sources, window=window, release=data_cfg.get("release") or None, report=report,
                                     max_private_bytes=max_bytes)
    ids = tuple(data_cfg.get("problem_ids", ()) or ())
    if ids:
        wanted = set(ids)
        missing = wanted - {p.id for p in problems}
        if missing:
            log.warning("requested problem ids not found in the window: %s", sorted(missing))
        problems = [p for p in problems if p.id in wanted]
    limit = int(data_cfg.get("max_problems", 0) or 0)
    if limit:
        problems = problems[:limit]
    if problems and not any(p.has_private_tests for p in problems):
        log.warning("LCB: no selected problem has private tests: grading on PUBLIC tests only (not comparable to LCB)")
    log.info(
        "LCB: %d problems in %s (%d rows read, %d skipped as bad, %d duplicates, %d outside the window)",
        len(problems), window, report.rows_read, len(report.skipped), report.duplicates, report.outside_window,
    )
    return problems, report, window


def _sources(data_cfg: Any, where: str) -> list[str]:
    sources = data_cfg.sources
    if isinstance(sources, str):
        sources = [sources]
    if not sources:
        raise ValueError(f"{where}.sources is empty: give LCB JSONL files or a release directory (or {where}.hub=True)")
    return list(sources)


def data_identity(data_cfg: Any) -> list[list[Any]]:
    """(file name, size) of every data file: part of a run's fingerprint, so samples graded on one
    copy of the tests (e.g. the public-only sample) are never silently reused with another."""
    if data_cfg.get("hub", False):
        return [["hub", data_cfg.get("hub_repo") or HUB_DATASET, data_cfg.get("release") or DEFAULT_HUB_RELEASE]]
    files = resolve_sources(_sources(data_cfg, "config.data"), data_cfg.get("release") or None)
    return [[paths.stem(f), f.stat().st_size] for f in files]


def make_prompt_fn(prompt_cfg: Any, tokenizer: Any) -> Callable[[Problem], str]:
    style = prompt_cfg.get("style", "chat")
    few_shot = None
    if style == "base":
        few_shot = load_few_shot(prompt_cfg.get("few_shot_dir") or paths.few_shot_dir())
    return lambda problem: render_prompt(problem, style, tokenizer=tokenizer, few_shot=few_shot)


@contextlib.contextmanager
def open_sandbox(sandbox_cfg: Any) -> Iterator[Any]:
    """A started ``gasp_jax.sandbox.Sandbox`` configured from ``config.sandbox``."""
    workers = int(sandbox_cfg.get("workers", 0) or 0) or (os.cpu_count() or 1)
    kwargs: dict[str, Any] = {"workers": workers}
    limits = sandbox_limits(sandbox_cfg.get("limits", {}) or {})
    if limits is not None:
        kwargs["limits"] = limits
    with Sandbox(**kwargs) as sb:
        yield sb


def sandbox_limits(limits_cfg: Mapping[str, Any]) -> Any:
    """``gasp_jax.sandbox.Limits`` from an evaluation config's ``sandbox.limits`` block (``None`` when
    empty). Memory is ``memory_mb`` as everywhere in the configs; the old ``memory_bytes`` key (non-zero)
    still works, with a deprecation warning, and may not disagree with ``memory_mb``."""
    if limits_cfg and limits_cfg.get("memory_bytes"):
        warnings.warn("sandbox.limits.memory_bytes is deprecated: use sandbox.limits.memory_mb", DeprecationWarning,
                      stacklevel=2)
        log.warning("sandbox.limits.memory_bytes is deprecated: use sandbox.limits.memory_mb")
    fields = limit_fields(limits_cfg)
    return Limits(**fields) if fields else None


def limit_fields(limits_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``Limits`` keyword arguments of a ``sandbox.limits`` block (``memory_mb`` -> ``memory_bytes``):
    also what a run's fingerprint records, so renaming the key does not invalidate resumable samples."""
    fields = dict(limits_cfg or {})
    memory_mb = int(fields.pop("memory_mb", 0) or 0)
    memory_bytes = int(fields.pop("memory_bytes", 0) or 0)
    if memory_bytes and memory_mb and memory_mb << 20 != memory_bytes:
        raise ValueError(f"sandbox.limits: memory_mb={memory_mb} and the deprecated memory_bytes={memory_bytes} "
                         "disagree: set only memory_mb")
    if memory_bytes or memory_mb:
        fields["memory_bytes"] = memory_bytes or memory_mb << 20
    return fields


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def config_to_dict(config: Any) -> dict[str, Any]:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def run_fingerprint(config: Any, model_cfg: Any) -> dict[str, Any]:
    """Settings that change a job's samples or their grades (for one model); a resumed run must match."""
    return {
        "model": config_to_dict(model_cfg),
        "prompt": config_to_dict(config.prompt),
        "sampling": {k: v for k, v in config_to_dict(config.sampling).items() if k not in ("batch_problems", "max_rows")},
        "extraction": config.extraction,
        "sandbox_limits": limit_fields(config_to_dict(config.sandbox).get("limits", {})),
        "data_files": data_identity(config.data),
    }
