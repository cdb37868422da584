"""Shared fixtures. Real data lives in ../shared/data and is never copied into the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(relative: str) -> Path:
    """A path under ../shared/data; in CI a missing file fails the test, elsewhere it skips it."""
    path = SHARED_DATA / relative
    if not path.exists():
        message = f"real test data {path} is missing (see ../shared/data/README.md)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
