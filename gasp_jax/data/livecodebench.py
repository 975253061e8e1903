"""LiveCodeBench (`code_generation_lite`) problems from local files, offline and streaming.

The official LCB loader goes through a `datasets` loading script that `datasets>=4` rejects and that
downloads all ~4.5 GB of release files for any version tag. Here the release files (or any JSONL /
JSON-list file with the same 11 fields) are read from local disk, one row at a time:

* every row is validated against the schema; a bad row is reported with its problem id and skipped
  (counted in a :class:`LoadReport`), never raised and never turned into a problem without tests;
* ``private_test_cases`` are decoded lazily (they can be tens of MB per problem) with a class-free
  unpickler and a size cap, because the LCB encoding is base64 -> zlib -> *pickle* -> JSON string and
  a plain ``pickle.loads`` on downloaded data would execute arbitrary code;
* rows are deduplicated on ``question_id`` and filtered by half-open ``contest_date`` windows
  ``[start, end)`` (LCB's own filter is inclusive and silently drops rows dated on the end day with a
  time of day).

See ``docs/livecodebench.md`` for how to obtain the files and for the formats.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import gzip
import io
import json
import logging
import os
import pickle
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from gasp_jax.data import paths

log = logging.getLogger(__name__)

PLATFORMS = frozenset({"leetcode", "atcoder", "codeforces"})
DIFFICULTIES = frozenset({"easy", "medium", "hard"})
TEST_TYPES = frozenset({"stdin", "functional"})
REQUIRED_FIELDS = (
    "question_title",
    "question_content",
    "platform",
    "question_id",
    "contest_id",
    "contest_date",
    "starter_code",
    "difficulty",
    "public_test_cases",
    "private_test_cases",
    "metadata",
)
# Fields that may legitimately be null in redistributed copies (the shipped sample has no private
# tests; one row lacks public tests). A row still needs at least one test in total.
NULLABLE_FIELDS = frozenset({"public_test_cases", "private_test_cases", "metadata", "starter_code"})

# Release tag -> the files it reads (cumulative tags), as in the LCB loading script.
_RELEASE_FILES = ("test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl")
RELEASES: dict[str, tuple[str, ...]] = {
    **{f"release_v{i}": _RELEASE_FILES[:i] for i in range(1, 7)},
    "release_latest": _RELEASE_FILES,
    **{f"v{i}": (_RELEASE_FILES[i - 1],) for i in range(1, 7)},
    **{
        f"v{a}_v{b}": _RELEASE_FILES[a - 1 : b]
        for a in range(1, 7)
        for b in range(a + 1, 7)
    },
}

DEFAULT_MAX_PRIVATE_BYTES = 512 * 1024 * 1024  # decompressed size cap for one problem's private tests

# GASP's split (the paper's): goalposts and RLVR training before it, evaluation on and after it.
LCB_CUTOFF = "2024-08-01"
HUB_DATASET = "livecodebench/code_generation_lite"
DEFAULT_HUB_RELEASE = "release_v5"


class DataError(ValueError):
    """A row (or one of its test blobs) cannot be turned into a gradeable problem."""


@dataclasses.dataclass(frozen=True)
class Test:
    """One LCB test. Functional inputs hold one JSON value per line, outputs one JSON value."""

    __test__ = False  # not a pytest test class

    input: str
    output: str
    testtype: Literal["stdin", "functional"]


@dataclasses.dataclass(frozen=True)
class _PrivateSource:
    """Where a problem's encoded private tests live: inline, or at a byte offset of a JSONL file.

    Keeping only the offset means a loaded release (GBs of blobs) costs almost no memory; the blob
    is re-read when the tests are needed and dropped afterwards.
    """

    blob: str | None = None
    path: str | None = None
    offset: int = -1

    def read(self) -> str | None:
        if self.path is None:
            return self.blob
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            row = json.loads(f.readline())
        return row.get("private_test_cases")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One LCB code-generation problem.

    ``fn_name`` is set for functional (LeetCode-style) problems and ``None`` for stdin problems.
    ``tests`` decodes the private tests on each access (not cached: they can be large); it raises
    :class:`DataError` when the private blob is undecodable, which callers report and skip.
    """

    id: str
    title: str
    statement: str
    platform: str
    difficulty: str
    date: dt.datetime
    contest_id: str
    starter_code: str
    fn_name: str | None
    public_tests: tuple[Test, ...]
    has_private_tests: bool = False
    max_private_bytes: int = DEFAULT_MAX_PRIVATE_BYTES
    _private: _PrivateSource = dataclasses.field(default_factory=_PrivateSource, repr=False, compare=False)

    @property
    def stdin(self) -> bool:
        """True for stdin/stdout problems, False for functional ones."""
        return self.fn_name is None

    @property
    def mode(self) -> Literal["stdin", "functional"]:
        return "stdin" if self.fn_name is None else "functional"

    @property
    def private_tests(self) -> tuple[Test, ...]:
        if not self.has_private_tests:
            return ()
        blob = self._private.read()
        tests = _parse_tests(decode_private_tests(blob, max_bytes=self.max_private_bytes), "private")
        _check_test_types(tests, self.fn_name)
        return tests

    @property
    def tests(self) -> tuple[Test, ...]:
        """Public tests followed by private tests, the order LCB grades them in."""
        return self.public_tests + self.private_tests


