"""fgirewrite: rewrite surrogate-gradient autograd.Functions into inline forward gradient
injection (FGI), and prove each rewrite gradient-equivalent.

The flow is visible in the module names: ``discover`` finds Function subclasses, ``extract``
turns each into one ``surrogate.Surrogate`` description, ``codegen`` turns that into FGI code,
``rewrite`` edits source files with it, and ``verify`` proves the result equivalent. Live
models: ``inject`` (``injection.py``) and the torch.fx pass (``fx_pass.py``). What a rewrite
unlocks: ``gradients`` (per-sample and forward gradients), ``private`` (DP-SGD with Opacus).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Exported lazily, so that ``import fgirewrite`` (and the static rewriter) never imports torch.
_LAZY = {
    "inject": "fgirewrite.injection",
    "InjectResult": "fgirewrite.injection",
    "per_sample_grads": "fgirewrite.gradients",
    "forward_gradient": "fgirewrite.gradients",
    "TransformBlockedError": "fgirewrite.blockers",
    "verify_gradients": "fgirewrite.gradient_checks",
    "for_opacus": "fgirewrite.private",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fgirewrite' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
