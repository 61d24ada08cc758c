"""Find ``torch.autograd.Function`` subclasses in source, fast.

A byte-level scan decides cheaply which files could define one; only those are parsed, with
the standard ``ast`` module, to resolve each base class by its qualified name
(``torch.autograd.Function`` however it is imported or aliased). libcst only ever sees the
classes found here, never whole trees of unrelated files.

``parse`` is the one way a module's bytes become its text, tree and Function classes (for the
rewriter, the verifier and the live path alike); ``class_statements`` is the one walk over
its classes, and ``Occurrences`` the one count of a name's redefinitions.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from fgirewrite.scopes import Scopes
from fgirewrite.source import SourceError, decode

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
    occurrence: int  # see ``Occurrences``
    unresolved: str | None = None  # set when the base only looks like a Function
    # (line, column) of its own ``forward`` when that takes *args or **kwargs and the class
    # defines ``backward`` too: refused without parsing the class with libcst.
    star_forward: tuple[int, int] | None = None


@dataclass
class ModuleInfo:
    """What extraction needs to know about the module around a class."""

    lines: list[str]
    imports: dict[str, str]  # local name -> qualified name
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(
        default_factory=dict
    )  # module level
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)  # module level
    assigned: set[str] = field(default_factory=set)  # module-level names bound by code
    tree: ast.Module | None = field(default=None, repr=False)

    def segment(self, first_line: int, end_line: int) -> str:
        """The source lines first_line..end_line (1-based, inclusive)."""
        return "".join(self.lines[first_line - 1 : end_line])

    @functools.cached_property
    def scopes(self) -> Scopes:
        """What each name of the module means where it is read (made on first use)."""
        return Scopes(self.tree or ast.Module([], []))


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
    info = ModuleInfo(source.splitlines(keepends=True), _imports(tree), tree=tree)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            info.functions[node.name] = node
        elif isinstance(node, ast.ClassDef):
            info.classes[node.name] = node
        for target in _bound_names(node):
            info.assigned.add(target)
    return info


@dataclass(frozen=True)
class Parsed:
    """A module's text, ``ast`` tree and facts: where every reader of its classes starts."""

    text: str
    tree: ast.Module
    info: ModuleInfo

    @functools.cached_property
    def sites(self) -> list[ClassSite]:
        """Its Function subclasses (``find_classes``)."""
        return find_classes(self.tree, self.info.imports, lambda: self.info.scopes)


