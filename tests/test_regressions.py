"""Bugs found by the property tests (tests/test_properties.py) and the sweep over real trees
(benchmarks/sweep.py), each pinned by the smallest source that showed it."""

from __future__ import annotations

import textwrap

import pytest

from fgirewrite.rewrite import SourceError, rewrite_source
from fgirewrite.surrogate import Surrogate


def _only(source: str):
    result = rewrite_source(textwrap.dedent(source).encode(), "m.py")
    [finding] = result.findings
    return result, finding


def test_grad_output_mul_method_is_understood_and_readable():
    """``grad_output.mul(g)``: the readable derivative was ``1.mul(g)``, which does not parse,
    and the whole file failed with an internal error."""
    result, found = _only(
        """
        import torch

        class F(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return (x > 0).float()

            @staticmethod
            def backward(ctx, grad_output):
                (x,) = ctx.saved_tensors
                return grad_output.mul(torch.sigmoid(x) + 1).div(2)
        """
    )
    assert isinstance(found, Surrogate)
    assert found.gradients[0].derivative == "(torch.sigmoid(x) + 1).div(2)"
    assert result.changed


BACKWARD = """
import torch

class F(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
{body}
"""


def _backward(body: str):
    return _only(BACKWARD.format(body=textwrap.indent(textwrap.dedent(body), " " * 8)))


def test_chained_inplace_ops_on_a_name_apply_each_op_once():
    """``sg.mul_(-0.5).exp_()`` mutates ``sg`` twice. The receiver of ``exp_`` was evaluated
    again for the out-of-place call (repeating ``mul_``) and the result was not bound to
    ``sg``: the rewrite computed ``x**2 * 0.25`` instead of ``exp(-x**2 / 2)``."""
    _, found = _backward(
        """
        sg = x.pow(2)
        sg.mul_(-0.5).exp_()
        return grad_output * sg
        """
    )
    assert isinstance(found, Surrogate)
    assert found.gradients[0].derivative == "x.pow(2).mul(-0.5).exp()"


def test_fresh_inplace_chains_are_still_understood():
    _, found = _backward("return grad_output * (2 * x).cosh_().square_().reciprocal_()")
    assert found.gradients[0].derivative == "(2 * x).cosh().square().reciprocal()"


def test_inplace_op_through_a_view_of_a_saved_tensor_is_refused():
    """``x.detach()`` shares memory with the saved ``x``: ``x.detach().mul_(2)`` doubles the
    caller's tensor, and the ``x`` read after it. It was taken for a fresh tensor."""
    _, found = _backward(
        """
        sg = x.detach().mul_(2).sigmoid()
        return grad_output * sg * x
        """
    )
    assert (found.code, found.message) == (
        "in-place-alias",
        "an in-place op on `x.detach()`, which may share memory with the caller's tensors",
    )


def test_inplace_function_or_module_level_tensor_is_refused():
    """``torch.exp_(x)`` and ``SCALE.mul_(2)`` were read as pure calls whose result is unused:
    the mutation of the saved input or of module state was dropped from the rewrite."""
    for body, name in (
        ("torch.exp_(x)\nreturn grad_output * x", "torch.exp_"),
        ("SCALE.mul_(2)\nreturn grad_output * SCALE", "SCALE.mul_"),
    ):
        _, found = _backward(body)
        assert (found.code, found.message) == (
            "in-place-alias",
            f"`{name}` works in place on a module-level or caller's tensor",
        )


def test_readable_derivative_keeps_the_grouping_of_a_simplified_product():
    """``(grad_output * 2).double()`` read as ``2.double()`` (``1 * 2`` lost its
    parentheses), which does not parse: the whole file failed with an internal error."""
    _, found = _backward("return (grad_output * 2).double() * torch.sigmoid(x)")
    assert found.gradients[0].derivative == "(2).double() * torch.sigmoid(x)"


def test_cast_of_the_gradient_to_an_integer_dtype_is_refused():
    """``.to(torch.int32)`` truncates: it was taken for a cast like ``.to(torch.float64)``
    and the rewrite (whose injected term then carries no gradient) was proposed."""
    for cast in ("to(torch.int32)", "type(torch.LongTensor)", "to(dtype=torch.bool)"):
        _, found = _backward(f"return (grad_output * 2).{cast} * torch.sigmoid(x)")
        dtype = cast.split("(", 1)[1].rstrip(")")
        assert (found.code, found.message) == (
            "backward-not-linear",
            f"a cast of the gradient to `{dtype.removeprefix('dtype=')}`",
        )
    _, found = _backward("return (grad_output * 2).to(torch.float64) * torch.sigmoid(x)")
    assert isinstance(found, Surrogate)


