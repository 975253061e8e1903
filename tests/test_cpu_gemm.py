"""The packed CPU GEMM (gasp_jax/kernels): equal to x @ w for any M, K, N, under jit / scan / vmap, its build
cache, and the one logged line when it cannot be built."""

import glob
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gasp_jax import cache_dirs
from gasp_jax.kernels import cpu_gemm

M_ROWS = (1, 3, 16, 17, 64, 300)
# Every K with N in {16, 100, 1024}, and the LM-head width at the smaller K (a 2048 x 32768 weight is 256 MiB).
KN = [(k, n) for k in (64, 201, 512, 2048) for n in (16, 100, 1024)] + [(64, 32768), (201, 32768), (512, 32768)]


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """Nothing here reads or writes the user's ~/.cache."""
    monkeypatch.setenv(cache_dirs.CACHE_ENV, str(tmp_path / "cache"))


def _check(y, x, w):
    """allclose to float64 x @ w, the tolerance scaled per element by sum_k |x_mk w_kn| (fp32 rounding's scale)."""
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    want, scale = x64 @ w64, np.abs(x64) @ np.abs(w64)
    np.testing.assert_array_less(np.abs(np.asarray(y, np.float64) - want), 1e-5 * np.abs(want) + 1e-5 * scale + 1e-30)


