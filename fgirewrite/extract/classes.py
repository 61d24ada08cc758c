"""The class around a Function: its source parsed on its own (positions mapped back to the
file), its methods (inherited from the module's own base classes too) and their parameters."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import cast

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from fgirewrite.discover import ModuleInfo
from fgirewrite.extract.values import Unsupported, dotted
from fgirewrite.surrogate import Location


class Snippet:
    """Source lines parsed on their own, with positions mapped back to the file."""

    def __init__(self, text: str, first_line: int, indented: bool):
        self.offset = first_line - 1
        if indented:
            text, self.offset = "if 1:\n" + text, self.offset - 1
        self.text = text
        self.module = cst.parse_module(text)
        self._positions: Mapping[cst.CSTNode, CodeRange] | None = None
        self.lines = text.splitlines()
        body = self.module.body[0]
        # A class or function definition (the one statement under ``if 1:`` when indented).
        self.node = cast(
            cst.BaseCompoundStatement, cast(cst.If, body).body.body[0] if indented else body
        )

    @property
    def positions(self) -> Mapping[cst.CSTNode, CodeRange]:
        """Computed on first use only: most classes never need a location inside them."""
        if self._positions is None:
            wrapper = MetadataWrapper(self.module, unsafe_skip_copy=True)
            self._positions = wrapper.resolve(PositionProvider)
        return self._positions

    def method_location(self, function: cst.FunctionDef, path: str) -> Location | None:
        """Where a method of this snippet's class starts, found without a position pass."""
        if function not in getattr(self.node.body, "body", ()):
            return None
        name = function.name.value
        for i, line in enumerate(self.text.splitlines()):
            match = re.match(rf"(\s*)(async\s+)?def\s+{re.escape(name)}\b", line)
            if match:
                return Location(path, i + 1 + self.offset, len(match.group(1)) + 1)
        return None

    def locate(self, node: cst.CSTNode | None, path: str) -> Location | None:
        if node is None or node not in self.positions:
            return None
        start = self.positions[node].start
        return Location(path, start.line + self.offset, start.column + 1)

    def find(self, text: str) -> list[tuple[int, int]]:
        """(line, column) in the file of every occurrence of ``text`` in this snippet."""
        return [
            (i + 1 + self.offset, column + 1)
            for i, line in enumerate(self.lines)
            for column in _occurrences(line, text)
        ]


def _occurrences(line: str, text: str) -> list[int]:
    found, start = [], line.find(text)
    while start >= 0:
        found.append(start)
        start = line.find(text, start + 1)
    return found


def locate(snippets: list[Snippet], node: cst.CSTNode | None, path: str) -> Location | None:
    """Where a node of one of the snippets starts. Found as text when its first line occurs
    once in all of them (a position pass over a class is the slow part of ``--check``), else
    by libcst's positions."""
    if node is None:
        return None
    code = cst.Module([]).code_for_node(node)
    lines = [t.strip() for t in code.splitlines()]
    first = next((t for t in lines if t and not t.startswith(("#", "@"))), "")
    if len(first) > 1:
        hits = [hit for s in snippets for hit in s.find(first)]
        if len(hits) == 1:
            return Location(path, *hits[0])
    return next((loc for s in snippets if (loc := s.locate(node, path))), None)


def _at_module(info: ModuleInfo) -> Callable[[str], bool]:
    """For a module-level class statement: a base's name means the module's own class when
    the module binds it once, by that class statement."""
    scopes = info.scopes

    def module_class(name: str) -> bool:
        bindings = [b.node for b in scopes.module.bindings.get(name, []) if not b.fallback]
        return bindings == [info.classes.get(name)]

    return module_class


def methods(classdef: cst.ClassDef) -> dict[str, cst.FunctionDef]:
    found = {}
    for stmt in classdef.body.body:
        if isinstance(stmt, cst.FunctionDef):
            found[stmt.name.value] = stmt
    return found


