"""Verification: prove each rewrite gradient-equivalent to the Function it replaces.

For every surrogate, dtype and device: forward values equal bit for bit and of the same dtype
(with and without grad), gradients with respect to every differentiable input equal within
the dtype's tolerance wherever the input and the original gradient are finite, and forward-mode
tangents equal to the backward gradient. At infinite or NaN inputs the rewrite injects no
gradient (``x - x.detach()`` is NaN there); such points are reported as notes, not hidden.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from fgirewrite import codegen, discover
from fgirewrite.rewrite import Rewrite
from fgirewrite.surrogate import Surrogate
from fgirewrite.verify import probes
from fgirewrite.verify.compare import Mismatch, bitwise_mismatch, close_mismatch, tolerance
from fgirewrite.verify.sandbox import TEST_CALLABLE, SandboxError, evaluate, factory_bindings


@dataclass(frozen=True)
class Check:
    """One surrogate on one dtype and device."""

    dtype: str
    device: str
    failures: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    compared: bool = True  # False when the original itself fails on the probe grid
    bitwise: bool = False  # every compared gradient equal bit for bit

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class SurrogateReport:
    """The verdict on one rewritten surrogate."""

    name: str
    location: str
    function: str
    arguments: dict = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures()

    def failures(self) -> list[str]:
        if self.error is not None:
            return [self.error]
        if not any(c.compared for c in self.checks):
            notes = [n for c in self.checks for n in c.notes]
            return ["nothing was compared: " + (notes[0] if notes else "no checks ran")]
        return [f"{c.dtype}/{c.device}: {f}" for c in self.checks for f in c.failures]


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@dataclass
class _Spec:
    """How to call a surrogate: which inputs are tensors, and the other values."""

    names: tuple[str, ...]
    differentiable: tuple[str, ...]
    tensors: set[str]
    values: dict[str, object]  # non-tensor arguments, and fixed values of tensor ones
    shapes: dict[str, str] = field(default_factory=dict)
    domain: tuple[float, float] = probes.DOMAINS[0]


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


def spec_for(s: Surrogate, call_args: list[object] | None = None) -> _Spec:
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
                values[name] = probes.test_callable
            else:
                annotation = annotations.get(name, "").removeprefix("Optional[").rstrip("]")
                values[name] = _BY_ANNOTATION.get(annotation, 1.0)
    return _Spec(tuple(s.param_names), tuple(s.differentiable), tensors, values)


def _arguments(spec: _Spec, x: torch.Tensor, dtype: torch.dtype, device: str) -> list:
    args: list = []
    for i, name in enumerate(spec.names):
        if i == 0:
            args.append(x)
        elif name in spec.tensors:
            value = spec.values.get(name)
            fixed = float(value) if isinstance(value, (int, float)) else None
            args.append(
                probes.parameter(
                    spec.shapes.get(name, "full"), dtype, x.shape[0], fixed, seed=i
                ).to(device)
            )
        else:
            args.append(spec.values[name])
    return args


def _run(fn: Callable, args: list, spec: _Spec, go_seed: int | None = 1, grad: bool = True):
    """Output and the gradient of each differentiable tensor input, for a fixed grad_output
    (random with ``go_seed``, ones if it is None)."""
    inputs = [
        a.detach().clone().requires_grad_(n in spec.differentiable)
        if isinstance(a, torch.Tensor)
        else a
        for a, n in zip(args, spec.names, strict=True)
    ]
    torch.manual_seed(0)  # a forward that samples draws the same numbers in both
    if not grad:
        with torch.no_grad():
            return fn(*inputs), {}
    out = fn(*inputs)
    if go_seed is None:
        go = torch.ones_like(out)
    else:
        generator = torch.Generator().manual_seed(go_seed)
        go = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.dtype)
        go = go.to(out.device)
    if out.requires_grad:
        out.backward(go)
    grads = {
        n: (a.grad if a.grad is not None else torch.zeros_like(a))
        for a, n in zip(inputs, spec.names, strict=True)
        if n in spec.differentiable
    }
    return out.detach(), grads


def _accepts(original: Callable, spec: _Spec, device: str) -> bool:
    x = probes.as_matrix(probes.grid(torch.float64, [0.0], spec.domain)[::97]).to(device)
    try:
        _run(original, _arguments(spec, x, torch.float64, device), spec)
        return True
    except Exception:  # noqa: BLE001 - the original rejects these arguments
        return False


def _choose_shapes(original: Callable, spec: _Spec, device: str) -> None:
    """Shape each extra tensor input as full, per column or scalar: the first the original
    takes. An input given no value that the original rejects as a number becomes a tensor.
    Then the first input domain (the real line, else [0, 1]) the original accepts."""
    for name in spec.names[1:]:
        kinds = ("full", "row", "scalar")
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
            return
    spec.domain = probes.DOMAINS[0]


def check_pair(
    original: Callable, rewritten: Callable, spec: _Spec, dtype: torch.dtype, device: str
) -> Check:
    """Compare the original Function's apply with the rewrite on every probe set."""
    failures: list[str] = []
    notes: list[str] = []
    compared = True
    bitwise = True
    rtol, atol = tolerance(dtype)
    centers = [0.0] + [float(v) for v in spec.values.values() if isinstance(v, (int, float))]
    if spec.domain != probes.DOMAINS[0]:
        centers = []
    grid = probes.grid(dtype, centers, spec.domain)
    for label, values in (("grid", grid), ("edges", probes.edges(dtype))):
        x = probes.as_matrix(values).to(device)
        args = _arguments(spec, x, dtype, device)
        try:
            expected, expected_grads = _run(original, args, spec)
        except Exception as exc:  # noqa: BLE001 - the original itself fails here
            notes.append(
                f"{label}: the original fails ({type(exc).__name__}: "
                f"{(str(exc).splitlines() or [''])[0][:120]}); not compared"
            )
            compared = compared and label != "grid"
            continue
        try:
            actual, actual_grads = _run(rewritten, args, spec)
            actual_nograd, _ = _run(rewritten, args, spec, grad=False)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{label}: the rewrite raises {type(exc).__name__}: {exc}")
            continue
        if actual.dtype != expected.dtype:
            failures.append(f"{label}: output dtype {actual.dtype} != original {expected.dtype}")
            continue
        for what, value in (("forward", actual), ("forward without grad", actual_nograd)):
            if (m := bitwise_mismatch(f"{label} {what}", value, expected, x)) is not None:
                failures.append(str(m))
        finite = torch.isfinite(x)
        for name, exp in expected_grads.items():
            act = actual_grads[name]
            if act.shape != exp.shape:
                failures.append(
                    f"{label} d/d{name}: shape {tuple(act.shape)} != {tuple(exp.shape)}"
                )
                continue
            where = torch.isfinite(exp)
            if exp.shape == x.shape:
                lost = where & ~finite & (exp != 0)
                if int(lost.sum()):
                    notes.append(
                        f"{label} d/d{name}: {int(lost.sum())} non-finite inputs where "
                        "the original gradient is finite and non-zero get no gradient"
                    )
                where = where & finite
            elif not bool(finite.all()):
                continue  # a reduced gradient over non-finite inputs is not comparable
            what = f"{label} d/d{name}"
            if label == "grid" and not bool(where.any()):  # a pass would prove nothing
                failures.append(
                    f"{what}: the original's gradient is not finite at any probe input; "
                    "nothing was compared"
                )
                continue
            coarse = _coarser(expected.dtype, exp, where)
            note = (
                f"{what}: the original's gradient has {_name(coarse)} precision; "
                f"compared at {_name(coarse)} tolerance"
            )
            if exp.shape != x.shape:
                reduced = [original, rewritten, args, spec, name]
                found = _reduced(what, act, exp, *reduced, rtol, atol)
                if (
                    found
                    and coarse is not None
                    and not _reduced(what, act, exp, *reduced, *tolerance(coarse))
                ):
                    notes.append(note)
                    found = []
                failures.extend(found)
                continue
            bitwise = bitwise and torch.equal(act[where], exp[where])
            m = close_mismatch(what, act, exp, x, rtol, atol, where)
            if m is not None and coarse is not None:
                m = close_mismatch(what, act, exp, x, *tolerance(coarse), where)
                if m is None:
                    notes.append(note)
            if m is not None:
                failures.append(str(m))
        first = spec.names[0]
        if label == "grid" and dtype in (torch.float32, torch.float64) and first in expected_grads:
            finite = torch.isfinite(expected_grads[first])  # where the original's is defined
            failures.extend(_forward_mode(rewritten, args, spec, actual_grads, x, finite))
    bitwise = bitwise and compared and not failures
    return Check(
        str(dtype).replace("torch.", ""), device, tuple(failures), tuple(notes), compared, bitwise
    )


