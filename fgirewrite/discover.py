"""Find ``torch.autograd.Function`` subclasses in source, fast.

A byte-level scan decides cheaply which files could define one; only those are parsed, with
the standard ``ast`` module, to resolve each base class by its qualified name
(``torch.autograd.Function`` however it is imported or aliased). libcst only ever sees the
classes found here, never whole trees of unrelated files.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

FUNCTION_BASES = frozenset(
    {
        "torch.autograd.Function",
        "torch.autograd.function.Function",
        "torch.autograd.function.InplaceFunction",
    }
)
# The methods that make a class a Function: a rewritten class drops them, and code that reads
# only these does not rely on it staying one.
PROTOCOL = frozenset({"forward", "backward", "setup_context", "jvp", "vjp", "vmap"})

# Identifiers may be non-ASCII (``class ΣSpike``): any byte >= 0x80 can be part of one.
_NAME = rb"[\w\x80-\xff]+"
_WORD = rb"(?<![\w\x80-\xff])(%s)(?![\w\x80-\xff])"
_SPACE = rb"(?:[ \t\f]|\\\r?\n)"  # between tokens of a line; a backslash continues it
# ``class NAME(`` (or ``class NAME[T](``, PEP 695) up to the ``):`` that ends the header;
# group 1 holds the bases (and any type parameters and keywords).
_HEAD = re.compile(rb"class" + _SPACE + rb"+" + _NAME + _SPACE + rb"*[\[(](.*?)\)\s*:", re.S)
_BASES = re.compile(_WORD % rb"(?:Inplace)?Function")
_ALIAS = re.compile(rb"Function(?:\s|\\\r?\n)+as(?:\s|\\\r?\n)+(" + _NAME + rb")")


def may_define_function(data: bytes) -> bool:
    """Cheap test: could this source define a Function subclass? False means certainly not.

    A class header must name ``Function`` (or ``InplaceFunction``, or an alias imported
    ``as`` another name) among its bases. A dotted base (``x.Function``), ``InplaceFunction``
    and an alias can only resolve to torch's class through an import that spells
    ``autograd``, so without that word only a bare ``Function`` base (reported as an
    unresolved base when nothing imports it) makes a file a candidate.
    """
    if b"Function" not in data:
        return False
    autograd = b"autograd" in data
    bases = _BASES
    if autograd and (aliases := _aliases(data)):
        names = b"|".join(re.escape(a) for a in sorted(aliases))
        bases = re.compile(_WORD % (rb"(?:Inplace)?Function|" + names))
    position = 0
    while (head := _HEAD.search(data, position)) is not None:
        # Resume inside this match: a ``class`` in a docstring may run on to the ``):`` of
        # the real header that follows it.
        position = head.start() + len(b"class")
        if not _at_line_start(data, head.start()):
            continue
        for base in bases.finditer(head.group(1)):
            if autograd or (base.group(1) == b"Function" and not _dotted(head.group(1), base)):
                return True
    return False


def _aliases(data: bytes) -> set[bytes]:
    """Names bound by ``Function as NAME`` or ``InplaceFunction as NAME``."""
    found = set()
    for match in _ALIAS.finditer(data):
        start = match.start()
        if data.endswith(b"Inplace", 0, start):
            start -= len(b"Inplace")
        if start == 0 or not _WORD_BYTE.match(data, start - 1):
            found.add(match.group(1))
    return found


_WORD_BYTE = re.compile(rb"[\w\x80-\xff]")


def _at_line_start(data: bytes, start: int) -> bool:
    """Only indentation between the line's start (``\n`` or a bare ``\r``) and ``start``."""
    line = max(data.rfind(b"\n", 0, start), data.rfind(b"\r", 0, start)) + 1
    return not data[line:start].strip(b" \t\f")


def _dotted(bases: bytes, match: re.Match) -> bool:
    """The base is an attribute (``x.Function``), not a bare name."""
    return bases[: match.start()].rstrip(b" \t\f\r\n\\").endswith(b".")


