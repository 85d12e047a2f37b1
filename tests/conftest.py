"""Test set-up: 8 virtual CPU devices for the sharding tests, and small shared fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data_dir() -> pathlib.Path:
    """Path to the public evaluation files beside the repository; skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


def load_default_config(variant: str | None = None):
    """Return configs/default.py's get_config(variant); configs/ is not a package."""
    from trait_rl import config_files

    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py"
    return config_files.load_config(path, variant)
