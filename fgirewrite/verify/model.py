"""Model-level verification: the original and rewritten model side by side.

The entry (``build()`` in the model file) returns ``(model, example_inputs)``. Both modules
build the model under the same seed and the rewritten one gets the original's parameters.
Then: outputs bit for bit, gradients of a loss with respect to every parameter and input
over several seeds, parameters after a few optimizer steps, and a capability table in which
every cell is measured on both models.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch

from fgirewrite.execute.load import entry, load_pair
from fgirewrite.source import described
from fgirewrite.verify.compare import bitwise_mismatch, close_mismatch, tolerance


@dataclass(frozen=True)
class ModelCheck:
    """One equivalence check between the two models."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Capability:
    """One capability measured on both models: 'ok', 'fails' or 'differs', with details."""

    name: str
    original: str
    original_detail: str
    rewritten: str
    rewritten_detail: str


@dataclass(frozen=True)
class ModelReport:
    path: str
    entry: str
    checks: tuple[ModelCheck, ...]
    capabilities: tuple[Capability, ...]
    warnings: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks)


def _loss(out, seed: int) -> torch.Tensor:
    """A fixed random projection of every floating output: gradients see every element."""
    outs = [out] if isinstance(out, torch.Tensor) else [o for o in out if torch.is_tensor(o)]
    generator = torch.Generator().manual_seed(seed)
    total: torch.Tensor | int = 0
    for o in outs:
        if o.is_floating_point():
            w = torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o.dtype)
            total = total + (o * w.to(o.device)).sum()
    # 0 only for a model without a floating output, which autograd then refuses
    return cast(torch.Tensor, total)


def _inputs(inputs: tuple, grad: bool) -> tuple:
    return tuple(
        x.detach().clone().requires_grad_(grad and x.is_floating_point())
        if torch.is_tensor(x)
        else x
        for x in inputs
    )


def _gradients(model, inputs: tuple, seed: int) -> tuple[object, list[torch.Tensor]]:
    inputs = _inputs(inputs, grad=True)
    out = model(*inputs)
    leaves = [p for p in model.parameters() if p.requires_grad]
    leaves += [x for x in inputs if torch.is_tensor(x) and x.requires_grad]
    grads = torch.autograd.grad(_loss(out, seed), leaves, allow_unused=True)
    return out, [
        g if g is not None else torch.zeros_like(leaf)
        for g, leaf in zip(grads, leaves, strict=False)
    ]


def _outputs(out) -> list[torch.Tensor]:
    return [out] if torch.is_tensor(out) else [o for o in out if torch.is_tensor(o)]


def equivalence(original, rewritten, inputs: tuple, seeds: int, steps: int) -> list[ModelCheck]:
    """Outputs bitwise, gradients within tolerance over seeds, and an optimizer trajectory."""
    checks = []
    for seed in range(seeds):
        out0, grads0 = _gradients(original, inputs, seed)
        out1, grads1 = _gradients(rewritten, inputs, seed)
        problems = []
        for a, b in zip(_outputs(out1), _outputs(out0), strict=True):
            if (
                m := bitwise_mismatch("output", a.detach(), b.detach(), torch.zeros(()))
            ) is not None:
                problems.append(str(m))
        checks.append(
            ModelCheck(
                f"outputs bitwise (seed {seed})",
                not problems,
                "; ".join(problems) or "bit-identical",
            )
        )
        problems, exact = [], True
        for i, (a, b) in enumerate(zip(grads1, grads0, strict=True)):
            exact &= torch.equal(a, b)
            rtol, atol = tolerance(b.dtype)
            m = close_mismatch(f"gradient {i}", a, b, torch.zeros(()), rtol, atol)
            if m is not None:
                problems.append(str(m))
        detail = "; ".join(problems) or ("bit-identical" if exact else "within tolerance")
        checks.append(
            ModelCheck(
                f"gradients of {len(grads0)} parameters and inputs (seed {seed})",
                not problems,
                detail,
            )
        )
    checks.append(_trajectory(original, rewritten, inputs, steps))
    return checks


def _trajectory(original, rewritten, inputs: tuple, steps: int) -> ModelCheck:
    what = f"parameters after {steps} SGD steps"
    if not any(True for _ in original.parameters()):
        return ModelCheck(what, True, "the model has no parameters to train")
    models = [copy.deepcopy(original), copy.deepcopy(rewritten)]
    for model in models:
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
        for step in range(steps):
            optimizer.zero_grad()
            _loss(model(*_inputs(inputs, grad=False)), step).backward()
            optimizer.step()
    worst, problems = 0.0, []
    for (name, a), b in zip(models[1].named_parameters(), models[0].parameters(), strict=True):
        rtol, atol = tolerance(b.dtype)
        worst = max(worst, float((a - b).detach().abs().max()) if a.numel() else 0.0)
        if m := close_mismatch(name, a.detach(), b.detach(), torch.zeros(()), rtol, atol):
            problems.append(str(m))
    detail = "; ".join(problems) or f"greatest parameter difference {worst:.3g}"
    return ModelCheck(what, not problems, detail)


