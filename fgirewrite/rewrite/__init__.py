"""The static rewrite of one file: bytes in, rewritten bytes and every finding out.

``edit`` applies the generated FGI functions with libcst; ``uses`` refuses classes whose
other uses in the file (introspection, subclasses, direct ``forward`` calls) a rewrite would
break.
"""

from fgirewrite.rewrite.edit import Rewrite, analyse, rewrite_source
from fgirewrite.source import SourceError

__all__ = ["Rewrite", "SourceError", "analyse", "rewrite_source"]
