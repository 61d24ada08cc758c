"""Assertions for users' own test suites.

from fgirewrite.testing import assert_equivalent

def test_my_rewrite():
    assert_equivalent(OriginalSpike.apply, spike_fgi, (torch.randn(64, 32),))
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fgirewrite.verify.compare import bitwise_mismatch, close_mismatch, tolerance


def _grads(fn: Callable, inputs: tuple, seed: int):
    leaves = tuple(
        x.detach().clone().requires_grad_(x.is_floating_point()) if torch.is_tensor(x) else x
        for x in inputs
    )
    torch.manual_seed(seed)
    out = fn(*leaves)
    generator = torch.Generator().manual_seed(seed)
    go = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.dtype)
    differentiable = [x for x in leaves if torch.is_tensor(x) and x.requires_grad]
    params = list(fn.parameters()) if isinstance(fn, torch.nn.Module) else []
    grads = (
        torch.autograd.grad(out, differentiable + params, go.to(out.device), allow_unused=True)
        if out.requires_grad
        else [None] * (len(differentiable) + len(params))
    )
    return out.detach(), grads, differentiable


def assert_equivalent(
    original: Callable, rewritten: Callable, inputs: tuple, seed: int = 0
) -> None:
    """Forward bitwise (same dtype), gradients of every floating input (and parameter, for
    modules) within the dtype's tolerance wherever the original's are finite.

    Raises AssertionError with an assert_close-style message on the first difference.
    """
    if not isinstance(inputs, tuple):
        inputs = (inputs,)
    expected, expected_grads, leaves = _grads(original, inputs, seed)
    actual, actual_grads, _ = _grads(rewritten, inputs, seed)
    first = leaves[0].detach() if leaves else torch.zeros(())
    if actual.dtype != expected.dtype:
        raise AssertionError(f"output dtype {actual.dtype} != original {expected.dtype}")
    if (m := bitwise_mismatch("forward", actual, expected, first)) is not None:
        raise AssertionError(str(m))
    for i, (a, e) in enumerate(zip(actual_grads, expected_grads, strict=True)):
        if e is None and a is None:
            continue
        if e is None or a is None:
            raise AssertionError(
                f"gradient {i}: original {'has' if e is not None else 'has no'} "
                f"gradient, rewrite {'has' if a is not None else 'has no'}"
            )
        rtol, atol = tolerance(e.dtype)
        x = leaves[i].detach() if i < len(leaves) and leaves[i].shape == e.shape else e * 0
        if m := close_mismatch(f"gradient {i}", a, e, x, rtol, atol, torch.isfinite(e)):
            raise AssertionError(str(m))
