"""One original ``Function.apply`` against its rewrite, on every probe set, dtype and device."""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, cast

import torch

from fgirewrite.execute.sandbox import advice, test_callable
from fgirewrite.source import described
from fgirewrite.surrogate import Surrogate
from fgirewrite.verify import probes
from fgirewrite.verify.arguments import (
    PLAIN,
    Setting,
    Spec,
    arguments,
    choose_shapes,
    run,
    spec_for,
)
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

    unverifiable: bool = False  # the original itself cannot run here

    @property
    def ok(self) -> bool:
        return not self.failures()

    @property
    def cannot_run(self) -> bool:
        """Verification could not run the original here (CUDA, a package, its arguments)."""
        return self.unverifiable or (
            self.error is None and bool(self.checks) and not any(c.compared for c in self.checks)
        )

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
class _Found:
    """What the probe sets of one dtype and device found so far."""

    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compared: bool = True
    bitwise: bool = True


Probe = tuple[str, torch.Tensor, dict, Setting, torch.dtype | None]


def probe_sets(spec: Spec, dtype: torch.dtype, device: str = "cpu") -> list[Probe]:
    """(label, first input, parameter shapes, setting, parameter dtype) of every probe set:
    the grid around the threshold, the edge values, and, for surrogates with other tensor
    inputs, a square input with per-row and per-column parameters (a wrong reduction
    dimension shows there) and each number parameter passed as a tensor that requires grad
    (its ``.grad`` must stay None); then the grid again under autocast, with non-leaf inputs,
    with float32 parameters beside half-precision activations, and with each combination
    of the tensor inputs requiring grad."""
    centers = [0.0] + [float(v) for v in spec.values.values() if isinstance(v, (int, float))]
    if spec.domain != probes.DOMAINS[0]:
        centers = []
    grid = probes.grid(dtype, centers, spec.domain)
    rows = probes.laid_out(probes.as_matrix(grid), spec.rank)
    sets: list[Probe] = [
        ("grid", rows, {}, PLAIN, None),
        (
            "edges",
            probes.laid_out(probes.as_matrix(probes.edges(dtype)), spec.rank),
            {},
            PLAIN,
            None,
        ),
    ]
    extra = [n for n in spec.names[1:] if n in spec.tensors]
    thin = rows[::3]  # the settings below change how the surrogate is called, not where
    autocast = torch.bfloat16 if device == "cpu" else torch.float16
    if dtype in (torch.float32, autocast):  # a float32 input, and a half one cast_inputs casts
        sets.append((f"autocast {_name(autocast)}", thin, {}, Setting(autocast=autocast), None))
    if dtype in (torch.bfloat16, torch.float16):
        if extra:
            sets.append(("float32 parameters", thin, {}, PLAIN, torch.float32))
        return sets
    if dtype == torch.float32:
        sets.append(("non-leaf inputs", thin, {}, Setting(nonleaf=True), None))
        names = [spec.names[0], *extra]
        for size in range(1, len(names)) if len(names) <= 4 else ():
            for chosen in itertools.combinations(names, size):
                label = f"only {', '.join(chosen)} requiring grad"
                sets.append((label, thin, {}, Setting(requires=frozenset(chosen)), None))
    if dtype not in (torch.float32, torch.float64):
        return sets
    for kind in ("row", "col") if extra and spec.rank == 2 else ():
        sets.append(("square", probes.square(grid), {n: kind for n in extra}, PLAIN, None))
    numbers = [n for n in spec.names[1:] if n in spec.maybe_tensors]
    for name in numbers:
        sets.append((f"{name} as a tensor", rows, {name: "scalar"}, PLAIN, None))
    return sets


def check_pair(
    original: Callable, rewritten: Callable, spec: Spec, dtype: torch.dtype, device: str
) -> Check:
    """Compare the original Function's apply with the rewrite on every probe set."""
    found = _Found()
    for label, x, shapes, setting, parameters in probe_sets(spec, dtype, device):
        x = x.to(device)
        args = arguments(spec, x, dtype, device, shapes, parameters)
        call = (original, rewritten, spec, args, x)
        _compare(found, label, call, setting, required=label == "grid")
    bitwise = found.bitwise and found.compared and not found.failures
    return Check(
        _name(dtype), device, tuple(found.failures), tuple(found.notes), found.compared, bitwise
    )