def test_inplace_op_on_a_saved_output_or_view_is_refused():
    """The saved output is the tensor the caller holds, and a saved ``x.view(-1)`` shares the
    caller's input: ``out.mul_(-1)`` in the backward changes them. Only saved inputs were
    known to be shared; these were rewritten out-of-place, dropping the mutation."""
    for saved in ("spikes", "x.view(-1)"):
        _, found = _only(
            f"""
            import torch

            class F(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x):
                    spikes = (x > 0).float()
                    ctx.save_for_backward(x, {saved})
                    return spikes

                @staticmethod
                def backward(ctx, grad_output):
                    x, out = ctx.saved_tensors
                    out.mul_(-1)
                    return grad_output * torch.sigmoid(x) * out
            """
        )
        assert (found.code, found.message) == (
            "in-place-alias",
            "an in-place op on `out`, which may share memory with the caller's tensors",
        )


def test_python_that_libcst_cannot_parse_is_a_skip_not_a_crash():
    """``return* x`` is valid Python (a starred tuple) that libcst 1.0 rejects with a
    CSTValidationError, which escaped extraction: the whole file failed (found by mutating
    the fixtures). Its error message also spanned several lines."""
    result, found = _only(
        """
        import torch

        class F(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return* (x > 0).float()

            @staticmethod
            def backward(ctx, grad_output):
                return grad_output
        """
    )
    assert (found.code, found.message) == (
        "unsupported-syntax",
        "libcst cannot parse it: Must have at least one space after 'return'.",
    )
    assert result.new_source is None


def test_file_that_libcst_cannot_parse_is_a_one_line_source_error():
    source = BACKWARD.format(body="        return grad_output * torch.sigmoid(x)")
    source += "\n\ndef elsewhere(x):\n    return* x\n"
    with pytest.raises(SourceError) as raised:
        rewrite_source(source.encode(), "m.py")
    assert str(raised.value) == "libcst cannot parse: Must have at least one space after 'return'."


def test_null_bytes_are_a_syntax_error_without_a_line():
    """The message read ``syntax error at line None``."""
    with pytest.raises(SourceError) as raised:
        rewrite_source(BACKWARD.format(body="        return grad_output").encode() + b"\0", "m.py")
    assert str(raised.value) == "syntax error: source code string cannot contain null bytes"


def test_a_file_libcst_would_not_reproduce_is_refused():
    """Bare \\r line endings: libcst 1.0 drops the final \\r of the file, so the rewritten file
    lost it. Since the discover fix such files are found; they are refused, not damaged."""
    source = BACKWARD.format(body="        return grad_output * torch.sigmoid(x)")
    with pytest.raises(SourceError) as raised:
        rewrite_source(source.replace("\n", "\r").encode(), "m.py")
    assert str(raised.value) == "libcst does not reproduce this file byte for byte; left as it is"


def test_a_backward_nested_too_deeply_to_analyse_is_a_skip():
    """Deep enough for the analysis (not ``ast``) to exceed the recursion limit: the
    RecursionError failed the whole file."""
    deep = " * ".join(["x"] * 600)
    _, found = _backward(f"return grad_output * {deep}")
    assert (found.code, found.message) == ("unsupported-syntax", "nested too deeply to analyse")


@pytest.mark.parametrize(
    ("body", "label"),
    [
        ("y = sg.view(-1).view(sg.shape)\nsg.mul_(2)\nreturn grad_output * y", "sg"),
        ("first = sg[0]\nsg.mul_(2)\nreturn grad_output * first", "sg"),
        ("y = sg.T\nsg.mul_(2)\nreturn grad_output * y.T", "sg"),
        ("g = grad_output.clone()\nh = g.contiguous()\nh.mul_(2)\nreturn g * sg", "h"),
    ],
    ids=["view", "index", "transpose", "contiguous"],
)
def test_inplace_op_on_a_tensor_with_a_view_is_refused(body, label):
    """Only the view was marked as shared, not the tensor it views: ``sg.mul_(2)`` after
    ``y = sg.view(...)`` was rewritten out-of-place and ``y`` kept the old values (a wrong
    rewrite, which verification rejected)."""
    _, found = _backward("sg = x.abs() + 1\n" + body)
    assert (found.code, found.message) == (
        "in-place-alias",
        f"an in-place op on `{label}`, which may share memory with a view or alias of it",
    )


