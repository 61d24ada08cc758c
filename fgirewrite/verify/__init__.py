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

import importlib
from typing import Any

# Exported lazily: ``fgirewrite.verify.compare`` (all that ``fgirewrite.testing`` needs) must
# not load libcst, the rewriter and the sandbox.
_LAZY = {
    "Check": "fgirewrite.verify.pair",
    "SurrogateReport": "fgirewrite.verify.pair",
    "devices": "fgirewrite.verify.pair",
    "verify_pair": "fgirewrite.verify.pair",
    "call_site_arguments": "fgirewrite.verify.written",
    "evaluate_surrogate": "fgirewrite.verify.written",
    "instability": "fgirewrite.verify.written",
    "verify_rewrite": "fgirewrite.verify.written",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fgirewrite.verify' has no attribute {name!r}")
