"""Stable reason codes for Function classes that fgirewrite leaves untouched.

Codes never change meaning; new ones may be added. ``fgirewrite explain`` prints this table,
and for one code its minimal example (``EXAMPLES``) and what would make it rewritable.
"""

from __future__ import annotations

from dataclasses import dataclass

REASONS: dict[str, str] = {
    "no-forward": "the class defines no forward (it may inherit one fgirewrite cannot see)",
    "no-backward": "the class defines no backward (it may inherit one fgirewrite cannot see)",
    "multiple-outputs": "the forward returns several tensors; FGI replaces one-output surrogates",
    "forward-control-flow": "the forward returns from inside a loop or block fgirewrite cannot "
    "turn into one return (returns from if/elif branches are understood)",
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
    "unknown-decorator": "forward, backward or setup_context has a decorator fgirewrite does not "
    "know; the rewrite would drop it",
    "forward-reads-autograd": "the forward reads its inputs' autograd state (requires_grad, "
    "grad_fn, is_leaf), which the rewrite's detached inputs do not have",
    "forward-side-effect": "the forward keeps a value somewhere other than ctx and its return "
    "(a list, an attribute); the rewrite's copy would have no gradient",
    "second-order": "the files differentiate through gradients; FGI gradients are first-order "
    "(--accept-first-order rewrites anyway)",
    "breaks-import": "after the rewrite a module of the project no longer imports (a TorchScript "
    "function compiled at import that calls the class, for one): see the message",
}


@dataclass(frozen=True)
class Example:
    """A minimal case of a reason code and what would make it rewritable. ``module`` is a
    whole module that ``fgirewrite`` refuses with that code (``tests/test_cli.py`` checks
    it); None where the code comes from running the code (verification, a live model)."""

    module: str | None
    fix: str
    shown: str = ""  # what to show when there is no module to show


def _spike(
    backward: str,
    forward: str = "ctx.save_for_backward(x)\n        return (x > 0).float()",
    params: str = "ctx, x",
    head: str = "",
    tail: str = "",
) -> str:
    """A one-input surrogate module with the given backward (and forward) body."""
    return (
        f"import torch\n{head}\n\nclass Spike(torch.autograd.Function):\n"
        f"    @staticmethod\n    def forward({params}):\n        {forward}\n\n"
        f"    @staticmethod\n    def backward(ctx, grad_output):\n        {backward}\n{tail}"
    )


_SAVED = "(x,) = ctx.saved_tensors\n        "

