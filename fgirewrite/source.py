"""Source text and one-line messages: the bottom layer every other module may use.

``decode`` is the one way a file's bytes become text (BOM and coding cookie honoured);
``first_line`` is the one way an exception becomes the one line fgirewrite prints.
"""

from __future__ import annotations

import io
import tokenize


class SourceError(Exception):
    """A file that cannot be read as Python: a one-line reason."""


def decode(data: bytes, path: str) -> str:
    """Source text, honouring a BOM or coding cookie; SourceError if it cannot be decoded."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding)
    except (SyntaxError, UnicodeDecodeError, LookupError) as exc:
        raise SourceError(f"cannot decode: {exc}") from None


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (a libcst error's own message, without its
    context lines), cut to ``limit`` characters."""
    lines = str(getattr(exc, "message", None) or exc).strip().splitlines()
    return (lines[0] if lines else "")[:limit]


def described(exc: BaseException, limit: int | None = None) -> str:
    """``Type: first line`` (the type alone for an empty message)."""
    line = first_line(exc, limit)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def internal_error(exc: Exception) -> str:
    """One line for an exception fgirewrite did not expect on a file (a bug, or a source
    nested too deeply to analyse)."""
    if isinstance(exc, RecursionError):
        return "too deeply nested to parse"
    return f"internal error, file left as it is: {described(exc)}"