def _compare(
    found: _Found,
    label: str,
    call: tuple[Callable, Callable, Spec, list, torch.Tensor],
    setting: Setting,
    required: bool,
) -> None:
    """One probe set: forward bit for bit (with grad and without), every input's gradient."""
    original, rewritten, spec, args, x = call
    try:
        expected, expected_grads = run(original, args, spec, setting=setting)
    except Exception as exc:  # noqa: BLE001 - the original itself fails here
        if required or label in ("edges",):
            found.notes.append(
                f"{label}: the original fails ({described(exc, 120)}); not compared{advice(exc)}"
            )
        found.compared = found.compared and not required
        return
    try:
        actual, actual_grads = run(rewritten, args, spec, setting=setting)
        actual_nograd, _ = run(rewritten, args, spec, grad=False, setting=setting)
    except Exception as exc:  # noqa: BLE001
        found.failures.append(f"{label}: the rewrite raises {type(exc).__name__}: {exc}")
        return
    if not _same_outputs(found, label, expected, actual, actual_nograd, x):
        return
    if label == "grid" and _grad_without_inputs(original, rewritten, args, spec):
        found.failures.append(
            f"{label}: with no input requiring grad, the rewrite's output requires grad and the "
            "original's does not: the gradient code reads a tensor that requires grad, which "
            "would get a gradient the original never gives it"
        )
    pair = (original, rewritten, args, spec)
    _compare_gradients(found, label, expected_grads, actual_grads, expected.dtype, x, pair)
    first = spec.names[0]
    if label == "grid" and x.dtype in (torch.float32, torch.float64):
        exp = expected_grads.get(first) if first in spec.differentiable else None
        if exp is not None:
            _forward_mode(found, pair, actual_grads, x, torch.isfinite(exp))


def _grad_without_inputs(original: Callable, rewritten: Callable, args: list, spec: Spec) -> bool:
    """The rewrite's output requires grad although no input does (the original's cannot)."""
    expected, _ = run(original, args, spec, leaves=False)
    actual, _ = run(rewritten, args, spec, leaves=False)
    return bool(actual.requires_grad) and not expected.requires_grad


def _same_outputs(
    found: _Found,
    label: str,
    expected: torch.Tensor,
    actual: torch.Tensor,
    actual_nograd: torch.Tensor,
    x: torch.Tensor,
) -> bool:
    """Same dtype and shape (else the gradients are not compared), then the values bitwise."""
    if actual.dtype != expected.dtype:
        found.failures.append(f"{label}: output dtype {actual.dtype} != original {expected.dtype}")
        return False
    if actual.shape != expected.shape:
        found.failures.append(
            f"{label}: output shape {tuple(actual.shape)} != original {tuple(expected.shape)}"
        )
        return False
    for what, value in (("forward", actual), ("forward without grad", actual_nograd)):
        if (m := bitwise_mismatch(f"{label} {what}", value, expected, x)) is not None:
            found.failures.append(str(m))
    return True


def _compare_gradients(
    found: _Found,
    label: str,
    expected_grads: dict,
    actual_grads: dict,
    output: torch.dtype,
    x: torch.Tensor,
    pair: tuple,
) -> None:
    """Every input's gradient; for a non-differentiable input, only whether ``.grad`` is set."""
    _, _, args, spec = pair
    for name, exp in expected_grads.items():
        act = actual_grads.get(name)
        if name not in spec.differentiable:
            if (exp is None) != (act is None):
                found.failures.append(
                    f"{label} d/d{name}: the original leaves `.grad` "
                    f"{'None' if exp is None else 'set'}, the rewrite "
                    f"{'None' if act is None else 'sets it'}"
                )
            continue
        arg = args[spec.names.index(name)]
        exp = torch.zeros_like(arg) if exp is None else exp
        act = torch.zeros_like(arg) if act is None else act
        _compare_gradient(found, label, name, act, exp, output, x, pair)


