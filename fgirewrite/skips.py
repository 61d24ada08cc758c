"""``# fgirewrite: skip``: a class left alone on purpose, as ruff's ``# noqa`` and black's
``# fmt: skip`` leave a line.

The comment goes on the ``class`` line or on the class's first decorator line. It leaves the
whole class statement as it is: the class, every Function class in its body, and every call
in it. A subclass elsewhere is analysed on its own, with the skipped class as a Function
base that stays a Function. A skip comment that leaves no Function class alone is unused
(reported, as ruff's RUF100 reports an unused ``# noqa``).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field

from fgirewrite.discover import ClassSite, class_statements

_MARK = re.compile(r"#\s*fgirewrite\s*:\s*skip\b")
_MENTIONED = re.compile(rb"fgirewrite\s*:\s*skip")


def mentioned(data: bytes) -> bool:
    """Cheap test: could the source hold a skip comment? False means certainly not."""
    return _MENTIONED.search(data) is not None


def comments(text: str) -> dict[int, int]:
    """``{line: column}`` (1-based) of every skip comment: comments only, never text in a
    string. A source that does not tokenize has none (it does not parse either)."""
    found = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT and (match := _MARK.search(token.string)):
                found[token.start[0]] = token.start[1] + match.start() + 1
    except (tokenize.TokenError, SyntaxError):
        return {}
    return found


@dataclass(frozen=True)
class Span:
    """A class statement a skip comment marks."""

    qualname: str
    occurrence: int  # see ``discover.Occurrences``
    first_line: int  # its first decorator, or the class line
    end_line: int
    comment: int  # the line of the comment


@dataclass
class Marks:
    """The class statements a module's skip comments mark, and the comments no Function
    class answers to."""

    spans: list[Span] = field(default_factory=list)
    unused: list[tuple[int, int]] = field(default_factory=list)  # (line, column)

    @property
    def classes(self) -> frozenset[tuple[str, int]]:
        """``(qualname, occurrence)`` of every marked class: nothing in them is edited."""
        return frozenset((s.qualname, s.occurrence) for s in self.spans)

    def reason(self, site: ClassSite) -> str | None:
        """Why a Function class is left alone, or None when no skip comment covers it."""
        for span in self.spans:
            if (span.qualname, span.occurrence) == (site.qualname, site.occurrence):
                return f"a `# fgirewrite: skip` comment (line {span.comment}) leaves it alone"
        for span in self.spans:
            if span.first_line <= site.line <= span.end_line:
                return (
                    f"it is inside {span.qualname}, which a `# fgirewrite: skip` comment "
                    f"(line {span.comment}) leaves alone"
                )
        return None


def marks(tree: ast.Module, sites: list[ClassSite], found: dict[int, int]) -> Marks:
    """The classes that the skip comments ``found`` mark, and the unused comments."""
    result = Marks()
    if not found:
        return result
    for statement in class_statements(tree):
        node = statement.node
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        line = next((n for n in (node.lineno, first) if n in found), None)
        if line is not None:
            end = node.end_lineno or node.lineno
            result.spans.append(Span(statement.qualname, statement.occurrence, first, end, line))
    # A comment that leaves no Function class alone has no effect at all: unused.
    result.spans = [
        span
        for span in result.spans
        if any(span.first_line <= site.line <= span.end_line for site in sites)
    ]
    used = {span.comment for span in result.spans}
    result.unused = sorted((line, column) for line, column in found.items() if line not in used)
    return result