def _close(what: str, a: torch.Tensor, b: torch.Tensor):
    """Tolerance for the same gradient computed along another path (vmap, compile, export):
    the dtype's rtol, relative to the largest element, since summation order may differ."""
    rtol, atol = tolerance(b.dtype)
    scale = float(b.detach().abs().max()) if b.numel() else 0.0
    return close_mismatch(what, a.detach(), b.detach(), torch.zeros(()), rtol, atol + rtol * scale)


def _cap_eager(model, inputs, batch_dim, backend):
    _gradients(model, inputs, 0)
    return "ok", "forward and backward run"


def _cap_script(model, inputs, batch_dim, backend):
    scripted = torch.jit.script(copy.deepcopy(model))
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    same = all(
        torch.equal(a, b)
        for a, b in zip(_outputs(loaded(*inputs)), _outputs(model(*inputs)), strict=False)
    )
    return (
        ("ok", "scripted, saved, loaded, same outputs") if same else ("differs", "outputs differ")
    )


def _named_gradients(module, run: Callable, inputs) -> tuple[object, dict]:
    inputs = _inputs(inputs, grad=True)
    out = run(*inputs)
    named = {k: p for k, p in module.named_parameters() if p.requires_grad}
    named |= {
        f"input {i}": x for i, x in enumerate(inputs) if torch.is_tensor(x) and x.requires_grad
    }
    if not any(o.requires_grad for o in _outputs(out)):
        return out, {}
    grads = torch.autograd.grad(_loss(out, 0), list(named.values()), allow_unused=True)
    return out, {
        k: g if g is not None else torch.zeros_like(named[k])
        for k, g in zip(named, grads, strict=False)
    }


def _compare_grads(model, module, run: Callable, inputs) -> tuple[str, str]:
    """Gradients through ``run`` (parameters of ``module``) against eager ``model``, by name."""
    _, reference = _named_gradients(model, model, inputs)
    _, grads = _named_gradients(module, run, inputs)
    if not grads:
        return "fails", "the output carries no gradient"
    for name, expected in reference.items():
        if name not in grads:
            continue
        if not grads[name].any() and expected.any():
            return "differs", f"no gradient reaches `{name}`: it was silently dropped"
        if (m := _close(name, grads[name], expected)) is not None:
            return "differs", str(m)
    return "ok", "same gradients as eager"


def _cap_compile(model, inputs, batch_dim, backend):
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    status, detail = _compare_grads(model, model, compiled, inputs)
    return status, f"{detail} (backend {backend})"


def _cap_fx(model, inputs, batch_dim, backend):
    traced = torch.fx.symbolic_trace(copy.deepcopy(model))
    return _compare_grads(model, traced, traced, inputs)


def _cap_export(model, inputs, batch_dim, backend):
    exported = torch.export.export(copy.deepcopy(model), _inputs(inputs, grad=False)).module()
    return _compare_grads(model, exported, exported, inputs)


def _functional(model, batch_dim):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, *sample):
        batched = tuple(s.unsqueeze(batch_dim) if torch.is_tensor(s) else s for s in sample)
        out = torch.func.functional_call(model, p, batched)
        return sum(o.sum() for o in _outputs(out))

    return params, loss


def _cap_vmap(model, inputs, batch_dim, backend):
    params, loss = _functional(model, batch_dim)
    dims = (None,) + tuple(batch_dim if torch.is_tensor(x) else None for x in inputs)
    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=dims)(params, *inputs)
    first = tuple(x.narrow(batch_dim, 0, 1) if torch.is_tensor(x) else x for x in inputs)
    reference = torch.autograd.grad(
        cast(torch.Tensor, sum(o.sum() for o in _outputs(model(*first)))),
        list(model.parameters()),
        allow_unused=True,
    )
    for (name, g), r in zip(per_sample.items(), reference, strict=True):
        if r is not None and (m := _close(name, g[0], r)) is not None:
            return "differs", str(m)
    return "ok", f"per-sample gradients over dim {batch_dim} match per-sample backward"


