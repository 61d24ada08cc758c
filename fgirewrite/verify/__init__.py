"""Verification: prove each rewrite gradient-equivalent to the Function it replaces.

For every surrogate, dtype and device: forward values equal bit for bit and of the same dtype
(with and without grad), gradients with respect to every differentiable input equal within
the dtype's tolerance wherever the original's gradient is finite (infinite inputs included),
and forward-mode tangents equal to the backward gradient.

What is compared is what ``--write`` writes: ``written.py`` executes the rewritten module's
slice and compares every name its callers reach with the original's (black's ``--safe``).
``arguments.py`` decides how to call a surrogate and ``pair.py`` compares one original with
one rewrite.
"""

from __future__ import annotations

from pathlib import Path

from fgirewrite.rewrite import Rewrite
from fgirewrite.surrogate import Surrogate
from fgirewrite.verify.pair import Check, SurrogateReport, devices, verify_pair
from fgirewrite.verify.written import Module, call_site_arguments, instability, pair, verify_written

__all__ = [
    "Check",
    "SurrogateReport",
    "devices",
    "verify_pair",
    "call_site_arguments",
    "evaluate_surrogate",
    "instability",
    "verify_rewrite",
]


def evaluate_surrogate(rewrite: Rewrite, surrogate: Surrogate, path: Path | None = None):
    """The original ``apply``, the rewritten module's, call-site arguments and closure
    defaults (for plots)."""
    path = Path(path or rewrite.path)
    assert rewrite.new_source is not None
    found = pair(
        Module.of(rewrite.source, path),
        Module.of(rewrite.new_source, path),
        surrogate,
        rewrite.function(surrogate) or "rewritten",
    )
    _, original, rewritten = found.reached[0]
    return original, rewritten, found.call_args, found.closure


def verify_rewrite(rewrite: Rewrite, path: Path | None = None) -> list[SurrogateReport]:
    """Verify every surrogate of a rewritten file, through the module as written."""
    return verify_written(rewrite, path)
