"""Which binding a name refers to: Python's scope rules over an ``ast`` tree.

A name read in a function resolves to its own binding, else an enclosing function's (class
bodies are skipped), else the module's, else a builtin; ``global`` and ``nonlocal`` redirect
it; a class body sees its own bindings first. ``Scopes`` computes, once per module, every
scope's bindings and the scope each name is read in, so that "does this ``F`` mean the nested
class ``F`` or ``torch.nn.functional``?" is answered by scope, not by spelling.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(frozen=True)
class Binding:
    """One statement or parameter that binds a name."""

    node: ast.AST
    imported: str | None = None  # the qualified name an import binds (``torch.nn.functional``)
    fallback: bool = False  # in an ``except ImportError`` handler


@dataclass(eq=False)
class Scope:
    """A module, class, function (a lambda too) or comprehension, and what it binds."""

    node: ast.AST
    parent: Scope | None
    kind: str  # "module", "class", "function" or "comprehension"
    bindings: dict[str, list[Binding]] = field(default_factory=dict)
    globals: set[str] = field(default_factory=set)
    nonlocals: set[str] = field(default_factory=set)

    def bind(self, name: str, binding: Binding) -> None:
        self.bindings.setdefault(name, []).append(binding)

    def import_of(self, name: str) -> str | None:
        """What ``name`` is imported as here, when every binding of it (fallbacks in an
        ``except ImportError`` aside) imports the same thing; else None."""
        bindings = self.bindings.get(name, [])
        kept = [b for b in bindings if not b.fallback] or bindings
        targets = {b.imported for b in kept}
        return targets.pop() if len(targets) == 1 and None not in targets else None

    def enclosing(self) -> Iterator[Scope]:
        """This scope and those around it, innermost first."""
        scope: Scope | None = self
        while scope is not None:
            yield scope
            scope = scope.parent


class Scopes:
    """Every scope of a module, and the scope each name and class statement is read in."""

    def __init__(self, tree: ast.Module):
        self.module = Scope(tree, None, "module")
        self._read_in: dict[int, Scope] = {}  # id(ast.Name) -> the scope it is evaluated in
        self._own: dict[int, Scope] = {id(tree): self.module}  # id(scope node) -> its scope
        self._fallback = False  # inside an ``except ImportError`` handler
        self._classes: dict[tuple[int, int], ast.ClassDef] = {}  # (line, column) -> class
        for stmt in tree.body:
            self._visit(stmt, self.module)

    def imported(self, name: str, scope: Scope) -> str | None:
        """The qualified name an import gives ``name`` as read in ``scope`` (``F`` ->
        ``torch.nn.functional``); None when what it binds there is not (only) an import."""
        found = self.resolve(name, scope)
        return None if found is None else found.import_of(name)

    def class_at(self, line: int, column: int) -> ast.ClassDef | None:
        """The class statement at a 1-based line and column."""
        return self._classes.get((line, column - 1))

    def methods_scope(self, classdef: ast.ClassDef) -> Scope:
        """Where the free names of a class's methods are looked up: the first scope around
        the class that is not a class body (methods do not see class bodies)."""
        own = self.own(classdef)
        assert own is not None and own.parent is not None  # every class statement was visited
        return next(s for s in own.parent.enclosing() if s.kind != "class")

    def read_in(self, node: ast.AST) -> Scope:
        """The scope a name node is evaluated in (the module for a node it never saw)."""
        return self._read_in.get(id(node), self.module)

    def own(self, node: ast.AST) -> Scope | None:
        """The scope a class, function, lambda or comprehension node opens."""
        return self._own.get(id(node))

    def resolve(self, name: str, scope: Scope) -> Scope | None:
        """The scope whose binding of ``name`` a read in ``scope`` finds; None for a builtin
        (or a name bound nowhere)."""
        if name in scope.globals:
            return self._global(name)
        if scope.kind == "class" and name in scope.bindings:
            return scope
        if scope.kind != "class" and name in scope.bindings and name not in scope.nonlocals:
            return scope
        for outer in scope.enclosing():
            if outer is scope or outer.kind == "class":
                continue  # a class body's names are not visible in the scopes it contains
            if outer.kind == "module":
                return self._global(name)
            if name in outer.globals:
                return self._global(name)
            if name in outer.bindings and name not in outer.nonlocals:
                return outer
        return self._global(name)

    def refers_to(self, node: ast.Name, name: str, target: Scope) -> bool:
        """Whether the name node ``node`` (spelled ``name``) means ``target``'s binding."""
        return node.id == name and self.resolve(name, self.read_in(node)) is target

    def _global(self, name: str) -> Scope | None:
        return self.module if name in self.module.bindings else None

    # ------------------------------------------------------------------ building

    def _visit(self, node: ast.AST, scope: Scope) -> None:
        kind = type(node)
        if kind is ast.Name:  # the commonest node first: this walk is on --check's path
            self._read_in[id(node)] = scope
            if type(node.ctx) is not ast.Load:  # type: ignore[attr-defined]
                scope.bind(node.id, self._binding(node))  # type: ignore[attr-defined]
            return
        special = _SPECIAL.get(kind)
        if special is not None:
            special(self, node, scope)
            return
        bound = _bound_name(node)
        if bound is not None:
            scope.bind(bound, self._binding(node))
        for name in node._fields:
            value = getattr(node, name)
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST) and not isinstance(item, _LEAVES):
                        self._visit(item, scope)
            elif isinstance(value, ast.AST) and not isinstance(value, _LEAVES):
                self._visit(value, scope)

    def _class(self, node: ast.ClassDef, scope: Scope) -> None:
        self._classes[(node.lineno, node.col_offset)] = node
        scope.bind(node.name, self._binding(node))
        for part in [*node.decorator_list, *node.bases, *node.keywords]:
            self._visit(part, scope)
        inner = self._open(node, scope, "class")
        for stmt in node.body:
            self._visit(stmt, inner)

    def _declare_global(self, node: ast.Global, scope: Scope) -> None:
        scope.globals.update(node.names)
        for name in node.names:
            self.module.bind(name, self._binding(node))

    def _nonlocal(self, node: ast.Nonlocal, scope: Scope) -> None:
        scope.nonlocals.update(node.names)

    def _named(self, node: ast.NamedExpr, scope: Scope) -> None:
        target = next(s for s in scope.enclosing() if s.kind != "comprehension")
        self._visit(node.value, scope)
        self._read_in[id(node.target)] = scope
        target.bind(node.target.id, self._binding(node))

    def _import(self, node: ast.Import | ast.ImportFrom, scope: Scope) -> None:
        for alias in node.names:
            if alias.name != "*":
                name = alias.asname or alias.name.split(".")[0]
                scope.bind(name, self._binding(node, _imported(node, alias)))

    def _binding(self, node: ast.AST, imported: str | None = None) -> Binding:
        return Binding(node, imported, self._fallback)

    def _try(self, node: ast.Try, scope: Scope) -> None:
        for stmt in [*node.body, *node.orelse, *node.finalbody]:
            self._visit(stmt, scope)
        for handler in node.handlers:
            caught = {last_name(t) for t in handled_types(handler)}
            outer, self._fallback = (
                self._fallback,
                self._fallback or bool(caught & {"ImportError", "ModuleNotFoundError"}),
            )
            try:
                self._visit(handler, scope)
            finally:
                self._fallback = outer

    def _open(self, node: ast.AST, parent: Scope, kind: str) -> Scope:
        inner = Scope(node, parent, kind)
        self._own[id(node)] = inner
        return inner

    def _function(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda, scope: Scope
    ) -> None:
        args = node.args
        outside: list[ast.AST] = [*args.defaults, *(d for d in args.kw_defaults if d)]
        if not isinstance(node, ast.Lambda):
            scope.bind(node.name, self._binding(node))
            outside += [*node.decorator_list, *([node.returns] if node.returns else [])]
            everything = [*args.posonlyargs, *args.args, *args.kwonlyargs]
            everything += [a for a in (args.vararg, args.kwarg) if a is not None]
            outside += [a.annotation for a in everything if a.annotation is not None]
        for part in outside:
            self._visit(part, scope)
        inner = self._open(node, scope, "function")
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None:
                inner.bind(arg.arg, self._binding(arg))
        body = node.body if isinstance(node.body, list) else [node.body]
        for stmt in body:
            self._visit(stmt, inner)

    def _comprehension(self, node: ast.AST, scope: Scope) -> None:
        generators: list[ast.comprehension] = node.generators  # type: ignore[attr-defined]
        self._visit(generators[0].iter, scope)  # the first iterable is evaluated outside
        inner = self._open(node, scope, "comprehension")
        for i, generator in enumerate(generators):
            if i:
                self._visit(generator.iter, inner)
            self._visit(generator.target, inner)
            for condition in generator.ifs:
                self._visit(condition, inner)
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]  # type: ignore[attr-defined]
        for part in parts:
            self._visit(part, inner)


