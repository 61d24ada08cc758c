"""The three helpers that every FGI rewrite calls, and the base of rewritten classes.

The source rewriter copies these, verbatim, into each file it rewrites, so rewritten code
depends on torch alone; the fx pass and the verifier import the functions from here. They are
plain tensor code: they script, compile, trace, export and work under ``torch.func``.
"""

import torch


def _fgi_needs_grad() -> bool:
    """False only when neither autograd nor forward-mode AD can ask for a gradient."""
    if torch.jit.is_scripting():
        return torch.is_grad_enabled()
    # torch.func.jvp and forward-mode dual numbers run with grad mode off and report
    # requires_grad=False on inputs that carry tangents: ask for the dual level instead.
    return torch.is_grad_enabled() or getattr(torch.autograd.forward_ad, "_current_level", 0) >= 0


def _fgi_seed(
    x: torch.Tensor, out: torch.Tensor, first: torch.Tensor | None = None
) -> torch.Tensor:
    """`x` as the backward saw grad_output: its dtype (and shape, for another input)."""
    # The dtype the backward computed in: the output's, promoted with the first input's. An
    # input other than the first is expanded to the output's shape, so that type promotion
    # treats it as a dimensioned tensor, as it treated grad_output. Its derivative is one;
    # its value is discarded.
    if first is None:
        return x.to(torch.promote_types(out.dtype, x.dtype))
    return x.to(torch.promote_types(out.dtype, first.dtype)).expand(out.shape)


def _fgi_inject(out: torch.Tensor, terms: list[torch.Tensor]) -> torch.Tensor:
    """`out`, bit for bit, carrying the derivatives of `terms` (whose values are discarded)."""
    y = out
    for term in terms:
        y = y + term.to(out.dtype)
    torch._assert(y.shape == out.shape, "fgirewrite: an injected term widens the output")
    # The backward of `+` never reads the values it adds, so overwriting them through a
    # detached alias keeps the gradient and makes the value exactly `out`, even where a term
    # is infinite or NaN.
    y.detach().copy_(out)
    return y


class _FGIRewritten:
    """Base of rewritten classes: a subclass that overrides their forward is refused."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        protocol = ("forward", "backward", "setup_context", "jvp", "vjp", "vmap")
        overridden = [name for name in protocol if name in vars(cls)]
        if overridden and "apply" not in vars(cls):
            base = next(b for b in cls.__mro__[1:] if issubclass(b, _FGIRewritten))
            raise TypeError(
                f"`{cls.__name__}` overrides {overridden[0]} of `{base.__name__}` (in "
                f"{base.__module__}), which fgirewrite rewrote into FGI: it is no longer a "
                "torch.autograd.Function. Restore that module from version control, or give "
                f"`{cls.__name__}` a torch.autograd.Function base and methods of its own"
            )


HELPERS = (_fgi_needs_grad, _fgi_seed, _fgi_inject)