def _compare_gradient(
    found: _Found,
    label: str,
    name: str,
    act: torch.Tensor,
    exp: torch.Tensor,
    output: torch.dtype,
    x: torch.Tensor,
    call: tuple[Callable, Callable, list, Spec],
) -> None:
    """One input's gradient, within its dtype's tolerance (or the coarser precision the
    original's backward computed in) wherever the original's is finite."""
    what = f"{label} d/d{name}"
    if act.shape != exp.shape:
        found.failures.append(f"{what}: shape {tuple(act.shape)} != {tuple(exp.shape)}")
        return
    rtol, atol = tolerance(exp.dtype)
    where = torch.isfinite(exp)  # at infinite inputs too: the rewrite's is the same
    elementwise = exp.shape == x.shape
    if not elementwise and not bool(torch.isfinite(x).all()):
        return  # a reduced gradient's summation bound is not finite there
    if not elementwise and not bool(where.any()):  # a sum that overflows the dtype
        _compare_overflow(found, what, act, exp)
        return
    if label == "grid" and not bool(where.any()):  # a pass would prove nothing
        found.failures.append(
            f"{what}: the original's gradient is not finite at any probe input; nothing was "
            "compared"
        )
        return
    coarse = _coarser(output, exp, where)
    note = (
        f"{what}: the original's gradient has {_name(coarse)} precision; "
        f"compared at {_name(coarse)} tolerance"
    )
    if not elementwise:
        failures = _reduced(what, act, exp, *call, name, rtol, atol)
        if (
            failures
            and coarse is not None
            and not _reduced(what, act, exp, *call, name, *tolerance(coarse))
        ):
            found.notes.append(note)
            failures = []
        found.failures.extend(failures)
        return
    found.bitwise = found.bitwise and torch.equal(act[where], exp[where])
    m = _within(what, act, exp, output, x, where, found)
    if m is not None:
        found.failures.append(str(m))


def _compare_overflow(found: _Found, what: str, act: torch.Tensor, exp: torch.Tensor) -> None:
    """A reduced gradient the original computes as inf or NaN (a sum past its dtype's range,
    as float16's 65504): the rewrite's must be the same values."""
    if bool(((act == exp) | (act.isnan() & exp.isnan())).all()):
        found.notes.append(f"{what}: not finite in {_name(exp.dtype)} (the sum overflows); same")
        return
    shown = ", ".join(f"{float(v)}" for v in exp.flatten()[:3])
    got = ", ".join(f"{float(v)}" for v in act.flatten()[:3])
    found.failures.append(f"{what}: the original's gradient is {shown}, the rewrite's {got}")


def _within(
    what: str,
    act: torch.Tensor,
    exp: torch.Tensor,
    output: torch.dtype,
    x: torch.Tensor,
    where: torch.Tensor,
    found: _Found,
) -> Mismatch | None:
    """The one tolerance rule for a gradient (and forward mode's derivative): the gradient
    dtype's tolerance, else that of a coarser precision the original's backward may have
    computed in (``_coarser``), noted when it is the one that holds."""
    m = close_mismatch(what, act, exp, x, *tolerance(exp.dtype), where)
    coarse = _coarser(output, exp, where)
    if m is not None and coarse is not None:
        m = close_mismatch(what, act, exp, x, *tolerance(coarse), where)
        if m is None:
            found.notes.append(
                f"{what}: the original's gradient has {_name(coarse)} precision; "
                f"compared at {_name(coarse)} tolerance"
            )
    return m


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
        return Check(_name(dtype), device, (f"verification raised {described(exc, 200)}",))


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
    index = spec.names.index(name)
    reference = run(original, wide, spec)[1][name]
    reference = torch.zeros_like(wide[index]) if reference is None else reference.to(exp.device)

    def along(value: torch.Tensor) -> torch.Tensor:
        return rewritten(*wide[:index], value, *wide[index + 1 :])

    parameter = wide[index]
    torch.manual_seed(0)
    try:
        _, coefficient = cast(
            tuple[torch.Tensor, torch.Tensor],  # jvp's annotation covers has_aux=True too
            torch.func.jvp(along, (parameter,), (torch.ones_like(parameter),)),
        )
        go = probes.incoming(coefficient.shape, torch.float64)
        magnitude = (go.to(coefficient.device) * coefficient).abs().sum_to_size(exp.shape)
    except RuntimeError:  # a forward torch.func refuses (it mutates its input in place)
        summed = max(x.numel() // max(exp.numel(), 1) for x in wide if isinstance(x, torch.Tensor))
        magnitude = reference.double().abs() * summed**0.5
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
    found: _Found, pair: tuple, grads: dict, x: torch.Tensor, where: torch.Tensor
) -> None:
    """torch.func.jvp along the first input gives the same derivative as backward, within
    the gradients' tolerance rule (``_within``). A jvp that fails counts only when the
    original's own forward runs under it (it may not: a forward that calls
    ``torch.autograd.grad``)."""
    original, fn, args, spec = pair
    name = spec.names[0]
    if grads.get(name) is None:
        return
    torch.manual_seed(0)  # a forward that samples draws the same numbers as in `run`
    out = fn(*args)
    go = probes.incoming(out.shape, out.dtype)
    tangent = go.to(args[0].dtype).to(args[0].device)
    torch.manual_seed(0)
    try:
        _, jvp = cast(
            tuple[torch.Tensor, torch.Tensor],
            torch.func.jvp(lambda v: fn(v, *args[1:]), (args[0],), (tangent,)),
        )
    except Exception as exc:  # noqa: BLE001
        if "mutate a captured Tensor" in str(exc):
            return  # the forward writes into its input: torch.func refuses the original too
        lacks = _forward_lacks_jvp(original, args, tangent)
        if lacks is not None:
            found.notes.append(
                f"forward-mode AD (torch.func.jvp) not compared: the original's own forward "
                f"fails under it too ({lacks})"
            )
            return
        found.failures.append(
            f"forward-mode AD (torch.func.jvp) fails: {type(exc).__name__}: {exc}"
        )
        return
    # jvp gives g' * go in the output's dtype; backward with grad_output go gives go * g' in
    # the input's: the gradient's tolerance, or the output's coarser one, as for gradients.
    grad = grads[name]  # (a coarser precision here is the output's, by construction: no note)
    m = _within(f"jvp d/d{name}", jvp.to(grad.dtype), grad, jvp.dtype, x, where, _Found())
    if m is not None:
        found.failures.append(str(m))


