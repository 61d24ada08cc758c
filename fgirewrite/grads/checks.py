"""Check ``fgirewrite.grads.transforms`` on a rewritten model against backprop on the original.

- per-sample gradients of the rewritten model (``vmap(grad)``) equal a loop of per-sample
  backward passes through the original model;
- each directional derivative (``jvp`` through the rewritten model) equals ``∇f·v`` with
  ``∇f`` from backprop through the original, and the sum and mean aggregates follow;
- the orthogonal aggregate equals the projection of that ``∇f`` onto the tangents' span,
  computed independently (a QR basis of the tangents, applied to ``∇f`` itself).

Comparisons use ``fgirewrite.verify.compare``: the dtype's tolerance, with the absolute
bound scaled to the size of the quantity compared (sums reassociate), and mismatch messages
in the ``torch.testing.assert_close`` style.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fgirewrite.grads.transforms import (
    Batch,
    Inputs,
    LossFn,
    Params,
    aggregate,
    directional,
    per_sample,
    sample_tangents,
    trainable_parameters,
)
from fgirewrite.verify.compare import close_mismatch, tolerance


@dataclass(frozen=True)
class GradientCheck:
    """One equivalence: its name and what did not match."""

    name: str
    failures: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        if self.ok:
            return f"{self.name}: ok"
        return f"{self.name}: FAILED\n" + "\n".join(f"  {f}" for f in self.failures)


def _same_parameters(original: torch.nn.Module, rewritten: torch.nn.Module) -> Params:
    params = trainable_parameters(original)
    names = set(trainable_parameters(rewritten))
    if names != set(params):
        raise ValueError(
            f"the models' trainable parameters differ: {sorted(params)} and {sorted(names)}"
        )
    return params


def _compare(
    what: str,
    actual: torch.Tensor,
    expected: torch.Tensor,
    at: torch.Tensor,
    scale: float,
    rtol: float | None,
) -> str | None:
    """Within ``rtol * |expected| + rtol * scale`` (plus the dtype's atol)?"""
    default_rtol, atol = tolerance(expected.dtype)
    rtol = default_rtol if rtol is None else rtol
    mismatch = close_mismatch(what, actual, expected, at, rtol, atol + rtol * scale)
    return None if mismatch is None else str(mismatch)


def backprop_gradient(
    model: torch.nn.Module, loss_fn: LossFn, inputs: Inputs, targets: Any
) -> Params:
    """``∇f`` of the batch loss by an ordinary backward pass."""
    return _backprop(model, Batch.of(loss_fn, inputs, targets))


def _backprop(model: torch.nn.Module, batch: Batch) -> Params:
    params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    loss = batch.loss(model)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {
        n: torch.zeros_like(p) if g is None else g
        for (n, p), g in zip(params.items(), grads, strict=True)
    }


def per_sample_loop(
    model: torch.nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Any,
    batch_dim: int = 0,
    target_batch_dim: int = 0,
) -> Params:
    """Per-sample gradients the slow way: one backward pass per sample."""
    return _per_sample_loop(model, Batch.of(loss_fn, inputs, targets, batch_dim, target_batch_dim))


def _per_sample_loop(model: torch.nn.Module, batch: Batch) -> Params:
    rows = [_backprop(model, sample) for sample in batch.samples()]
    return {n: torch.stack([row[n] for row in rows]) for n in rows[0]}


def check_per_sample_grads(
    original: torch.nn.Module,
    rewritten: torch.nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Any,
    batch_dim: int = 0,
    target_batch_dim: int = 0,
    rtol: float | None = None,
) -> GradientCheck:
    """``per_sample_grads`` on the rewritten model against a backward loop on the original."""
    batch = Batch.of(loss_fn, inputs, targets, batch_dim, target_batch_dim)
    return _check_per_sample(original, rewritten, batch, rtol)


def _check_per_sample(
    original: torch.nn.Module, rewritten: torch.nn.Module, batch: Batch, rtol: float | None
) -> GradientCheck:
    params = _same_parameters(original, rewritten)
    expected = _per_sample_loop(original, batch)
    actual = per_sample(rewritten, batch, params=params)
    failures = []
    for name, exp in expected.items():
        scale = float(exp.abs().max())
        if (
            m := _compare(f"per-sample d/d{name}", actual[name], exp, params[name], scale, rtol)
        ) is not None:
            failures.append(m)
    return GradientCheck(
        "per-sample gradients (vmap(grad) on the rewrite == backward loop on the original)",
        tuple(failures),
    )


def _flat(tensors: Mapping[str, torch.Tensor], k: int | None = None) -> torch.Tensor:
    if k is None:
        return torch.cat([t.reshape(-1) for t in tensors.values()])
    return torch.cat([t.reshape(k, -1) for t in tensors.values()], dim=1)


def check_forward_gradient(
    original: torch.nn.Module,
    rewritten: torch.nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Any,
    num_tangents: int = 4,
    generator: torch.Generator | None = None,
    rtol: float | None = None,
) -> list[GradientCheck]:
    """Forward-mode directional derivatives and their aggregates against backprop."""
    batch = Batch.of(loss_fn, inputs, targets)
    return _check_forward(original, rewritten, batch, num_tangents, generator, rtol)


def _check_forward(
    original: torch.nn.Module,
    rewritten: torch.nn.Module,
    batch: Batch,
    num_tangents: int,
    generator: torch.Generator | None,
    rtol: float | None,
) -> list[GradientCheck]:
    params = _same_parameters(original, rewritten)
    tangents = sample_tangents(params, num_tangents, generator)
    k = num_tangents
    gradient = _backprop(original, batch)
    g = _flat(gradient).double()
    v = _flat(tangents, k).double()  # k × n
    _, derivatives = directional(rewritten, batch, tangents, params=params)

    # A dot product's rounding error scales with Σ|g_i v_i|, not with its (cancelling) value.
    scales = v.abs() @ g.abs()
    expected = (v @ g).to(derivatives.dtype)
    failure = _compare(
        "directional derivatives ∇f·v",
        derivatives,
        expected,
        torch.zeros_like(expected),
        float(scales.max()),
        rtol,
    )
    checks = [
        GradientCheck(
            f"directional derivatives (jvp on the rewrite == ∇f·v from backprop "
            f"on the original, k={k})",
            (failure,) if failure else (),
        )
    ]

    for kind in ("sum", "mean"):
        actual = aggregate(tangents, derivatives, kind)
        ref = (v.T @ (v @ g)) / (1.0 if kind == "sum" else k)
        bound = float((v.abs().T @ scales).max()) / (1.0 if kind == "sum" else k)
        failures = _aggregate_failures(kind, actual, ref, params, bound, rtol)
        checks.append(
            GradientCheck(f"{kind} aggregate == Σ(∇f·v)v{'/k' * (kind == 'mean')}", failures)
        )

    actual = aggregate(tangents, derivatives, "orthogonal")
    basis, _ = torch.linalg.qr(v.T)  # n × k, orthonormal columns spanning the tangents
    ref = basis @ (basis.T @ g)
    # The derivatives' error, pushed through pinv(Vᵀ): at most |Δd| / σ_min(V).
    sigma_min = float(torch.linalg.svdvals(v).min())
    bound = math.sqrt(k) * float(scales.max()) / sigma_min
    failures = _aggregate_failures("orthogonal", actual, ref, params, bound, rtol)
    checks.append(GradientCheck("orthogonal aggregate == projection of ∇f onto span(V)", failures))
    return checks


def _aggregate_failures(
    kind: str,
    actual: Params,
    reference: torch.Tensor,
    params: Params,
    scale: float,
    rtol: float | None,
) -> tuple[str, ...]:
    failures = []
    pieces = reference.split([p.numel() for p in params.values()])
    for (name, p), piece in zip(params.items(), pieces, strict=True):
        expected = piece.reshape(p.shape).to(actual[name].dtype)
        if (m := _compare(f"{kind} d/d{name}", actual[name], expected, p, scale, rtol)) is not None:
            failures.append(m)
    return tuple(failures)


def check_gradients(
    original: torch.nn.Module,
    rewritten: torch.nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Any,
    batch_dim: int = 0,
    target_batch_dim: int = 0,
    num_tangents: int = 4,
    generator: torch.Generator | None = None,
    rtol: float | None = None,
) -> list[GradientCheck]:
    """All the checks: per-sample gradients, directional derivatives and every aggregate.

    ``original`` and ``rewritten`` must have the same trainable parameter names; the
    original's values are used for both.
    """
    batch = Batch.of(loss_fn, inputs, targets, batch_dim, target_batch_dim)
    checks = [_check_per_sample(original, rewritten, batch, rtol)]
    checks += _check_forward(original, rewritten, batch, num_tangents, generator, rtol)
    return checks


verify_gradients = check_gradients  # the old name; unrelated to ``fgirewrite verify``
