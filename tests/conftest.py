"""Shared paths and helpers for the test suite."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLES = ROOT / "examples"
UPDATE = os.environ.get("FGIREWRITE_UPDATE_SNAPSHOTS") == "1"

# Third-party research code kept as data for benchmarks/research_corpus.py: never collected.
collect_ignore_glob = ["corpus/*"]


def snapshot(path: Path, actual: bytes) -> None:
    """Compare with a snapshot file; FGIREWRITE_UPDATE_SNAPSHOTS=1 rewrites it."""
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual)
        if not UPDATE:
            pytest.fail(f"snapshot {path.name} was missing and has been written; check it in")
    assert actual == path.read_bytes(), f"differs from snapshot {path}"


def load_module(name: str, path: Path) -> types.ModuleType:
    """Import a file as a module once (registered, so pickling and TorchScript find it)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
