"""``verify --entry`` on a project laid out as research code is (tests/fixtures/model_project):
models built through the project's imports, each side in its own process, the rewritten one
from the project rewritten file by file; stateful layers, random layers, a broken rewrite,
and models the rewrite does not reach."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from conftest import FIXTURES
from typer.testing import CliRunner

from fgirewrite.cli import app
from fgirewrite.execute.load import load_pair
from fgirewrite.project import Entry, import_roots
from fgirewrite.verify.command import resolve_entry, summary
from fgirewrite.verify.model import ModelCheck, ModelReport, verify_model
from fgirewrite.verify.report import FileVerification

PROJECT = FIXTURES / "model_project"
BROKEN = '''
from fgirewrite.rewrite import rewrite_source


def rewrite(data, path):
    """The real rewrite, with every injected gradient doubled."""
    result = rewrite_source(data, path)
    if result.new_source is not None:
        doubled = b"_fgi_inject(out, [2 * "
        result.new_source = result.new_source.replace(b"_fgi_inject(out, [", doubled)
    return result
'''


def _verify(module: str, capabilities: tuple[str, ...] = ("eager backward",), **options):
    entry, roots = resolve_entry(f"{module}:build", [PROJECT], [])
    return verify_model(entry, roots, seeds=1, steps=3, capabilities=capabilities, **options)


def test_a_model_built_through_imports_is_compared_with_its_rewritten_layers():
    """Was "equivalent" with QuantBackward still in the rewritten graph: both sides were built
    from the sources as written, since only the entry's own file was rewritten."""
    report = _verify("models.binary", ("torch.func.vmap(grad)",))
    assert report.verdict == "equivalent", report
    [use] = report.functions
    assert (use.name, use.status, use.rewritten_nodes) == ("SignSTE", "replaced", 0)
    assert use.original_nodes == 2  # one per BinaryLinear
    assert [c.status for c in report.checks] == ["ok", "ok", "ok"]
    [vmap] = report.capabilities
    assert vmap.original == "fails" and "`SignSTE`" in vmap.original_blocker
    assert vmap.rewritten == "fails"  # batch norm in train mode: the model, not a Function
    assert vmap.rewritten_blocker.startswith("BatchNorm1d `bn` at ")
    assert "model.eval()" in vmap.rewritten_blocker and "GroupNorm" in vmap.rewritten_blocker


def test_a_layer_that_keeps_its_membrane_is_built_afresh_and_reset():
    """A model that has run holds non-leaf tensors: a deepcopy raised, and the report was lost."""
    report = _verify("models.spiking")
    assert report.verdict == "equivalent", report
    trajectory = report.checks[-1]
    assert trajectory.name == "parameters after 3 SGD steps"
    assert trajectory.detail == "greatest parameter difference 0 (reset between steps: lif.reset())"


def test_the_layer_that_keeps_state_cannot_be_deep_copied_after_a_run():
    original, _, _ = load_pair(PROJECT / "models" / "spiking.py", only="build")
    model, (x,) = original.build()
    model(x).sum().backward()
    with pytest.raises(RuntimeError, match="graph leaves"):
        copy.deepcopy(model)


def test_dropout_in_train_mode_draws_the_same_masks_on_both_sides():
    report = _verify("models.dropout")
    assert report.verdict == "equivalent", report
    assert report.checks[1].detail == "bit-identical"