@pytest.mark.parametrize("k,n", KN)
def test_matches_matmul_for_every_m(kernel, k, n):
    rng = np.random.default_rng(k * 7 + n)
    w = rng.standard_normal((k, n), dtype=np.float32)
    packed = jax.jit(cpu_gemm.pack)(w)
    assert packed.shape == (-(-n // cpu_gemm.PANEL), k, cpu_gemm.PANEL)
    matmul = jax.jit(cpu_gemm.matmul, static_argnums=2)
    for m in M_ROWS:
        x = rng.standard_normal((m, k), dtype=np.float32)
        y = matmul(x, packed, n)
        assert y.shape == (m, n) and y.dtype == jnp.float32
        _check(y, x, w)


def test_pack_layout_is_column_panels_zero_padded(kernel):
    w = np.arange(3 * 20, dtype=np.float32).reshape(3, 20)
    packed = np.asarray(cpu_gemm.pack(w))
    assert packed.shape == (2, 3, 16) == cpu_gemm.packed_shape(3, 20)
    np.testing.assert_array_equal(packed[0], w[:, :16])
    np.testing.assert_array_equal(packed[1, :, :4], w[:, 16:])
    assert not packed[1, :, 4:].any()


def test_leading_dims_scan_and_vmap(kernel):
    """x's leading dims flatten into rows; stacked layers pack at once and run one slice per scan step."""
    rng = np.random.default_rng(0)
    layers, k, n = 3, 96, 96
    ws = rng.standard_normal((layers, k, n), dtype=np.float32) / 10
    x = rng.standard_normal((2, 5, k), dtype=np.float32)
    packed = jax.jit(cpu_gemm.pack)(ws)
    assert packed.shape == (layers, n // 16, k, 16)

    @jax.jit
    def chain(x, packed):
        return jax.lax.scan(lambda h, p: (cpu_gemm.matmul(h, p, n), None), x, packed)[0]

    want = x
    for w in ws:
        want = want @ w
    np.testing.assert_allclose(chain(x, packed), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    y = jax.jit(jax.vmap(cpu_gemm.matmul, in_axes=(0, None, None)), static_argnums=2)(x, packed[0], n)
    assert y.shape == (2, 5, n)
    _check(y.reshape(10, n), x.reshape(10, k), ws[0])


def test_bad_shapes_name_the_expected_layout(kernel):
    packed = cpu_gemm.pack(jnp.ones((32, 40)))
    with pytest.raises(ValueError, match=r"not pack\(w\) of a float32 \[32, 50\] weight"):
        cpu_gemm.matmul(jnp.ones((4, 32)), packed, 50)
    with pytest.raises(ValueError, match="float32 only"):
        cpu_gemm.matmul(jnp.ones((4, 32), jnp.bfloat16), packed, 40)


_PROBE = ("import logging, sys; logging.basicConfig(stream=sys.stdout, format='%(name)s %(message)s'); "
          "from gasp_jax.kernels import cpu_gemm; print('available', cpu_gemm.available())")


def _probe(env: dict) -> str:
    done = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("env,reason", [
    ({"CXX": "/nonexistent/c++"}, "No such file"),
    ({"CXX": "c++ -include /nonexistent/header.h"}, "failed: .*nonexistent/header.h"),
    ({cpu_gemm.DISABLE_ENV: "0"}, f"disabled by {cpu_gemm.DISABLE_ENV}=0"),
])
def test_unavailable_is_false_with_one_logged_reason(tmp_path, env, reason):
    """Runs without the kernel: in a subprocess, so this process's build stays untouched."""
    out = _probe({cache_dirs.CACHE_ENV: str(tmp_path), **env})
    lines = [line for line in out.splitlines() if "gasp_jax.kernels" in line]
    assert out.splitlines()[-1] == "available False"
    assert len(lines) == 1 and "unavailable" in lines[0], out
    assert __import__("re").search(reason, lines[0]), lines[0]
    assert not glob.glob(str(tmp_path / "kernels" / "*")) and not glob.glob(str(tmp_path / "kernels" / ".*"))


_PORTABLE = """
import numpy as np, jax
from gasp_jax.kernels import cpu_attention, cpu_gemm
assert cpu_gemm.available()
rng = np.random.default_rng(0)
for m, k, n in [(1, 64, 16), (7, 201, 100), (17, 512, 1024), (300, 64, 40)]:
    x, w = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    y = np.asarray(jax.jit(cpu_gemm.matmul, static_argnums=2)(x, cpu_gemm.pack(w), n), np.float64)
    want, scale = x.astype(np.float64) @ w, np.abs(x.astype(np.float64)) @ np.abs(w)
    assert (np.abs(y - want) <= 1e-5 * (np.abs(want) + scale)).all(), (m, k, n)
q, kv = rng.standard_normal((2, 3, 4, 20), dtype=np.float32), rng.standard_normal((2, 2, 2, 9, 20), dtype=np.float32)
mask = rng.random((2, 3, 9)) < 0.7
mask[..., 0] = True
scores = np.einsum("btkgd,bksd->btkgs", q.reshape(2, 3, 2, 2, 20), kv[0]) / np.sqrt(20)
probs = np.exp(np.where(mask[:, :, None, None], scores, -np.inf) - scores.max(-1, keepdims=True))
want = np.einsum("btkgs,bksd->btkgd", probs / probs.sum(-1, keepdims=True), kv[1]).reshape(2, 3, 4, 20)
assert np.allclose(np.asarray(cpu_attention.attention(q, kv[0], kv[1], mask)), want, atol=1e-5)
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("flags", ["-mno-avx512f", "-mno-avx512f -mno-avx2 -mno-fma"])
def test_portable_paths_match_matmul(kernel, tmp_path, flags):
    """The AVX2 and plain vector-extension code paths of both kernels (what other machines build), here by
    masking ISAs."""
    done = subprocess.run([sys.executable, "-c", _PORTABLE], capture_output=True, text=True, timeout=300,
                          env={**os.environ, cache_dirs.CACHE_ENV: str(tmp_path), "CXX": f"c++ {flags}"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_second_process_reuses_the_cached_build(kernel):
    (built,) = glob.glob(os.path.join(kernel, "kernels", "*"))
    before = os.stat(built).st_mtime_ns
    out = _probe({cache_dirs.CACHE_ENV: kernel})
    assert out.splitlines()[-1] == "available True", out
    assert glob.glob(os.path.join(kernel, "kernels", "*")) == [built]
    assert os.stat(built).st_mtime_ns == before
