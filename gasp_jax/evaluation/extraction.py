"""Code extraction from model completions.

``extract_code`` with ``mode="lcb"`` reproduces LiveCodeBench's ``extract_code`` for chat styles:
split on ``\\n``, find the lines containing a triple-backtick fence, return the lines strictly
between the **last two** fence lines, or ``""`` when there are fewer than two. It is checked against
the official O1-Mini ``output_list`` -> ``code_list`` pairs in the tests. Reported pass@k uses it.

``mode="lenient"`` additionally recovers code from completions cut off by ``max_new_tokens`` (an odd
number of fence lines: the last block is open, take everything after its fence) and from
completions with no fence at all (the whole text). It is meant for small or base models whose
output is often unfenced; numbers computed with it are not comparable to LCB's.
"""

from __future__ import annotations

from typing import Literal

FENCE = "```"
ExtractionMode = Literal["lcb", "lenient"]


def _fence_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if FENCE in line]


def extract_code(completion: str, mode: ExtractionMode = "lcb") -> str:
    """The program in ``completion`` (``""`` if none); never raises for any string."""
    if mode not in ("lcb", "lenient"):
        raise ValueError(f"unknown extraction mode {mode!r}")
    lines = completion.split("\n")
    fences = _fence_lines(lines)
    if mode == "lenient" and len(fences) % 2 == 1:
        # The final block was opened and never closed (truncated generation).
        return "\n".join(lines[fences[-1] + 1 :])
    if len(fences) < 2:
        if mode == "lenient" and not fences:
            return completion.strip()
        return ""
    return "\n".join(lines[fences[-2] + 1 : fences[-1]])