def _coarser(output: torch.dtype, grad: torch.Tensor, where: torch.Tensor) -> torch.dtype | None:
    """A precision coarser than the gradient's dtype that the original's backward may have
    computed in, else None: its grad_output's (the output's dtype; ``grad_output * 3`` rounds
    there before it meets a float64 factor), or float32 for a float32-exact float64 gradient
    (a float32 output times a float32 coefficient)."""
    if output.is_floating_point and torch.finfo(output).eps > torch.finfo(grad.dtype).eps:
        return output
    if grad.dtype == torch.float64 and _float32_exact(grad[where]):
        return torch.float32
    return None


def _name(dtype: torch.dtype | None) -> str:
    return str(dtype).replace("torch.", "")


def _guarded(
    original: Callable, rewritten: Callable, spec: _Spec, dtype: torch.dtype, device: str
) -> Check:
    """``check_pair``; a check that raises is a failure that says what was raised."""
    try:
        return check_pair(original, rewritten, spec, dtype, device)
    except Exception as exc:  # noqa: BLE001 - never let one probe crash the whole run
        first = (str(exc).splitlines() or [""])[0][:200]
        return Check(_name(dtype), device, (f"verification raised {type(exc).__name__}: {first}",))


def _float32_exact(values: torch.Tensor) -> bool:
    return bool(values.numel()) and torch.equal(values.float().double(), values)


