"""One original ``Function.apply`` against its rewrite, on every probe set, dtype and device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fgirewrite.surrogate import Surrogate
from fgirewrite.verify import probes
from fgirewrite.verify.arguments import Spec, arguments, choose_shapes, run, spec_for
from fgirewrite.verify.compare import Mismatch, bitwise_mismatch, close_mismatch, tolerance


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
    reached: tuple[str, ...] = ()  # the names callers reach it by, each verified

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


def check_pair(
    original: Callable, rewritten: Callable, spec: Spec, dtype: torch.dtype, device: str
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
        args = arguments(spec, x, dtype, device)
        try:
            expected, expected_grads = run(original, args, spec)
        except Exception as exc:  # noqa: BLE001 - the original itself fails here
            notes.append(
                f"{label}: the original fails ({type(exc).__name__}: "
                f"{(str(exc).splitlines() or [''])[0][:120]}); not compared"
            )
            compared = compared and label != "grid"
            continue
        try:
            actual, actual_grads = run(rewritten, args, spec)
            actual_nograd, _ = run(rewritten, args, spec, grad=False)
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
            where = torch.isfinite(exp)  # at infinite inputs too: the rewrite's is the same
            if exp.shape != x.shape and not bool(finite.all()):
                continue  # a reduced gradient's summation bound is not finite there
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
    original: Callable, rewritten: Callable, spec: Spec, dtype: torch.dtype, device: str
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
    spec: Spec,
    name: str,
    rtol: float,
    atol: float,
) -> list[str]:
    """A gradient the backward summed (a learnable threshold): summation order differs, so
    the bound is rtol times the sum of the magnitudes of the summed terms (their values from
    forward mode on the rewrite, in float64), plus the original's own error against float64."""
    wide = [a.double() if isinstance(a, torch.Tensor) else a for a in args]
    reference = run(original, wide, spec)[1][name].to(exp.device)
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
    fn: Callable, args: list, spec: Spec, grads: dict, x: torch.Tensor, where: torch.Tensor
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
    choose_shapes(original, spec, "cpu")
    described = {
        n: ("tensor" + ("" if spec.shapes.get(n, "full") == "full" else f" ({spec.shapes[n]})"))
        if n in spec.tensors
        else "a test callable, exp(-|first argument|)"
        if spec.values[n] is probes.test_callable
        else spec.values[n]
        for n in spec.names
    }
    if spec.domain != probes.DOMAINS[0]:
        described[spec.names[0]] = f"tensor in [{spec.domain[0]:g}, {spec.domain[1]:g}]"
    checks = tuple(
        _guarded(original, rewritten, spec, dtype, device)
        for device in devices()
        for dtype in dtypes
    )
    return SurrogateReport(surrogate.name, str(surrogate.location), function, described, checks)
