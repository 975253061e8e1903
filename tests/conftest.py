"""Test-wide setup: fake an 8-device CPU mesh before JAX is imported anywhere."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
# The presets' persistent compilation cache ("auto") stays off: a test's compile counts never depend on
# what an earlier run left on disk, and tests never write into the user's cache.
os.environ.setdefault("GASP_JAX_COMPILATION_CACHE", "off")
# Tests never touch a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402  (after the environment above)


@pytest.fixture(scope="session")
def warmstart_cache(tmp_path_factory) -> str:
    """One warm-start cache for every tiny-preset run of the session (tests/test_presets.py's
    `quick_warmstart`): the quick warm start is trained once."""
    return str(tmp_path_factory.mktemp("warmstart_cache"))


@pytest.fixture(scope="session")
def kernel(tmp_path_factory) -> str:
    """The CPU kernels (gasp_jax/kernels), built once per session into a fresh cache directory, whose path
    this returns; skips every test that needs them where they are unavailable (no C++ compiler, not CPU)."""
    from gasp_jax import cache_dirs
    from gasp_jax.kernels import library

    cache = str(tmp_path_factory.mktemp("kernel_cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cache_dirs.CACHE_ENV, cache)
        if not library.available():
            pytest.skip("the CPU kernels are unavailable here (no C++ compiler or not a CPU backend; see the log)")
        library.build()  # into this cache too when an earlier test built the process's copy elsewhere
    return cache
