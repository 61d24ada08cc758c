"""Before/after fixture pairs, no-op fixtures with exact messages, and numeric equivalence."""

from __future__ import annotations

import re

import pytest
from conftest import FIXTURES, snapshot

from fgirewrite.rewrite import rewrite_source
from fgirewrite.surrogate import Skip, Surrogate
from fgirewrite.verify import verify_rewrite

REWRITE = sorted((FIXTURES / "rewrite").glob("*.py"))
NOOP = sorted((FIXTURES / "noop").glob("*.py"))


def test_fixture_coverage():
    """At least 20 distinct surrogate classes across the before/after pairs."""
    classes = [f for p in REWRITE for f in rewrite_source(p.read_bytes(), str(p)).findings]
    assert len({f.name for f in classes}) >= 20


@pytest.mark.parametrize("path", REWRITE, ids=lambda p: p.stem)
def test_rewrite_matches_snapshot(path):
    result = rewrite_source(path.read_bytes(), path.name)
    assert result.findings and all(isinstance(f, Surrogate) for f in result.findings), [
        str(f) for f in result.findings if isinstance(f, Skip)
    ]
    assert result.changed
    snapshot(FIXTURES / "rewrite" / "expected" / path.name, result.new_source)


@pytest.mark.parametrize("path", REWRITE, ids=lambda p: p.stem)
def test_second_run_changes_nothing(path):
    first = rewrite_source(path.read_bytes(), path.name)
    second = rewrite_source(first.new_source, path.name)
    assert second.findings == [] and not second.changed


@pytest.mark.parametrize("path", REWRITE, ids=lambda p: p.stem)
def test_rewrite_is_gradient_equivalent(path):
    """Forward bitwise and gradients within tolerance on a dense grid and the edge values."""
    result = rewrite_source(path.read_bytes(), str(path))
    reports = verify_rewrite(result, path)
    assert len(reports) == len(result.surrogates)
    for report in reports:
        assert report.ok, report.failures()
        assert {c.dtype for c in report.checks} >= {"float32", "float64", "bfloat16", "float16"}


@pytest.mark.parametrize("path", NOOP, ids=lambda p: p.stem)
def test_noop_left_untouched_with_exact_reason(path):
    data = path.read_bytes()
    expected = re.search(r"^# expect: (.*)$", data.decode(), re.M).group(1)
    result = rewrite_source(data, path.name)
    assert not result.changed and result.new_source is None
    [finding] = result.findings
    assert isinstance(finding, Skip)
    loc = finding.location
    assert f"{loc.line}:{loc.column}: {finding.code}: {finding.message}" == expected


def test_skipped_class_stays_byte_identical_next_to_a_rewrite():
    good = (FIXTURES / "rewrite" / "single_expression.py").read_text()
    bad = (FIXTURES / "noop" / "random_backward.py").read_text().split("import torch\n", 1)[1]
    source = (good + bad).encode()
    result = rewrite_source(source, "mixed.py")
    assert [type(f).__name__ for f in result.findings] == ["Surrogate", "Skip"]
    assert bad.encode() in result.new_source


def test_crlf_and_encoding_preserved():
    path = FIXTURES / "rewrite" / "crlf_latin1.py"
    new = rewrite_source(path.read_bytes(), path.name).new_source
    assert b"\r\n" in new and b"\n" not in new.replace(b"\r\n", b"")
    assert "été".encode("latin-1") in new
    assert new.startswith(b"# -*- coding: latin-1 -*-\r\n")


def test_library_call_conventions_survive():
    """Classes passed as values, class attributes, dispatch tables and factories keep working,
    with the original's gradients."""
    import torch

    from fgirewrite.execute.load import load_pair

    original, rewritten, _ = load_pair(FIXTURES / "rewrite" / "mixin_callable.py")
    v = torch.linspace(-3, 3, 61, requires_grad=True)
    grads = []
    for module in (original, rewritten):
        layer = module.IAF()
        assert layer.spike_fn is module.MultiSpike and layer.spike_fn.required_states == ["v_mem"]
        (grad,) = torch.autograd.grad(layer(v).sum(), v)
        grads.append(grad)
    assert torch.equal(*grads)

    original, rewritten, _ = load_pair(FIXTURES / "rewrite" / "factory_wrapper.py")
    x = torch.linspace(-2, 2, 41, requires_grad=True)
    for name in ("DISPATCH",):
        a = getattr(original, name)["spike"].apply(x)
        b = getattr(rewritten, name)["spike"].apply(x)
        assert torch.equal(a, b)
        assert torch.equal(*(torch.autograd.grad(y.sum(), x)[0] for y in (a, b)))
    assert torch.equal(rewritten.Neuron()(x), original.Neuron()(x))
    passthrough = rewritten.make_backward_passthrough(torch.round)
    assert torch.autograd.grad(passthrough(x).sum(), x)[0].eq(1).all()
