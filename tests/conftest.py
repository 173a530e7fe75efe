"""Shared pytest fixtures.

The real test data lives outside the repository, in ``../shared/data`` relative to the
repository root; it is read in place and never copied into the repository.
"""
from pathlib import Path

import pytest

# tests/ -> repo root -> its parent, which holds shared/data
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared real-data folder; skips the test when it is not there."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared test data not found at {DATA_DIR}")
    return DATA_DIR