EXAMPLES: dict[str, Example] = {
    "no-forward": Example(
        "import torch\n\n\nclass Spike(torch.autograd.Function):\n    @staticmethod\n"
        "    def backward(ctx, grad_output):\n        return grad_output\n",
        "define the forward in the class, or in a base class of the same module",
    ),
    "no-backward": Example(
        "import torch\n\n\nclass Spike(torch.autograd.Function):\n    @staticmethod\n"
        "    def forward(ctx, x):\n        return (x > 0).float()\n",
        "define the backward in the class, or in a base class of the same module",
    ),
    "multiple-outputs": Example(
        _spike("return grad_output", "return x.round(), x.floor()"),
        "none: FGI injects the derivative of one output; a Function with several is no surrogate",
    ),
    "forward-control-flow": Example(
        _spike(
            "return grad_output",
            "for step in range(3):\n            return x.round()\n        return x",
        ),
        "return once, at the end (or from if/elif branches), not from inside a loop",
    ),
    "non-differentiable-output": Example(
        _spike(
            "return grad_output",
            "out = (x > 0).float()\n        ctx.mark_non_differentiable(out)\n        return out",
        ),
        "none: autograd gives such an output no gradient, which FGI cannot express",
    ),
    "unsupported-ctx": Example(
        _spike("return grad_output * ctx.slope"),
        "store on ctx in the forward every attribute the backward reads",
    ),
    "gradient-count": Example(
        _spike("return grad_output, grad_output"),
        "return one gradient per forward input (None for an input that gets none)",
    ),
    "no-gradient": Example(
        _spike("return None"),
        "return the gradient of the input (none: the class gives no gradient at all)",
    ),
    "backward-not-linear": Example(
        _spike(_SAVED + "return grad_output.clamp(-1, 1) * torch.sigmoid(x)"),
        "apply to grad_output only products, quotients, negations, masks and sums by "
        "values that do not depend on it",
    ),
    "backward-not-elementwise": Example(
        _spike("return grad_output.flip(0)"),
        "none: FGI injects an elementwise derivative (a sum for a learnable parameter is "
        "understood when it keeps the dimensions or views them back)",
    ),
    "backward-random": Example(
        _spike("return grad_output * torch.rand_like(grad_output)"),
        "draw in the forward and save the draw for the backward",
    ),
    "backward-loop": Example(
        _spike(
            _SAVED + "for _ in range(2):\n            grad_output = grad_output * 0.5\n"
            "        return grad_output * torch.sigmoid(x)"
        ),
        "write the loop's effect on grad_output as one expression (a loop that computes "
        "only a constant is understood)",
    ),
    "backward-control-flow": Example(
        _spike(
            _SAVED + "if x.sum() > 0:\n            return grad_output * 2\n"
            "        return grad_output"
        ),
        "branch on Python values (a flag, a rank), not on a tensor's values; use torch.where",
    ),
    "backward-side-effect": Example(
        _spike("print(grad_output.norm())\n        return grad_output"),
        "move logging and other effects out of the backward",
    ),
    "in-place-alias": Example(
        _spike(_SAVED + "x.mul_(2)\n        return grad_output * torch.sigmoid(x)"),
        "compute out of place (`x = x * 2`), or clone first",
    ),
    "unknown-call": Example(
        _spike("return smooth(grad_output)", head="from mylib import smooth\n"),
        "apply the function to a constant and multiply grad_output by it, or define it in "
        "the module so fgirewrite can read it",
    ),
    "unsupported-syntax": Example(
        _spike("return grad_output", "return (x > 0).float()", params="ctx, x, *rest"),
        "name the forward's parameters; see the message for other constructs",
    ),
    "unresolved-base": Example(
        "class Spike(Function):\n    @staticmethod\n    def forward(ctx, x):\n"
        "        return (x > 0).float()\n\n    @staticmethod\n"
        "    def backward(ctx, grad_output):\n        return grad_output\n",
        "import Function from torch.autograd in the module",
    ),
    "no-source": Example(
        None,
        "define the class in a file (fgirewrite reads source); for a live model it is an "
        "interactive or compiled class",
        shown="a Function class typed at a Python prompt: `inspect` finds no source for it",
    ),
    "verification-failed": Example(
        None,
        "see the mismatch in the message: it names the probe set, dtype and inputs where "
        "the rewrite's values or gradients differ; report it if the pattern should hold",
        shown="a rewrite whose gradient differs from the original's on the probe inputs",
    ),
    "cannot-verify": Example(
        None,
        "do what the message says: run where CUDA or the package is, give a factory's "
        "argument a default, or write with --no-verify",
        shown="a forward that calls `.cuda()` on a machine without CUDA",
    ),
    "hidden-call": Example(
        None,
        "reach the Function through an attribute, closure or module global that "
        "fgirewrite.inject can replace",
        shown="a model that calls the Function through a reference made before injection",
    ),
    "relies-on-function": Example(
        _spike(
            _SAVED + "return grad_output * torch.sigmoid(x)",
            tail="\n\nassert issubclass(Spike, torch.autograd.Function)\n",
        ),
        "drop the code that needs the class to stay a Function (or keep the class as it is)",
    ),
    "name-collision": Example(
        _spike(_SAVED + "return grad_output * torch.sigmoid(x)", tail="\n\ntorch = None\n"),
        "do not rebind `torch` at the top of the module",
    ),
    "unknown-decorator": Example(
        _spike(_SAVED + "return grad_output * torch.sigmoid(x)")
        .replace(
            "    @staticmethod\n    def backward",
            "    @staticmethod\n    @logged\n    def backward",
        )
        .replace("import torch\n", "import torch\n\n\ndef logged(fn):\n    return fn\n", 1),
        "drop the decorator, or move what it does into the method; the known ones (staticmethod, "
        "once_differentiable, torch.no_grad(), torch.jit.ignore, custom_fwd/custom_bwd) are kept",
    ),
    "forward-reads-autograd": Example(
        _spike(
            _SAVED + "return grad_output * torch.sigmoid(x)",
            "ctx.save_for_backward(x)\n        return (x > 0).float() * x.requires_grad",
        ),
        "compute the forward's value from the inputs' values only",
    ),
    "forward-side-effect": Example(
        _spike(
            _SAVED + "return grad_output * torch.sigmoid(x)",
            "ctx.save_for_backward(x)\n        out = (x > 0).float()\n"
            "        SPIKES.append(out)\n        return out",
            head="\nSPIKES = []",
        ),
        "keep the output where the caller keeps it (the caller appends what apply returns)",
    ),
    "second-order": Example(
        _spike(
            _SAVED + "return grad_output * torch.sigmoid(x)",
            tail="\n\ndef penalty(loss, params):\n"
            "    return torch.autograd.grad(loss, params, create_graph=True)\n",
        ),
        "pass --accept-first-order (or accept-first-order = true in [tool.fgirewrite]) if "
        "second derivatives through the surrogate do not matter to the project",
    ),
    "breaks-import": Example(
        None,
        "see the message: it names the module and line that no longer import; a TorchScript "
        "function compiled at import scripts the rewrite only where it scripts the original's "
        "code as a plain function",
        shown="a module-level @torch.jit.script function that calls the surrogate and reads "
        "a module-level float",
    ),
}
