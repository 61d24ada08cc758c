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

# Identifiers may be non-ASCII (``class ΣSpike``): any byte >= 0x80 can be part of one.
_NAME = rb"[\w\x80-\xff]+"
_CLASS = rb"^[ \t]*class[ \t]+" + _NAME + rb"[ \t]*\([^:]*"  # up to the class's colon
_CANDIDATE = re.compile(_CLASS + rb"Function", re.M)
_ALIAS = re.compile(rb"\bFunction[ \t]+as[ \t]+(" + _NAME + rb")")


def may_define_function(data: bytes) -> bool:
    """Cheap test: could this source define a Function subclass? False means certainly not."""
    if b"Function" not in data:
        return False
    if b"\r" in data:  # lines may end in a bare \r (Python accepts it); ``^`` only sees \n
        data = data.replace(b"\r", b"\n")
    if _CANDIDATE.search(data):
        return True
    if b"Function as" not in data and b"Function  as" not in data and b"Function\tas" not in data:
        return False
    for alias in set(_ALIAS.findall(data)):
        name = rb"(?<![\w\x80-\xff])" + re.escape(alias) + rb"(?![\w\x80-\xff])"
        if re.search(_CLASS + name, data, re.M):
            return True
    return False


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
    local_bases: tuple[str, ...] = ()  # bases that are Function subclasses of this module
    unresolved: str | None = None  # set when the base only looks like a Function


@dataclass
class ModuleInfo:
    """What extraction needs to know about the module around a class."""

    source: str
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
    info = ModuleInfo(source, source.splitlines(keepends=True), _imports(tree))
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
    local: list[str] = []
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
            local.append(name)
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
        local_bases=tuple(local),
        unresolved=None if is_function else unresolved,
    )
