"""Where per-machine caches live: `$GASP_JAX_CACHE/<parts>`, else `~/.cache/gasp_jax/<parts>`.

A leaf module (standard library only) so every layer can place its cache, from the warm starts and XLA's
compiled programs (`runtime`) to the CPU kernels' shared library (`kernels.cpu_gemm`)."""

from __future__ import annotations

import os

CACHE_ENV = "GASP_JAX_CACHE"  # the root of every per-machine cache (warm starts, XLA programs, kernels)


def cache_root(*parts: str) -> str:
    """`$GASP_JAX_CACHE/<parts>`, else `~/.cache/gasp_jax/<parts>`."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "gasp_jax")
    return os.path.join(base, *parts)