class _Ctx:
    """A stand-in for ctx, to run a Function's own forward by itself."""

    needs_input_grad = (True,) * 64

    def save_for_backward(self, *tensors: object) -> None:
        self.saved_tensors = tensors

    def mark_non_differentiable(self, *tensors: object) -> None: ...

    def mark_dirty(self, *tensors: object) -> None: ...

    def set_materialize_grads(self, value: bool) -> None: ...


def _forward_lacks_jvp(original: Callable, args: list, tangent: torch.Tensor) -> str | None:
    """How the original Function's own forward fails under torch.func.jvp, called by itself
    (a stand-in ctx) as the rewrite calls it (on detached inputs: no tangent reaches it); None
    if it runs there (or ``original`` is not a Function's apply)."""
    cls = getattr(original, "__self__", None)
    if not (isinstance(cls, type) and issubclass(cls, torch.autograd.Function)):
        return None
    new_style = any(
        "setup_context" in vars(c)
        for c in cls.__mro__[:-1]
        if c.__module__ != "torch.autograd.function"
    )

    def forward(v: torch.Tensor) -> object:
        inputs = [a.detach() if isinstance(a, torch.Tensor) else a for a in (v, *args[1:])]
        return cls.forward(*inputs) if new_style else cls.forward(_Ctx(), *inputs)

    torch.manual_seed(0)
    try:
        with torch.no_grad():  # as autograd runs it
            torch.func.jvp(forward, (args[0],), (tangent,))
    except Exception as exc:  # noqa: BLE001 - the original's own forward cannot run there
        return described(exc, 120)
    return None


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
        if spec.values[n] is test_callable
        else spec.values[n]
        for n in spec.names
    }
    if spec.domain != probes.DOMAINS[0]:
        described[spec.names[0]] = f"tensor in [{spec.domain[0]:g}, {spec.domain[1]:g}]"
    allocation = _UNSET.search(surrogate.forward)
    with _filled(allocation is not None):
        checks = tuple(
            _guarded(original, rewritten, spec, dtype, device)
            for device in devices()
            for dtype in dtypes
        )
    if allocation is not None:
        note = (
            f"the forward allocates memory it may leave unset (`{allocation.group(0)[:-1]}`): "
            "compared with it filled with NaN"
        )
        checks = tuple(replace(c, notes=(note, *c.notes)) for c in checks)
    return SurrogateReport(surrogate.name, str(surrogate.location), function, described, checks)


# Allocations whose memory is undefined until written: where a forward leaves some of it
# unset, neither its values nor the original's are defined there.
_UNSET = re.compile(r"\b(?:empty|empty_like|empty_strided|new_empty|new)\(")


@contextlib.contextmanager
def _filled(on: bool) -> Iterator[None]:
    """Fill uninitialised memory with NaN (torch's deterministic mode), so that both sides
    read the same values where a forward leaves memory unset."""
    if not on:
        yield
        return
    import torch.utils.deterministic as settings

    deterministic: Any = settings  # its attribute is a property of the module's own class

    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        deterministic.fill_uninitialized_memory,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        deterministic.fill_uninitialized_memory = previous[2]
