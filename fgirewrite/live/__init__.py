"""The live path: rewrite models already in memory, without touching their source.

``surrogates`` extracts a live Function class (its module's source, through ``inspect``) into
the same ``Surrogate`` the file rewriter uses; ``replacement`` builds and verifies its FGI
function; ``references`` copies what a model's forward reaches with the replacement in place
(``namespaces``: importable globals for the copies); ``inject`` (``fgirewrite.inject``) and
``fx`` (``trace``, ``FGIPass``) are the two entry points.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["fgi_function"]


def __getattr__(name: str) -> Any:
    if name == "fgi_function":  # documented as ``fgirewrite.live.fgi_function``
        return importlib.import_module("fgirewrite.live.surrogates").fgi_function
    raise AttributeError(f"module 'fgirewrite.live' has no attribute {name!r}")
