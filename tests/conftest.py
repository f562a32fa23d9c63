"""Test-wide setup: 8 fake CPU devices, set before jax is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir():
    """`../shared/data` beside the checkout: the offline datasets CI provides."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"offline datasets not found at {SHARED_DATA}; put ../shared beside the checkout"
        )
    return SHARED_DATA
