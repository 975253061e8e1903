"""Checks on program text that happen before (and instead of) execution.

``validate_program`` turns unusable text into a ``CE`` reason without running anything.
``find_banned_imports`` is the AZR-style *validity* rule for teacher programs (a program that
imports ``random`` or ``time`` cannot be a deterministic task). It is not a security measure:
the OS isolation is. It only parses (``ast.parse``), never executes, and is size-capped.
"""

from __future__ import annotations

import ast
import re

MAX_PROGRAM_BYTES = 256 * 1024

#: Modules whose use makes a self-play task non-deterministic or environment-dependent
#: (after AZR's ``banned_words``; dotted names ban a submodule or attribute path).
DEFAULT_BANNED_MODULES: frozenset[str] = frozenset({
    "logging", "random", "multiprocessing", "pebble", "subprocess", "threading", "datetime", "time",
    "hashlib", "hmac", "bcrypt", "os.sys", "os.path", "sys.exit", "os.environ", "calendar",
    "secrets", "uuid", "socket", "asyncio", "concurrent",
})


def validate_program(code: object, max_bytes: int = MAX_PROGRAM_BYTES) -> tuple[str | None, str | None]:
    """Return ``(text, None)`` for usable program text, else ``(None, reason)`` (a CE).

    Accepts ``str`` or UTF-8 ``bytes``. Rejects: not text, empty/whitespace-only, NUL bytes,
    invalid UTF-8 or lone surrogates, more than ``max_bytes`` bytes. Syntax is checked in the
    sandbox child (compiling untrusted text belongs there too), which reports CE.
    """
    if code is None:
        return None, "no program"
    if isinstance(code, (bytes, bytearray, memoryview)):
        raw = bytes(code)
        if len(raw) > max_bytes:
            return None, f"program is larger than {max_bytes} bytes"
        try:
            code = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, "program is not valid UTF-8"
    if not isinstance(code, str):
        return None, f"program must be str or bytes, not {type(code).__name__}"
    if len(code) > max_bytes:
        return None, f"program is larger than {max_bytes} bytes"
    try:
        size = len(code.encode("utf-8"))
    except UnicodeEncodeError:
        return None, "program contains lone surrogates (not valid UTF-8)"
    if size > max_bytes:
        return None, f"program is larger than {max_bytes} bytes"
    if "\x00" in code:
        return None, "program contains NUL bytes"
    if not code.strip():
        return None, "empty program"
    return code, None


def _banned(name: str, banned: frozenset[str] | set[str]) -> str | None:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix in banned:
            return prefix
    return None


def find_banned_imports(code: str, banned: frozenset[str] | set[str] = DEFAULT_BANNED_MODULES) -> list[str]:
    """Banned modules that ``code`` imports (sorted, unique). Unparseable code falls back to a
    word match on ``import``/``from`` lines, so a syntax error cannot hide an import."""
    if len(code) > MAX_PROGRAM_BYTES:
        code = code[:MAX_PROGRAM_BYTES]
    found: set[str] = set()
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        for match in re.finditer(r"^\s*(?:from\s+([\w.]+)\s+import\s+([\w., ]+)|import\s+([\w., ]+))", code, re.M):
            if match.group(1):
                names = [match.group(1)] + [f"{match.group(1)}.{n.strip()}" for n in match.group(2).split(",")]
            else:
                names = [n.strip().split(" ")[0] for n in match.group(3).split(",")]
            for name in names:
                hit = _banned(name, banned)
                if hit:
                    found.add(hit)
        return sorted(found)
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        for name in names:
            hit = _banned(name, banned)
            if hit:
                found.add(hit)
    return sorted(found)
