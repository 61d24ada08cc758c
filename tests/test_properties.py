"""Property tests over generated Function classes (tests/grammar.py) and mutated sources.

Every generated surrogate is rewritten and verified equivalent; every generated fault is
skipped with its exact reason code and leaves the file untouched; no source, however
mangled, makes the rewriter raise anything but a one-line ``SourceError``. Example budgets
are fixed and derandomized, so the run is the same in CI every time.
"""

from __future__ import annotations

import ast
import os
import random
import tempfile
from pathlib import Path

import grammar
import torch
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fgirewrite import runner
from fgirewrite.rewrite import SourceError, analyse, rewrite_source
from fgirewrite.surrogate import Skip, Surrogate
from fgirewrite.verify import verify_rewrite

# FGIREWRITE_EXAMPLES=N explores further locally; CI runs the fixed budgets below.
_SCALE = int(os.environ.get("FGIREWRITE_EXAMPLES", "0"))


def _settings(examples: int):
    return settings(
        max_examples=_SCALE or examples,
        deadline=None,
        derandomize=not _SCALE,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _write(directory: str, source: str) -> Path:
    path = Path(directory) / "generated.py"
    path.write_text(source, encoding="utf-8")
    return path


def _spike(findings: list) -> Surrogate | Skip:
    [found] = [f for f in findings if f.name.split(".")[-1] == "Spike"]
    return found


def _companion_untouched(case: grammar.Case, findings: list, new: bytes | None) -> None:
    if case.companion:
        [noisy] = [f for f in findings if f.name == "Noisy"]
        assert isinstance(noisy, Skip) and noisy.code == "backward-random", noisy
        text = case.source[case.source.index("class Noisy") :].split("\n\n\n")[0]
        assert new is None or text.encode() in new
    assert new is None or grammar.UNTOUCHED.encode() in new


def _load(source: str) -> dict:
    namespace: dict = {"__name__": "_fgirewrite_generated"}
    exec(compile(source, "<generated>", "exec"), namespace)  # noqa: S102 - generated code
    return namespace


def _same_module_behaviour(case: grammar.Case, new: bytes) -> None:
    """The rewritten file itself (shim class, aliases, runtime helpers) runs and computes
    what the original file computes, through the module-level ``spike`` alias."""
    original, rewritten = _load(case.source), _load(new.decode("utf-8"))
    generator = torch.Generator().manual_seed(0)
    shapes = {"full": (64, 3), "row": (3,)}
    args = [torch.randn(shapes[s], generator=generator, dtype=torch.float64) for s in case.inputs]
    results = []
    for namespace in (original, rewritten):
        leaves = [a.clone().requires_grad_() for a in args]
        out = namespace["spike"](*leaves)
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
        results.append((out, grads))
    (out_a, grads_a), (out_b, grads_b) = results
    assert out_a.dtype == out_b.dtype and torch.equal(out_a, out_b)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


@_settings(60)
@given(grammar.surrogates())
def test_generated_surrogates_are_rewritten_and_verified(case: grammar.Case) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = _write(directory, case.source)
        result = rewrite_source(path.read_bytes(), str(path))
        found = _spike(result.findings)
        assert isinstance(found, Surrogate), f"{found}\n{case}"
        assert result.changed and result.new_source is not None
        _companion_untouched(case, result.findings, result.new_source)
        checked = analyse(path.read_bytes(), str(path))[0].findings  # what --check reports
        assert [(type(f), f.name, getattr(f, "code", "")) for f in checked] == [
            (type(f), f.name, getattr(f, "code", "")) for f in result.findings
        ]
        second = rewrite_source(result.new_source, str(path))
        assert not second.changed and not second.surrogates, "a second run changes the file"
        reports = verify_rewrite(result, path)
        assert [r.name for r in reports] == [found.name]
        assert reports[0].ok, f"{reports[0].failures()}\n{case}"
        _same_module_behaviour(case, result.new_source)


@_settings(150)
@given(grammar.broken())
def test_generated_faults_are_skipped_with_their_reason(case: grammar.Case) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = _write(directory, case.source)
        result = rewrite_source(path.read_bytes(), str(path))
        found = _spike(result.findings)
        assert isinstance(found, Skip), f"rewritten, but must be skipped\n{case}"
        assert found.code == case.expect, f"{found}\n{case}"
        assert found.message and "\n" not in found.message
        assert not result.changed and result.new_source is None
        _companion_untouched(case, result.findings, result.new_source)


# ------------------------------------------------------------------- mutated real sources

SOURCES = sorted((FIXTURES / "rewrite").glob("*.py")) + sorted((FIXTURES / "noop").glob("*.py"))
FRAGMENTS = [
    "(",
    ")",
    ":",
    "\n    ",
    "\t",
    "return",
    "ctx",
    "grad_output",
    "*",
    "**",
    "[",
    "]",
    "lambda: ",
    "yield ",
    "@staticmethod\n",
    "class F(torch.autograd.Function):\n",
    "\\\n",
    '"""',
    "#",
    "\x00",
    "\r",
    "é",
    "\ufeff",
]


@st.composite
def mutated(draw) -> bytes:
    """A fixture with a few random edits: deleted, duplicated or swapped lines, inserted
    fragments, truncation, odd bytes."""
    data = draw(st.sampled_from(SOURCES)).read_text(encoding="latin-1")
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    for _ in range(draw(st.integers(1, 4))):
        lines = data.splitlines(keepends=True)
        kind = rng.choice(["delete", "duplicate", "swap", "insert", "truncate", "dedent"])
        i, j = sorted(rng.randrange(len(lines) + 1) for _ in range(2))
        if kind == "delete":
            lines[i:j] = []
        elif kind == "duplicate":
            lines[i:i] = lines[i:j]
        elif kind == "swap" and i < j < len(lines):
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "dedent" and i < len(lines):
            lines[i] = lines[i].lstrip(" ")
        data = "".join(lines)
        if kind == "insert":
            at = rng.randrange(len(data) + 1)
            data = data[:at] + rng.choice(FRAGMENTS) + data[at:]
        elif kind == "truncate":
            data = data[: rng.randrange(len(data) + 1)]
    return data.encode(rng.choice(["utf-8", "latin-1"]), errors="replace")


@_settings(150)
@given(mutated())
def test_mutated_sources_never_crash_the_rewriter(data: bytes) -> None:
    try:
        result = rewrite_source(data, "mutated.py")
    except SourceError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    if result.new_source is not None:
        ast.parse(result.new_source)
        again = rewrite_source(result.new_source, "mutated.py")
        assert not again.changed, "a second run changes the file"
    for finding in result.skipped:
        assert "\n" not in finding.message, finding
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "mutated.py"
        path.write_bytes(data)
        for analyse_only in (False, True):
            outcome = runner.process(path, analyse_only=analyse_only)
            assert outcome.error is None, outcome.error
