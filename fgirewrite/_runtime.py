"""The three helpers that every FGI rewrite calls.

The source rewriter copies these functions, verbatim, into each file it rewrites, so rewritten
code depends on torch alone; the fx pass and the verifier import them from here. They are
plain tensor code: they script, compile, trace and work under ``torch.func``.
"""

import torch


def _fgi_needs_grad() -> bool:
    """False only when neither autograd nor forward-mode AD can ask for a gradient."""
    if torch.jit.is_scripting():
        return torch.is_grad_enabled()
    # torch.func.jvp and forward-mode dual numbers run with grad mode off and report
    # requires_grad=False on inputs that carry tangents: ask for the dual level instead.
    return torch.is_grad_enabled() or getattr(torch.autograd.forward_ad, "_current_level", 0) >= 0


def _fgi_delta(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Zero, in the dtype the original backward computed in, with derivative one in `x`."""
    return (x - x.detach()).to(torch.promote_types(out.dtype, x.dtype))


def _fgi_inject(out: torch.Tensor, terms: list[torch.Tensor]) -> torch.Tensor:
    """`out`, bit for bit, carrying the derivatives of the zero-valued `terms`."""
    out = out.detach()
    for term in terms:
        # term.detach() - term is +0.0 where the term is finite, and subtracting +0.0 keeps
        # every value exactly (-0.0 included); where it is not (NaN) it carries no gradient.
        zero = term.detach() - term
        # The mask comes from the detached zero: a plain boolean, which keeps the compiled
        # graph as small as the original's.
        zero = torch.where(zero.detach() == 0, zero, 0.0).to(out.dtype)
        out = out - zero.broadcast_to(out.shape)  # never silently widen the output
    return out


HELPERS = (_fgi_needs_grad, _fgi_delta, _fgi_inject)
