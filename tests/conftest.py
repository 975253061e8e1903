"""Test-wide setup: fake an 8-device CPU mesh before JAX is imported anywhere."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
# Tests never touch a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_sessionstart(session):
    """CI must run the data tests: with GASP_REQUIRE_DATA=1, missing shared data is an error, not a skip."""
    if os.environ.get("GASP_REQUIRE_DATA") != "1":
        return
    from gasp_jax.evaluation.common import shared_data_dir

    lcb = str(shared_data_dir())
    if not os.path.isdir(lcb):
        raise RuntimeError(f"GASP_REQUIRE_DATA=1 but the shared data is missing: {lcb}")
