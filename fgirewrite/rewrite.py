"""Source rewriting: a file's bytes in, the rewritten bytes and every finding out.

For each understood Function class the module gets the generated FGI function and, under the
class's own name, a plain shim class whose ``apply`` is that function, so code elsewhere that
imports ``Fn`` or ``Fn.apply`` keeps working. In the same file, ``Fn.apply`` becomes a direct
call of the function. The three runtime helpers are inserted once, after the imports.
Everything else is left byte for byte as it was.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field

import libcst as cst
from libcst.metadata import MetadataWrapper, ScopeProvider

from fgirewrite import codegen, discover
from fgirewrite.extract import PROTOCOL, extract
from fgirewrite.extract.symbolic import dotted
from fgirewrite.surrogate import Skip, Surrogate


class SourceError(Exception):
    """A file that cannot be read as Python: a one-line reason."""


@dataclass
class Rewrite:
    """What fgirewrite found in one source, and the rewritten source if anything changed."""

    path: str
    source: bytes
    findings: list[Surrogate | Skip] = field(default_factory=list)
    new_source: bytes | None = None
    names: dict[str, str] = field(default_factory=dict)  # surrogate -> generated function

    @property
    def surrogates(self) -> list[Surrogate]:
        return [f for f in self.findings if isinstance(f, Surrogate)]

    @property
    def skipped(self) -> list[Skip]:
        return [f for f in self.findings if isinstance(f, Skip)]

    @property
    def changed(self) -> bool:
        return self.new_source is not None and self.new_source != self.source


def decode(data: bytes, path: str) -> str:
    """Source text, honouring a BOM or coding cookie; SourceError if it cannot be decoded."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding)
    except (SyntaxError, UnicodeDecodeError, LookupError) as exc:
        raise SourceError(f"cannot decode: {exc}") from None


def analyse(data: bytes, path: str) -> tuple[Rewrite, discover.ModuleInfo | None]:
    """Find and extract every Function subclass; no libcst parse of the whole file."""
    result = Rewrite(path, data)
    if not discover.may_define_function(data):
        return result, None
    text = decode(data, path)
    try:
        tree = ast.parse(data, filename=path)
    except SyntaxError as exc:
        where = f" at line {exc.lineno}" if exc.lineno else ""  # null bytes: no line
        raise SourceError(f"syntax error{where}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise SourceError(f"cannot parse: {exc}") from None
    info = discover.module_info(text, tree)
    for site in discover.find_classes(tree, info.imports):
        result.findings.append(extract(site, info, path))
    if result.surrogates:  # every word of the file is taken, comments included: conservative
        taken = set(_IDENTIFIER.findall(text))
        for s in result.surrogates:
            result.names[s.name] = _fresh(_snake(s.name.split(".")[-1]), taken)
    return result, info


def rewrite_source(
    data: bytes, path: str = "<string>", refused: dict[str, str] | None = None
) -> Rewrite:
    """Rewrite every understood surrogate in a module's source.

    ``refused`` maps surrogates that must stay untouched (they failed verification) to why.
    """
    result, info = analyse(data, path)
    for name, why in (refused or {}).items():
        result.findings = [
            Skip(f.name, f.location, "verification-failed", why)
            if isinstance(f, Surrogate) and f.name == name
            else f
            for f in result.findings
        ]
    if not result.surrogates:
        return result
    assert info is not None
    try:
        module = cst.parse_module(data)
    except (cst.ParserSyntaxError, cst.CSTValidationError) as exc:
        message = str(getattr(exc, "message", None) or exc).splitlines()[0]
        raise SourceError(f"libcst cannot parse: {message}") from None
    if module.bytes != data:  # libcst 1.0 drops a trailing bare \r, for one
        raise SourceError("libcst does not reproduce this file byte for byte; left as it is")
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    transformer = _Rewriter(result, wrapper.resolve(ScopeProvider), info)
    new = _insert_runtime(wrapper.module.visit(transformer), info)
    result.new_source = new.bytes
    try:
        ast.parse(result.new_source)
    except SyntaxError as exc:  # never write what does not parse
        raise SourceError(f"internal error: the rewrite does not parse ({exc.msg})") from None
    return result


_IDENTIFIER = re.compile(r"[^\W\d]\w*")


def _snake(name: str) -> str:
    """``FastSigmoid`` -> ``fast_sigmoid``; a private ``_Spike`` stays private: ``_spike``."""
    private = "_" if name.startswith("_") else ""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name.strip("_"))
    return private + (name.lower() or "surrogate")


