"""How a surrogate is called when probed: which inputs are tensors (and of what shape), the
values of the others, the input domain; and one call's output and gradients."""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fgirewrite.execute.sandbox import test_callable
from fgirewrite.surrogate import Surrogate
from fgirewrite.verify import probes


@dataclass
class Spec:
    """How to call a surrogate: which inputs are tensors, and the other values."""

    names: tuple[str, ...]
    differentiable: tuple[str, ...]
    tensors: set[str]
    values: dict[str, object]  # non-tensor arguments, and fixed values of tensor ones
    shapes: dict[str, str] = field(default_factory=dict)
    domain: tuple[float, float] = probes.DOMAINS[0]
    maybe_tensors: tuple[str, ...] = ()  # number inputs a caller may pass as tensors
    rank: int = 2  # of the probe inputs: rows of values, or images (``probes.laid_out``)


def _defaults(params: str) -> dict[str, object]:
    if not params:
        return {}
    node = ast.parse(f"def _({params}): pass").body[0]
    assert isinstance(node, ast.FunctionDef)
    args = node.args.args
    found = {}
    for arg, default in zip(
        args[len(args) - len(node.args.defaults) :], node.args.defaults, strict=True
    ):
        with contextlib.suppress(ValueError):
            found[arg.arg] = ast.literal_eval(default)
    return found


def _annotations(params: str) -> dict[str, str]:
    if not params:
        return {}
    node = ast.parse(f"def _({params}): pass").body[0]
    assert isinstance(node, ast.FunctionDef)
    args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
    return {a.arg: ast.unparse(a.annotation) for a in args if a.annotation is not None}


def _called(s: Surrogate) -> set[str]:
    """Parameters the generated code calls: callables passed in by the caller."""
    code = "\n".join([s.forward, s.prelude, *(g.template for g in s.gradients)])
    return {
        n.func.id
        for n in ast.walk(ast.parse(code))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    } & set(s.param_names)


_BY_ANNOTATION = {"int": 2, "float": 1.0, "bool": True}


def spec_for(s: Surrogate, call_args: list[object] | None = None) -> Spec:
    """Arguments for probing: call-site literals, then defaults, then a value that fits the
    annotation (2 for int, 1.0 otherwise), or a test callable for a callable parameter."""
    defaults = _defaults(s.params)
    annotations = _annotations(s.params)
    called = _called(s)
    values: dict[str, object] = {}
    for i, name in enumerate(s.param_names):
        if call_args is not None and i < len(call_args) and i > 0:
            values[name] = call_args[i]
        elif name in defaults:
            values[name] = defaults[name]
    tensors = set(s.differentiable) | {n for n in s.param_names if n in s.detach}
    tensors |= {n for n in s.param_names[:1]}
    for name in s.param_names:
        if name not in values and name not in tensors:
            if name in called:
                values[name] = test_callable
            else:
                annotation = annotations.get(name, "").removeprefix("Optional[").rstrip("]")
                values[name] = _BY_ANNOTATION.get(annotation, 1.0)
    maybe = tuple(n for n in s.maybe_tensors if isinstance(values.get(n), (int, float)))
    names = tuple(s.param_names[: s.passed])  # inputs past ``passed`` keep their defaults
    return Spec(
        names,
        tuple(d for d in s.differentiable if d in names),
        tensors & set(names),
        {k: v for k, v in values.items() if k in names},
        maybe_tensors=tuple(m for m in maybe if m in names),
    )


def arguments(
    spec: Spec,
    x: torch.Tensor,
    dtype: torch.dtype,
    device: str,
    shapes: dict[str, str] | None = None,
    parameters: torch.dtype | None = None,
) -> list:
    """The call's arguments for first input ``x`` (``shapes`` overrides the spec's; the
    other tensor inputs in ``parameters``' dtype when given, else ``dtype``)."""
    args: list = []
    kinds = {**spec.shapes, **(shapes or {})}
    for i, name in enumerate(spec.names):
        if i == 0:
            args.append(x)
        elif name in spec.tensors or name in (shapes or {}):
            value = spec.values.get(name)
            fixed = float(value) if isinstance(value, (int, float)) else None
            like = tuple(x.shape) if x.dim() in (2, 4) else (1, 1)
            args.append(
                probes.parameter(
                    kinds.get(name, "full"), parameters or dtype, like, fixed, seed=i
                ).to(device)
            )
        else:
            args.append(spec.values[name])
    return args


