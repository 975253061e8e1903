"""Goalposts: the hard real LiveCodeBench problems that guide the GASP teacher.

Two ways to name them (``config.goalposts``):

* ``report``: the ``goalposts.json`` written by the ``lcb_goalposts`` job (its ``goalpost_ids``, with the
  per-checkpoint evidence giving each goalpost's base pass rate). The problems themselves (statements
  and tests) come from the LCB files in ``sources`` (the report stores ids, not statements).
* no report: the problems of the LCB files in ``sources`` dated in ``[start, end)``, restricted to
  ``ids`` when given (in the given order), at most ``max_goalposts``. With neither a report nor ids, every
  problem of the window is a goalpost only when ``allow_all`` is true (the default; the ``paper`` preset
  sets it false, since its goalposts are the 146 problems no selection run solves, not all 601).

Anything that would make a run meaningless stops it at start-up with a :class:`GoalpostError` naming
the file or problem: an unreadable, empty or malformed report or LCB file, a report id missing from the
files, a goalpost without tests (or with undecodable tests), no goalposts at all.

The problems of the window that are not goalposts form the *reserve* that dynamic goalposts promote
from (see ``dynamic.py``); the report's ``solved`` entries give the reserve's base pass rates.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gasp_jax.data.livecodebench import DataError, DateWindow, LoadReport, Problem, load_problems
from gasp_jax.evaluation.common import load_config_problems

log = logging.getLogger(__name__)


class GoalpostError(ValueError):
    """The goalpost configuration cannot give a meaningful run (raised at start-up)."""


@dataclasses.dataclass(frozen=True)
class Goalpost:
    """One goalpost: an LCB problem plus what the selection runs measured on it.

    ``base_pass_rate`` is correct/judged samples summed over the selection checkpoints (0.0 for a true
    goalpost of the report, > 0 for reserve problems some checkpoint solved, None when unknown).
    """

    problem: Problem
    base_pass_rate: float | None = None

    @property
    def id(self) -> str:
        return self.problem.id

    @property
    def statement(self) -> str:
        return self.problem.statement

    @property
    def title(self) -> str:
        return self.problem.title

    def describe(self) -> dict[str, Any]:
        p = self.problem
        return {"id": p.id, "title": p.title, "difficulty": p.difficulty, "platform": p.platform,
                "date": p.date.date().isoformat(), "base_pass_rate": self.base_pass_rate}


@dataclasses.dataclass(frozen=True)
class GoalpostPool:
    """The active goalposts (in order) and the reserve that dynamic goalposts promote from."""

    goalposts: tuple[Goalpost, ...]
    reserve: tuple[Goalpost, ...]
    source: str  # what the goalposts came from, for logs and reports

    def by_id(self) -> dict[str, Goalpost]:
        return {g.id: g for g in (*self.goalposts, *self.reserve)}


def _read_report(path: str) -> tuple[list[str], dict[str, float], dict[str, float]]:
    """(goalpost ids, goalpost base rates, solved-problem base rates) from an lcb_goalposts report."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise GoalpostError(f"goalpost report {p} is unreadable: {e}") from None
    if not text.strip():
        raise GoalpostError(f"goalpost report {p} is empty")
    try:
        report = json.loads(text)
    except json.JSONDecodeError as e:
        raise GoalpostError(f"goalpost report {p} is not JSON: {e}") from None
    ids = report.get("goalpost_ids") if isinstance(report, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise GoalpostError(f"goalpost report {p} has no 'goalpost_ids' list (is it an lcb_goalposts goalposts.json?)")
    if not ids:
        raise GoalpostError(f"goalpost report {p} lists no goalposts")
    rates = {}
    for entry in report.get("goalposts", []):
        n = sum(int(ev.get("n", 0)) for ev in entry.get("evidence", {}).values())
        c = sum(int(ev.get("correct", 0)) for ev in entry.get("evidence", {}).values())
        if n:
            rates[entry["question_id"]] = c / n
    solved = {pid: int(s.get("correct", 0)) / int(s["n"]) for pid, s in report.get("solved", {}).items() if s.get("n")}
    return list(dict.fromkeys(ids)), rates, solved


def _load_window(cfg: Any, where: str) -> tuple[list[Problem], LoadReport]:
    if cfg.get("hub", False):  # the full release (private tests) through `datasets`
        return _load_hub_window(cfg, where)
    sources = cfg.sources
    sources = [sources] if isinstance(sources, str) else list(sources)
    if not sources:
        raise GoalpostError("config.goalposts.sources is empty: give LCB JSONL files or a release directory")
    for src in sources:
        path = Path(src)
        if path.is_file() and path.stat().st_size == 0:
            raise GoalpostError(f"LCB goalpost file {path} is empty")
    report = LoadReport()
    try:
        problems = load_problems(
            sources,
            window=DateWindow.of(cfg.get("start") or None, cfg.get("end") or None),
            release=cfg.get("release") or None,
            report=report,
        )
    except (OSError, ValueError) as e:
        raise GoalpostError(f"cannot read the LCB goalpost files {sources}: {e}") from None
    if not problems:
        raise GoalpostError(
            f"no LCB problems in {sources} within [{cfg.get('start') or '-inf'}, {cfg.get('end') or '+inf'}) "
            f"({report.rows_read} rows read, {len(report.skipped)} bad)"
        )
    return problems, report


def _load_hub_window(cfg: Any, where: str) -> tuple[list[Problem], LoadReport]:
    problems, report, window = load_config_problems(cfg, where=f"config.{where}")
    if not problems:
        raise GoalpostError(f"no LCB problems of {cfg.get('hub_repo')} ({cfg.get('release') or 'release_v5'}) in {window}")
    return problems, report


def check_tests(goalpost: Goalpost, *, decode: bool = True) -> int:
    """The number of tests of a goalpost; raises GoalpostError when it has none or they do not decode."""
    p = goalpost.problem
    try:
        tests = p.tests if decode else p.public_tests
    except DataError as e:
        raise GoalpostError(f"goalpost {p.id}: its tests cannot be decoded: {e}") from None
    count = len(tests) if decode else len(tests) + int(p.has_private_tests)
    if count == 0:
        raise GoalpostError(f"goalpost {p.id} ({p.title!r}) has no tests: it could never be judged solved")
    return count


def load_goalposts(cfg: Any, *, where: str = "goalposts") -> GoalpostPool:
    """The goalpost pool described by ``config.goalposts`` (see the module docstring); ``where`` names the
    block in errors. Without a report or ids, every problem of the window is a goalpost only when
    ``allow_all`` (default True) says so: the paper preset sets it False."""
    if not cfg.get("report") and not cfg.get("ids") and not cfg.get("allow_all", True):
        raise GoalpostError(
            f"{where}.report is empty: the paper's goalposts are the LCB problems no baseline solves; make the report "
            "with `python -m gasp_jax.main --config=configs/lcb_goalposts.py:/ckpt/a,/ckpt/b --workdir=runs/goalposts` "
            f"and pass --config.{where}.report=runs/goalposts/goalposts.json (or set {where}.ids, or "
            f"{where}.allow_all=True for every problem of the window)")
    problems, load_report = _load_window(cfg, where)
    by_id = {p.id: p for p in problems}
    skipped = {s.problem_id: s.reason for s in load_report.skipped}
    ids: Sequence[str]
    rates: Mapping[str, float] = {}
    reserve_rates: Mapping[str, float] = {}
    if cfg.get("report"):
        ids, rates, reserve_rates = _read_report(cfg.report)
        source = f"report {cfg.report}"
    elif cfg.get("ids"):
        ids = list(dict.fromkeys(cfg.ids))
        source = "ids " + ",".join(ids)
    else:
        ids = [p.id for p in problems]
        source = f"window [{cfg.get('start') or '-inf'}, {cfg.get('end') or '+inf'})"
    missing = [i for i in ids if i not in by_id]
    if missing:
        reasons = "; ".join(f"{i}: {skipped.get(i, 'not in the files or outside the date window')}" for i in missing[:10])
        raise GoalpostError(f"{len(missing)} goalposts cannot be loaded from {list(cfg.sources)} ({reasons})")
    limit = int(cfg.get("max_goalposts", 0) or 0)
    chosen = list(ids[:limit] if limit else ids)
    goalposts = tuple(Goalpost(by_id[i], rates.get(i)) for i in chosen)
    decode = bool(cfg.get("decode_tests", True))
    for g in goalposts:
        check_tests(g, decode=decode)
    taken = set(chosen)
    known = {**reserve_rates, **rates}  # report goalposts beyond max_goalposts join the reserve at rate 0
    reserve = tuple(Goalpost(p, known.get(p.id)) for p in problems if p.id not in taken)
    log.info("goalposts: %d from %s (reserve of %d problems for dynamic goalposts)", len(goalposts), source, len(reserve))
    return GoalpostPool(goalposts, reserve, source)
