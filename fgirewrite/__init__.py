"""fgirewrite: rewrite surrogate-gradient autograd.Functions into inline forward gradient
injection (FGI), and prove each rewrite gradient-equivalent.

The flow is the package layout. Static path: ``discover`` finds Function subclasses,
``extract`` turns each into one ``surrogate.Surrogate``, ``codegen`` turns that into FGI code,
``rewrite`` edits a file with it, ``runner``/``files``/``cli`` do it for many files. User code
runs only in ``execute`` (``sandbox``, ``load``); ``verify`` proves each rewrite equivalent
through the module as written. ``live`` rewrites models in memory (``inject``, the fx pass);
``grads`` is what a rewrite unlocks (per-sample and forward gradients, DP-SGD); ``bench``
times both variants. Layers only import downwards (``tests/test_layers.py``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The public API, exported lazily so that ``import fgirewrite`` (and the static rewriter)
# never imports torch.
_LAZY = {
    # static rewriting
    "rewrite_source": "fgirewrite.rewrite",
    "Rewrite": "fgirewrite.rewrite",
    "SourceError": "fgirewrite.source",
    "load_pair": "fgirewrite.execute.load",
    # verification
    "verify_rewrite": "fgirewrite.verify.written",
    "verify_pair": "fgirewrite.verify.pair",
    "assert_equivalent": "fgirewrite.testing",
    # live models
    "inject": "fgirewrite.live.inject",
    "inject_report": "fgirewrite.live.inject",
    "InjectResult": "fgirewrite.live.inject",
    "trace": "fgirewrite.live.fx",
    "FGIPass": "fgirewrite.live.fx",
    "fgi_function": "fgirewrite.live.surrogates",
    # what a rewrite unlocks
    "per_sample_grads": "fgirewrite.grads.transforms",
    "forward_gradient": "fgirewrite.grads.transforms",
    "TransformBlockedError": "fgirewrite.grads.blockers",
    "check_gradients": "fgirewrite.grads.checks",
    "verify_gradients": "fgirewrite.grads.checks",  # the old name of check_gradients
    "for_opacus": "fgirewrite.grads.private",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fgirewrite' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
