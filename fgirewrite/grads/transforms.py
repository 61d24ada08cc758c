"""Per-sample gradients and multi-tangent forward gradients, on top of ``torch.func``.

Both need ``torch.func`` to run through the model, which a surrogate written as a custom
``torch.autograd.Function`` forbids; after the FGI rewrite they work. A model that still
calls such a Function raises ``TransformBlockedError`` naming the class and its file.

``loss_fn(output, targets)`` is called with the model's output and returns a scalar.
Parameters are the model's trainable ones (``requires_grad``), by name, as in
``model.named_parameters()``, unless ``params`` gives other values for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch.func import functional_call, grad, jvp, vmap

from fgirewrite.grads.blockers import TransformBlockedError, explain_blocked

__all__ = [
    "AGGREGATIONS",
    "TransformBlockedError",
    "aggregate",
    "directional_derivatives",
    "forward_gradient",
    "per_sample_grads",
    "sample_tangents",
    "trainable_parameters",
]

Inputs = torch.Tensor | Sequence[torch.Tensor]
LossFn = Callable[[Any, Any], torch.Tensor]
Params = dict[str, torch.Tensor]
Aggregation = Literal["sum", "mean", "orthogonal"]
AGGREGATIONS: tuple[str, ...] = ("sum", "mean", "orthogonal")


def trainable_parameters(model: torch.nn.Module) -> Params:
    """The model's parameters that require grad, detached, by name."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def as_tuple(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """One tensor or a sequence of them, as a tuple."""
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


@dataclass(frozen=True)
class Batch:
    """What every transform and check computes a loss on: ``loss_fn(model(*inputs),
    targets)``, samples indexed by ``batch_dim`` of the inputs and ``target_batch_dim`` of
    the targets (when they are a tensor)."""

    loss_fn: LossFn
    inputs: tuple[torch.Tensor, ...]
    targets: Any
    batch_dim: int = 0
    target_batch_dim: int = 0

    @classmethod
    def of(
        cls,
        loss_fn: LossFn,
        inputs: Inputs,
        targets: Any,
        batch_dim: int = 0,
        target_batch_dim: int = 0,
    ) -> Batch:
        return cls(loss_fn, as_tuple(inputs), targets, batch_dim, target_batch_dim)

    def loss(self, model: torch.nn.Module) -> torch.Tensor:
        """The loss by an ordinary call of the model."""
        return self.loss_fn(model(*self.inputs), self.targets)

    def functional(self, model: torch.nn.Module) -> Callable[..., torch.Tensor]:
        """``loss(params, inputs, targets)`` through ``functional_call``."""

        def loss(params: Params, inputs: tuple[torch.Tensor, ...], targets: Any) -> torch.Tensor:
            return self.loss_fn(functional_call(model, params, inputs), targets)

        return loss

    def samples(self) -> Iterator[Batch]:
        """Each sample, narrowed to a batch of one."""
        for i in range(self.inputs[0].shape[self.batch_dim]):
            targets = self.targets
            if isinstance(targets, torch.Tensor):
                targets = targets.narrow(self.target_batch_dim, i, 1)
            inputs = tuple(x.narrow(self.batch_dim, i, 1) for x in self.inputs)
            yield Batch(self.loss_fn, inputs, targets, self.batch_dim, self.target_batch_dim)


def per_sample_grads(
    model: torch.nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Any,
    batch_dim: int = 0,
    target_batch_dim: int = 0,
    *,
    params: Params | None = None,
    chunk_size: int | None = None,
) -> Params:
    """The gradient of each sample's loss, for every trainable parameter.

    Sample ``i`` is ``inputs`` and ``targets`` narrowed to index ``i`` of ``batch_dim``
    (``target_batch_dim``), kept as a batch of one, so the model sees the shapes it expects
    (``batch_dim=1`` for time-major [time, batch, ...] inputs). Each result has the batch
    first: ``[batch, *parameter.shape]``. With a mean-reduced ``loss_fn`` the per-sample
    gradients average to the batch gradient (a model that mixes samples, like BatchNorm in
    training mode, is the exception). Computed as ``vmap(grad(loss))``; ``chunk_size`` bounds
    how many samples ``vmap`` runs at once.
    """
    batch = Batch.of(loss_fn, inputs, targets, batch_dim, target_batch_dim)
    return per_sample(model, batch, params=params, chunk_size=chunk_size)


def per_sample(
    model: torch.nn.Module,
    batch: Batch,
    *,
    params: Params | None = None,
    chunk_size: int | None = None,
) -> Params:
    """``per_sample_grads`` on a ``Batch``."""
    params = trainable_parameters(model) if params is None else dict(params)
    loss = batch.functional(model)

    def sample_loss(params: Params, sample: tuple[torch.Tensor, ...], target: Any):
        batch_of_one = tuple(x.unsqueeze(batch.batch_dim) for x in sample)
        if isinstance(target, torch.Tensor):
            target = target.unsqueeze(batch.target_batch_dim)
        return loss(params, batch_of_one, target)

    target_dim = batch.target_batch_dim if isinstance(batch.targets, torch.Tensor) else None
    transform = vmap(
        grad(sample_loss),
        in_dims=(None, (batch.batch_dim,) * len(batch.inputs), target_dim),
        randomness="different",
        chunk_size=chunk_size,
    )
    with explain_blocked("per_sample_grads", lambda: batch.loss(model)):
        return transform(params, batch.inputs, batch.targets)