def _reduced(
    what: str,
    act: torch.Tensor,
    exp: torch.Tensor,
    original: Callable,
    rewritten: Callable,
    args: list,
    spec: _Spec,
    name: str,
    rtol: float,
    atol: float,
) -> list[str]:
    """A gradient the backward summed (a learnable threshold): summation order differs, so
    the bound is rtol times the sum of the magnitudes of the summed terms (their values from
    forward mode on the rewrite, in float64), plus the original's own error against float64."""
    wide = [a.double() if isinstance(a, torch.Tensor) else a for a in args]
    reference = _run(original, wide, spec)[1][name].to(exp.device)
    index = spec.names.index(name)

    def along(value: torch.Tensor) -> torch.Tensor:
        return rewritten(*wide[:index], value, *wide[index + 1 :])

    parameter = wide[index]
    _, coefficient = torch.func.jvp(along, (parameter,), (torch.ones_like(parameter),))
    generator = torch.Generator().manual_seed(1)
    go = torch.randn(coefficient.shape, generator=generator, dtype=torch.float64)
    magnitude = (go.to(coefficient.device) * coefficient).abs().sum_to_size(exp.shape)
    allowed = atol + rtol * (exp.double().abs() + magnitude) + 2 * (exp.double() - reference).abs()
    differ = ((act.double() - exp.double()).abs() > allowed) & torch.isfinite(exp)
    if not bool(differ.any()):
        return []
    m = close_mismatch(
        what,
        act,
        exp,
        torch.zeros_like(exp),
        rtol,
        atol + float((allowed - rtol * exp.double().abs()).max()),
    )
    return [str(m) if m is not None else f"{what}: beyond the summation bound"]


def _forward_mode(
    fn: Callable, args: list, spec: _Spec, grads: dict, x: torch.Tensor, where: torch.Tensor
) -> list[str]:
    """torch.func.jvp along the first input gives the same derivative as backward."""
    name = spec.names[0]
    if name not in grads:
        return []
    generator = torch.Generator().manual_seed(1)
    out = fn(*args)
    go = torch.randn(out.shape, generator=generator, dtype=torch.float64).to(out.dtype)
    tangent = go.to(args[0].dtype).to(args[0].device)
    try:
        _, jvp = torch.func.jvp(lambda v: fn(v, *args[1:]), (args[0],), (tangent,))
    except Exception as exc:  # noqa: BLE001
        return [f"forward-mode AD (torch.func.jvp) fails: {type(exc).__name__}: {exc}"]
    # jvp gives g' * go in the output's dtype; backward with grad_output go gives go * g'.
    rtol, atol = tolerance(jvp.dtype)
    m: Mismatch | None = close_mismatch(
        f"jvp d/d{name}", jvp, grads[name].to(jvp.dtype), x, rtol, atol, where
    )
    return [] if m is None else [str(m)]


