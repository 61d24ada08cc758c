"""The static rewrite of one file: bytes in, rewritten bytes and every finding out.

``edit`` applies the generated FGI functions with libcst; ``uses`` refuses classes whose
other uses in the file (introspection, subclasses, direct ``forward`` calls) a rewrite would
break; ``result`` is what a rewrite found and produced (``Rewrite``).
"""

from __future__ import annotations

import importlib
from typing import Any

# Exported lazily: reading results (``Rewrite``) must not import libcst.
_LAZY = {
    "Rewrite": "fgirewrite.rewrite.result",
    "SourceError": "fgirewrite.source",
    "analyse": "fgirewrite.rewrite.edit",
    "rewrite_source": "fgirewrite.rewrite.edit",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fgirewrite.rewrite' has no attribute {name!r}")