def _fresh(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken or not name.isidentifier():
        name, i = (f"{base}_fgi" if i == 1 else f"{base}_fgi_{i}"), i + 1
    taken.add(name)
    return name


def _identifiers(module: cst.CSTNode) -> set[str]:
    found: set[str] = set()

    class V(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name) -> None:
            found.add(n.value)

    module.visit(V())
    return found


class _Rewriter(cst.CSTTransformer):
    """Replaces understood classes and their ``.apply`` uses in the same scope."""

    def __init__(self, result: Rewrite, scopes, info: discover.ModuleInfo):
        self.result = result
        self.scopes = scopes
        self.by_site = {(s.name, _occurrence(result, s)): s for s in result.surrogates}
        self.path: list[str] = []
        self.seen: dict[str, int] = {}
        self.apply_refs: dict[int, str] = {}  # id(Name node) -> function name
        self.info = info

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.path.append(node.name.value)
        qualname = ".".join(self.path)
        occurrence = self.seen.get(qualname, 0)
        self.seen[qualname] = occurrence + 1
        surrogate = self.by_site.get((qualname, occurrence))
        if surrogate is not None and not self._nested_in_class():
            name = self.result.names[surrogate.name]
            for assignment in self.scopes[node].assignments[node.name.value]:
                if getattr(assignment, "node", None) is node:
                    for access in assignment.references:
                        self.apply_refs[id(access.node)] = name

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.path.extend([node.name.value, "<locals>"])

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef):
        del self.path[-2:]
        return updated

    def _nested_in_class(self) -> bool:
        return len(self.path) > 1 and self.path[-2] != "<locals>"

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute):
        if original.attr.value == "apply" and id(original.value) in self.apply_refs:
            return cst.Name(self.apply_refs[id(original.value)]).with_changes(
                lpar=updated.lpar, rpar=updated.rpar
            )
        return updated

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef):
        qualname = ".".join(self.path)
        nested = self._nested_in_class()
        self.path.pop()
        occurrence = self.seen[qualname] - 1
        surrogate = self.by_site.get((qualname, occurrence))
        if surrogate is None:
            return updated
        name = self.result.names[surrogate.name]
        source = codegen.function_source(surrogate, name)
        function = cst.parse_statement(source)
        assert isinstance(function, cst.FunctionDef)
        if nested:
            apply = function.with_changes(
                name=cst.Name("apply"),
                decorators=[cst.Decorator(cst.Name("staticmethod"))],
                leading_lines=[cst.EmptyLine(indent=False)],
            )
            return _shim(updated, apply, self.info)
        alias = cst.parse_statement(f"apply = staticmethod({name})\n").with_changes(
            leading_lines=[cst.EmptyLine(indent=False)]
        )
        blank = [cst.EmptyLine(indent=False)] * (2 if not self.path else 1)
        shim = _shim(updated, alias, self.info).with_changes(leading_lines=blank)
        function = function.with_changes(leading_lines=updated.leading_lines)
        return cst.FlattenSentinel([function, shim])


def _occurrence(result: Rewrite, s: Surrogate) -> int:
    """Which of several same-named classes (redefinitions) this surrogate is."""
    same = [f for f in result.findings if f.name == s.name]
    return same.index(s)


def _shim(
    classdef: cst.ClassDef, apply: cst.BaseStatement, info: discover.ModuleInfo
) -> cst.ClassDef:
    """The class stripped of its Function protocol, with ``apply`` added."""
    body = []
    for stmt in classdef.body.body:
        if isinstance(stmt, cst.FunctionDef) and stmt.name.value in PROTOCOL:
            continue
        if isinstance(stmt, cst.SimpleStatementLine) and any(
            isinstance(s, cst.Assign)
            and any(
                isinstance(t.target, cst.Name) and t.target.value == "generate_vmap_rule"
                for t in s.targets
            )
            for s in stmt.body
        ):
            continue
        body.append(stmt)
    if body and not _is_docstring(body[0]) or not body:
        body.insert(
            0,
            cst.parse_statement(
                '"""Kept for code that imports it; `apply` runs the FGI rewrite."""\n'
            ),
        )
    body.append(apply)
    bases = [b for b in classdef.bases if not _is_function_base(b, info)]
    if bases:
        bases[-1] = bases[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    changes: dict = {"body": classdef.body.with_changes(body=body), "bases": bases}
    if not bases and not classdef.keywords:
        changes.update(lpar=cst.MaybeSentinel.DEFAULT, rpar=cst.MaybeSentinel.DEFAULT)
    return classdef.with_changes(**changes)


def _is_function_base(arg: cst.Arg, info: discover.ModuleInfo) -> bool:
    name = dotted(arg.value)
    return name is not None and discover.qualify(name, info.imports) in discover.FUNCTION_BASES


def _is_docstring(stmt: cst.BaseStatement) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _insert_runtime(module: cst.Module, info: discover.ModuleInfo) -> cst.Module:
    """Put the runtime helpers after the imports that precede the first rewrite."""
    existing = {s.name.value for s in module.body if isinstance(s, cst.FunctionDef)}
    if set(codegen.RUNTIME_NAMES) <= existing:
        return module
    text = codegen.runtime_source()
    if info.imports.get("torch") != "torch":
        text = "import torch\n\n\n" + text
    helpers = list(cst.parse_module("\n\n" + text).body)
    helpers[0] = helpers[0].with_changes(
        leading_lines=[cst.EmptyLine(), cst.EmptyLine()] + list(helpers[0].leading_lines)[2:]
    )
    body = list(module.body)
    limit = next(
        (i for i, stmt in enumerate(body) if "_fgi_needs_grad" in _identifiers(stmt)), len(body)
    )
    index = 0
    for i, stmt in enumerate(body[:limit]):
        if _is_import(stmt) or (i == 0 and _is_docstring(stmt)):
            index = i + 1
    return module.with_changes(body=body[:index] + helpers + body[index:])


def _is_import(stmt: cst.BaseStatement) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(
        isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body
    )
