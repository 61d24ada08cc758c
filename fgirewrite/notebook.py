"""Jupyter notebooks as one Python module: their code cells in order, IPython lines masked.

The rewriter, the verifier and the reports see one module: each code cell after a marker
comment, and each IPython line (``%magic``, ``!shell``, ``x = !cmd``, ``obj?``) replaced by a
placeholder name at its indentation, as black and ruff mask them, so that it parses and can
never run. A cell under a cell magic other than Python's own (``%%bash``, ``%%writefile``) is
left out. Writing back replaces the ``source`` value of each changed cell in the notebook's
own JSON text and nothing else: outputs, metadata, ids, key order, indentation and the final
newline stay byte for byte. (nbformat, the format's reader and writer, serialises the whole
document again, with one indentation and sorted keys: a notebook written by another tool,
such as Colab's two-space indentation, would change on every line.)
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from itertools import count
from pathlib import PurePath

from fgirewrite.source import SourceError
from fgirewrite.surrogate import Location

SUFFIX = ".ipynb"
# Cell magics whose body is Python (black's list): the magic line is masked, the body read.
PYTHON_CELL_MAGICS = frozenset({"capture", "prun", "pypy", "python", "python3", "time", "timeit"})
_ESCAPE = re.compile(r"\s*(?:[%!?]|[A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*\s*=\s*[%!])")
_HELP = re.compile(r"\s*[\w.\[\]()]+\s*\?{1,2}\s*")
_LINE = re.compile(r"[^\n]*\n|[^\n]+")
_JSON_SPACE = " \t\n\r"


class NotebookError(SourceError):
    """A notebook that cannot be read or written back: a one-line reason."""


def is_notebook(path: str) -> bool:
    return path.endswith(SUFFIX)


@dataclass(frozen=True)
class Cell:
    """A code cell read as part of the module."""

    number: int  # 1-based, among all the notebook's cells (as ruff counts them)
    source: str  # as the notebook holds it
    span: tuple[int, int]  # of its ``source`` value in the JSON text
    masked: tuple[tuple[str, str], ...]  # (placeholder, the IPython line it stands for)
    text: str  # the source with IPython lines masked


@dataclass(frozen=True)
class Notebook:
    """A notebook's JSON text and its code cells as one module (``module``)."""

    path: str
    text: str  # the JSON text, without a byte-order mark
    bom: bool
    cells: tuple[Cell, ...]
    marker: str  # a cell's first line follows the line ``f"{marker}{number}"``
    newline: str

    @cached_property
    def module(self) -> bytes:
        """The code cells as one module's source."""
        parts = []
        for cell in self.cells:
            parts.append(f"{self.marker}{cell.number}{self.newline}{cell.text}")
            if cell.text and not cell.text.endswith("\n"):
                parts.append(self.newline)
        return "".join(parts).encode("utf-8")

    @cached_property
    def _starts(self) -> list[int]:
        """The module line of each cell's first line."""
        starts, line = [], 1
        for cell in self.cells:
            starts.append(line + 1)
            line += 1 + len(_LINE.findall(cell.text))
        return starts

    def where(self, line: int) -> tuple[int, int] | None:
        """(cell number, line in the cell) of a module line; None for a marker line."""
        for cell, start in reversed(list(zip(self.cells, self._starts, strict=True))):
            if line >= start:
                return cell.number, line - start + 1
        return None

    def location(self, location: Location) -> str:
        """``path:cell N:line:column``."""
        found = self.where(location.line)
        if found is None:
            return str(location)
        return f"{location.path}:cell {found[0]}:{found[1]}:{location.column}"

    def relocate(self, message: str) -> str:
        """A message's ``line N`` (of the module) as ``cell C, line M``."""

        def cell_line(match: re.Match) -> str:
            found = self.where(int(match.group(1)))
            return match.group(0) if found is None else f"cell {found[0]}, line {found[1]}"

        return re.sub(r"\bline (\d+)", cell_line, message)

    def sources(self, module: bytes) -> list[str]:
        """Each cell's source in a rewritten ``module``, IPython lines restored;
        NotebookError if the rewrite moved a marker or an IPython line."""
        text = module.decode("utf-8")
        pieces = re.split("^" + re.escape(self.marker) + r"(\d+)\r?\n", text, flags=re.MULTILINE)
        head, numbers = pieces[0], pieces[1::2]
        if numbers != [str(c.number) for c in self.cells]:
            raise NotebookError("the rewrite moved the boundaries of cells; left as it is")
        found = []
        for i, (cell, chunk) in enumerate(zip(self.cells, pieces[2::2], strict=True)):
            if i == 0:
                chunk = head + chunk  # what the rewrite put before the first cell
            if cell.text and not cell.text.endswith("\n") and chunk.endswith(self.newline):
                chunk = chunk[: -len(self.newline)]  # the newline the module added
            found.append(_unmask(chunk, cell))
        return found

    def render(self, module: bytes) -> bytes:
        """The notebook with the cells of a rewritten ``module``: each changed cell's
        ``source`` value replaced in the JSON text, every other byte as it was."""
        text = self.text
        for cell, new in reversed(list(zip(self.cells, self.sources(module), strict=True))):
            if new != cell.source:
                start, end = cell.span
                text = text[:start] + self._encode(new, cell) + text[end:]
        return (("\ufeff" if self.bom else "") + text).encode("utf-8")

    def diff(self, module: bytes) -> str:
        """A unified diff per changed cell, headed ``path:cell N``."""
        a, b = ("", "") if PurePath(self.path).is_absolute() else ("a/", "b/")
        out: list[str] = []
        for cell, new in zip(self.cells, self.sources(module), strict=True):
            if new != cell.source:
                where = f"{self.path}:cell {cell.number}"
                before, after = _lines(_ended(cell.source)), _lines(_ended(new))
                out.extend(difflib.unified_diff(before, after, f"{a}{where}", f"{b}{where}"))
        return "".join(out)

    def _encode(self, source: str, cell: Cell) -> str:
        """A cell's new source as a JSON value in the style of its old one: a list of lines
        (reusing the old lines' exact text) or one string."""
        ascii_only = self.text.isascii() and "\\u" in self.text
        old = self.text[cell.span[0] : cell.span[1]]
        if not old.startswith("["):
            return json.dumps(source, ensure_ascii=ascii_only)
        raw = {value: text for text, value in _elements(old)}
        items = [
            raw.get(line) or json.dumps(line, ensure_ascii=ascii_only) for line in _lines(source)
        ]
        if not items:
            return "[]"
        opening, separator, closing = self._list_style
        return "[" + opening + separator.join(items) + closing + "]"

    @cached_property
    def _list_style(self) -> tuple[str, str, str]:
        """The whitespace a source list has after ``[``, between lines and before ``]``,
        from the notebook's own lists (two-line ones give all three)."""
        found: tuple[str, str, str] | None = None
        for start, end in _source_spans(self.text):
            value = self.text[start:end]
            if not value.startswith("[") or value == "[]":
                continue
            style = _style(value)
            if style[1] or found is None:
                found = style
            if style[1]:
                break
        newline = "\r\n" if "\r\n" in self.text else "\n"
        if found is None:
            indent = newline + "   "
            return indent + " ", "," + indent + " ", indent
        opening, separator, closing = found
        return opening, separator or "," + opening, closing


