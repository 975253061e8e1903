"""pass@k: the stable product form against brute-force enumeration and exact binomials."""

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasp_jax.evaluation import mean_pass_at_k, pass_at_k, pass_at_k_table
from gasp_jax.evaluation.pass_at_k import pass_at_k_exact


def brute_force(n: int, c: int, k: int) -> Fraction:
    """Fraction of all k-subsets of n samples (c correct) that contain a correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(any(samples[i] for i in s) for s in subsets)
    return Fraction(hits, len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_matches_brute_force_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(brute_force(n, c, k)), abs=1e-12), (n, c, k)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 400).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_matches_exact_binomials(nck):
    n, c, k = nck
    exact = Fraction(math.comb(n, k) - math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-9, abs=1e-12)


def test_stable_where_binomials_overflow_floats():
    # C(2000, 1000) ~ 1e600 overflows float; the product form stays exact.
    n, c, k = 2000, 3, 1000
    exact = Fraction(math.comb(n, k) - math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k_exact(50, 5, 10) == pytest.approx(pass_at_k(50, 5, 10), rel=1e-12)


def test_edge_values():
    assert pass_at_k(100, 0, 100) == 0.0
    assert pass_at_k(100, 1, 100) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 5, 1) == 1.0


@pytest.mark.parametrize("args", [(5, 1, 6), (5, 6, 1), (0, 0, 1), (5, 1, 0), (5, -1, 1)])
def test_invalid_arguments_raise(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)


def test_accepts_numpy_integers():
    import numpy as np

    assert pass_at_k(np.int64(10), np.int32(3), np.int64(1)) == pytest.approx(0.3)


def test_rejects_non_integers():
    with pytest.raises(TypeError):
        pass_at_k(5.0, 1, 1)
    with pytest.raises(TypeError):
        pass_at_k(5, True, 1)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(1, n - 1))))
def test_monotone_in_c_and_k(nck):
    n, c, k = nck
    assert pass_at_k(n, c + 1, k) >= pass_at_k(n, c, k) - 1e-12
    assert pass_at_k(n, c, k + 1) >= pass_at_k(n, c, k) - 1e-12


def test_mean_excludes_problems_with_too_few_samples():
    mean, used, excluded = mean_pass_at_k([(10, 10), (10, 0), (3, 3)], k=5)
    assert (mean, used, excluded) == (0.5, 2, 1)
    assert mean_pass_at_k([(2, 1)], k=5) == (None, 0, 1)


def test_table_overall_and_groups():
    counts = {"a": (4, 4), "b": (4, 0), "c": (4, 2)}
    groups = {"difficulty": {"a": "easy", "b": "hard", "c": "hard"}}
    table = pass_at_k_table(counts, ks=(1, 4, 5), groups=groups)
    assert table["overall"]["problems"] == 3
    assert table["overall"]["pass@1"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert table["overall"]["pass@4"] == pytest.approx(2 / 3)
    assert "pass@5" not in table["overall"] and table["overall"]["excluded@5"] == 3
    assert table["difficulty"]["easy"]["pass@1"] == 1.0
    assert table["difficulty"]["hard"]["pass@1"] == pytest.approx(0.25)
