"""fp32 matmul against a weight packed once, for XLA:CPU decode and prefill (packed_gemm.cc, via the XLA FFI).

XLA:CPU lowers `x @ w` to Eigen, which re-packs the weight operand on every call; at decode shapes (x of a
few rows against a large weight) that costs ~1.7x against a GEMM over a weight packed once. Here the
weights are packed once (e.g. once per rollout) and every step runs `matmul` over the packed copy.

Layout. `pack(w)` turns a `[K, N]` fp32 weight into `[P, K, PANEL]` with `P = ceil(N / PANEL)` column panels
of `PANEL = 16` columns (one 64-byte cache line, one AVX-512 register per panel row); panel `p` holds
columns `p*16 .. p*16+15` as `packed[p, k, j] = w[k, p*16 + j]`, the columns past N zero. Leading dims of
`w` (stacked layers) are kept: `[..., K, N] -> [..., P, K, PANEL]`. `matmul(x, packed, n)` takes x
`[..., K]` fp32 (leading dims flattened into M rows, any M >= 1) and returns `[..., n]`.

    if cpu_gemm.available():
        wp = jax.jit(cpu_gemm.pack)(w)                 # once
        y = jax.jit(cpu_gemm.matmul, static_argnums=2)(x, wp, w.shape[1])   # == x @ w

`available()` compiles packed_gemm.cc on first use with `$CXX` (default c++) `-O3 -march=native` into
`$GASP_JAX_CACHE/kernels` (else `~/.cache/gasp_jax/kernels`), keyed on the source, compiler, flags, jax
version, machine and CPU flags, and registers the FFI target; any failure is one logged line and False.
`GASP_JAX_CPU_KERNELS=0` turns it off. Forward only (no gradient rule); fp32 only; CPU backend only.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import platform
import shlex
import subprocess
import tempfile

import jax
import jax.numpy as jnp

from gasp_jax import cache_dirs

log = logging.getLogger(__name__)

PANEL = 16  # columns per packed panel; packed_gemm.cc's kNB
TARGET = "gasp_packed_gemm"
DISABLE_ENV = "GASP_JAX_CPU_KERNELS"
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c++17")
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "packed_gemm.cc")
_available: bool | None = None  # the first call's answer, for the life of the process


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.split(":")[0].strip() in ("flags", "Features"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _build() -> str:
    """Path of the compiled library: from the cache, else compiled and renamed into place atomically."""
    compiler = shlex.split(os.environ.get("CXX") or "c++")
    with open(_SOURCE, "rb") as f:
        source = f.read()
    version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(
        repr((source, compiler, version, FLAGS, jax.__version__, platform.machine(), _cpu_flags())).encode()
    ).hexdigest()[:20]
    cache = cache_dirs.cache_root("kernels")
    path = os.path.join(cache, f"packed_gemm-{key}.so")
    if os.path.exists(path):
        return path
    os.makedirs(cache, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".packed_gemm-", suffix=".so")
    os.close(fd)
    try:
        cmd = [*compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", _SOURCE, "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            errors = [l for l in done.stderr.splitlines() if "error" in l] or done.stderr.splitlines()[-1:]
            raise RuntimeError(f"`{shlex.join(cmd)}` failed: {errors[0] if errors else done.returncode}")
        os.replace(tmp, path)  # concurrent builders each rename a complete file; the last one wins
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def available() -> bool:
    """Whether `matmul` can run here: builds and registers the kernel on the first call (cached after)."""
    global _available
    if _available is None:
        try:
            if os.environ.get(DISABLE_ENV, "1") == "0":
                raise RuntimeError(f"disabled by {DISABLE_ENV}=0")
            if jax.default_backend() != "cpu":
                raise RuntimeError(f"the default backend is {jax.default_backend()}, not cpu")
            library = ctypes.cdll.LoadLibrary(_build())
            jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.GaspPackedGemm), platform="cpu")
            _available = True
        except Exception as e:  # noqa: BLE001 - any failure means "use XLA's dot", said once
            log.warning("cpu_gemm: the packed CPU GEMM is unavailable (%s: %s)", type(e).__name__, e)
            _available = False
    return _available


def packed_shape(k: int, n: int) -> tuple[int, int, int]:
    """The shape of `pack(w)` for one `[k, n]` weight."""
    return (-(-n // PANEL), k, PANEL)


def pack(w: jax.Array) -> jax.Array:
    """`[..., K, N]` fp32 -> `[..., ceil(N / PANEL), K, PANEL]` column panels, zero past column N."""
    *lead, k, n = w.shape
    panels = -(-n // PANEL)
    w = jnp.pad(w.astype(jnp.float32), [(0, 0)] * len(lead) + [(0, 0), (0, panels * PANEL - n)])
    return jnp.swapaxes(w.reshape(*lead, k, panels, PANEL), -3, -2)


def matmul(x: jax.Array, packed: jax.Array, n: int) -> jax.Array:
    """`x @ w` for `packed = pack(w)` of one `[K, n]` weight: x `[..., K]` fp32 -> `[..., n]` fp32."""
    if not available():
        raise RuntimeError("cpu_gemm.matmul: the kernel is unavailable here (see the logged reason); use x @ w")
    k = x.shape[-1]
    if packed.shape != packed_shape(k, n) or packed.dtype != jnp.float32:
        raise ValueError(f"cpu_gemm.matmul: packed {packed.shape} {packed.dtype} is not pack(w) of a float32 "
                         f"[{k}, {n}] weight (want {packed_shape(k, n)})")
    if x.dtype != jnp.float32:
        raise ValueError(f"cpu_gemm.matmul: x is {x.dtype}; the kernel is float32 only")
    lead = x.shape[:-1]
    m = math.prod(lead)
    if m == 0:
        return jnp.zeros((*lead, n), jnp.float32)
    y = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((m, n), jnp.float32), vmap_method="sequential")(
        x.reshape(m, k), packed)
    return y.reshape(*lead, n)
