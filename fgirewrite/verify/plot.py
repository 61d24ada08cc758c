"""A picture per surrogate: forward f(x) and derivative g'(x), original and rewrite overlaid."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from fgirewrite.surrogate import Surrogate
from fgirewrite.verify.arguments import arguments, choose_shapes, run, spec_for


def curves(
    original: Callable,
    rewritten: Callable,
    surrogate: Surrogate,
    call_args: list | None = None,
    span: float = 3.0,
    points: int = 1201,
):
    """x, and (f, g') for the original and the rewrite, in float64, on the first input."""
    spec = spec_for(surrogate, call_args)
    choose_shapes(original, spec, "cpu")
    x = torch.linspace(-span, span, points, dtype=torch.float64)
    args = arguments(spec, x.reshape(-1, *(1,) * (spec.rank - 1)), torch.float64, "cpu")
    name = spec.names[0]

    def first(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(points, -1)[:, 0].double()

    result = []
    for fn in (original, rewritten):
        out, grads = run(fn, args, spec, go_seed=None)
        result.append((first(out), first(grads[name]) if name in grads else None))
    return x, result


def plot_surrogate(
    original: Callable,
    rewritten: Callable,
    surrogate: Surrogate,
    path: Path,
    call_args: list | None = None,
) -> Path:
    """Save the overlay as a PNG; needs matplotlib (``pip install fgirewrite[plot]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("plots need matplotlib: pip install 'fgirewrite[plot]'") from exc
    x, ((f0, g0), (f1, g1)) = curves(original, rewritten, surrogate, call_args)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    top.plot(x, f0, lw=3, alpha=0.5, label="original Function")
    top.plot(x, f1, "--", lw=1.5, label="FGI rewrite")
    top.set_ylabel("forward f(x)")
    top.legend(loc="upper left")
    if g0 is not None:
        bottom.plot(x, g0, lw=3, alpha=0.5, label="original backward")
        bottom.plot(x, g1, "--", lw=1.5, label="FGI gradient")
    bottom.set_ylabel(f"d/d{surrogate.param_names[0]}")
    bottom.set_xlabel(surrogate.param_names[0])
    bottom.legend(loc="upper left")
    fig.suptitle(f"{surrogate.name} ({surrogate.location})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
