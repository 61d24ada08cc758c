"""A small, fixed sample of benchmarks/sweep.py over the installed torch package: no crash,
no change proposed in a file without a surrogate, every file printed back byte for byte by
libcst, and each rewrite stable under a second run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from fgirewrite import discover

_spec = importlib.util.spec_from_file_location("sweep", ROOT / "benchmarks" / "sweep.py")
assert _spec is not None and _spec.loader is not None
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)

TORCH = Path(torch.__file__).parent


def _sample() -> list[Path]:
    """Every 7th small file in path order, and the files that could define a Function
    (where the rewriter does its work); about 300 files, the same ones every run."""
    paths = sorted(TORCH.rglob("*.py"))
    small = [p for p in paths if p.stat().st_size <= 20_000][::7]
    candidates = [
        p
        for p in paths
        if p.stat().st_size <= 80_000 and discover.may_define_function(p.read_bytes())
    ]
    return sorted(set(small) | set(candidates))


SAMPLE = _sample()


def test_the_sample_is_large_and_has_surrogates():
    assert len(SAMPLE) >= 250
    assert sum(discover.may_define_function(p.read_bytes()) for p in SAMPLE) >= 40


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return [sweep.check_file(p) for p in SAMPLE]


def test_no_crash_and_no_unexpected_change(records):
    assert [(r["path"], r["crash"]) for r in records if "crash" in r] == []
    assert [(r["path"], r["unexpected"]) for r in records if "unexpected" in r] == []


def test_every_file_round_trips_through_libcst(records):
    assert [(r["path"], r["libcst"]) for r in records if "libcst" in r] == []


def test_rewrites_and_skips_are_found(records):
    assert sum(r["surrogates"] for r in records) >= 3
    assert sum(r["skipped"] for r in records) >= 50
    assert sum(bool(r.get("changed")) for r in records) >= 3
