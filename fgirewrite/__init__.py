"""fgirewrite: rewrite surrogate-gradient autograd.Functions into inline forward gradient
injection (FGI), and prove each rewrite gradient-equivalent.

The flow is visible in the module names: ``discover`` finds Function subclasses, ``extract``
turns each into one ``surrogate.Surrogate`` description, ``codegen`` turns that into FGI code,
``rewrite`` edits source files with it, and ``verify`` proves the result equivalent. Live
models: ``inject`` (``injection.py``) and the torch.fx pass (``fx_pass.py``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Lazy, so that ``import fgirewrite`` (and the static rewriter) never imports torch.
_LAZY = {"inject": "fgirewrite.injection", "InjectResult": "fgirewrite.injection"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fgirewrite' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