_SPECIAL: dict[type, Callable[..., None]] = {
    ast.FunctionDef: Scopes._function,
    ast.AsyncFunctionDef: Scopes._function,
    ast.Lambda: Scopes._function,
    ast.ClassDef: Scopes._class,
    **{kind: Scopes._comprehension for kind in _COMPREHENSIONS},
    ast.Global: Scopes._declare_global,
    ast.Nonlocal: Scopes._nonlocal,
    ast.NamedExpr: Scopes._named,
    ast.Import: Scopes._import,
    ast.ImportFrom: Scopes._import,
    ast.Try: Scopes._try,
    **({ast.TryStar: Scopes._try} if hasattr(ast, "TryStar") else {}),
}
# Nodes with nothing below them that binds or reads a name.
_LEAVES = (ast.Constant, ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)


def _imported(node: ast.Import | ast.ImportFrom, alias: ast.alias) -> str | None:
    """What an import binds: ``import a.b`` binds ``a``; ``import a.b as c`` and ``from a
    import b`` bind the module or member by its full name; a relative import, unknown."""
    if isinstance(node, ast.Import):
        return alias.name if alias.asname else alias.name.split(".")[0]
    if node.level or node.module is None:
        return None
    return f"{node.module}.{alias.name}"


def handled_types(handler: ast.ExceptHandler) -> list[ast.expr]:
    """The exception types an ``except`` clause names."""
    if handler.type is None:
        return []
    return list(handler.type.elts) if isinstance(handler.type, ast.Tuple) else [handler.type]


def last_name(node: ast.expr) -> str | None:
    """``c`` of ``a.b.c`` or of ``c``: what a call or a base is named, else None."""
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def _bound_name(node: ast.AST) -> str | None:
    """The name an ``except ... as e`` or a match pattern's capture binds."""
    if isinstance(node, ast.ExceptHandler):
        return node.name
    if isinstance(node, (ast.MatchAs, ast.MatchStar)):
        return node.name
    if isinstance(node, ast.MatchMapping):
        return node.rest
    return None
