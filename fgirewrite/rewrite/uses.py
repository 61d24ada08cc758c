"""How the rest of a module uses its Function classes, and what a rewrite would break.

A rewritten class becomes a plain class whose ``apply`` is the FGI function. Code that relies
on it being a ``torch.autograd.Function`` (``issubclass``, a direct call of its ``forward``, an
``apply`` of its own, a subclass that stays a Function) would change meaning, so such a class
is left alone with the reason. (What a class decorator does is seen by verification, which
runs it on the rewritten class.) The generated code also needs ``torch`` under
its own name at the top of the module.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from fgirewrite.discover import FUNCTION_BASES, PROTOCOL, ClassSite, dotted, qualify
from fgirewrite.scopes import Scope, Scopes, handled_types, last_name

INTROSPECTION = frozenset(
    {"issubclass", "isinstance", "type", "super", "getattr", "hasattr", "vars", "dir"}
)
KEPT_ATTRIBUTES = frozenset({"apply", "__name__", "__qualname__", "__doc__", "__module__"})


@dataclass(frozen=True)
class Reliance:
    """Why a class must stay a Function: a message and the line that shows it."""

    message: str
    line: int


def class_node(tree: ast.Module, site: ClassSite) -> ast.ClassDef:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.lineno == site.line:
            return node
    raise LookupError(site.qualname)


def _own_attributes(node: ast.ClassDef) -> set[str]:
    names = set()
    for stmt in node.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names - PROTOCOL


def introspection(
    nodes: list[ast.AST], imports: dict[str, str], scopes: Scopes | None = None
) -> Reliance | None:
    """A test, anywhere among a module's ``nodes`` (``list(ast.walk(tree))``), of whether
    something is a torch.autograd.Function: it would change for every class it rewrites. The
    class tested for is resolved where the test reads it (``scopes``), else by ``imports``."""
    for node in nodes:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("issubclass", "isinstance")
            and len(node.args) == 2
        ):
            kinds = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            for kind in kinds:
                name = dotted(kind)
                if name is not None and _qualified(kind, name, imports, scopes) in FUNCTION_BASES:
                    return Reliance(
                        f"`{node.func.id}` tests for torch.autograd.Function (line {node.lineno})",
                        node.lineno,
                    )
    return None


@dataclass(frozen=True)
class _Target:
    """The class a reference may mean: its name, and the scope that binds it. A bare name
    means it when it resolves to that scope (``F.hardtanh`` under ``import
    torch.nn.functional as F`` does not mean a class ``F`` nested in another); an attribute
    (``self.F``, ``Outer.F``) may, whatever object it is read from."""

    name: str
    scope: Scope | None
    scopes: Scopes

    def meant_by(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return self.scopes.refers_to(node, self.name, self.scope) if self.scope else False
        return isinstance(node, ast.Attribute) and node.attr == self.name


def reliance(
    tree: ast.Module, nodes: list[ast.AST], site: ClassSite, kept: set[str], scopes: Scopes
) -> Reliance | None:
    """Why the class at ``site`` must stay a Function, or None. ``nodes`` are the module's,
    ``list(ast.walk(tree))``: walked once for all its classes; ``scopes`` resolves its names.

    ``kept`` holds the names of the module's Function classes that stay Functions: a subclass
    among them needs its base to stay one too.
    """
    node = class_node(tree, site)
    own = scopes.own(node)
    target = _Target(site.name, own.parent if own else None, scopes)
    if node.keywords:
        return Reliance(f"the class has a `{node.keywords[0].arg}=` keyword", node.lineno)
    if "apply" in _own_attributes(node):
        return Reliance("the class defines `apply` itself", node.lineno)
    inherited = _kept_base_attribute(nodes, node, kept, scopes)
    if inherited is not None:
        base, attribute = inherited
        return Reliance(
            f"its base `{base}` stays a Function: the rewrite would drop `{attribute}`, which "
            "the class inherits from it",
            node.lineno,
        )
    allowed = KEPT_ATTRIBUTES | _own_attributes(node)
    inside = {id(n) for n in ast.walk(node)}
    for other in nodes:
        if id(other) in inside:
            continue
        found = _use(other, target, allowed, kept)
        if found is not None:
            return found
    return None


def _qualified(node: ast.expr, name: str, imports: dict[str, str], scopes: Scopes | None) -> str:
    """A dotted name's qualified name: its head's import where it is read."""
    if scopes is None:
        return qualify(name, imports)
    head = node
    while isinstance(head, ast.Attribute):
        head = head.value
    first, _, rest = name.partition(".")
    imported = scopes.imported(first, scopes.read_in(head))
    return name if imported is None else imported + ("." + rest if rest else "")


def _kept_base_attribute(
    nodes: list[ast.AST], node: ast.ClassDef, kept: set[str], scopes: Scopes
) -> tuple[str, str] | None:
    """A base among the Function classes that stay (by name; a bare name by what it means
    where the class reads it), and an attribute of its own other than the protocol methods:
    what the rewritten class, no longer its subclass, would lose."""
    for base in node.bases:
        name = last_name(base)
        if name not in kept:
            continue
        bound = scopes.resolve(name, scopes.read_in(base)) if isinstance(base, ast.Name) else None
        for other in nodes:
            if isinstance(other, ast.ClassDef) and other.name == name:
                own_scope = scopes.own(other)
                if bound is not None and own_scope is not None and own_scope.parent is not bound:
                    continue  # another class of that name, in another scope
                own = sorted(_own_attributes(other) - {"__doc__"})
                if own:
                    return name, own[0]
    return None


def _use(node: ast.AST, target: _Target, allowed: frozenset[str] | set[str], kept: set[str]):
    if isinstance(node, ast.Attribute) and target.meant_by(node.value):
        if node.attr not in allowed:
            return Reliance(f"its `{node.attr}` is used (line {node.lineno})", node.lineno)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id in INTROSPECTION and any(_mentions(a, target) for a in node.args):
            what = (
                "the class is passed to `type`"
                if node.func.id == "type"
                else f"`{node.func.id}` is called with it"
            )
            return Reliance(f"{what} (line {node.lineno})", node.lineno)
    elif isinstance(node, ast.ClassDef) and node.name in kept:
        if any(target.meant_by(b) for b in node.bases):
            return Reliance(f"`{node.name}` (line {node.lineno}) subclasses it", node.lineno)
    return None


def _mentions(node: ast.expr, target: _Target) -> bool:
    return any(target.meant_by(n) for n in ast.walk(node))


def torch_conflict(tree: ast.Module) -> int | None:
    """The line where the module binds ``torch`` to something other than the torch module
    (outside an ``except ImportError`` fallback), or None."""
    for stmt, in_fallback in _top_level(tree.body, False):
        if in_fallback:
            continue
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                bound = alias.asname or alias.name.split(".")[0]
                if bound == "torch" and not (
                    alias.name.split(".")[0] == "torch"
                    and (alias.asname is None or alias.name == "torch")
                ):
                    return stmt.lineno
        elif isinstance(stmt, ast.ImportFrom):
            if any((a.asname or a.name) == "torch" for a in stmt.names):
                return stmt.lineno
        elif _binds_name(stmt, "torch"):
            return stmt.lineno
    return None


def torch_imported(tree: ast.Module, before: int) -> bool:
    """Whether a top-level ``import torch`` (or ``import torch.sub``) binds ``torch`` before
    line ``before``, unconditionally or in a try block's body."""
    for stmt, in_fallback in _top_level(tree.body, False):
        if stmt.lineno >= before or in_fallback or not isinstance(stmt, ast.Import):
            continue
        for alias in stmt.names:
            if alias.name.split(".")[0] == "torch" and alias.asname in (None, "torch"):
                if alias.asname is None or alias.name == "torch":
                    return True
    return False


def _top_level(body: list[ast.stmt], fallback: bool):
    """Module-level statements, looking into if/try blocks (not into defs or classes); each
    with whether it sits in an ``except ImportError`` handler."""
    for stmt in body:
        yield stmt, fallback
        if isinstance(stmt, ast.If):
            yield from _top_level(stmt.body + stmt.orelse, fallback)
        elif isinstance(stmt, ast.Try):
            yield from _top_level(stmt.body + stmt.orelse + stmt.finalbody, fallback)
            for handler in stmt.handlers:
                names = {last_name(t) for t in handled_types(handler)}
                yield from _top_level(
                    handler.body,
                    fallback or bool(names & {"ImportError", "ModuleNotFoundError"}),
                )


def _binds_name(stmt: ast.stmt, name: str) -> bool:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return stmt.name == name
    if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
        targets: list[ast.AST]
        if isinstance(stmt, ast.Assign):
            targets = list(stmt.targets)
        elif isinstance(stmt, ast.With):
            targets = [i.optional_vars for i in stmt.items if i.optional_vars is not None]
        else:
            targets = [stmt.target]
        return any(
            isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id == name
            for t in targets
            for n in ast.walk(t)
        )
    return False