def inherited(
    classdef: cst.ClassDef,
    info: ModuleInfo,
    snippets: list[Snippet],
    module_class: Callable[[str], bool],
    depth: int = 0,
) -> dict[str, cst.FunctionDef]:
    """Methods from the module's own base classes (a mixin defining ``backward``), by MRO-ish
    order: later bases first, so earlier ones override them. ``module_class`` says whether a
    base's name, where the class statement reads it, means the module-level class of that
    name (a factory's local class of the same name does not)."""
    found: dict[str, cst.FunctionDef] = {}
    for base in reversed(classdef.bases):
        name = dotted(base.value) or ""
        node = info.classes.get(name)
        if node is None or depth > 8 or not module_class(name):
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        snippet = Snippet(info.segment(first, node.end_lineno or node.lineno), first, False)
        snippets.append(snippet)
        assert isinstance(snippet.node, cst.ClassDef)
        bases = inherited(snippet.node, info, snippets, _at_module(info), depth + 1)
        found |= bases | methods(snippet.node)
    return found


STAR_FORWARD = "the forward takes *args or **kwargs (name its parameters to make it rewritable)"


def star_arg(function: cst.FunctionDef) -> cst.Param | None:
    """``*args`` (not the bare ``*`` that marks keyword-only parameters)."""
    star = function.params.star_arg
    return star if isinstance(star, cst.Param) else None


def params(
    function: cst.FunctionDef, skip_first: bool, star: bool = False
) -> tuple[list[cst.Param], str | None]:
    """The positional parameters (``cls`` of a classmethod left out) and, with
    ``skip_first``, the first one's name apart (ctx). ``*args`` (unless ``star`` says the
    caller handles it) and ``**kwargs`` are refused with their reason; keyword-only
    parameters are not among them (``keyword_only``)."""
    params = function.params
    if (star_arg(function) is not None and not star) or params.star_kwarg:
        method = function.name.value
        if method == "forward":
            raise Unsupported("unsupported-syntax", STAR_FORWARD, function)
        raise Unsupported("unsupported-syntax", f"the {method} takes *args or **kwargs", function)
    ordered = list(params.posonly_params) + list(params.params)
    if any(_decorator_name(d) == "classmethod" for d in function.decorators):
        ordered = ordered[1:]  # ``cls``: autograd calls ``Fn.forward(ctx, ...)`` on the class
    if not skip_first:
        return ordered, None
    if not ordered:
        raise Unsupported("unsupported-ctx", f"the {function.name.value} takes no ctx", function)
    return ordered[1:], ordered[0].name.value


def _decorator_name(decorator: cst.Decorator) -> str | None:
    target = decorator.decorator
    return dotted(target.func if isinstance(target, cst.Call) else target)


def keyword_only(function: cst.FunctionDef) -> list[cst.Param]:
    """Parameters after ``*``: ``Function.apply`` never passes them (it binds what it is given
    to the positional ones), so each is its default, which must be a literal."""
    found = list(function.params.kwonly_params)
    for param in found:
        name = param.name.value
        if param.default is None:
            raise Unsupported(
                "unsupported-syntax",
                f"the {function.name.value}'s keyword-only parameter `{name}` has no default, "
                "and Function.apply cannot pass it: the Function cannot be called",
                param,
            )
        if not _literal(param.default):
            raise Unsupported(
                "unsupported-syntax",
                f"the {function.name.value}'s keyword-only parameter `{name}` defaults to a "
                "value computed once, when the class is made (a literal default, or a "
                "positional parameter, makes it rewritable)",
                param,
            )
    return found


def _literal(node: cst.BaseExpression) -> bool:
    if isinstance(node, cst.UnaryOperation):
        node = node.expression
    if isinstance(node, (cst.Integer, cst.Float, cst.SimpleString)):
        return True
    if isinstance(node, (cst.Tuple, cst.List)):
        return all(_literal(e.value) for e in node.elements)
    return isinstance(node, cst.Name) and node.value in ("True", "False", "None")


def annotated_tensor(param: cst.Param) -> bool:
    if param.annotation is None:
        return False
    text = cst.Module([]).code_for_node(param.annotation.annotation)
    return text.split(".")[-1] == "Tensor"