def test_a_broken_rewrite_is_not_equivalent(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text(BROKEN)
    report = _verify("models.spiking", rewriter=f"{broken}:rewrite")
    assert report.verdict == "not equivalent"
    assert report.cause.startswith(
        "gradients of 5 parameters and inputs (seed 0): d/dfc.weight: mismatched elements: 30 / 30"
    )
    assert [c.status for c in report.checks] == ["ok", "mismatch", "mismatch"]


@pytest.mark.parametrize(
    ("module", "why"),
    [
        (
            "models.refused",
            "`NoisySpike` (tests/fixtures/model_project/layers/noisy.py:6): fgirewrite leaves it "
            "as it is: [backward-random] draws random numbers with `torch.rand_like`",
        ),
        (
            "models.by_path",
            "`VendoredSpike` (tests/fixtures/model_project/vendored/spike.py): its module "
            "`vendored_spike` was not imported through the project's imports (a file loaded by "
            "path, or a folder outside the import roots), so the model runs it as written",
        ),
    ],
)
def test_a_model_the_rewrite_does_not_reach_could_not_be_verified(module, why, monkeypatch):
    monkeypatch.chdir(FIXTURES.parents[1])
    report = _verify(module)
    assert report.verdict == "could not verify"
    assert report.checks == ()
    assert report.error == (
        "the rewrite replaces none of the Functions the model runs, so there is nothing to "
        f"compare: {why}"
    )


def test_a_model_without_a_function_could_not_be_verified(tmp_path):
    path = tmp_path / "plain.py"
    path.write_text(
        "import torch\n\n\ndef build():\n    return torch.nn.Linear(2, 2), (torch.randn(1, 2),)\n"
    )
    report = verify_model(Entry("build", path=path), import_roots(path), seeds=1, steps=1)
    assert report.verdict == "could not verify"
    assert report.error.startswith(
        "one forward of the model (its floating inputs requiring grad) runs no "
        "torch.autograd.Function: the rewrite changes nothing in it"
    )


def test_the_command_line_builds_a_dotted_entry_and_says_the_verdict(monkeypatch):
    monkeypatch.chdir(FIXTURES.parents[1])
    args = ["verify", str(PROJECT / "layers"), "--entry", "models.binary:build", "-q"]
    result = CliRunner().invoke(app, [*args, "--seeds", "1", "--steps", "1"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[-2].startswith(
        "tests/fixtures/model_project/models/binary.py: --entry models.binary:build: equivalent ("
    )
    assert lines[-1] == (
        "fgirewrite: 2 of 2 surrogates verified equivalent; 1 model: 1 equivalent; 0 errors"
    )


@pytest.mark.parametrize(
    ("status", "verdict", "code"),
    [("ok", "equivalent", 0), ("mismatch", "not equivalent", 1), ("error", "could not verify", 2)],
)
def test_each_verdict_has_its_exit_code(status, verdict, code):
    check = ModelCheck("outputs bitwise (seed 0)", status, "detail")
    model = ModelReport("m.py", "m.py:build", (check,), ())
    line, exit_code = summary([FileVerification("m.py", model=model)])
    assert (model.verdict, exit_code) == (verdict, code)
    assert line.startswith(
        f"fgirewrite: 0 of 0 surrogates verified equivalent; 1 model: 1 {verdict}"
    )


def test_a_plain_function_name_needs_one_file_that_defines_it():
    files = sorted((PROJECT / "models").glob("*.py"))
    with pytest.raises(ValueError, match="defined in .*binary.py, .*by_path.py"):
        resolve_entry("build", [PROJECT], files)
    entry, roots = resolve_entry("build", [PROJECT], [PROJECT / "models" / "binary.py"])
    assert entry.path == PROJECT / "models" / "binary.py"
    assert roots[:2] == [PROJECT / "models", PROJECT]


def test_load_pair_rewrites_the_layer_modules_a_model_imports():
    original, rewritten, _ = load_pair(PROJECT / "models" / "binary.py", only="build")
    for module, functions in ((original, ["SignSTE"]), (rewritten, [])):
        model, (x,) = module.build()
        torch.manual_seed(0)
        graph = model(x)
        from fgirewrite.execute.census import census

        assert [f.qualname for f in census(graph)] == functions


def test_bench_loads_an_entry_as_verify_does(monkeypatch):
    from fgirewrite.bench import models
    from fgirewrite.execute.census import census
    from fgirewrite.execute.load import model_and_inputs

    monkeypatch.chdir(PROJECT)
    pair = models.load(None, "models.binary:build")
    assert pair.path == PROJECT / "models" / "binary.py"
    assert pair.rewrite["rewritten"] == {"SignSTE": "sign_ste"}
    for side, functions in ((pair.original, ["SignSTE"]), (pair.fgi, [])):
        model, inputs = model_and_inputs(side.function(), "build")
        assert [f.qualname for f in census(model(*inputs))] == functions


def test_inject_takes_a_model_that_has_run_and_counts_what_is_left():
    """inject deep-copied the model and its probe: a model that had run raised."""
    import fgirewrite

    original, _, _ = load_pair(PROJECT / "models" / "spiking.py", only="build")
    model, (x,) = original.build()
    model(x).sum().backward()  # the LIF layer now holds a non-leaf membrane
    result = fgirewrite.inject_report(model, example_inputs=(x,))
    assert [r.surrogate.name for r in result.replaced] == ["SpikeFn"]
    assert result.skipped == []
    assert model.lif.mem is not None and model.lif.mem.grad_fn is not None  # untouched


def test_the_fx_pass_reports_a_function_called_inside_a_leaf_module():
    from torch import fx, nn

    from fgirewrite.live.fx import FGIPass, SurrogateTracer

    original, _, _ = load_pair(PROJECT / "layers" / "neurons.py", only="SpikeFn")

    class Inner(nn.Module):
        def forward(self, x):
            return original.SpikeFn.apply(x)

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)
            self.inner = Inner()

        def forward(self, x):
            return self.inner(self.fc(x))

    class Leafy(SurrogateTracer):
        def is_leaf_module(self, module, name):
            return name == "inner" or super().is_leaf_module(module, name)

    tracer = Leafy()
    graph = tracer.trace(Outer())
    gm = fx.GraphModule(tracer.root, graph)
    fgi = FGIPass(example_inputs=(torch.randn(3, 6),))
    fgi(gm)
    [left] = fgi.skipped
    assert (left.skip.name, left.skip.code) == ("SpikeFn", "hidden-call")
    blind = FGIPass()
    blind(gm)
    assert blind.skipped == []  # without example inputs the leaf module hides it


def test_load_pair_refuses_a_model_whose_function_it_did_not_reach(tmp_path, monkeypatch):
    """A file outside the project importing its layers from a folder on sys.path: the
    "rewritten" model still ran the original Function."""
    from fgirewrite.execute.load import UnreachedError, entry

    script = tmp_path / "entry.py"
    script.write_text("from models.binary import build\n")
    monkeypatch.syspath_prepend(str(PROJECT))
    try:
        original, rewritten, _ = load_pair(script, only="build")
        entry(original, "build")
        with pytest.raises(UnreachedError, match=r"still runs `SignSTE` \(.*layers/binary.py:8\)"):
            entry(rewritten, "build")
    finally:  # the layers were imported under their own names, as written
        for name in [m for m in sys.modules if m.partition(".")[0] in ("models", "layers")]:
            del sys.modules[name]
