"""The one description of a surrogate that the rewriter, the fx pass and the verifier share.

Extraction (``fgirewrite.extract``) turns a ``torch.autograd.Function`` class into a
``Surrogate`` or a ``Skip``; code generation (``fgirewrite.codegen``) turns a ``Surrogate``
into the FGI function. Every code field is Python source, so descriptions are small, frozen,
picklable and printable in reports.
"""

from __future__ import annotations

from dataclasses import dataclass

# The name that stands for the backward's incoming gradient inside a gradient template.
GRAD = "__fgi_grad_output__"

# The helpers of ``_runtime.py`` that generated code calls, and the base of rewritten classes.
RUNTIME_NAMES = ("_fgi_needs_grad", "_fgi_seed", "_fgi_inject")
SHIM_BASE = "_FGIRewritten"


@dataclass(frozen=True)
class Location:
    """Where something came from: 1-based line and column."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Gradient:
    """The gradient of the output with respect to one input.

    ``template`` is the backward's result as an expression linear and elementwise in
    ``GRAD`` (the incoming gradient); ``derivative`` is that expression with ``GRAD = 1``,
    for people to read. ``reduction`` is the sum the backward applied to broadcast inputs
    (a learnable per-neuron threshold): autograd's broadcasting performs it, so the
    template leaves it out.
    """

    param: str
    template: str
    derivative: str
    location: Location
    delta: str  # the variable that stands for grad_output in this input's injected term
    reduction: str | None = None


@dataclass(frozen=True)
class Autocast:
    """``@custom_fwd`` on the forward: the autocast device and the dtype floating inputs are
    cast to (``cast_inputs``), as source; ``legacy`` for ``torch.cuda.amp.custom_fwd``."""

    device: str
    cast_inputs: str | None
    legacy: bool


@dataclass(frozen=True)
class Surrogate:
    """A ``torch.autograd.Function`` understood exactly: forward value and derivatives."""

    name: str  # qualified name inside its module, e.g. "LIF.ATan"
    location: Location
    params: str  # the forward's parameter list without ctx, as source
    param_names: tuple[str, ...]
    forward: str  # statements that compute the output, run without grad
    output: str  # the variable that holds the output after ``forward``
    prelude: str  # statements the gradient templates need, on detached tensors
    gradients: tuple[Gradient, ...]
    snapshots: tuple[tuple[str, str], ...] = ()  # (fresh, param): an input the forward rebinds
    live: tuple[tuple[str, str], ...] = ()  # (param, name): the live input a gradient reaches
    detach: tuple[str, ...] = ()  # inputs known to be tensors, detached on entry
    maybe_tensors: tuple[str, ...] = ()  # other inputs the gradient reads: detached if tensors
    passed: int | None = None  # inputs callers pass, when the rest are defaults without gradients
    helpers: tuple[str, ...] = ()  # module-level functions inlined from the backward
    free_names: tuple[str, ...] = ()  # module-level names the generated code reads
    imports: tuple[tuple[str, str], ...] = ()  # (free name, what it imports), for imports
    saved: tuple[str, ...] = ()  # names the forward saved with ctx.save_for_backward
    autocast: Autocast | None = None  # the forward's ``custom_fwd``

    @property
    def differentiable(self) -> tuple[str, ...]:
        return tuple(g.param for g in self.gradients)


@dataclass(frozen=True)
class Skip:
    """A Function class left untouched, with a stable reason code and a one-line message."""

    name: str
    location: Location
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.code}: {self.name}: {self.message}"


def key(finding: Surrogate | Skip) -> str:
    """A class's identity in its file: a module may define two classes of the same name."""
    return f"{finding.name}@{finding.location.line}"
