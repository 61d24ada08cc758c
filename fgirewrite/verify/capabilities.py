"""The capability table: what a model can do, each cell measured on models built afresh.

Every cell builds its models from the entry (``fresh``), never from a copy of a model that
has run, and seeds every forward. A cell fails with the error, named where it comes from (a
Function still in the model, or the model's own module and line: ``verify.blocker``); a cell
that runs but computes another gradient than eager backward ``differs``.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from fgirewrite.execute.state import seed_all
from fgirewrite.source import described
from fgirewrite.verify.blocker import Blocker, blocker, function_blocker
from fgirewrite.verify.compare import close_mismatch, tolerance

Fresh = Callable[[], tuple[nn.Module, tuple]]


@dataclass(frozen=True)
class Cell:
    """One capability on one model: 'ok', 'fails' or 'differs', why, and what blocks it."""

    status: str
    detail: str
    blocker: Blocker | None = None


def outputs(out: object) -> list[torch.Tensor]:
    """The tensors of a model's output, however nested."""
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def loss(out: object, seed: int) -> torch.Tensor:
    """A fixed random projection of every floating output: gradients see every element."""
    generator = torch.Generator().manual_seed(seed)
    total: torch.Tensor | int = 0
    for o in outputs(out):
        if o.is_floating_point():
            w = torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o.dtype)
            total = total + (o * w.to(o.device)).sum()
    # 0 only for a model without a floating output, which autograd then refuses
    return cast(torch.Tensor, total)


def leaves(inputs: tuple, grad: bool) -> tuple:
    """Fresh copies of the inputs, floating ones requiring grad when ``grad``."""
    return tuple(
        x.detach().clone().requires_grad_(grad and x.is_floating_point())
        if isinstance(x, torch.Tensor)
        else x
        for x in inputs
    )


def passed(inputs: tuple) -> tuple:
    """What the model is called with: a copy of each input that requires grad, so that a
    model writing into its input in place (``x.unsqueeze_(1)``) writes into the copy."""
    return tuple(
        x.clone() if isinstance(x, torch.Tensor) and x.requires_grad else x for x in inputs
    )


def named_gradients(
    module: nn.Module, run: Callable, inputs: tuple, seed: int
) -> tuple[object, dict[str, torch.Tensor]]:
    """The output of ``run`` and the gradients of ``loss`` with respect to ``module``'s
    parameters and the floating inputs, by name (``input i``); seeded before the forward."""
    inputs = leaves(inputs, grad=True)
    seed_all(seed)
    out = run(*passed(inputs))
    named: dict[str, torch.Tensor] = {k: p for k, p in module.named_parameters() if p.requires_grad}
    named |= {
        f"input {i}": x
        for i, x in enumerate(inputs)
        if isinstance(x, torch.Tensor) and x.requires_grad
    }
    if not any(o.requires_grad for o in outputs(out)):
        return out, {}
    grads = torch.autograd.grad(loss(out, seed), list(named.values()), allow_unused=True)
    return out, {
        k: g if g is not None else torch.zeros_like(named[k])
        for k, g in zip(named, grads, strict=True)
    }


def _close(what: str, a: torch.Tensor, b: torch.Tensor):
    """Tolerance for the same gradient computed along another path (vmap, compile, export):
    the dtype's rtol, relative to the largest element, since summation order may differ."""
    rtol, atol = tolerance(b.dtype)
    scale = float(b.detach().abs().max()) if b.numel() else 0.0
    return close_mismatch(what, a.detach(), b.detach(), torch.zeros(()), rtol, atol + rtol * scale)


def _compare_grads(fresh: Fresh, module: nn.Module, run: Callable, inputs: tuple, done: str):
    """Gradients through ``run`` (parameters of ``module``) against eager backward."""
    reference_model, _ = fresh()
    _, reference = named_gradients(reference_model, reference_model, inputs, 0)
    _, grads = named_gradients(module, run, inputs, 0)
    if not grads:
        return "differs", "the output carries no gradient"
    for name, expected in reference.items():
        if name not in grads:
            continue
        if not grads[name].any() and expected.any():
            return "differs", f"no gradient reaches `{name}`: it was silently dropped"
        if (m := _close(name, grads[name], expected)) is not None:
            return "differs", str(m)
    return "ok", f"{done}; same gradients as eager"