def parse(data: bytes, path: str) -> Parsed:
    """A module's bytes decoded (``source.decode``), parsed and read; SourceError, one line,
    if they cannot be."""
    text = decode(data, path)
    try:
        tree = ast.parse(data, filename=path)
    except SyntaxError as exc:
        where = f" at line {exc.lineno}" if exc.lineno else ""  # null bytes: no line
        raise SourceError(f"syntax error{where}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise SourceError(f"cannot parse: {exc}") from None
    return Parsed(text, tree, module_info(text, tree))


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return []


class Occurrences:
    """Which of several classes of one qualified name (a redefinition) each is: 0 for the
    first class statement of that name in source order, 1 for the next, and so on. Every
    class counts, a Function or not, so a class has the same count in a module and in its
    rewrite (which keeps each class, under its name)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, qualname: str) -> int:
        """The count of the class statement of ``qualname`` met now."""
        count = self._seen.get(qualname, 0)
        self._seen[qualname] = count + 1
        return count


@dataclass(frozen=True)
class ClassStatement:
    """A class statement of a module, a Function or not, and where it stands."""

    node: ast.ClassDef
    qualname: str
    scope: str  # "module", "class" or "function"
    occurrence: int  # see ``Occurrences``
    block: list[ast.stmt]  # the statements it stands among


# The blocks of a compound statement, in source order.
_BLOCKS = ("body", "handlers", "orelse", "finalbody", "cases")


def class_statements(tree: ast.Module) -> Iterator[ClassStatement]:
    """Every class statement of the module, outermost first, in source order."""
    occurrences = Occurrences()

    def visit(block: list[ast.stmt], prefix: str, scope: str) -> Iterator[ClassStatement]:
        for node in block:
            if isinstance(node, ast.ClassDef):
                qualname = prefix + node.name
                yield ClassStatement(node, qualname, scope, occurrences(qualname), block)
                yield from visit(node.body, qualname + ".", "class")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from visit(node.body, f"{prefix}{node.name}.<locals>.", "function")
            else:
                for name in _BLOCKS:
                    children = getattr(node, name, None) or []
                    if name in ("handlers", "cases"):
                        for child in children:
                            yield from visit(child.body, prefix, scope)
                    else:
                        yield from visit(children, prefix, scope)

    return visit(tree.body, "", "module")


def find_classes(
    tree: ast.Module, imports: dict[str, str], scopes: Callable[[], Scopes] | None = None
) -> list[ClassSite]:
    """Every Function subclass in the module, outermost first, in source order. A base is
    resolved by scope (``scopes`` gives them, called when a base needs it): what its name
    means where the class statement stands."""
    sites: list[ClassSite] = []
    known: dict[str, list[ast.ClassDef]] = {}  # Function subclasses of the module, by name
    lazy = _Lazy(scopes or (lambda: Scopes(tree)))
    for statement in class_statements(tree):
        site = _site(statement, imports, known, lazy)
        if site is not None:
            sites.append(site)
            known.setdefault(statement.node.name, []).append(statement.node)
    return sites


class _Lazy:
    """The module's ``Scopes``, made on first use: most bases are spelled plainly."""

    def __init__(self, make: Callable[[], Scopes]):
        self._make = make
        self._scopes: Scopes | None = None

    @property
    def scopes(self) -> Scopes:
        if self._scopes is None:
            self._scopes = self._make()
        return self._scopes


_FUNCTION_NAMES = frozenset(base.rsplit(".", 1)[-1] for base in FUNCTION_BASES)


def _qualified_base(base: ast.expr, name: str, imports: dict[str, str], lazy: _Lazy) -> str:
    """A base's qualified name: its head resolved by scope to an import when its spelling
    could name a Function (``Function``, ``torch.autograd.Function``)."""
    spelled = qualify(name, imports)
    if spelled not in FUNCTION_BASES and name.rsplit(".", 1)[-1] not in _FUNCTION_NAMES:
        return spelled
    head_node = base
    while isinstance(head_node, ast.Attribute):
        head_node = head_node.value
    head, _, rest = name.partition(".")
    scopes = lazy.scopes
    imported = scopes.imported(head, scopes.read_in(head_node))
    if imported is None:
        return name
    return imported + ("." + rest if rest else "")


def _known_base(base: ast.expr, known: dict[str, list[ast.ClassDef]], lazy: _Lazy) -> bool:
    """A bare-name base that means one of the module's Function classes where it is read."""
    if not isinstance(base, ast.Name) or base.id not in known:
        return False
    scopes = lazy.scopes
    bound = scopes.resolve(base.id, scopes.read_in(base))
    return any((own := scopes.own(c)) is not None and own.parent is bound for c in known[base.id])


def _site(
    statement: ClassStatement,
    imports: dict[str, str],
    known: dict[str, list[ast.ClassDef]],
    lazy: _Lazy,
) -> ClassSite | None:
    node = statement.node
    unresolved = None
    is_function = False
    for base in node.bases:
        name = dotted(base)
        if name is None:
            continue
        if _qualified_base(base, name, imports, lazy) in FUNCTION_BASES:
            is_function = True
        elif _known_base(base, known, lazy):
            is_function = True
        elif (name == "Function" or name.endswith("autograd.Function")) and (
            name.split(".")[0] not in imports
        ):
            unresolved = name
    if not is_function and unresolved is None:
        return None
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return ClassSite(
        qualname=statement.qualname,
        name=node.name,
        line=node.lineno,
        column=node.col_offset + 1,
        first_line=first,
        end_line=node.end_lineno or node.lineno,
        scope=statement.scope,
        occurrence=statement.occurrence,
        unresolved=None if is_function else unresolved,
        star_forward=_star_forward(node),
    )


def _tuple(value: ast.expr | None) -> bool:
    """A tuple display, or ``tuple(...)``/``list(...)``: several outputs."""
    if isinstance(value, (ast.Tuple, ast.List)):
        return True
    return isinstance(value, ast.Call) and dotted(value.func) in ("tuple", "list")


def _star_forward(node: ast.ClassDef) -> tuple[int, int] | None:
    own = {s.name: s for s in node.body if isinstance(s, ast.FunctionDef)}
    forward, backward = own.get("forward"), own.get("backward")
    if forward is None or backward is None:
        return None
    if forward.args.vararg is None and forward.args.kwarg is None:
        return None
    # Several outputs (a tuple returned, several gradients taken) is the truer reason:
    # extraction reports it (a reversible block's ``forward(ctx, fn, *args)``).
    several = backward.args.vararg is not None or len(backward.args.args) > 2
    if several or any(isinstance(n, ast.Return) and _tuple(n.value) for n in ast.walk(forward)):
        return None
    return forward.lineno, forward.col_offset + 1