def sample_tangents(
    params: Mapping[str, torch.Tensor], num_tangents: int, generator: torch.Generator | None = None
) -> Params:
    """``num_tangents`` standard normal tangents, ``[k, *parameter.shape]`` per parameter.

    Drawn parameter by parameter in order, on each parameter's device and dtype;
    ``generator`` must live on that device.
    """
    if num_tangents < 1:
        raise ValueError(f"num_tangents must be at least 1, not {num_tangents}")
    return {
        n: torch.randn(
            (num_tangents, *p.shape), generator=generator, dtype=p.dtype, device=p.device
        )
        for n, p in params.items()
    }


def directional_derivatives(
    model: torch.nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Any,
    tangents: Mapping[str, torch.Tensor],
    *,
    params: Params | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss and its ``k`` directional derivatives ``∇f·v_j``, by forward-mode AD.

    ``tangents`` holds ``[k, *parameter.shape]`` per trainable parameter. One
    ``torch.func.jvp`` per tangent, vmapped over the ``k`` tangents (``chunk_size`` at a
    time); all of them see the same random draws, if the model draws any. No backward pass.
    """
    batch = Batch.of(loss_fn, inputs, targets)
    return directional(model, batch, tangents, params=params, chunk_size=chunk_size)


def directional(
    model: torch.nn.Module,
    batch: Batch,
    tangents: Mapping[str, torch.Tensor],
    *,
    params: Params | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``directional_derivatives`` on a ``Batch``."""
    params = trainable_parameters(model) if params is None else dict(params)
    if set(tangents) != set(params):
        raise ValueError(
            f"tangents are for {sorted(tangents)}, the trainable parameters are {sorted(params)}"
        )
    loss = batch.functional(model)

    def along(tangent: Params) -> tuple[torch.Tensor, torch.Tensor]:
        # jvp's annotation covers has_aux=True too: without it, a (primal, tangent) pair
        return cast(
            tuple[torch.Tensor, torch.Tensor],
            jvp(lambda p: loss(p, batch.inputs, batch.targets), (params,), (tangent,)),
        )

    transform = vmap(along, randomness="same", chunk_size=chunk_size)
    with explain_blocked("forward_gradient", lambda: batch.loss(model)):
        values, derivatives = transform(dict(tangents))
    return values[0], derivatives


def aggregate(
    tangents: Mapping[str, torch.Tensor],
    derivatives: torch.Tensor,
    aggregation: Aggregation = "mean",
) -> Params:
    """Combine tangents ``v_j`` and directional derivatives ``d_j = ∇f·v_j`` into a gradient.

    - ``"sum"``: ``Σ_j d_j v_j``. For standard normal tangents its expectation is ``k ∇f``.
    - ``"mean"``: ``(1/k) Σ_j d_j v_j``, unbiased: its expectation is ``∇f``.
    - ``"orthogonal"``: ``V (VᵀV)⁻¹ Vᵀ∇f`` with ``V = [v_1 … v_k]`` and ``Vᵀ∇f = d``: the
      orthogonal projection of ``∇f`` onto the tangents' span, never longer than ``∇f``;
      ``∇f`` itself once the tangents span all ``n`` parameters. For standard normal
      tangents and ``k ≤ n`` its expectation is ``(k/n) ∇f`` and its squared cosine
      similarity to ``∇f`` averages ``k/n``. Computed as ``pinv(Vᵀ) d`` in float64 (linearly
      dependent tangents contribute their span once) and returned in each tangent's dtype.
    """
    names = list(tangents)
    k = derivatives.shape[0]
    if aggregation in ("sum", "mean"):
        scale = 1.0 if aggregation == "sum" else 1.0 / k
        return {
            n: torch.tensordot(derivatives.to(tangents[n].dtype), tangents[n], dims=1) * scale
            for n in names
        }
    if aggregation != "orthogonal":
        raise ValueError(
            f"aggregation must be one of {', '.join(AGGREGATIONS)}, not {aggregation!r}"
        )
    flat = torch.cat([tangents[n].reshape(k, -1).double() for n in names], dim=1)
    projected = torch.linalg.pinv(flat) @ derivatives.double()
    pieces = projected.split([tangents[n][0].numel() for n in names])
    return {
        n: piece.reshape(tangents[n].shape[1:]).to(tangents[n].dtype)
        for n, piece in zip(names, pieces, strict=True)
    }


def forward_gradient(
    model: torch.nn.Module,
    loss_fn: LossFn,
    inputs: Inputs,
    targets: Any,
    num_tangents: int = 1,
    aggregation: Aggregation = "mean",
    generator: torch.Generator | None = None,
    *,
    tangents: Mapping[str, torch.Tensor] | None = None,
    params: Params | None = None,
    chunk_size: int | None = None,
) -> Params:
    """A gradient estimate from ``k`` forward-mode directional derivatives, no backward pass.

    Draws ``num_tangents`` standard normal tangents with ``generator`` (or takes
    ``tangents``), computes ``∇f·v_j`` with ``torch.func.jvp`` and combines them as
    ``aggregation`` says (see ``aggregate`` for the scaling of each). Returns a tensor per
    trainable parameter, shaped like it; for the loss too, use ``directional_derivatives``
    and ``aggregate``.
    """
    params = trainable_parameters(model) if params is None else dict(params)
    if tangents is None:
        tangents = sample_tangents(params, num_tangents, generator)
    _, derivatives = directional_derivatives(
        model, loss_fn, inputs, targets, tangents, params=params, chunk_size=chunk_size
    )
    return aggregate(tangents, derivatives, aggregation)