def _jvp_check(model, inputs, tangent_out: torch.Tensor) -> tuple[str, str]:
    """<J t, w> must equal <t, J^T w>, the latter from backward on the same model."""
    x = inputs[0].detach().requires_grad_()
    out = model(x, *inputs[1:])
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    (vjp,) = torch.autograd.grad((out * w).sum(), x)
    t = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)
    left, right = float((tangent_out * w).sum().detach()), float((vjp * t).sum().detach())
    if abs(left - right) > 1e-4 * max(1.0, abs(right)):
        return "differs", f"<J t, w> = {left:.6g} but <t, J^T w> = {right:.6g}"
    return "ok", "tangent consistent with the backward gradient"


def _cap_jvp(model, inputs, batch_dim, backend):
    x = inputs[0]
    t = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)
    _, tangent = cast(
        tuple[torch.Tensor, torch.Tensor],  # jvp's annotation covers has_aux=True too
        torch.func.jvp(lambda v: model(v, *inputs[1:]), (x,), (t,)),
    )
    return _jvp_check(model, inputs, tangent)


def _cap_forward_ad(model, inputs, batch_dim, backend):
    import torch.autograd.forward_ad as fwad

    x = inputs[0]
    t = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)
    with fwad.dual_level():
        tangent = fwad.unpack_dual(model(fwad.make_dual(x, t), *inputs[1:])).tangent
    if tangent is None:
        return "fails", "no tangent came out"
    return _jvp_check(model, inputs, tangent)


def _cap_double_backward(model, inputs, batch_dim, backend):
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(
        _loss(model(*_inputs(inputs, grad=False)), 0), params, create_graph=True, allow_unused=True
    )
    penalty = sum((g**2).sum() for g in grads if g is not None and g.requires_grad)
    if not torch.is_tensor(penalty):
        return "fails", "the gradient is not differentiable"
    second = torch.autograd.grad(penalty, params, allow_unused=True)
    norm = sum(float(s.norm()) for s in second if s is not None)
    return "ok", f"second-order norm {norm:.6g}"


CAPABILITIES: dict[str, Callable] = {
    "eager backward": _cap_eager,
    "torch.jit.script + save/load": _cap_script,
    "torch.compile(fullgraph=True)": _cap_compile,
    "torch.func.vmap(grad)": _cap_vmap,
    "torch.func.jvp": _cap_jvp,
    "forward-mode AD": _cap_forward_ad,
    "torch.fx.symbolic_trace keeps the gradient": _cap_fx,
    "torch.export": _cap_export,
    "double backward": _cap_double_backward,
}


def measure(name: str, model, inputs, batch_dim: int, backend: str) -> tuple[str, str]:
    try:
        return CAPABILITIES[name](model, inputs, batch_dim, backend)
    except Exception as exc:  # noqa: BLE001 - a failing capability is a result, not an error
        return "fails", described(exc, 160)


def verify_model(
    path: Path,
    entry_name: str,
    seeds: int = 3,
    steps: int = 3,
    batch_dim: int = 0,
    backend: str = "aot_eager",
    capabilities: tuple[str, ...] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelReport:
    """Verify the rewritten model against the original and measure the capability table."""
    try:
        original_module, rewritten_module, _ = load_pair(path, only=entry_name)
        torch.manual_seed(0)
        original, inputs = entry(original_module, entry_name)
        torch.manual_seed(0)
        rewritten, _ = entry(rewritten_module, entry_name)
        rewritten.load_state_dict(original.state_dict())
    except Exception as exc:  # noqa: BLE001 - the user's entry point failed
        return ModelReport(str(path), entry_name, (), (), error=described(exc, 160))
    try:
        checks = tuple(equivalence(original, rewritten, inputs, seeds, steps))
    except Exception as exc:  # noqa: BLE001 - the model cannot be compared: say why, go on
        return ModelReport(str(path), entry_name, (), (), error=described(exc, 160))
    table = []
    for name in capabilities or tuple(CAPABILITIES):
        if progress:
            progress(name)
        cells = [measure(name, m, inputs, batch_dim, backend) for m in (original, rewritten)]
        if name == "double backward" and cells[0] == ("ok", cells[0][1]) and cells[1] != cells[0]:
            cells[1] = ("differs", f"{cells[1][1]}, original {cells[0][1].split()[-1]}")
        table.append(Capability(name, *cells[0], *cells[1]))
    warnings = []
    double = next((c for c in table if c.name == "double backward"), None)
    if double is not None and double.original == "ok" and double.rewritten != "ok":
        warnings.append(
            "double backward differs: FGI gradients are first-order (the injected derivative "
            "is detached), so gradient penalties, Hessians or meta-gradients through a surrogate "
            "change; keep the original Function if you differentiate through gradients"
        )
    return ModelReport(str(path), entry_name, checks, tuple(table), tuple(warnings))
