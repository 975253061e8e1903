"""The unbiased pass@k estimator and its aggregation over problems.

pass@k = 1 - C(n-c, k) / C(n, k): the probability that at least one of k samples drawn without
replacement from n samples (c of them correct) is correct. The binomials overflow floats for
n ~ 100s, so it is computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i), which is exact in
real arithmetic and stable in floating point (every factor lies in [0, 1)).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence

DEFAULT_KS = (1, 5, 10, 20)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` are correct.

    Only defined for ``1 <= k <= n``; asking for k > n is an error rather than a silently biased
    number (LCB likewise reports pass@k only when every problem has n >= k).
    """
    n, c, k = (_as_int(name, v) for name, v in (("n", n), ("c", c), ("k", k)))
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n; got k={k}, n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def _as_int(name: str, v: object) -> int:
    """Integers (incl. NumPy integers) only: a float count is a caller bug, not something to round."""
    if isinstance(v, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        return operator.index(v)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(v).__name__}") from None


def pass_at_k_exact(n: int, c: int, k: int) -> float:
    """The same estimator with exact big-integer binomials (reference for tests; slow for big n)."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"invalid (n, c, k) = {(n, c, k)}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> tuple[float | None, int, int]:
    """Average pass@k over problems given ``(n, c)`` pairs.

    Returns ``(mean, problems_used, problems_excluded)``; a problem with fewer than ``k`` usable
    samples (e.g. after infrastructure errors dropped some) is excluded and counted, never padded.
    ``mean`` is None when no problem qualifies.
    """
    values = []
    excluded = 0
    for n, c in counts:
        if n >= k:
            values.append(pass_at_k(n, c, k))
        else:
            excluded += 1
    if not values:
        return None, 0, excluded
    return math.fsum(values) / len(values), len(values), excluded


def pass_at_k_table(
    counts: Mapping[str, tuple[int, int]],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    groups: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, dict]:
    """pass@k for each k, overall and per group value (e.g. per difficulty and per platform).

    ``counts`` maps problem id -> (n, c). ``groups`` maps a group name (``"difficulty"``) to a
    mapping problem id -> group value (``"easy"``). Returns
    ``{"overall": {...}, "difficulty": {"easy": {...}}, ...}`` where each leaf is
    ``{"problems": N, "pass@1": x, "excluded@1": e, ...}`` (``pass@k`` present only if defined).
    """

    def leaf(ids: Sequence[str]) -> dict:
        out: dict = {"problems": len(ids)}
        for k in ks:
            mean, _, excluded = mean_pass_at_k((counts[i] for i in ids), k)
            if mean is not None:
                out[f"pass@{k}"] = mean
            if excluded:
                out[f"excluded@{k}"] = excluded
        return out

    ids = sorted(counts)
    table: dict[str, dict] = {"overall": leaf(ids)}
    for name, mapping in (groups or {}).items():
        values = sorted({mapping[i] for i in ids})
        table[name] = {v: leaf([i for i in ids if mapping[i] == v]) for v in values}
    return table
