"""Bugs found by the property tests (tests/test_properties.py) and the sweep over real trees
(benchmarks/sweep.py), each pinned by the smallest source that showed it."""

from __future__ import annotations

import textwrap

from fgirewrite.rewrite import rewrite_source
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
