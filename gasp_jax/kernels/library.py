"""The one shared library behind `gasp_jax.kernels`: every `*.cc` here, compiled on first use and registered
with the XLA FFI (`cpu_gemm`: packed fp32 GEMM; `cpu_attention`: attention over the valid KV slots;
`cpu_sampling`: greedy token choice).

`available()` compiles the sources (and their headers) with `$CXX` (default c++) `-O3 -march=native` into
`$GASP_JAX_CACHE/kernels` (else `~/.cache/gasp_jax/kernels`), keyed on the sources, compiler, flags, jax
version, machine and CPU flags, and registers each FFI target; any failure is one logged line and False (the
callers then use XLA's ops). `GASP_JAX_CPU_KERNELS=0` turns it off. CPU backend only.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import logging
import os
import platform
import shlex
import subprocess
import tempfile

import jax

from gasp_jax import cache_dirs

log = logging.getLogger(__name__)

DISABLE_ENV = "GASP_JAX_CPU_KERNELS"
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c++17")
# FFI target name -> the handler symbol the library exports.
TARGETS = {"gasp_packed_gemm": "GaspPackedGemm", "gasp_attention": "GaspAttention", "gasp_greedy": "GaspGreedy",
           "gasp_decoder_layer": "GaspDecoderLayer"}
_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCES = tuple(sorted(glob.glob(os.path.join(_HERE, "*.cc"))))
_HEADERS = tuple(sorted(glob.glob(os.path.join(_HERE, "*.h"))))
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


def build() -> str:
    """Path of the compiled library: from the cache, else compiled and renamed into place atomically."""
    compiler = shlex.split(os.environ.get("CXX") or "c++")
    sources = []
    for path in _SOURCES + _HEADERS:
        with open(path, "rb") as f:
            sources.append((os.path.basename(path), f.read()))
    version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(
        repr((sources, compiler, version, FLAGS, jax.__version__, platform.machine(), _cpu_flags())).encode()
    ).hexdigest()[:20]
    cache = cache_dirs.cache_root("kernels")
    path = os.path.join(cache, f"gasp_kernels-{key}.so")
    if os.path.exists(path):
        return path
    os.makedirs(cache, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".gasp_kernels-", suffix=".so")
    os.close(fd)
    try:
        cmd = [*compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", *_SOURCES, "-o", tmp]
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
    """Whether the kernels can run here: builds and registers them on the first call (cached after)."""
    global _available
    if _available is None:
        try:
            if os.environ.get(DISABLE_ENV, "1") == "0":
                raise RuntimeError(f"disabled by {DISABLE_ENV}=0")
            if jax.default_backend() != "cpu":
                raise RuntimeError(f"the default backend is {jax.default_backend()}, not cpu")
            library = ctypes.cdll.LoadLibrary(build())
            for target, symbol in TARGETS.items():
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
            _available = True
        except Exception as e:  # noqa: BLE001 - any failure means "use XLA's ops", said once
            log.warning("gasp_jax.kernels: the CPU kernels are unavailable (%s: %s)", type(e).__name__, e)
            _available = False
    return _available
