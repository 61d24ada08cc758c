"""Stable reason codes for Function classes that fgirewrite leaves untouched.

Codes never change meaning; new ones may be added. ``fgirewrite explain`` prints this table.
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    "no-forward": "the class defines no forward (it may inherit one fgirewrite cannot see)",
    "no-backward": "the class defines no backward (it may inherit one fgirewrite cannot see)",
    "multiple-outputs": "the forward returns several tensors; FGI replaces one-output surrogates",
    "forward-control-flow": "the forward returns from inside a branch or loop",
    "non-differentiable-output": "the forward marks its output non-differentiable or dirty",
    "unsupported-ctx": "ctx is used in a way fgirewrite does not model",
    "gradient-count": "the backward returns a different number of gradients than forward inputs",
    "no-gradient": "the backward returns no gradient for any input",
    "backward-not-linear": "the returned gradient is not linear and elementwise in grad_output",
    "backward-not-elementwise": "the gradient mixes elements (a mean over time, a matrix "
    "product, a shift); FGI injects an elementwise derivative",
    "backward-random": "the backward draws random numbers, which cannot move into the forward",
    "backward-loop": "the backward loops; fgirewrite does not unroll loops",
    "backward-control-flow": "the backward branches on a value fgirewrite cannot decide",
    "backward-side-effect": "the backward has a statement with effects beyond its result",
    "in-place-alias": "an in-place op mutates a tensor that another name or the caller shares",
    "unknown-call": "the gradient flows through a call fgirewrite does not know",
    "unsupported-syntax": "the class uses syntax fgirewrite does not model here",
    "unresolved-base": "the base class looks like a Function but does not resolve to one",
    "no-source": "the class's source is not available (defined interactively or compiled)",
    "verification-failed": "the rewrite was not gradient-equivalent on the probe inputs",
    "cannot-verify": "verification cannot run the original here (it needs CUDA, a package that "
    "is not installed, its package around it, or argument values): see the message",
    "hidden-call": "a live model calls the Function through a reference fgirewrite cannot replace",
    "relies-on-function": "code in the module relies on the class being a torch.autograd.Function "
    "(issubclass, its forward called, an apply of its own, a subclass kept as one)",
    "name-collision": "the module binds a name the rewrite needs (torch) to something else",
    "breaks-import": "after the rewrite a module of the project no longer imports (a TorchScript "
    "function compiled at import that calls the class, for one): see the message",
}
