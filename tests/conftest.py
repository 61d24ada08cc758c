"""Shared paths and helpers for the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLES = ROOT / "examples"
UPDATE = os.environ.get("FGIREWRITE_UPDATE_SNAPSHOTS") == "1"


def snapshot(path: Path, actual: bytes) -> None:
    """Compare with a snapshot file; FGIREWRITE_UPDATE_SNAPSHOTS=1 rewrites it."""
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual)
        if not UPDATE:
            pytest.fail(f"snapshot {path.name} was missing and has been written; check it in")
    assert actual == path.read_bytes(), f"differs from snapshot {path}"