@dataclass(frozen=True)
class Setting:
    """How a probe calls the surrogate: which inputs require grad (None: every floating
    one), whether they are non-leaf tensors (a view of a leaf, as mid-graph inputs are), and
    the autocast dtype the forward runs under (the backward runs outside it, as in training)."""

    requires: frozenset[str] | None = None
    nonleaf: bool = False
    autocast: torch.dtype | None = None


PLAIN = Setting()


def run(
    fn: Callable,
    args: list,
    spec: Spec,
    go_seed: int | None = 1,
    grad: bool = True,
    leaves: bool = True,
    setting: Setting = PLAIN,
):
    """Output and, after a backward with a fixed grad_output (``probes.incoming`` with
    ``go_seed``; ones if it is None), the ``.grad`` of every floating tensor input: None
    where no gradient reached it. ``leaves=False``: no input requires grad, no backward."""
    roots = [
        a.detach()
        .clone()
        .requires_grad_(
            leaves
            and a.is_floating_point()
            and (setting.requires is None or name in setting.requires)
        )
        if isinstance(a, torch.Tensor)
        else a
        for a, name in zip(args, spec.names, strict=True)
    ]
    inputs = [
        r.clone() if setting.nonleaf and isinstance(r, torch.Tensor) and r.requires_grad else r
        for r in roots
    ]
    torch.manual_seed(0)  # a forward that samples draws the same numbers in both
    if not grad:
        with torch.no_grad(), _autocast(setting.autocast, inputs):
            return fn(*inputs), {}
    with _autocast(setting.autocast, inputs):
        out = fn(*inputs)
    if not leaves:
        return out, {}
    go = torch.ones_like(out) if go_seed is None else probes.incoming(out.shape, out.dtype, go_seed)
    if out.requires_grad:
        out.backward(go.to(out.device))
    grads = {
        n: a.grad
        for a, n in zip(roots, spec.names, strict=True)
        if isinstance(a, torch.Tensor) and a.is_floating_point()
    }
    return out.detach(), grads


def _autocast(dtype: torch.dtype | None, inputs: list) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    device = next((a.device.type for a in inputs if isinstance(a, torch.Tensor)), "cpu")
    return torch.autocast(device, dtype=dtype)


def _accepts(original: Callable, spec: Spec, device: str) -> bool:
    values = probes.as_matrix(probes.grid(torch.float64, [0.0], spec.domain)[::97])
    x = probes.laid_out(values, spec.rank).to(device)
    try:
        run(original, arguments(spec, x, torch.float64, device), spec)
        return True
    except Exception:  # noqa: BLE001 - the original rejects these arguments
        return False


def choose_shapes(original: Callable, spec: Spec, device: str) -> None:
    """Probes as rows of values, else as images (N, C, H, W) when only those are accepted (a
    backward that sums over dimensions 0, 2 and 3); then each extra tensor input as full, per
    column (per channel, for images) or scalar, and the input domain (``_shapes``)."""
    tensors, values = set(spec.tensors), dict(spec.values)
    for rank in (2, 4):
        spec.rank, spec.tensors, spec.values = rank, set(tensors), dict(values)
        spec.shapes.clear()
        if _shapes(original, spec, device):
            return
    spec.rank, spec.tensors, spec.values = 2, tensors, values
    _shapes(original, spec, device)


def _shapes(original: Callable, spec: Spec, device: str) -> bool:
    """Shape each extra tensor input: the first kind the original takes. An input given no
    value that the original rejects as a number becomes a tensor. Then the first input
    domain (the real line, else [0, 1]) the original accepts; whether it accepts any."""
    kinds = (
        ("full", "row", "scalar") if spec.rank == 2 else ("full", "channel", "channels", "scalar")
    )
    for name in spec.names[1:]:
        if name not in spec.tensors:
            if spec.values.get(name) != 1.0 or _accepts(original, spec, device):
                continue
            spec.tensors.add(name)
            del spec.values[name]
        for kind in kinds:
            spec.shapes[name] = kind
            if _accepts(original, spec, device):
                break
    for domain in probes.DOMAINS:
        spec.domain = domain
        if _accepts(original, spec, device):
            return True
    spec.domain = probes.DOMAINS[0]
    return False