def test_inplace_op_reaches_a_tensor_held_in_a_tuple():
    """``pair = [sg]; sg.mul_(2)`` changes ``pair[0]``, which kept the old value."""
    _, found = _backward("sg = x.abs()\npair = [sg]\nsg.mul_(2)\nreturn grad_output * pair[0]")
    assert isinstance(found, Surrogate)
    assert found.gradients[0].derivative == "x.abs().mul(2)"


def test_a_view_of_a_temporary_may_be_mutated():
    """``grad_output.clone().float()`` may be the clone itself, but nothing else holds it."""
    _, found = _backward(
        "grad = grad_output.clone().float()\ngrad[x.abs() > 1] = 0\nreturn grad * torch.sigmoid(x)"
    )
    assert isinstance(found, Surrogate), found
    _, found = _backward(
        "g = grad_output.clone()\nh = g.float()\ng[x.abs() > 1] = 0\nreturn h * torch.sigmoid(x)"
    )
    assert (found.code, found.message) == (
        "in-place-alias",
        "an in-place op on `g`, which may share memory with a view or alias of it",
    )


@pytest.mark.parametrize(
    ("draw", "import_line"),
    [
        ("torch.normal(torch.zeros_like(x), 1.0)", ""),
        ("F.dropout(torch.ones_like(x), 0.5)", "import torch.nn.functional as F"),
        ("normal(torch.zeros_like(x), 1.0)", "from torch import normal"),
    ],
)
def test_a_random_value_stored_on_ctx_is_drawn_in_the_forward(draw, import_line):
    """A forward that stores a random draw on ctx: the draw stays in the forward, where the
    original makes it, instead of being recomputed for the gradient. ``torch.normal`` and
    dropout were not recognised as random (a substring test for "rand"), so the rewrite drew
    again for the gradient: other numbers, and random numbers consumed in another order."""
    result, found = _only(
        f"""
        import torch
        {import_line}

        class Noisy(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.noise = {draw}
                return (x > 0).to(x.dtype)

            @staticmethod
            def backward(ctx, grad):
                return grad * ctx.noise
        """
    )
    assert isinstance(found, Surrogate)
    assert found.forward.splitlines()[0] == f"noise_1 = {draw}"
    assert found.gradients[0].derivative == "noise_1"


def test_a_plain_class_of_the_same_name_before_the_function_is_left_alone():
    """The rewriter counted every class of a name, discovery only Function classes: the plain
    ``class F`` before the Function ``F`` was the one rewritten."""
    source = textwrap.dedent(
        """
        import torch


        class F:
            pass


        class F(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return (x > 0).float()

            @staticmethod
            def backward(ctx, grad_output):
                (x,) = ctx.saved_tensors
                return grad_output * torch.sigmoid(x)
        """
    )
    result = rewrite_source(source.encode(), "m.py")
    assert result.new_source is not None
    new = result.new_source.decode()
    assert "class F:\n    pass\n\n\ndef f(x):" in new
    assert "class F(torch.autograd.Function)" not in new


def test_a_generated_function_never_shadows_a_builtin():
    """``class Round`` became ``def round``: a module that star-imports the file lost the
    builtin ``round`` (found by trying, as an adversary would)."""
    result = rewrite_source(
        textwrap.dedent(
            """
            import torch

            class Round(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x):
                    return torch.floor(x + 0.5)

                @staticmethod
                def backward(ctx, grad_output):
                    return grad_output

            class Abs(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x):
                    ctx.save_for_backward(x)
                    return x * x.sign()

                @staticmethod
                def backward(ctx, grad_output):
                    (x,) = ctx.saved_tensors
                    return grad_output * x.sign()

            class Class(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x):
                    return (x > 0).to(x.dtype)

                @staticmethod
                def backward(ctx, grad_output):
                    return grad_output
            """
        ).encode(),
        "m.py",
    )
    assert [result.function(s) for s in result.surrogates] == ["round_fgi", "abs_fgi", "class_fgi"]