@dataclasses.dataclass(frozen=True)
class SkippedRow:
    problem_id: str
    source: str
    reason: str


@dataclasses.dataclass
class LoadReport:
    """What a load did, so that no row disappears silently."""

    rows_read: int = 0
    loaded: int = 0
    duplicates: int = 0
    outside_window: int = 0
    skipped: list[SkippedRow] = dataclasses.field(default_factory=list)

    def skip(self, problem_id: str, source: str, reason: str) -> None:
        log.warning("skipping LCB row %s (%s): %s", problem_id, source, reason)
        self.skipped.append(SkippedRow(problem_id, source, reason))

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "loaded": self.loaded,
            "duplicates": self.duplicates,
            "outside_window": self.outside_window,
            "skipped": len(self.skipped),
            "skipped_rows": [dataclasses.asdict(s) for s in self.skipped],
        }


# ----------------------------------------------------------------------------------------------
# Dates


def parse_date(value: str | dt.date | dt.datetime) -> dt.datetime:
    """Parse an ISO date or datetime (``2024-08-01`` is midnight); timezones are refused."""
    if isinstance(value, dt.datetime):
        out = value
    elif isinstance(value, dt.date):
        out = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            out = dt.datetime.fromisoformat(value.strip())
        except ValueError as e:
            raise DataError(f"bad date {value!r}: {e}") from None
    else:
        raise DataError(f"bad date {value!r}: expected a string")
    if out.tzinfo is not None:
        raise DataError(f"bad date {value!r}: LCB dates are naive; timezones are not supported")
    return out


@dataclasses.dataclass(frozen=True)
class DateWindow:
    """Half-open ``[start, end)`` on ``contest_date``; ``None`` leaves that side open.

    Half-open so that ``before = DateWindow(end=cut)`` and ``after = DateWindow(start=cut)`` partition
    the data exactly, whatever the time of day of a row.
    """

    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @classmethod
    def of(cls, start: str | dt.datetime | None = None, end: str | dt.datetime | None = None) -> DateWindow:
        s = parse_date(start) if start not in (None, "") else None
        e = parse_date(end) if end not in (None, "") else None
        if s is not None and e is not None and not s < e:
            raise ValueError(f"empty date window [{s}, {e})")
        return cls(s, e)

    def __contains__(self, date: dt.datetime) -> bool:
        return (self.start is None or self.start <= date) and (self.end is None or date < self.end)

    def __str__(self) -> str:
        s = self.start.isoformat() if self.start else "-inf"
        e = self.end.isoformat() if self.end else "+inf"
        return f"[{s}, {e})"


# ----------------------------------------------------------------------------------------------
# Private tests


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickler that refuses every class, function or persistent id: only plain data decodes."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from test data")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids in test data")


