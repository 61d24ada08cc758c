"""Comparisons with per-dtype tolerances and mismatch messages in the assert_close style."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Gradients: |actual - expected| <= atol + rtol * |expected|. float32/float64 gradients are
# usually bit-identical; these bounds admit the few ulps that a reassociated product costs.
RTOL = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 4e-3,
    torch.bfloat16: 3.2e-2,
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for gradients of this dtype; atol is four of its smallest subnormals."""
    info = torch.finfo(dtype)
    return RTOL.get(dtype, 1e-5), 4 * info.smallest_normal * info.eps


@dataclass(frozen=True)
class Mismatch:
    """Where two tensors differ, described as torch.testing.assert_close does."""

    what: str
    count: int
    total: int
    max_abs: float
    max_abs_at: float
    max_rel: float
    max_rel_at: float
    rtol: float
    atol: float

    def __str__(self) -> str:
        pct = 100.0 * self.count / max(self.total, 1)
        return (
            f"{self.what}: mismatched elements: {self.count} / {self.total} ({pct:.1f}%); "
            f"greatest absolute difference: {self.max_abs:.6g} at input {self.max_abs_at:.6g} "
            f"(up to {self.atol:.3g} allowed); greatest relative difference: "
            f"{self.max_rel:.6g} at input {self.max_rel_at:.6g} (up to {self.rtol:.3g} allowed)"
        )


def _bits(t: torch.Tensor) -> torch.Tensor:
    integer = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[t.element_size()]
    if t.dtype == torch.bool:
        return t.to(torch.int8)
    return t.contiguous().view(integer) if t.is_floating_point() else t


def bitwise_mismatch(
    what: str, actual: torch.Tensor, expected: torch.Tensor, inputs: torch.Tensor
) -> Mismatch | None:
    """None if equal bit for bit (any NaN equals any NaN), else where they differ."""
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    differ = _bits(actual) != _bits(expected)
    if actual.is_floating_point():
        differ &= ~(actual.isnan() & expected.isnan())
    return _describe(what, differ, actual, expected, inputs, 0.0, 0.0)


def close_mismatch(
    what: str,
    actual: torch.Tensor,
    expected: torch.Tensor,
    inputs: torch.Tensor,
    rtol: float,
    atol: float,
    where: torch.Tensor | None = None,
) -> Mismatch | None:
    """None if within tolerance wherever ``where`` holds, else where they differ."""
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    a, e = actual.double(), expected.double()
    differ = (a - e).abs() > atol + rtol * e.abs()
    differ |= a.isnan() != e.isnan()
    if where is not None:
        differ &= where
    return _describe(what, differ, actual, expected, inputs, rtol, atol)


def _describe(
    what: str,
    differ: torch.Tensor,
    actual: torch.Tensor,
    expected: torch.Tensor,
    inputs: torch.Tensor,
    rtol: float,
    atol: float,
) -> Mismatch | None:
    count = int(differ.sum())
    if count == 0:
        return None
    a, e = actual.double(), expected.double()
    diff = (a - e).abs().where(differ, torch.zeros((), dtype=torch.float64))
    diff = diff.nan_to_num(nan=float("inf"))
    rel = diff / e.abs().clamp_min(torch.finfo(torch.float64).tiny)
    flat_inputs = inputs.double().broadcast_to(a.shape).reshape(-1)
    i_abs, i_rel = int(diff.reshape(-1).argmax()), int(rel.reshape(-1).argmax())
    return Mismatch(
        what,
        count,
        differ.numel(),
        float(diff.reshape(-1)[i_abs]),
        float(flat_inputs[i_abs]),
        float(rel.reshape(-1)[i_rel]),
        float(flat_inputs[i_rel]),
        rtol,
        atol,
    )
