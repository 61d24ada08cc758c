"""Assertions for users' own test suites.

from fgirewrite.testing import assert_equivalent

def test_my_rewrite():
    assert_equivalent(OriginalSpike.apply, spike_fgi, (torch.randn(64, 32),))
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fgirewrite.verify.compare import bitwise_mismatch, close_mismatch, tolerance


def _copies(inputs: tuple) -> tuple:
    return tuple(
        x.detach().clone().requires_grad_(x.is_floating_point()) if torch.is_tensor(x) else x
        for x in inputs
    )


def _grads(fn: Callable, inputs: tuple, seed: int):
    """Output, gradients, the leaves, and which tensor inputs the call changed in place."""
    leaves = _copies(inputs)
    before = [x.detach().clone() if torch.is_tensor(x) else None for x in leaves]
    torch.manual_seed(seed)
    out = fn(*leaves)
    touched = [
        b is not None and bitwise_mismatch("input", x.detach(), b, b) is not None
        for b, x in zip(before, leaves, strict=True)
    ]
    generator = torch.Generator().manual_seed(seed)
    go = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.dtype)
    differentiable = [x for x in leaves if torch.is_tensor(x) and x.requires_grad]
    params: list[torch.Tensor] = list(fn.parameters()) if isinstance(fn, torch.nn.Module) else []
    grads = (
        torch.autograd.grad(out, differentiable + params, go.to(out.device), allow_unused=True)
        if out.requires_grad
        else [None] * (len(differentiable) + len(params))
    )
    return out.detach(), grads, differentiable, touched


def _forward(fn: Callable, inputs: tuple, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return fn(*_copies(inputs))


def assert_equivalent(
    original: Callable, rewritten: Callable, inputs: tuple, seed: int = 0
) -> None:
    """Forward bitwise (same dtype), with grad and under ``torch.no_grad()``; gradients of
    every floating input (and parameter, for modules) within the dtype's tolerance wherever
    the original's are finite, ``None`` where the original's is; and the caller's inputs
    left as they were, unless the original changes them alike.

    Raises AssertionError with an assert_close-style message on the first difference.
    """
    if not isinstance(inputs, tuple):
        inputs = (inputs,)
    expected, expected_grads, leaves, touched = _grads(original, inputs, seed)
    actual, actual_grads, _, changed = _grads(rewritten, inputs, seed)
    first = leaves[0].detach() if leaves else torch.zeros(())
    _assert_same_output("", actual, expected, first)
    _assert_same_output("under no_grad", _forward(rewritten, inputs, seed), expected, first)
    for i, (before, after) in enumerate(zip(touched, changed, strict=True)):
        if before != after:
            verb = "changes" if after else "leaves"
            raise AssertionError(
                f"input {i}: the rewrite {verb} the caller's tensor in place; the original "
                f"{'does' if before else 'does not'}"
            )
    for i, (a, e) in enumerate(zip(actual_grads, expected_grads, strict=True)):
        x = leaves[i].detach() if i < len(leaves) else None
        _assert_close_gradient(i, a, e, x)


def _assert_same_output(
    when: str, actual: torch.Tensor, expected: torch.Tensor, first: torch.Tensor
) -> None:
    if actual.dtype != expected.dtype:
        prefix = f"{when}: output dtype" if when else "output dtype"
        suffix = f"{expected.dtype}" if when else f"original {expected.dtype}"
        raise AssertionError(f"{prefix} {actual.dtype} != {suffix}")
    what = f"forward {when}" if when else "forward"
    if (m := bitwise_mismatch(what, actual, expected, first)) is not None:
        raise AssertionError(str(m))


def _assert_close_gradient(
    i: int, a: torch.Tensor | None, e: torch.Tensor | None, leaf: torch.Tensor | None
) -> None:
    if e is None and a is None:
        return
    if e is None or a is None:
        raise AssertionError(
            f"gradient {i}: original {'has' if e is not None else 'has no'} "
            f"gradient, rewrite {'has' if a is not None else 'has no'}"
        )
    rtol, atol = tolerance(e.dtype)
    x = leaf if leaf is not None and leaf.shape == e.shape else e * 0
    if m := close_mismatch(f"gradient {i}", a, e, x, rtol, atol, torch.isfinite(e)):
        raise AssertionError(str(m))