def _ended(text: str) -> str:
    return text if text.endswith("\n") or not text else text + "\n"


def _lines(source: str) -> list[str]:
    """A cell's source as Jupyter stores it: lines, each but the last ending in ``\\n``."""
    return _LINE.findall(source)


def read(data: bytes, path: str) -> Notebook:
    """A notebook's code cells as one module; NotebookError (one line) for a file that is
    not a notebook fgirewrite can read."""
    bom = data.startswith(b"\xef\xbb\xbf")
    try:
        text = data[3 if bom else 0 :].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotebookError(f"not a notebook: cannot decode as UTF-8: {exc.reason}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"not a notebook: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    cells = _cells(document)
    spans = _source_spans(text)
    if len(spans) != len(cells):
        raise NotebookError("not a notebook: a cell without a source")
    taken = "\n".join(_text(c.get("source")) for c in cells)
    marker = _fresh("# fgirewrite: cell ", taken)
    token = _fresh("__fgi_ipython_", taken)
    numbers = count()
    code = []
    if _language(document) == "python":
        for number, (cell, span) in enumerate(zip(cells, spans, strict=True), 1):
            if cell.get("cell_type") != "code":
                continue
            source = _text(cell.get("source"))
            masked = _mask(source, token, numbers)
            if masked is not None:
                text_, pairs = masked
                code.append(Cell(number, source, span, pairs, text_))
    first = code[0].source if code else ""
    newline = "\r\n" if _lines(first)[:1] and _lines(first)[0].endswith("\r\n") else "\n"
    return Notebook(path, text, bom, tuple(code), marker, newline)


def python_source(data: bytes, path: str) -> bytes:
    """The module a file is read as: a notebook's code cells, or a Python file's bytes."""
    return read(data, path).module if is_notebook(path) else data


def _cells(document: object) -> list[dict]:
    if not isinstance(document, dict) or not isinstance(document.get("cells"), list):
        raise NotebookError("not a notebook: no list of cells")
    version = document.get("nbformat")
    if not isinstance(version, int) or version < 4:
        raise NotebookError(f"unsupported notebook format {version} (nbformat 4 is read)")
    for number, cell in enumerate(document["cells"], 1):
        source = cell.get("source") if isinstance(cell, dict) else None
        if not (isinstance(source, str) or _strings(source)):
            raise NotebookError(f"not a notebook: cell {number} has no source text")
    return document["cells"]


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _text(source: object) -> str:
    return "".join(source) if isinstance(source, list) else str(source)


def _language(document: dict) -> str:
    """The notebook's language; Python when it does not say."""
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    for key, field in (("language_info", "name"), ("kernelspec", "language")):
        value = metadata.get(key)
        if isinstance(value, dict) and isinstance(value.get(field), str):
            return "python" if value[field].lower().startswith("python") else value[field]
    return "python"


def _fresh(base: str, taken: str) -> str:
    """``base``, lengthened until no cell holds it."""
    while base.strip() in taken:
        base = base.rstrip() + "x" + base[len(base.rstrip()) :]
    return base


def _mask(
    source: str, token: str, numbers: count
) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """The cell with each IPython line replaced by a placeholder name at its indentation,
    and the (placeholder, line) pairs; None for a cell under a non-Python cell magic.

    IPython lines are looked for only where a statement starts (outside brackets, strings
    and backslash continuations): there no Python line begins with ``%``, ``!`` or ``?``,
    or ends with ``?``, so valid Python is never masked.
    """
    masked: list[tuple[str, str]] = []
    out = []
    depth, quote, continued = 0, "", False
    magic: str | None = None  # the indentation of an IPython line continued by a backslash
    for i, line in enumerate(_lines(source)):
        body = line.rstrip("\r\n")
        indent = body[: len(body) - len(body.lstrip())]
        if magic is None and i == 0 and body.startswith("%%"):
            if (body[2:].split() or [""])[0] not in PYTHON_CELL_MAGICS:
                return None
            magic = ""
        elif magic is None and not (depth or quote or continued):
            if _ESCAPE.match(body) or _HELP.fullmatch(body):
                magic = indent
        if magic is not None:
            placeholder = f"{magic}{token}{next(numbers)}"
            masked.append((placeholder, body))
            out.append(placeholder + line[len(body) :])
            magic = magic if body.endswith("\\") else None
            continue
        out.append(line)
        depth, quote = _scan(line, depth, quote)
        continued = not quote and body.endswith("\\")
    return "".join(out), tuple(masked)


def _scan(line: str, depth: int, quote: str) -> tuple[int, str]:
    """Bracket depth and open string quote after a line (comments skipped)."""
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if line.startswith(quote, i):
                i += len(quote)
                quote = ""
                continue
        elif c == "#":
            break
        elif c in "'\"":
            quote = line[i : i + 3] if line.startswith(c * 3, i) else c
            i += len(quote)
            continue
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        i += 1
    if quote in ("'", '"'):
        quote = ""  # a one-quote string ends with its line (or the line is an error)
    return depth, quote


def _unmask(chunk: str, cell: Cell) -> str:
    """A cell's rewritten text with its IPython lines back; NotebookError if the rewrite
    moved one."""
    lines = _lines(chunk)
    original = dict(cell.masked)
    restored = []
    for line in lines:
        body = line.rstrip("\r\n")
        if body in original:
            restored.append(original.pop(body) + line[len(body) :])
        else:
            restored.append(line)
    if original:
        raise NotebookError(
            f"the rewrite moved an IPython line of cell {cell.number}; left as it is"
        )
    return "".join(restored)


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in _JSON_SPACE:
        i += 1
    return i


_DECODER = json.JSONDecoder()


def _members(text: str, i: int):
    """``(key, value start, value end)`` of each member of the JSON object at ``i``."""
    i = _skip_space(text, i)
    assert text[i] == "{"
    i = _skip_space(text, i + 1)
    if text[i] == "}":
        return
    while True:
        key, i = _DECODER.raw_decode(text, i)
        i = _skip_space(text, _skip_space(text, i) + 1)  # past the colon
        _, end = _DECODER.raw_decode(text, i)
        yield key, i, end
        i = _skip_space(text, end)
        if text[i] == "}":
            return
        i = _skip_space(text, i + 1)


def _items(text: str, i: int):
    """``(start, end)`` of each item of the JSON array at ``i``."""
    i = _skip_space(text, i + 1)
    if text[i] == "]":
        return
    while True:
        _, end = _DECODER.raw_decode(text, i)
        yield i, end
        i = _skip_space(text, end)
        if text[i] == "]":
            return
        i = _skip_space(text, i + 1)


def _source_spans(text: str) -> list[tuple[int, int]]:
    """The span of each cell's ``source`` value, in cell order (the text is valid JSON)."""
    spans = []
    for key, start, _ in _members(text, 0):
        if key == "cells":
            for cell_start, _ in _items(text, start):
                found = [(s, e) for k, s, e in _members(text, cell_start) if k == "source"]
                if found:
                    spans.append(found[-1])  # as json.loads reads a repeated key: the last
    return spans


def _elements(value: str) -> list[tuple[str, str]]:
    """(raw JSON text, string) of each item of a JSON list of strings."""
    return [(value[s:e], json.loads(value[s:e])) for s, e in _items(value, 0)]


def _style(value: str) -> tuple[str, str, str]:
    """(after ``[``, between items, before ``]``) of a non-empty JSON list."""
    spans = list(_items(value, 0))
    opening = value[1 : spans[0][0]]
    separator = value[spans[0][1] : spans[1][0]] if len(spans) > 1 else ""
    closing = value[spans[-1][1] : -1]
    return opening, separator, closing