def _saved(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def _eager(fresh: Fresh, batch_dim: int, backend: str):
    model, inputs = fresh()
    named_gradients(model, model, inputs, 0)
    return "ok", "forward and backward run"


def _export(fresh: Fresh, batch_dim: int, backend: str):
    model, inputs = fresh()
    exported = torch.export.export(model, leaves(inputs, grad=False)).module()
    return _compare_grads(fresh, exported, exported, inputs, "exported")


def _trace(fresh: Fresh, batch_dim: int, backend: str):
    model, inputs = fresh()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: what the comparison measures
        traced = torch.jit.trace(model, leaves(inputs, grad=False), check_trace=False)
    loaded = _saved(traced)
    return _compare_grads(fresh, loaded, loaded, inputs, "traced, saved and loaded")


def _script(fresh: Fresh, batch_dim: int, backend: str):
    model, inputs = fresh()
    loaded = _saved(torch.jit.script(model))
    return _compare_grads(fresh, loaded, loaded, inputs, "scripted, saved and loaded")


def _compile(fresh: Fresh, batch_dim: int, backend: str):
    model, inputs = fresh()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    status, detail = _compare_grads(fresh, model, compiled, inputs, "compiled")
    return status, f"{detail} (backend {backend})"


def _fx(fresh: Fresh, batch_dim: int, backend: str):
    model, inputs = fresh()
    traced = torch.fx.symbolic_trace(model)
    return _compare_grads(fresh, traced, traced, inputs, "traced")


def _vmap(fresh: Fresh, batch_dim: int, backend: str):
    model, inputs = fresh()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def sample_loss(p: dict, *sample: Any) -> torch.Tensor:
        batched = tuple(
            s.unsqueeze(batch_dim) if isinstance(s, torch.Tensor) else s for s in sample
        )
        out = torch.func.functional_call(model, p, batched)
        return cast(torch.Tensor, sum(o.sum() for o in outputs(out) if o.is_floating_point()))

    dims = (None,) + tuple(batch_dim if isinstance(x, torch.Tensor) else None for x in inputs)
    seed_all(0)
    transform = torch.func.vmap(torch.func.grad(sample_loss), in_dims=dims, randomness="same")
    per_sample = transform(params, *inputs)
    reference_model, _ = fresh()
    first = tuple(x.narrow(batch_dim, 0, 1) if isinstance(x, torch.Tensor) else x for x in inputs)
    seed_all(0)
    out = reference_model(*first)
    reference = torch.autograd.grad(
        cast(torch.Tensor, sum(o.sum() for o in outputs(out) if o.is_floating_point())),
        list(reference_model.parameters()),
        allow_unused=True,
    )
    for (name, g), r in zip(per_sample.items(), reference, strict=True):
        if r is not None and (m := _close(name, g[0], r)) is not None:
            return "differs", str(m)
    return "ok", f"per-sample gradients over dim {batch_dim} match per-sample backward"


def _primals(model: nn.Module, inputs: tuple) -> tuple[dict, Callable[[dict], object]]:
    """The parameters and floating inputs by name, and the model as a function of them."""
    named = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    named |= {
        f"input {i}": x.detach()
        for i, x in enumerate(inputs)
        if isinstance(x, torch.Tensor) and x.is_floating_point()
    }

    def call(p: dict) -> object:
        args = tuple(p.get(f"input {i}", x) for i, x in enumerate(inputs))
        parameters = {k: v for k, v in p.items() if not k.startswith("input ")}
        return torch.func.functional_call(model, parameters, args)

    return named, call


def _directional(
    fresh: Fresh, inputs: tuple, tangents: dict, derivative: torch.Tensor, value: torch.Tensor
):
    """<∇f, t> from forward mode must equal the same from backward on a fresh model, whose
    loss must be ``value`` (forward mode's): other values would put spikes elsewhere."""
    model, _ = fresh()
    out, grads = named_gradients(model, model, inputs, 3)
    eager = loss(out, 3)
    if not torch.equal(eager.detach(), value.detach()):
        return "differs", (
            f"the forward-mode pass computes other values than eager (loss {float(value):.9g}, "
            f"eager {float(eager):.9g}), so thresholds may fall elsewhere: not comparable"
        )
    right = float(sum((grads[k].double() * t.double()).sum() for k, t in tangents.items()))
    left = float(derivative.detach())
    if abs(left - right) > 1e-4 * max(1.0, abs(right)):
        return "differs", f"<J t, w> = {left:.6g} but <t, J^T w> = {right:.6g}"
    return "ok", "tangent consistent with the backward gradient"


def _tangents(primals: dict) -> dict:
    generator = torch.Generator().manual_seed(4)
    return {
        k: torch.randn(v.shape, generator=generator, dtype=torch.float64).to(v.dtype)
        for k, v in primals.items()
    }


def _jvp(fresh: Fresh, batch_dim: int, backend: str):
    model, inputs = fresh()
    primals, call = _primals(model, inputs)
    tangents = _tangents(primals)
    seed_all(3)
    value, derivative = cast(
        tuple[torch.Tensor, torch.Tensor],  # jvp's annotation covers has_aux=True too
        torch.func.jvp(lambda p: loss(call(p), 3), (primals,), (tangents,)),
    )
    return _directional(fresh, inputs, tangents, derivative, value)


def _forward_ad(fresh: Fresh, batch_dim: int, backend: str):
    import torch.autograd.forward_ad as fwad

    model, inputs = fresh()
    primals, call = _primals(model, inputs)
    tangents = _tangents(primals)
    with fwad.dual_level():
        duals = {k: fwad.make_dual(v, tangents[k]) for k, v in primals.items()}
        seed_all(3)
        value, derivative = fwad.unpack_dual(loss(call(duals), 3))
    if derivative is None:
        return "fails", "no tangent came out"
    return _directional(fresh, inputs, tangents, derivative, value)


def _double_backward(fresh: Fresh, batch_dim: int, backend: str):
    model, inputs = fresh()
    params = [p for p in model.parameters() if p.requires_grad]
    seed_all(0)
    grads = torch.autograd.grad(
        loss(model(*leaves(inputs, grad=False)), 0), params, create_graph=True, allow_unused=True
    )
    penalty = sum((g**2).sum() for g in grads if g is not None and g.requires_grad)
    if not isinstance(penalty, torch.Tensor):
        return "fails", "the gradient is not differentiable"
    second = torch.autograd.grad(penalty, params, allow_unused=True)
    norm = sum(float(s.norm()) for s in second if s is not None)
    return "ok", f"second-order norm {norm:.6g}"


# Lowest first what torch 2.13 already does with a custom Function (compile, eager).
CAPABILITIES: dict[str, Callable[[Fresh, int, str], tuple[str, str]]] = {
    "torch.export keeps the gradient": _export,
    "torch.jit.trace + save/load": _trace,
    "torch.jit.script + save/load": _script,
    "torch.func.vmap(grad)": _vmap,
    "torch.func.jvp": _jvp,
    "forward-mode AD": _forward_ad,
    "torch.fx.symbolic_trace keeps the gradient": _fx,
    "torch.compile(fullgraph=True)": _compile,
    "double backward": _double_backward,
    "eager backward": _eager,
}
COMPILING = ("torch.compile(fullgraph=True)",)
_RECORDS_FORWARD = "it records only the Function's forward, so its gradient is lost"


def measure(name: str, fresh: Fresh, batch_dim: int, backend: str, functions: list[type]) -> Cell:
    """One cell on models from ``fresh``; ``functions``: the custom Function classes the
    model runs (a cell that differs is blamed on them, when there are any)."""
    built: list[nn.Module] = []

    def tracked() -> tuple[nn.Module, tuple]:
        model, inputs = fresh()
        built.append(model)
        return model, inputs

    try:
        status, detail = CAPABILITIES[name](tracked, batch_dim, backend)
    except Exception as exc:  # noqa: BLE001 - a failing capability is a result, not an error
        return Cell("fails", described(exc), blocker(exc, built[-1] if built else None, functions))
    if status == "ok" or not functions:
        return Cell(status, detail)
    why = _RECORDS_FORWARD if "dropped" in detail else "the model runs it"
    return Cell(status, detail, function_blocker(functions[0], why))