def decode_private_tests(blob: str | None, *, max_bytes: int = DEFAULT_MAX_PRIVATE_BYTES) -> list[Any]:
    """Decode an LCB ``private_test_cases`` field into the raw list of test dicts.

    LCB tries plain JSON first, then base64 -> zlib -> pickle (of a JSON ``str``) -> JSON. The zlib
    stage is capped at ``max_bytes`` so a hostile or corrupt blob cannot exhaust memory, and the
    unpickler refuses all globals, so nothing but a ``str`` (or plain containers) can come out.
    """
    if blob is None or blob == "":
        return []
    if not isinstance(blob, str):
        raise DataError(f"private_test_cases must be a string, got {type(blob).__name__}")
    stripped = blob.lstrip()
    if stripped.startswith("["):
        try:
            value = json.loads(blob)
        except json.JSONDecodeError as e:
            raise DataError(f"private_test_cases is not valid JSON: {e}") from None
        return _as_list(value)
    try:
        raw = base64.b64decode(blob.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise DataError(f"private_test_cases is neither JSON nor base64: {e}") from None
    decomp = zlib.decompressobj()
    try:
        data = decomp.decompress(raw, max_bytes)
    except zlib.error as e:
        raise DataError(f"private_test_cases zlib stream is corrupt: {e}") from None
    if decomp.unconsumed_tail:
        raise DataError(f"private tests exceed the size cap of {max_bytes} bytes (decompressed)")
    if not decomp.eof:
        raise DataError("private_test_cases zlib stream is truncated")
    try:
        payload = _NoGlobalsUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # any unpickling failure, incl. refused globals, is a data error
        raise DataError(f"private_test_cases pickle refused or corrupt: {e}") from None
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", errors="strict")
    if not isinstance(payload, str):
        raise DataError(f"private_test_cases pickle holds {type(payload).__name__}, expected a JSON str")
    try:
        return _as_list(json.loads(payload))
    except json.JSONDecodeError as e:
        raise DataError(f"decoded private tests are not valid JSON: {e}") from None


def _as_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise DataError(f"tests must be a JSON list, got {type(value).__name__}")
    return value


# ----------------------------------------------------------------------------------------------
# Row validation


def _parse_tests(raw: Any, what: str) -> tuple[Test, ...]:
    tests = []
    for i, t in enumerate(_as_list(raw)):
        if not isinstance(t, Mapping):
            raise DataError(f"{what} test {i} is not an object")
        inp, out, tt = t.get("input"), t.get("output"), t.get("testtype")
        if not isinstance(inp, str) or not isinstance(out, str):
            raise DataError(f"{what} test {i} needs string 'input' and 'output'")
        if tt not in TEST_TYPES:
            raise DataError(f"{what} test {i} has testtype {tt!r}, expected one of {sorted(TEST_TYPES)}")
        tests.append(Test(inp, out, tt))
    return tuple(tests)


def _check_test_types(tests: Sequence[Test], fn_name: str | None) -> None:
    want = "stdin" if fn_name is None else "functional"
    bad = [t.testtype for t in tests if t.testtype != want]
    if bad:
        why = "no metadata.func_name" if fn_name is None else f"func_name {fn_name!r}"
        raise DataError(f"{len(bad)} test(s) of type {bad[0]!r} in a {want} problem ({why})")


def _field(row: Mapping[str, Any], name: str) -> Any:
    value = row[name]
    if value is None and name in NULLABLE_FIELDS:
        return None
    if not isinstance(value, str):
        raise DataError(f"field {name!r} must be a string, got {type(value).__name__}")
    return value


def problem_from_row(
    row: Mapping[str, Any],
    *,
    private: _PrivateSource | None = None,
    max_private_bytes: int = DEFAULT_MAX_PRIVATE_BYTES,
) -> Problem:
    """Validate one ``code_generation_lite`` row and build a :class:`Problem` (or raise DataError).

    Public tests are parsed eagerly (small); private tests are only checked for presence.
    """
    if not isinstance(row, Mapping):
        raise DataError(f"row is a {type(row).__name__}, expected an object")
    missing = [f for f in REQUIRED_FIELDS if f not in row]
    if missing:
        raise DataError(f"missing field(s) {missing}")
    qid = _field(row, "question_id")
    if not qid:
        raise DataError("empty question_id")
    platform = _field(row, "platform")
    if platform not in PLATFORMS:
        raise DataError(f"platform {platform!r} not in {sorted(PLATFORMS)}")
    difficulty = _field(row, "difficulty")
    if difficulty not in DIFFICULTIES:
        raise DataError(f"difficulty {difficulty!r} not in {sorted(DIFFICULTIES)}")
    raw_date = row["contest_date"]
    # The `datasets` JSON path infers a timestamp column; accept it as well as the string form.
    date = parse_date(raw_date if isinstance(raw_date, dt.datetime) else _field(row, "contest_date"))
    meta_raw = _field(row, "metadata")
    try:
        metadata = json.loads(meta_raw) if meta_raw else {}
    except json.JSONDecodeError as e:
        raise DataError(f"metadata is not valid JSON: {e}") from None
    if not isinstance(metadata, dict):
        raise DataError("metadata must be a JSON object")
    fn_name = metadata.get("func_name")
    if fn_name is not None and (not isinstance(fn_name, str) or not fn_name.isidentifier()):
        raise DataError(f"metadata.func_name {fn_name!r} is not an identifier")
    public_raw = _field(row, "public_test_cases")
    try:
        public = _parse_tests(json.loads(public_raw), "public") if public_raw else ()
    except json.JSONDecodeError as e:
        raise DataError(f"public_test_cases is not valid JSON: {e}") from None
    _check_test_types(public, fn_name)
    private_blob = _field(row, "private_test_cases")
    has_private = bool(private_blob) and private_blob.strip() not in ("[]", "")
    if not public and not has_private:
        raise DataError("no tests (public and private both empty)")
    return Problem(
        id=qid,
        title=_field(row, "question_title"),
        statement=_field(row, "question_content"),
        platform=platform,
        difficulty=difficulty,
        date=date,
        contest_id=_field(row, "contest_id"),
        starter_code=_field(row, "starter_code") or "",
        fn_name=fn_name,
        public_tests=public,
        has_private_tests=has_private,
        max_private_bytes=max_private_bytes,
        _private=private if private is not None else _PrivateSource(blob=private_blob if has_private else None),
    )


# ----------------------------------------------------------------------------------------------
# Files


def resolve_sources(sources: str | os.PathLike | Iterable[str | os.PathLike], release: str | None = None) -> list[Path]:
    """Expand files and release directories into the ordered list of files to read.

    A directory means its LCB release files: those of ``release`` (all must exist), or every
    ``test*.jsonl`` present, in release order.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    out: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            if release is not None:
                if release not in RELEASES:
                    raise ValueError(f"unknown LCB release {release!r}; known: {sorted(RELEASES)}")
                files = [p / name for name in RELEASES[release]]
                absent = [str(f) for f in files if not f.is_file()]
                if absent:
                    raise FileNotFoundError(f"release {release} needs {absent} (see docs/livecodebench.md)")
            else:
                files = [p / name for name in _RELEASE_FILES if (p / name).is_file()]
                if not files:
                    raise FileNotFoundError(f"no LCB release files (test.jsonl ... test6.jsonl) in {p}")
            out.extend(files)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"LCB source {p} does not exist")
    return out


def iter_rows(path: str | os.PathLike) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(line_no, byte_offset, row_or_exception)`` for a JSONL file or a JSON-list file.

    JSONL is streamed line by line; a ``.json`` file holding one list is parsed whole (only small
    files are shipped that way). Unparseable lines are yielded as the exception, not raised. A
    ``.gz`` file is read decompressed; its offsets are -1 (rows keep their private blobs inline:
    seeking in a gzip stream means decompressing up to the offset).
    """
    path = Path(path)
    if paths.stem(path).endswith(".json"):
        rows = paths.read_json(path)
        if isinstance(rows, dict):
            rows = [rows]
        for i, row in enumerate(rows):
            yield i + 1, -1, row
        return
    compressed = path.suffix == ".gz"
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            line_no = 0
            while True:
                offset = -1 if compressed else f.tell()
                line = f.readline()
                if not line:
                    break
                line_no += 1
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    row = DataError(f"line is not valid JSON: {e}")
                yield line_no, offset, row
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: the compressed file is truncated or corrupt ({e}); copy it again") from None

def _row_id(row: Any, where: str) -> str:
    if isinstance(row, Mapping) and isinstance(row.get("question_id"), str) and row["question_id"]:
        return row["question_id"]
    return f"<{where}>"


def iter_problems(
    sources: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    window: DateWindow | None = None,
    release: str | None = None,
    report: LoadReport | None = None,
    max_private_bytes: int = DEFAULT_MAX_PRIVATE_BYTES,
) -> Iterator[Problem]:
    """Stream validated, deduplicated problems inside ``window`` from local LCB files."""
    report = report if report is not None else LoadReport()
    seen: set[str] = set()
    for path in resolve_sources(sources, release):
        for line_no, offset, row in iter_rows(path):
            report.rows_read += 1
            where = f"{path.name}:{line_no}"
            if isinstance(row, Exception):
                report.skip(f"<{where}>", str(path), str(row))
                continue
            private = None
            if offset >= 0 and isinstance(row, Mapping) and row.get("private_test_cases"):
                private = _PrivateSource(path=str(path), offset=offset)
            yield from _accept(row, where, str(path), private, window, report, seen, max_private_bytes)


def _accept(
    row: Any,
    where: str,
    source: str,
    private: _PrivateSource | None,
    window: DateWindow | None,
    report: LoadReport,
    seen: set[str],
    max_private_bytes: int,
) -> Iterator[Problem]:
    try:
        problem = problem_from_row(row, private=private, max_private_bytes=max_private_bytes)
    except DataError as e:
        report.skip(_row_id(row, where), source, str(e))
        return
    if problem.id in seen:
        report.duplicates += 1
        log.warning("duplicate LCB question_id %s in %s; keeping the first", problem.id, where)
        return
    seen.add(problem.id)
    if window is not None and problem.date not in window:
        report.outside_window += 1
        return
    report.loaded += 1
    yield problem


def load_problems(
    sources: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    window: DateWindow | None = None,
    release: str | None = None,
    report: LoadReport | None = None,
    max_private_bytes: int = DEFAULT_MAX_PRIVATE_BYTES,
) -> list[Problem]:
    """:func:`iter_problems` collected into a list, sorted by (date, id) for stable job order."""
    problems = list(
        iter_problems(sources, window=window, release=release, report=report, max_private_bytes=max_private_bytes)
    )
    problems.sort(key=lambda p: (p.date, p.id))
    return problems


def load_problems_with_datasets(
    data_files: str | Sequence[str],
    *,
    window: DateWindow | None = None,
    report: LoadReport | None = None,
    max_private_bytes: int = DEFAULT_MAX_PRIVATE_BYTES,
    cache_dir: str | None = None,
) -> list[Problem]:
    """Load through ``datasets.load_dataset("json", data_files=...)`` (Arrow-cached, memory-mapped).

    Same validation, dedupe and windowing as :func:`load_problems`. Private blobs stay inline in the
    Arrow table; pyarrow's JSON reader is fragile on the 100 MB-scale rows of the full release files
    (datasets #2181/#5531), so the streaming loader is the default.
    """
    import datasets  # heavy (pyarrow): only the hub path loads it

    ds = datasets.load_dataset("json", data_files=data_files, split="train", cache_dir=cache_dir)
    return _problems_from_dataset(ds, window=window, report=report, max_private_bytes=max_private_bytes)


class HubUnavailableError(paths.DataUnavailableError):
    """The LCB release could not be read from the Hugging Face Hub (offline, unknown repo, no access)."""


def hub_data_files(version_tag: str = DEFAULT_HUB_RELEASE, repo: str = HUB_DATASET) -> list[str]:
    """The files of LCB release ``version_tag`` in ``repo``: ``hf://`` paths of a Hub dataset, or the
    files of a local directory with the Hub repository's layout (a mirror; tests)."""
    if version_tag not in RELEASES:
        raise ValueError(f"unknown LCB version_tag {version_tag!r}; known: {sorted(RELEASES)}")
    if os.path.isdir(repo):
        return [os.path.join(repo, name) for name in RELEASES[version_tag]]
    return [f"hf://datasets/{repo}/{name}" for name in RELEASES[version_tag]]


def load_problems_from_hub(
    version_tag: str = DEFAULT_HUB_RELEASE,
    *,
    repo: str = HUB_DATASET,
    window: DateWindow | None = None,
    report: LoadReport | None = None,
    max_private_bytes: int = DEFAULT_MAX_PRIVATE_BYTES,
    cache_dir: str | None = None,
) -> list[Problem]:
    """The full LCB release (private tests included) through ``datasets.load_dataset``, downloaded once
    into the ``datasets`` cache. The Hub repository's loading script is refused by ``datasets>=4``, so
    its release files are read with the JSON builder; rows are validated as in :func:`load_problems`.
    ``HubUnavailableError`` when the files cannot be fetched (offline, no such repository)."""
    import datasets  # heavy (pyarrow): only the hub path loads it

    files = hub_data_files(version_tag, repo)
    try:
        ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache_dir)
    except Exception as e:  # network / hub / filesystem errors come in many types (httpx, hf_hub, OSError)
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise HubUnavailableError(f"cannot read {repo} ({version_tag}) through datasets: {type(e).__name__}: {reason}") from e
    return _problems_from_dataset(ds, window=window, report=report, max_private_bytes=max_private_bytes)


def _problems_from_dataset(
    ds: Any, *, window: DateWindow | None, report: LoadReport | None, max_private_bytes: int
) -> list[Problem]:
    report = report if report is not None else LoadReport()
    seen: set[str] = set()
    out: list[Problem] = []
    for i, row in enumerate(ds):
        report.rows_read += 1
        out.extend(_accept(row, f"row {i}", "datasets", None, window, report, seen, max_private_bytes))
    out.sort(key=lambda p: (p.date, p.id))
    return out
