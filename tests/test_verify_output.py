"""`fgirewrite verify` on the terminal: a plain list that reads at 80 columns and in a CI log
(rich's tables wrapped the capability table into a column of fragments)."""

from __future__ import annotations

from conftest import FIXTURES

from fgirewrite.rewrite import rewrite_source
from fgirewrite.verify.model import Capability, ModelCheck, ModelReport
from fgirewrite.verify.pair import Check, SurrogateReport
from fgirewrite.verify.report import FileVerification, terminal_lines

GOOD = FIXTURES / "rewrite" / "single_expression.py"
LONG = (
    "RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, "
    "jvp, jacrev, ...), it must override the setup_context staticmethod."
)


def _report() -> FileVerification:
    rewrite = rewrite_source(GOOD.read_bytes(), "model.py")
    (surrogate,) = rewrite.surrogates
    checks = (Check("float32", "cpu"), Check("float64", "cpu", failures=("grid d/dx: off",)))
    report = SurrogateReport(surrogate.name, str(surrogate.location), "gaussian_spike", {}, checks)
    model = ModelReport(
        "model.py",
        "build",
        (ModelCheck("outputs bitwise (seed 0)", "ok", "bit-identical"),),
        (
            Capability("torch.func.vmap(grad)", "fails", LONG, "ok", "per-sample gradients"),
            Capability("eager backward", "ok", "forward and backward run", "ok", "same"),
        ),
        warnings=("double backward differs: " + "FGI gradients are first-order; " * 5,),
    )
    return FileVerification(
        "model.py",
        surrogates=[(surrogate, report)],
        skipped=rewrite.skipped,
        model=model,
    )


def test_the_report_is_a_list_that_fits_80_columns():
    lines = terminal_lines([_report()], width=80)
    assert lines[:5] == [
        "Surrogates",
        "  GaussianSpike (model.py:7:1) as gaussian_spike(): not equivalent (1 of 2 dtype",
        "      and device checks passed)",
        "      d/dx = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)",
        "      float64/cpu: grid d/dx: off",
    ]
    assert lines[5:] == [
        "Model build: equivalent (0.0 s)",
        "  ok: outputs bitwise (seed 0): bit-identical",
        "Capabilities, measured on both models",
        "  torch.func.vmap(grad)",
        "    original:  fails: RuntimeError: In order to use an autograd.Function with",
        "               functorch transforms (vmap, grad, jvp, jacrev, ...), it must",
        "               override the setup_context staticmethod.",
        "    rewritten: ok: per-sample gradients",
        "  eager backward",
        "    original:  ok: forward and backward run",
        "    rewritten: ok: same",
        "warning: double backward differs: " + "FGI gradients are first-order; " * 5,
    ]
    assert all(len(line) <= 80 for line in lines if not line.startswith("warning: "))


def test_a_wide_terminal_gets_long_lines():
    lines = terminal_lines([_report()], width=200)
    assert lines[1] == (
        "  GaussianSpike (model.py:7:1) as gaussian_spike(): not equivalent "
        "(1 of 2 dtype and device checks passed)"
    )
    assert "    original:  fails: " + LONG in lines


def test_a_surrogate_that_could_not_be_evaluated_is_not_called_not_equivalent():
    """Was "NOT equivalent (4 of 4 checks passed)": an error is no mismatch."""
    rewrite = rewrite_source(GOOD.read_bytes(), "model.py")
    (surrogate,) = rewrite.surrogates
    checks = (Check("float32", "cpu"), Check("float64", "cpu"))
    report = SurrogateReport(
        surrogate.name, str(surrogate.location), "gaussian_spike", {}, checks, error="it needs CUDA"
    )
    lines = terminal_lines([FileVerification("model.py", surrogates=[(surrogate, report)])], 200)
    assert lines[1] == "  GaussianSpike (model.py:7:1) as gaussian_spike(): could not verify"
    assert "      it needs CUDA" in lines
