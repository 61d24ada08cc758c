"""Verification catches every kind of wrong rewrite, never runs a user's script, and reports
in formats CI consumes."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import jsonschema
import pytest
import torch
from conftest import FIXTURES
from typer.testing import CliRunner

from fgirewrite import codegen
from fgirewrite._runtime import _fgi_inject, _fgi_seed
from fgirewrite.cli import app
from fgirewrite.live.surrogates import extract_class, fgi_function
from fgirewrite.testing import assert_equivalent
from fgirewrite.verify import verify_pair
from fgirewrite.verify.report import SCHEMA_PATH


class ATan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output / (1 + (torch.pi * x) ** 2)


def _g(x):
    return 1 / (1 + (torch.pi * x.detach()) ** 2)


def scaled(x):
    out = (x > 0).float()
    return _fgi_inject(out, 2 * _fgi_seed(x, out) * _g(x))


def wrong_sign(x):
    out = (x > 0).float()
    return _fgi_inject(out, _fgi_seed(x, out) * torch.where(x < 0, -_g(x), _g(x)))


def shifted(x):
    out = (x > 0.1).float()
    return _fgi_inject(out, _fgi_seed(x, out) * _g(x))


def dtype_changed(x):
    out = (x > 0).to(x.dtype)
    return _fgi_inject(out, _fgi_seed(x, out) * _g(x))


def plain_identity(x):
    h = x * _g(x)
    return h - h.detach() + (x > 0).float()


BROKEN = [
    (scaled, "float32/cpu: grid d/dx: mismatched elements: ", "greatest relative difference: 1 "),
    (
        wrong_sign,
        "float32/cpu: grid d/dx: mismatched elements: ",
        "greatest relative difference: 2 ",
    ),
    (shifted, "float32/cpu: grid forward: mismatched elements: ", "(up to 0 allowed)"),
    (dtype_changed, "float64/cpu: grid: output dtype torch.float64 != original torch.float32", ""),
    (plain_identity, "float32/cpu: edges forward: mismatched elements: ", "at input inf"),
]


def test_a_correct_rewrite_verifies():
    fn, surrogate = fgi_function(ATan)
    report = verify_pair(ATan.apply, fn, surrogate)
    assert report.ok, report.failures()
    assert [c.dtype for c in report.checks] == ["float32", "float64", "bfloat16", "float16"]


@pytest.mark.parametrize(
    ("broken", "start", "detail"), BROKEN, ids=lambda b: getattr(b, "__name__", "")
)
def test_broken_rewrites_are_caught(broken, start, detail):
    report = verify_pair(ATan.apply, broken, extract_class(ATan))
    assert not report.ok
    failure = next(f for f in report.failures() if f.startswith(start.split(":")[0]))
    assert failure.startswith(start), failure
    assert detail in failure


THRESHOLD, WINDOW, CAP = torch.tensor(1.0), torch.tensor(0.5), torch.tensor(2.0**16)


class CountSpikes(torch.autograd.Function):
    """Spike counts (up to 2**16) and a learnable 0-d threshold: in float16, the threshold's
    gradient, a sum over every element, overflows to inf in the original."""

    @staticmethod
    def forward(ctx, v, threshold=THRESHOLD, window=WINDOW, cap=CAP):
        ctx.save_for_backward(v, threshold)
        ctx.window = window
        count = ((v >= threshold) * torch.floor(v / threshold)).float()
        return count - (count - cap.float()) * (count > cap).float()

    @staticmethod
    def backward(ctx, g):
        v, threshold = ctx.saved_tensors
        mask = v >= threshold - ctx.window
        return g / threshold * mask, -v * g / threshold**2 * mask, None, None


def no_threshold_gradient(v, threshold=THRESHOLD, window=WINDOW, cap=CAP):
    out = CountSpikes.apply(v.detach(), threshold.detach(), window, cap)
    mask = (v >= threshold - window).detach()
    return _fgi_inject(out, _fgi_seed(v, out) / threshold.detach() * mask)


def test_a_sum_that_overflows_is_compared_as_such():
    """The original's threshold gradient is inf in float16: the rewrite's must be inf too (a
    note says so), and one that drops the gradient fails."""
    fn, surrogate = fgi_function(CountSpikes)
    report = verify_pair(CountSpikes.apply, fn, surrogate)
    assert report.ok, report.failures()
    half = next(c for c in report.checks if c.dtype == "float16")
    assert "grid d/dthreshold: not finite in float16 (the sum overflows); same" in half.notes
    report = verify_pair(CountSpikes.apply, no_threshold_gradient, surrogate)
    assert "float16/cpu: grid d/dthreshold: the original's gradient is inf, the rewrite's 0.0" in (
        report.failures()
    )


def test_assert_equivalent_helper():
    fn, _ = fgi_function(ATan)
    x = torch.linspace(-3, 3, 101)
    assert_equivalent(ATan.apply, fn, (x,))
    with pytest.raises(AssertionError, match=r"gradient 0: mismatched elements: \d+ / 101"):
        assert_equivalent(ATan.apply, scaled, (x,))
    with pytest.raises(AssertionError, match="forward: mismatched elements"):
        assert_equivalent(ATan.apply, shifted, (x,))


def test_assert_equivalent_compares_without_grad_and_sees_mutated_inputs():
    fn, _ = fgi_function(ATan)
    x = torch.linspace(-3, 3, 101)

    def lazy(v):  # right with grad, wrong when no gradient can be asked for
        return fn(v) if torch.is_grad_enabled() else fn(v) * 0

    def mutating(v):
        out = fn(v)
        v.data.clamp_(-1, 1)
        return out

    with pytest.raises(AssertionError, match="forward under no_grad: mismatched elements"):
        assert_equivalent(ATan.apply, lazy, (x,))
    with pytest.raises(
        AssertionError, match="input 0: the rewrite changes the caller's tensor in place"
    ):
        assert_equivalent(ATan.apply, mutating, (x,))


def _copy(tmp_path, name):
    path = tmp_path / name
    shutil.copy(FIXTURES / "verify" / name, path)
    return path


def test_training_script_is_verified_without_running_it(tmp_path):
    path = _copy(tmp_path, "training_script.py")
    result = CliRunner().invoke(app, ["verify", str(path), "-q"])
    assert result.exit_code == 0, result.output
    assert "1 of 1 surrogate verified equivalent; 0 errors" in result.stderr
    written = CliRunner().invoke(app, ["--write", str(path)])
    assert written.exit_code == 0 and "def fast_sigmoid" in path.read_text()


def test_broken_codegen_fails_verification_and_nothing_is_written(tmp_path, monkeypatch):
    path = _copy(tmp_path, "training_script.py")
    before = path.read_bytes()
    original = codegen.function_source

    def doubled(surrogate, name, helpers=None, annotate=False):
        source = original(surrogate, name, helpers, annotate)
        return source.replace("_fgi_inject(out, ", "_fgi_inject(out, 2 * ")

    monkeypatch.setattr(codegen, "function_source", doubled)
    verify = CliRunner().invoke(app, ["verify", str(path), "-q"])
    assert verify.exit_code == 1
    assert "0 of 1 surrogate verified equivalent" in verify.stderr
    write = CliRunner().invoke(app, ["--write", str(path)])
    assert write.exit_code == 1
    assert "not rewritten (verification failed): FastSigmoid [verification-failed]" in write.stdout
    assert path.read_bytes() == before


def test_reports_validate_and_parse(tmp_path):
    model = _copy(tmp_path, "tiny_model.py")
    bad = tmp_path / "bad.py"
    shutil.copy(FIXTURES / "noop" / "random_backward.py", bad)
    out = tmp_path / "reports"
    out.mkdir()
    args = [
        "verify",
        str(model),
        str(bad),
        "--entry",
        f"{model}:build",
        "--seeds",
        "1",
        "--json",
        str(out / "r.json"),
        "--junit",
        str(out / "r.xml"),
        "--markdown",
        str(out / "r.md"),
        "-q",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "r.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA_PATH.read_text()))
    assert report["ok"] is True
    [model_file, bad_file] = report["files"]
    assert bad_file["skipped"][0]["code"] == "backward-random"
    capabilities = {c["name"]: c for c in model_file["model"]["capabilities"]}
    fx = capabilities["torch.fx.symbolic_trace keeps the gradient"]
    dropped = {
        "status": "differs",
        "detail": "no gradient reaches `fc1.weight`: it was silently dropped",
        "blocked_by": f"torch.autograd.Function `ATanSpike` ({model}:6): it records only the "
        "Function's forward, so its gradient is lost",
    }
    assert fx["original"] == dropped
    assert fx["rewritten"]["status"] == "ok"
    assert capabilities["torch.func.vmap(grad)"]["original"]["status"] == "fails"
    assert capabilities["torch.func.vmap(grad)"]["rewritten"]["status"] == "ok"
    export = capabilities["torch.export keeps the gradient"]
    assert export["original"] == dropped
    assert export["rewritten"]["status"] == "ok"
    suites = ET.parse(out / "r.xml").getroot()
    assert suites.get("failures") == "0" and suites.get("skipped") == "1"
    names = [c.get("name") for c in suites.iter("testcase")]
    assert names.count("float16-cpu") == 1 and "outputs bitwise (seed 0)" in names
    markdown = (out / "r.md").read_text()
    assert markdown.startswith("## fgirewrite verify: ✅ all equivalent")
    assert "| torch.jit.script + save/load | ❌ fails" in markdown


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = _copy(tmp_path, "tiny_model.py")
    result = CliRunner().invoke(app, ["verify", str(path), "--plots", str(tmp_path / "p"), "-q"])
    assert result.exit_code == 0, result.output
    [png] = (tmp_path / "p").iterdir()
    assert png.name == "tiny_model.ATanSpike.png" and png.read_bytes()[:4] == b"\x89PNG"


SPIKE = """
import torch
{imports}


class Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * {derivative}
"""


@pytest.mark.parametrize(
    ("imports", "derivative", "message"),
    [
        (
            "import no_such_package_here",
            "no_such_package_here.d(x)",
            "no module `no_such_package_here` in the import roots ({root}) nor among the "
            "installed packages: if `no_such_package_here` is part of this project, add the "
            "folder that holds it to `pythonpath` under [tool.fgirewrite] in pyproject.toml; if "
            "it is a package, install it; or write with --no-verify",
        ),
        (
            "from .helpers import slope",
            "slope(x)",
            "a relative import outside its package: run fgirewrite where the file's package",
        ),
    ],
    ids=["missing package", "relative import"],
)
def test_verification_that_cannot_run_says_why_and_what_to_do(
    tmp_path, imports, derivative, message
):
    path = tmp_path / "model.py"
    path.write_text(SPIKE.format(imports=imports, derivative=derivative))
    before = path.read_bytes()
    result = CliRunner().invoke(app, ["--write", str(path)])
    assert result.exit_code == 1
    assert "not rewritten (verification could not run here): Spike [cannot-verify]" in result.stdout
    assert message.format(root=tmp_path) in result.stdout
    assert path.read_bytes() == before