@dataclass(frozen=True)
class ClassSite:
    """A Function subclass found in a module."""

    qualname: str  # "Outer.Inner", or "factory.<locals>.F" inside a function
    name: str
    line: int  # the ``class`` keyword
    column: int  # 1-based
    first_line: int  # the first decorator, or the class line
    end_line: int
    scope: str  # "module", "class" or "function"
    occurrence: int  # how many earlier classes share this qualname
    unresolved: str | None = None  # set when the base only looks like a Function
    # (line, column) of its own ``forward`` when that takes *args or **kwargs and the class
    # defines ``backward`` too: refused without parsing the class with libcst.
    star_forward: tuple[int, int] | None = None


@dataclass
class ModuleInfo:
    """What extraction needs to know about the module around a class."""

    lines: list[str]
    imports: dict[str, str]  # local name -> qualified name
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)  # module level
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)  # module level
    assigned: set[str] = field(default_factory=set)  # module-level names bound by code

    def segment(self, first_line: int, end_line: int) -> str:
        """The source lines first_line..end_line (1-based, inclusive)."""
        return "".join(self.lines[first_line - 1 : end_line])


def _statements(body: list[ast.stmt]):
    """Every statement, nested ones included, without walking into expressions."""
    for node in body:
        yield node
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, name, None)
            if children:
                for child in children:
                    if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                        yield from _statements(child.body)
                    else:
                        yield from _statements([child])


def _imports(tree: ast.Module) -> dict[str, str]:
    names: dict[str, str] = {}
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    names[head] = head
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def qualify(name: str, imports: dict[str, str]) -> str:
    """Resolve a dotted name through the module's imports."""
    head, _, rest = name.partition(".")
    if head not in imports:
        return name
    return imports[head] + ("." + rest if rest else "")


def module_info(source: str, tree: ast.Module) -> ModuleInfo:
    info = ModuleInfo(source.splitlines(keepends=True), _imports(tree))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            info.functions[node.name] = node
        elif isinstance(node, ast.ClassDef):
            info.classes[node.name] = node
        for target in _bound_names(node):
            info.assigned.add(target)
    return info


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return []


def find_classes(tree: ast.Module, imports: dict[str, str]) -> list[ClassSite]:
    """Every Function subclass in the module, outermost first, in source order."""
    sites: list[ClassSite] = []
    known: set[str] = set()  # local class names known to be Function subclasses
    seen: dict[str, int] = {}

    def visit(body: list[ast.stmt], prefix: str, scope: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                qualname = prefix + node.name
                site = _site(node, qualname, scope, imports, known, seen)
                if site is not None:
                    sites.append(site)
                    known.add(node.name)
                visit(node.body, qualname + ".", "class")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(node.body, f"{prefix}{node.name}.<locals>.", "function")
            else:
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    for child in getattr(node, field, None) or ():
                        if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                            visit(child.body, prefix, scope)
                        else:
                            visit([child], prefix, scope)

    visit(tree.body, "", "module")
    return sites


def _site(
    node: ast.ClassDef,
    qualname: str,
    scope: str,
    imports: dict[str, str],
    known: set[str],
    seen: dict[str, int],
) -> ClassSite | None:
    unresolved = None
    is_function = False
    for base in node.bases:
        name = dotted(base)
        if name is None:
            continue
        if qualify(name, imports) in FUNCTION_BASES:
            is_function = True
        elif name in known:
            is_function = True
        elif (name == "Function" or name.endswith("autograd.Function")) and (
            name.split(".")[0] not in imports
        ):
            unresolved = name
    if not is_function and unresolved is None:
        return None
    occurrence = seen.get(qualname, 0)
    seen[qualname] = occurrence + 1
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return ClassSite(
        qualname=qualname,
        name=node.name,
        line=node.lineno,
        column=node.col_offset + 1,
        first_line=first,
        end_line=node.end_lineno or node.lineno,
        scope=scope,
        occurrence=occurrence,
        unresolved=None if is_function else unresolved,
        star_forward=_star_forward(node),
    )


def _star_forward(node: ast.ClassDef) -> tuple[int, int] | None:
    own = {s.name: s for s in node.body if isinstance(s, ast.FunctionDef)}
    forward = own.get("forward")
    if forward is None or "backward" not in own:
        return None
    if forward.args.vararg is None and forward.args.kwarg is None:
        return None
    return forward.lineno, forward.col_offset + 1
