"""The generated code as a maintainer reads it: where the helpers go, what grammar and torch it
needs, when it scripts, what it refuses to drop; and the construction's guarantees that the
probes of verification cannot see (a trace under no_grad, a parameter's dtype, an old path)."""

from __future__ import annotations

import ast
import importlib
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES
from typer.testing import CliRunner

from fgirewrite import _runtime
from fgirewrite.cli import app
from fgirewrite.rewrite import rewrite_source
from fgirewrite.rewrite.helpers import module_source

REWRITE = sorted((FIXTURES / "rewrite").glob("*.py"))
TRUST = FIXTURES / "trust"


def _annotations(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if arg.annotation is not None:
                    found.append(ast.unparse(arg.annotation))
            if node.returns is not None:
                found.append(ast.unparse(node.returns))
    return found


@pytest.mark.parametrize("path", REWRITE, ids=lambda p: p.stem)
def test_generated_code_is_valid_on_python_3_8_and_adds_no_annotation(path):
    """Valid with the 3.8 grammar, and every annotation in the rewrite was the original's."""
    source = path.read_bytes()
    new = rewrite_source(source, str(path)).new_source
    assert new is not None
    ast.parse(new, feature_version=(3, 8))
    before = _annotations(ast.parse(source))
    for annotation in _annotations(ast.parse(new)):
        assert annotation in before, annotation


@pytest.mark.parametrize("guard", [False, True])
def test_the_helper_module_is_valid_on_python_3_6(guard):
    tree = ast.parse(module_source(guard), feature_version=(3, 6))
    assert _annotations(tree) == []


def test_literal_defaults_are_typed_only_for_torchscript():
    source = (TRUST / "amp_cast_inputs_with_number.py").read_bytes()
    plain = rewrite_source(source, "m.py").new_source
    typed = rewrite_source(source, "m.py", annotate=True).new_source
    assert plain is not None and typed is not None
    assert b"def spike(x, alpha=2.0):" in plain
    assert b"def spike(x, alpha: float = 2.0):" in typed


def test_a_run_types_defaults_when_a_file_scripts(tmp_path):
    shutil.copy(TRUST / "amp_cast_inputs_with_number.py", tmp_path / "m.py")
    result = CliRunner().invoke(app, [str(tmp_path)])
    assert "+def spike(x, alpha=2.0):" in result.stdout
    (tmp_path / "train.py").write_text("import torch\nnet = torch.jit.script(model)\n")
    result = CliRunner().invoke(app, [str(tmp_path)])
    assert "+def spike(x, alpha: float = 2.0):" in result.stdout


# What TorchScript refuses in any function, the original's forward and backward included.
UNSCRIPTABLE = {
    "mixin_callable.MultiSpike": "a Callable argument",
    "random_forward.BernoulliSpike": "torch.distributions",
    "forward_autograd.SlopeByAutograd": "torch.autograd.grad in the forward",
    "forward_autograd.CurvatureByBackward": "Tensor.backward in the forward",
}


def test_generated_functions_script_unless_the_originals_code_cannot(tmp_path):
    failed = {}
    for path in REWRITE:
        result = rewrite_source(path.read_bytes(), str(path), annotate=True)
        target = tmp_path / f"scripted_{path.stem}.py"
        target.write_bytes(result.new_source or b"")
        sys.path.insert(0, str(tmp_path))
        try:
            module = importlib.import_module(target.stem)
        finally:
            sys.path.remove(str(tmp_path))
        for surrogate in result.surrogates:
            function = getattr(module, result.function(surrogate) or "", None)
            if function is None:  # nested in a class: its code is the class's apply
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    torch.jit.script(function)
                except Exception as exc:  # noqa: BLE001 - collected, compared below
                    failed[f"{path.stem}.{surrogate.name}"] = str(exc).splitlines()[0]
    assert set(failed) == set(UNSCRIPTABLE), failed


def test_a_trace_under_no_grad_keeps_the_gradient(tmp_path):
    """``torch.jit.trace`` records the injected term even under no_grad; without the
    helper's tracing check, the traced model has no gradient at all."""
    result = rewrite_source((TRUST / "trace_under_no_grad.py").read_bytes(), "t.py")
    namespace: dict = {"__name__": "traced_case"}
    exec(compile(result.new_source or b"", "t.py", "exec"), namespace)  # noqa: S102 - ours
    x = torch.linspace(-2, 2, 9)
    traced = namespace["traced"](x)
    y = traced(x.clone().requires_grad_())
    assert y.requires_grad
    namespace["_fgi_needs_grad"] = torch.is_grad_enabled  # the check without tracing
    assert not namespace["traced"](x)(x.clone().requires_grad_()).requires_grad


def test_a_float32_threshold_beside_bfloat16_activations_sums_in_float32():
    """The construction computes each input's gradient in its own promoted dtype: seeded in
    the activations' dtype instead, the threshold's gradient would be summed in bfloat16."""
    path = TRUST / "dtype_float32_threshold_half_activations.py"
    result = rewrite_source(path.read_bytes(), str(path))
    text = (result.new_source or b"").decode()
    spaces: list[dict] = [{}, {}, {}]
    mutant = text.replace("grad_thr = _fgi_seed(thr_in, out)", "grad_thr = thr_in.to(out.dtype)")
    for space, code in zip(spaces, (path.read_text(), text, mutant), strict=True):
        exec(compile(code, str(path), "exec"), space)  # noqa: S102 - the fixture's code
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0)).bfloat16()
    grads = []
    for space in spaces:
        thr = torch.full((32,), 0.1, requires_grad=True)
        space["Spike"].apply(x, thr).float().pow(2).sum().backward()
        grads.append(thr.grad)
    original, rewritten, mutated = grads
    assert torch.equal(rewritten, original)
    assert not torch.equal(mutated, original)


