"""Verification under fault injection: a broken original or rewrite fails with a precise
message and nothing is written; a correct rewrite is not rejected for the original's own
rounding."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from fgirewrite.cli import app
from fgirewrite.live.surrogates import fgi_function
from fgirewrite.verify import verify_pair


class ScaledInFloat32(torch.autograd.Function):
    """``grad_output * 3`` rounds in float32 (the output's dtype) before it meets the float64
    factor: for a float64 input the original's gradient has float32 precision only."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * 3 * (1 - torch.tanh(x) ** 2)


class ThresholdInFloat32(torch.autograd.Function):
    """A learnable threshold whose gradient is summed in float32."""

    @staticmethod
    def forward(ctx, x, thr):
        ctx.save_for_backward(x, thr)
        return (x > thr).float()

    @staticmethod
    def backward(ctx, grad_output):
        x, thr = ctx.saved_tensors
        grad = grad_output * ((x - thr).abs() < 0.5).float()
        return grad, (-grad).sum(0)


def test_original_rounding_in_its_output_dtype_is_reproduced():
    """``grad_output * 3`` rounds in float32 in the original (the output's dtype) for a
    float64 input: the rewrite casts to the output's dtype below its numbers, so the float64
    gradients are bit for bit the original's (they were 6e-8 apart once)."""
    fn, surrogate = fgi_function(ScaledInFloat32)
    report = verify_pair(ScaledInFloat32.apply, fn, surrogate)
    assert report.ok, report.failures()
    [float64] = [c for c in report.checks if c.dtype == "float64"]
    assert float64.bitwise and not float64.notes


def test_reduced_gradient_summed_in_float32_is_not_a_mismatch():
    """Was rejected: float64 d/dthr, summed by the original in float32, against the float64
    summation bound."""
    fn, surrogate = fgi_function(ThresholdInFloat32)
    report = verify_pair(ThresholdInFloat32.apply, fn, surrogate)
    assert report.ok, report.failures()
    [float64] = [c for c in report.checks if c.dtype == "float64"]
    assert any(
        n.startswith("grid d/dthr: the original's gradient has float32") for n in float64.notes
    )


def test_a_real_error_is_still_caught_at_the_coarser_tolerance():
    fn, surrogate = fgi_function(ScaledInFloat32)

    def off_by_one_percent(x):
        return fn(x * 1.0) * 1.0 + (fn(x) - fn(x).detach()) * 0.01

    report = verify_pair(ScaledInFloat32.apply, off_by_one_percent, surrogate)
    assert not report.ok
    assert report.failures()[0].startswith("float32/cpu: grid d/dx: mismatched elements: ")
    assert any(f.startswith("float64/cpu: grid d/dx: mismatched") for f in report.failures())


class Spike(torch.autograd.Function):
    """A correct surrogate: the rewrite under test is always made from this one."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(x) * (1 - torch.sigmoid(x))


class HeavisideThreshold(torch.autograd.Function):
    """torch.heaviside has no forward-mode AD formula: torch.func.jvp of the rewrite raises
    (the verbatim forward sees the tangent) inside the summation bound of d/dthr."""

    @staticmethod
    def forward(ctx, x, thr):
        ctx.save_for_backward(x, thr)
        return torch.heaviside(x - thr, torch.zeros_like(x))

    @staticmethod
    def backward(ctx, grad_output):
        x, thr = ctx.saved_tensors
        grad = grad_output * torch.sigmoid(x - thr)
        return grad, (-grad).sum(0)


def test_heaviside_forward_runs_under_forward_mode():
    """torch.heaviside has no forward-mode formula; the rewrite detaches its inputs before the
    verbatim forward, so torch.func.jvp (in the summation bound of d/dthr) works."""
    fn, surrogate = fgi_function(HeavisideThreshold)
    report = verify_pair(HeavisideThreshold.apply, fn, surrogate)
    assert report.ok, report.failures()


def test_a_check_that_raises_is_a_failure_not_a_crash():
    """Was an uncaught NotImplementedError: `fgirewrite --write` and `verify` printed a
    traceback. A rewrite whose forward sees the tangent raises inside a check."""
    fn, surrogate = fgi_function(HeavisideThreshold)

    def raises_under_jvp(x, thr):
        if any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in (x, thr)):
            raise NotImplementedError("no forward mode here")
        return fn(x, thr)

    report = verify_pair(HeavisideThreshold.apply, raises_under_jvp, surrogate)
    assert not report.ok
    expected = "float32/cpu: forward-mode AD (torch.func.jvp) fails: NotImplementedError: no "
    assert expected + "forward mode here" in report.failures()


class RaisingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        raise RuntimeError("boom in backward")


class WrongCount(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        grad = grad_output * torch.sigmoid(x) * (1 - torch.sigmoid(x))
        return grad, grad  # autograd allows extra Nones, not extra gradients


class NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * float("nan")


class IntegerGradient(torch.autograd.Function):
    """Returns an int32 gradient: autograd casts it to the input's dtype, truncated."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return (4 * grad_output * torch.sigmoid(x) * (1 - torch.sigmoid(x))).to(torch.int32)


def _against_spike(original) -> list[str]:
    fn, surrogate = fgi_function(Spike)
    return verify_pair(original, fn, surrogate).failures()


def test_original_backward_raises():
    assert _against_spike(RaisingBackward.apply) == [
        "nothing was compared: grid: the original fails (RuntimeError: boom in backward); "
        "not compared"
    ]


def test_original_returns_the_wrong_number_of_gradients():
    assert _against_spike(WrongCount.apply) == [
        "nothing was compared: grid: the original fails (RuntimeError: function "
        "WrongCountBackward returned an incorrect number of gradients (expected 1, got 2)); "
        "not compared"
    ]


def test_original_gradient_nan_everywhere_proves_nothing():
    """Was approved: NaN gradients are left out of the comparison, so nothing was compared."""
    failures = _against_spike(NaNGradient.apply)
    assert failures == [
        f"{dtype}/cpu: grid d/dx: the original's gradient is not finite at any probe input; "
        "nothing was compared"
        for dtype in ("float32", "float64", "bfloat16", "float16")
    ]


def test_original_gradient_of_a_wrong_dtype():
    failures = _against_spike(IntegerGradient.apply)
    assert failures and all("d/dx: mismatched elements:" in f for f in failures)
    assert failures[0].startswith("float32/cpu: grid d/dx: mismatched elements: ")


def test_rewrite_that_raises_or_returns_nan():
    _, surrogate = fgi_function(Spike)

    def raises(x):
        raise ValueError("rewrite broke")

    def nan_gradient(x):
        out = (x > 0).float()
        return out + (x - x.detach()) * float("nan")

    report = verify_pair(Spike.apply, raises, surrogate)
    assert report.failures()[0] == "float32/cpu: grid: the rewrite raises ValueError: rewrite broke"
    report = verify_pair(Spike.apply, nan_gradient, surrogate)
    assert report.failures()[0].startswith("float32/cpu: grid forward: mismatched elements: ")
    assert any(
        f.startswith("float32/cpu: grid d/dx: mismatched elements: 9906 / 9906")
        for f in report.failures()
    )


HEADER = "import torch\n\n\n"
FAULTY_FILES = {
    # backward raises at run time (a helper extraction cannot see into runs on a constant)
    "raises.py": """
def slope(x):
    raise ValueError("slope needs a positive threshold")


class Raises(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * slope(x)
""",
    "nan.py": """
class NaNs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * float("nan")
""",
}
FAULT_MESSAGES = {
    "raises.py": "8:1: not rewritten (verification could not run here): Raises [cannot-verify] "
    "nothing was compared: grid: the original fails (ValueError: slope needs a positive "
    "threshold); not compared",
    "nan.py": "4:1: not rewritten (verification failed): NaNs [verification-failed] "
    "float32/cpu: grid d/dx: the original's gradient is not finite at any probe input; "
    "nothing was compared; float64/cpu: grid d/dx:",
}


@pytest.mark.parametrize("name", sorted(FAULTY_FILES))
def test_write_refuses_a_rewrite_that_fails_verification(tmp_path, name):
    path = tmp_path / name
    path.write_text(HEADER + FAULTY_FILES[name].lstrip("\n"))
    before = path.read_bytes()
    result = CliRunner().invoke(app, ["--write", str(path)])
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith(f"{path}:{FAULT_MESSAGES[name]}")
    code = "cannot-verify" if name == "raises.py" else "verification-failed"
    assert result.stderr.strip().endswith(
        f"fgirewrite: rewrote 0 surrogates in 0 files; 1 left as they are: "
        f"{code} (1); 0 errors; 1 file checked"
    )
    assert "Traceback" not in result.output
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


MODEL = """
import torch


class Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(x)


class Neuron(torch.nn.Module):
    def forward(self, x):
        return {OUTPUT}


def build():
    return Neuron(), (torch.randn(8, 3),)
"""


def _model_report(tmp_path, output: str):
    from fgirewrite.project import Entry, import_roots
    from fgirewrite.verify.model import verify_model

    path = tmp_path / "neuron.py"
    path.write_text(MODEL.replace("{OUTPUT}", output))
    return verify_model(
        Entry("build", path=path),
        import_roots(path),
        seeds=1,
        steps=2,
        capabilities=("eager backward",),
    )


def test_a_model_without_parameters_is_verified(tmp_path):
    """Was a traceback: the SGD trajectory check built an optimizer over no parameters."""
    report = _model_report(tmp_path, "Spike.apply(x - 0.5)")
    assert report.error is None and report.ok
    assert report.checks[-1].name == "parameters after 2 SGD steps"
    assert report.checks[-1].detail == "the model has no parameters to train"


def test_a_model_that_cannot_be_compared_is_an_error_not_a_crash(tmp_path):
    """A model-level check that raises was a traceback."""
    report = _model_report(tmp_path, "Spike.apply(x).nope")
    assert report.verdict == "could not verify"
    assert report.error == (
        "building the original model and running one forward raised AttributeError: "
        "'Tensor' object has no attribute 'nope'"
    )


class HalfPrecisionSlope(torch.autograd.Function):
    """A float64 output whose gradient the backward computes in float32: float32-exact
    float64 gradients, so the gradients' rule allows float32 rounding."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return (grad_output.float() * torch.sigmoid(x).float()).to(grad_output.dtype)


class _Nudged(torch.autograd.Function):
    """Identity whose forward-mode derivative is off by five float64 subnormals."""

    @staticmethod
    def forward(y):
        return y.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad

    @staticmethod
    def jvp(ctx, tangent):
        return tangent + 5 * 4.9406564584124654e-324


def test_forward_mode_follows_the_gradients_tolerance_rule():
    """Was a failure: a jvp five subnormals off a float32-exact float64 gradient, against four
    subnormals of float64, where the gradient's own check allows float32 rounding."""
    fn, surrogate = fgi_function(HalfPrecisionSlope)
    report = verify_pair(HalfPrecisionSlope.apply, lambda x: _Nudged.apply(fn(x)), surrogate)
    assert report.ok, report.failures()


def test_forward_mode_off_by_more_than_the_rule_still_fails():
    fn, surrogate = fgi_function(HalfPrecisionSlope)

    class Off(_Nudged):
        @staticmethod
        def jvp(ctx, tangent):
            return tangent * 1.01

    report = verify_pair(HalfPrecisionSlope.apply, lambda x: Off.apply(fn(x)), surrogate)
    assert [f for f in report.failures() if "jvp d/dx: mismatched elements" in f]


class SlopeByAutograd(torch.autograd.Function):
    """Its forward calls torch.autograd.grad: torch.func.jvp cannot run it, original or not."""

    @staticmethod
    def forward(ctx, x):
        with torch.enable_grad():
            leaf = x.detach().requires_grad_()
            (slope,) = torch.autograd.grad(torch.sigmoid(4 * leaf).sum(), leaf)
        ctx.save_for_backward(slope)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (slope,) = ctx.saved_tensors
        return grad_output * slope


def test_a_capability_the_original_lacks_too_is_not_held_against_the_rewrite():
    """Was a failure: `forward-mode AD (torch.func.jvp) fails` for a forward that calls
    torch.autograd.grad, which the original's own forward cannot do under jvp either."""
    fn, surrogate = fgi_function(SlopeByAutograd)
    report = verify_pair(SlopeByAutograd.apply, fn, surrogate)
    assert report.ok, report.failures()
    [float32] = [c for c in report.checks if c.dtype == "float32"]
    assert any(
        n.startswith(
            "forward-mode AD (torch.func.jvp) not compared: the original's own forward fails "
            "under it too (RuntimeError: "
        )
        for n in float32.notes
    )
