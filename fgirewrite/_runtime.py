"""The helpers every FGI rewrite calls, and the base of rewritten classes that need a guard.

The source rewriter writes these, verbatim, once per package (a ``_fgi_helpers`` module) or
once into a file outside any package, so rewritten code depends on torch alone; the fx pass
and the verifier import them from here. Plain tensor code, valid from Python 3.6 and torch 1.x
on, with no annotation (TorchScript takes an unannotated argument for a Tensor): they script,
compile, trace, export and work under ``torch.func``.
"""

import torch


def _fgi_needs_grad():
    """False only when no gradient can be asked for: grad mode off, no trace, no forward AD."""
    if torch.jit.is_scripting():
        return torch.is_grad_enabled()
    # torch.func.jvp and dual numbers can run with grad mode off, and no public API says
    # whether a dual level is active: without forward_ad._current_level (torch < 1.9, or a
    # release that renames it) the term is always injected, which is slower, never wrong.
    level = getattr(getattr(torch.autograd, "forward_ad", None), "_current_level", 0)
    return torch.is_grad_enabled() or torch.jit.is_tracing() or level >= 0


def _fgi_seed(x, out):
    """`x` as the backward saw grad_output, in the dtype it computed `x`'s gradient in."""
    # The output's dtype promoted with x's, as type promotion has it: a 0-d x does not widen
    # it (torch.fx's proxies are no tensors: a symbolic trace always promotes).
    if isinstance(x, torch.Tensor) and x.dim() == 0:
        return x.to(out.dtype)
    return x.to(torch.promote_types(out.dtype, x.dtype))


def _fgi_inject(out, term):
    """`out`, bit for bit, carrying the derivative of `term` (whose value is discarded)."""
    y = out + term.to(out.dtype)
    # The backward of `+` never reads the values it adds: overwriting them through a detached
    # alias keeps the gradient and makes the value exactly `out`, even where the term is
    # infinite or NaN.
    y.detach().copy_(out)
    return y


class _FGIRewritten:
    """Base of rewritten classes: refuses a subclass that overrides their forward or backward."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        protocol = {"forward", "backward", "setup_context", "jvp", "vjp", "vmap"}
        if protocol & set(vars(cls)) and "apply" not in vars(cls):
            raise TypeError(
                f"{cls.__name__} subclasses a class that fgirewrite rewrote into FGI, which is "
                "no longer a torch.autograd.Function: restore that module from version control, "
                f"or give {cls.__name__} a torch.autograd.Function base and methods of its own"
            )


HELPERS = (_fgi_needs_grad, _fgi_seed, _fgi_inject)