def verify_pair(
    original: Callable,
    rewritten: Callable,
    surrogate: Surrogate,
    function: str = "",
    call_args: list[object] | None = None,
    dtypes=probes.DTYPES,
) -> SurrogateReport:
    """Verify a rewritten surrogate against the original ``Function.apply``."""
    spec = spec_for(surrogate, call_args)
    _choose_shapes(original, spec, "cpu")
    arguments = {
        n: ("tensor" + ("" if spec.shapes.get(n, "full") == "full" else f" ({spec.shapes[n]})"))
        if n in spec.tensors
        else "a test callable, exp(-|first argument|)"
        if spec.values[n] is probes.test_callable
        else spec.values[n]
        for n in spec.names
    }
    if spec.domain != probes.DOMAINS[0]:
        arguments[spec.names[0]] = f"tensor in [{spec.domain[0]:g}, {spec.domain[1]:g}]"
    checks = tuple(
        _guarded(original, rewritten, spec, dtype, device)
        for device in devices()
        for dtype in dtypes
    )
    return SurrogateReport(surrogate.name, str(surrogate.location), function, arguments, checks)


def call_site_arguments(tree: ast.Module, class_name: str) -> list[object] | None:
    """Literal arguments of the first ``Class.apply(...)`` call in the file, if any."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "apply"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == class_name
            and len(node.args) > 1
        ):
            try:
                return [None] + [ast.literal_eval(a) for a in node.args[1:]]
            except ValueError:
                continue
    return None


def evaluate_surrogate(rewrite: Rewrite, surrogate: Surrogate, path: Path | None = None):
    """The original ``apply``, the compiled rewrite, call-site arguments and closure defaults.

    Executes only the slice of the module the class needs (see ``sandbox``).
    """
    path = Path(path or rewrite.path)
    text = rewrite.source.decode(_encoding(rewrite.source))
    tree = ast.parse(rewrite.source)
    info = discover.module_info(text, tree)
    site = next(
        s
        for s in discover.find_classes(tree, info.imports)
        if (s.qualname, s.line) == (surrogate.name, surrogate.location.line)
    )
    name = rewrite.names.get(surrogate.name, "rewritten")
    namespace = evaluate(path, text, tree, info, site, set(surrogate.free_names))
    fgi = codegen.compile_surrogate(surrogate, dict(namespace), name)
    cls = namespace[site.name]
    original = getattr(cls, "__func__", cls).apply  # a class under @staticmethod
    holder = next(s for s in tree.body if s.lineno <= site.line <= (s.end_lineno or 0))
    closure = {
        k: "a test callable, exp(-|first argument|)"
        if v == TEST_CALLABLE
        else f"{v} (default of the enclosing function)"
        for k, v in factory_bindings(holder, site)
        if k
    }
    return original, fgi, call_site_arguments(tree, site.name), closure


def verify_rewrite(rewrite: Rewrite, path: Path | None = None) -> list[SurrogateReport]:
    """Verify every surrogate of a rewritten file, evaluating only what each one needs."""
    reports = []
    for surrogate in rewrite.surrogates:
        name = rewrite.names.get(surrogate.name, "rewritten")
        try:
            original, fgi, call_args, closure = evaluate_surrogate(rewrite, surrogate, path)
        except SandboxError as exc:
            reports.append(
                SurrogateReport(surrogate.name, str(surrogate.location), name, error=str(exc))
            )
            continue
        except Exception as exc:  # noqa: BLE001 - generated code that does not compile
            reports.append(
                SurrogateReport(
                    surrogate.name,
                    str(surrogate.location),
                    name,
                    error=f"{type(exc).__name__}: {exc}",
                )
            )
            continue
        report = verify_pair(original, fgi, surrogate, name, call_args)
        reports.append(replace(report, arguments={**report.arguments, **closure}))
    return reports


def _encoding(data: bytes) -> str:
    import io
    import tokenize

    return tokenize.detect_encoding(io.BytesIO(data).readline)[0]