def test_helpers_go_once_into_a_package_and_are_never_overwritten_when_edited(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    for folder in (package, package / "sub"):
        (folder / "__init__.py").write_text("")
    shutil.copy(FIXTURES / "rewrite" / "single_expression.py", package / "a.py")
    shutil.copy(FIXTURES / "rewrite" / "temporaries.py", package / "sub" / "b.py")
    script = (FIXTURES / "rewrite" / "crlf_latin1.py").read_bytes()
    (package / "script.py").write_bytes(script + b'\r\nif __name__ == "__main__":\r\n    pass\r\n')
    result = CliRunner().invoke(app, ["--write", str(package)])
    assert result.exit_code == 0, result.output
    helpers = package / "_fgi_helpers.py"
    assert helpers.read_text() == module_source(True)
    a, b = (package / "a.py").read_text(), (package / "sub" / "b.py").read_text()
    assert "from ._fgi_helpers import _FGIRewritten, _fgi_inject, _fgi_needs_grad, _fgi_seed" in a
    assert "from .._fgi_helpers import" in b and "def _fgi_seed" not in a + b
    assert b"def _fgi_seed" in (package / "script.py").read_bytes()  # may run as a script
    sys.path.insert(0, str(tmp_path))
    try:
        for name in ("pkg.a", "pkg.sub.b"):
            importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "pkg" or n.startswith("pkg.")]:
            del sys.modules[name]
    assert CliRunner().invoke(app, ["--check", str(package)]).exit_code == 0

    shutil.copy(FIXTURES / "rewrite" / "learnable.py", package / "c.py")
    helpers.write_text(module_source(True) + "# mine\n")
    before = (package / "c.py").read_bytes()
    result = CliRunner().invoke(app, ["--write", str(package)])
    assert result.exit_code == 2
    assert f"{helpers} differs from the helpers fgirewrite writes (edited?)" in result.stderr
    assert (package / "c.py").read_bytes() == before
    assert helpers.read_text().endswith("# mine\n")


def test_a_local_class_used_only_through_apply_is_gone():
    result = rewrite_source((FIXTURES / "rewrite" / "factory_class.py").read_bytes(), "f.py")
    text = (result.new_source or b"").decode()
    assert "class BoxSpike" not in text and "return box_spike" in text
    assert "_FGIRewritten" not in text  # nothing left to guard


def test_findings_name_the_code_that_was_written():
    path = FIXTURES / "rewrite" / "decorators_nested.py"
    result = CliRunner().invoke(app, ["--check", str(path)])
    assert "would rewrite: LIF.FastSigmoid as LIF.FastSigmoid.apply() (" in result.stdout
    assert "would rewrite: Triangle as triangle() (" in result.stdout


@pytest.mark.parametrize("old", ["gradients", "gradient_checks", "private", "fx_pass", "load"])
def test_the_old_top_level_paths_are_gone(old):
    assert not (Path(_runtime.__file__).parent / f"{old}.py").exists()


def test_the_helpers_use_no_private_torch_call():
    text = Path(_runtime.__file__).read_text()
    assert "torch._" not in text
    assert text.count("_current_level") == 2  # read by getattr, its absence documented


def test_a_rewrite_that_needs_a_newer_python_than_the_target_is_refused(monkeypatch):
    """Generated code must run where the original ran: checked with the target's grammar."""
    from fgirewrite import codegen

    original = codegen.function_source

    def newer(*args, **kwargs):  # a `match` statement needs Python 3.10
        text = original(*args, **kwargs)
        return text.replace(
            "    return out\n",
            "    match out:\n        case _:\n            pass\n    return out\n",
        )

    path = FIXTURES / "rewrite" / "single_expression.py"
    assert rewrite_source(path.read_bytes(), str(path), target=(3, 8)).changed
    monkeypatch.setattr(codegen, "function_source", newer)
    assert rewrite_source(path.read_bytes(), str(path), target=(3, 10)).changed
    with pytest.raises(Exception, match="needs a newer Python than target-version py38"):
        rewrite_source(path.read_bytes(), str(path), target=(3, 8))


@pytest.mark.parametrize(
    ("marker", "guarded"), [(".git", False), ("setup.py", True), ("pyproject.toml", True)]
)
def test_the_subclass_guard_only_where_an_unseen_subclass_is_possible(tmp_path, marker, guarded):
    """A whole project that cannot be installed, given at its root, has no module fgirewrite
    does not read: no guard. An installable one (or a run over part of a project) may."""
    root = tmp_path / "repo"
    (root / "models").mkdir(parents=True)
    marker_path = root / marker
    if marker == ".git":
        marker_path.mkdir()
    else:
        marker_path.write_text("[project]\nname = 'x'\n" if marker.endswith(".toml") else "")
    shutil.copy(FIXTURES / "rewrite" / "single_expression.py", root / "models" / "net.py")
    result = CliRunner().invoke(app, [str(root)])
    assert ("+class GaussianSpike(_FGIRewritten):" in result.stdout) is guarded, result.stdout
    part = CliRunner().invoke(app, [str(root / "models")])
    assert "+class GaussianSpike(_FGIRewritten):" in part.stdout  # a part of the project
