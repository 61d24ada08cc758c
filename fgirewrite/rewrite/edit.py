"""Source rewriting: a file's bytes in, the rewritten bytes and every finding out.

For each understood Function class the module gets the generated FGI function and, under the
class's own name, a plain shim class whose ``apply`` is that function, so code elsewhere that
imports ``Fn`` or ``Fn.apply`` keeps working. In the same file, ``Fn.apply`` becomes a direct
call of the function. The three runtime helpers are inserted once, after the imports.
Everything else is left byte for byte as it was.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import re
from dataclasses import dataclass

import libcst as cst
from libcst.metadata import MetadataWrapper, ScopeProvider

from fgirewrite import codegen, discover, skips
from fgirewrite.extract import extract
from fgirewrite.extract.values import dotted, is_docstring, names_in, walk
from fgirewrite.rewrite import helpers as helper_module
from fgirewrite.rewrite import uses
from fgirewrite.rewrite.result import Rewrite
from fgirewrite.source import SourceError, decode, first_line
from fgirewrite.surrogate import RUNTIME_NAMES, SHIM_BASE, Location, Skip, Surrogate, key


def analyse(data: bytes, path: str) -> tuple[Rewrite, discover.Parsed | None]:
    """Find and extract every Function subclass; no libcst parse of the whole file."""
    result = Rewrite(path, data)
    marked = skips.mentioned(data)
    if not discover.may_define_function(data):
        if marked:  # no Function class: every skip comment is unused
            try:
                found = skips.comments(decode(data, path))
            except SourceError:
                found = {}
            result.unused_skips = [Location(path, *at) for at in sorted(found.items())]
        return result, None
    module = discover.parse(data, path)
    marks = skips.marks(module.tree, module.sites, skips.comments(module.text) if marked else {})
    result.left_alone = marks.classes
    result.unused_skips = [Location(path, *at) for at in marks.unused]
    result.findings = [
        Skip(site.qualname, Location(path, site.line, site.column), "excluded", why)
        if (why := marks.reason(site)) is not None
        else extract(site, module.info, path)
        for site in module.sites
    ]
    _refuse_reliance(result, module.tree, module.info, module.sites)
    if result.surrogates:  # every word of the file is taken, comments included: conservative
        # Builtins too: ``def round`` would shadow ``round`` for a module that star-imports it.
        taken = set(_IDENTIFIER.findall(module.text)) | _RESERVED
        scopes = {key(f): site.scope for site, f in zip(module.sites, result.findings, strict=True)}
        for s in result.surrogates:
            name = result.names[key(s)] = _fresh(_snake(s.name.split(".")[-1]), taken)
            # a class nested in a class keeps its code in ``apply``
            result.written[key(s)] = (
                f"{s.name}.apply()" if scopes[key(s)] == "class" else f"{name}()"
            )
    return result, module


def _refuse_reliance(
    result: Rewrite, tree: ast.Module, info: discover.ModuleInfo, sites: list[discover.ClassSite]
) -> None:
    """Leave alone every class the module relies on being a Function (to a fixed point: a
    class left alone keeps its Function bases), and all of them if ``torch`` is taken."""
    if not result.surrogates:  # the scans below walk the whole tree: most files need none
        return
    conflict = uses.torch_conflict(tree)
    if conflict is not None:
        why = f"the module binds `torch` to something else (line {conflict}); the rewrite needs it"
        result.findings = [
            Skip(f.name, f.location, "name-collision", why) if isinstance(f, Surrogate) else f
            for f in result.findings
        ]
        return
    nodes = list(ast.walk(tree))
    scopes = info.scopes
    tested = uses.introspection(nodes, info.imports, scopes)
    changed = True
    while changed:
        changed = False
        kept = {s.name for s, f in zip(sites, result.findings, strict=True) if isinstance(f, Skip)}
        for i, (site, finding) in enumerate(zip(sites, result.findings, strict=True)):
            if isinstance(finding, Surrogate):
                found = uses.reliance(tree, nodes, site, kept, scopes) or tested
                if found is not None:
                    result.findings[i] = Skip(
                        finding.name, finding.location, "relies-on-function", found.message
                    )
                    changed = True


def rewrite_source(
    data: bytes,
    path: str = "<string>",
    refused: dict[str, tuple[str, str]] | None = None,
    *,
    helpers: str | None = None,
    guard: bool = True,
    annotate: bool = False,
    target: tuple[int, int] | None = None,
) -> Rewrite:
    """Rewrite every understood surrogate in a module's source.

    ``refused`` maps the ``key`` of each surrogate that must stay untouched (verification
    failed, or could not run) to a reason code and why. ``helpers`` is the relative module
    the file imports the runtime helpers from (``rewrite.helpers.placement``); without it
    they are written into the file. ``guard``: a subclass of a module-level class may exist
    in a module fgirewrite does not see, so rewritten classes get the base that refuses one.
    ``annotate`` types literal defaults of generated functions, for TorchScript. ``target``
    is the oldest Python the project runs on: a file whose grammar it accepts must still
    parse with it once rewritten.
    """
    result, parsed = analyse(data, path)
    for name, (code, why) in (refused or {}).items():
        result.findings = [
            Skip(f.name, f.location, code, why)
            if isinstance(f, Surrogate) and key(f) == name
            else f
            for f in result.findings
        ]
    if refused and parsed is not None:  # a class refused now may hold its subclasses back
        _refuse_reliance(result, parsed.tree, parsed.info, parsed.sites)
    if not result.surrogates:
        return result
    assert parsed is not None
    try:
        module = cst.parse_module(data)
    except (cst.ParserSyntaxError, cst.CSTValidationError) as exc:
        raise SourceError(f"libcst cannot parse: {first_line(exc)}") from None
    if module.bytes != data:  # libcst 1.0 drops a trailing bare \r, for one
        raise SourceError("libcst does not reproduce this file byte for byte; left as it is")
    result.helper_module = helpers
    result.helpers, insert = _runtime_names(parsed.text, parsed.tree, helpers)
    occurrences = {  # the findings stand in the order of the sites
        key(f): site.occurrence for site, f in zip(parsed.sites, result.findings, strict=True)
    }
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    transformer = _Rewriter(
        result, wrapper.resolve(ScopeProvider), parsed.info, occurrences, guard, annotate
    )
    rewritten = wrapper.module.visit(transformer)
    result.guarded = transformer.guarded
    needed = set(RUNTIME_NAMES) | ({SHIM_BASE} if transformer.guarded else set())
    insert = [h for h in insert if h in needed]
    new = _insert_runtime(rewritten, parsed.tree, result.helpers, insert, helpers)
    result.new_source = new.bytes
    try:
        ast.parse(result.new_source)
    except SyntaxError as exc:  # never write what does not parse
        raise SourceError(f"internal error: the rewrite does not parse ({exc.msg})") from None
    if target is not None and _parses(data, target) and not _parses(result.new_source, target):
        raise SourceError(
            f"internal error: the rewrite needs a newer Python than target-version "
            f"py{target[0]}{target[1]}; left as it is"
        )
    return result


def _parses(data: bytes, version: tuple[int, int]) -> bool:
    try:
        ast.parse(data, feature_version=version)
    except SyntaxError:
        return False
    return True


_IDENTIFIER = re.compile(r"[^\W\d]\w*")


def _snake(name: str) -> str:
    """``FastSigmoid`` -> ``fast_sigmoid``; a private ``_Spike`` stays private: ``_spike``."""
    private = "_" if name.startswith("_") else ""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name.strip("_"))
    return private + (name.lower() or "surrogate")


_RESERVED = frozenset(dir(builtins)) | frozenset(keyword.kwlist)


def _fresh(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken or not name.isidentifier():
        name, i = (f"{base}_fgi" if i == 1 else f"{base}_fgi_{i}"), i + 1
    taken.add(name)
    return name


class _Rewriter(cst.CSTTransformer):
    """Replaces understood classes and their ``.apply`` uses in the same scope."""

    def __init__(
        self,
        result: Rewrite,
        scopes,
        info: discover.ModuleInfo,
        occurrences: dict[str, int],
        guard: bool,
        annotate: bool,
    ):
        self.result = result
        self.scopes = scopes
        self.by_site = {(s.name, occurrences[key(s)]): s for s in result.surrogates}
        self.path: list[str] = []
        self.occurrences = discover.Occurrences()
        self.found: list[Surrogate | None] = []  # the surrogate of each class being visited
        self.dead: list[bool] = []  # each class being visited: local, and only its apply used
        self.marked: list[bool] = []  # each class being visited: a skip comment marks it
        self.apply_refs: dict[int, str] = {}  # id(Name node) -> function name
        self.applied: set[int] = set()  # id(Name node) of every ``Name.apply``
        self.info = info
        self.guard = guard
        self.guarded = False
        self.annotate = annotate
        kept = {f.name.split(".")[-1] for f in result.skipped}
        self.bases = _Bases(info, kept, result.helpers[SHIM_BASE])

    def visit_Module(self, node: cst.Module) -> None:
        self.applied = {
            id(n.value)
            for n in walk(node)
            if isinstance(n, cst.Attribute) and n.attr.value == "apply"
        }

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.path.append(node.name.value)
        qualname = ".".join(self.path)
        occurrence = self.occurrences(qualname)
        surrogate = self.by_site.get((qualname, occurrence))
        self.found.append(surrogate)
        dead = surrogate is not None and "<locals>" in self.path and not node.decorators
        self.marked.append((qualname, occurrence) in self.result.left_alone)
        if surrogate is not None and not self._nested_in_class():
            name = self.result.names[key(surrogate)]
            for assignment in self.scopes[node].assignments[node.name.value]:
                if getattr(assignment, "node", None) is node:
                    for access in assignment.references:
                        if len(access.referents) == 1:  # only this class: never a rebinding
                            self.apply_refs[id(access.node)] = name
                        if len(access.referents) != 1 or id(access.node) not in self.applied:
                            dead = False
        self.dead.append(dead)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.path.extend([node.name.value, "<locals>"])

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef):
        del self.path[-2:]
        return updated

    def _nested_in_class(self) -> bool:
        return len(self.path) > 1 and self.path[-2] != "<locals>"

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute):
        if (
            original.attr.value == "apply"
            and id(original.value) in self.apply_refs
            and not any(self.marked)  # a class a skip comment marks is left as it is
        ):
            return cst.Name(self.apply_refs[id(original.value)]).with_changes(
                lpar=updated.lpar, rpar=updated.rpar
            )
        return updated

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef):
        nested = self._nested_in_class()
        local = "<locals>" in self.path
        self.path.pop()
        self.marked.pop()
        surrogate, dead = self.found.pop(), self.dead.pop()
        if surrogate is None:
            return updated
        name = self.result.names[key(surrogate)]
        source = codegen.function_source(
            surrogate, name, self.result.helpers, annotate=self.annotate
        )
        function = cst.parse_statement(source)
        assert isinstance(function, cst.FunctionDef)
        guard = self.guard or local  # a local class that is kept may be returned
        if nested:
            apply = function.with_changes(
                name=cst.Name("apply"), decorators=[cst.Decorator(cst.Name("staticmethod"))]
            )
            return self._shim(updated, apply, guard)
        function = function.with_changes(leading_lines=updated.leading_lines)
        if dead:  # nothing but its ``apply`` was used, and that now calls the function
            return function
        alias = cst.parse_statement(f"apply = staticmethod({name})\n")
        blank = [cst.EmptyLine(indent=False)] * (2 if not self.path else 1)
        shim = self._shim(updated, alias, guard).with_changes(leading_lines=blank)
        return cst.FlattenSentinel([function, shim])

    def _shim(self, classdef: cst.ClassDef, apply: cst.BaseStatement, guard: bool):
        self.guarded |= guard
        return _shim(classdef, apply, self.bases, guard)


@dataclass(frozen=True)
class _Bases:
    """What a rewritten class's bases become: Function bases (torch's, and the module's own
    classes that stay Functions) are dropped, and the shim base is added."""

    info: discover.ModuleInfo
    kept: set[str]  # the module's Function classes left as they are
    shim: str  # the name of the runtime's shim base in this file

    def keep(self, arg: cst.Arg) -> bool:
        name = dotted(arg.value)
        if name is None:
            return True
        head, _, rest = name.partition(".")
        scopes = self.info.scopes  # what the module binds the name to, not a function's import
        imported = scopes.imported(head, scopes.module)
        qualified = imported + ("." + rest if rest else "") if imported else name
        return qualified not in discover.FUNCTION_BASES and name not in self.kept


def _shim(
    classdef: cst.ClassDef, apply: cst.BaseStatement, bases: _Bases, guard: bool
) -> cst.ClassDef:
    """The class stripped of its Function protocol, with ``apply`` added (and the guard base
    that refuses a subclass overriding the protocol, where one may exist unseen)."""
    body = []
    for stmt in classdef.body.body:
        if isinstance(stmt, cst.FunctionDef) and stmt.name.value in discover.PROTOCOL:
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
    apply = apply.with_changes(leading_lines=[cst.EmptyLine(indent=False)] if body else [])
    body.append(apply)
    kept = [b for b in classdef.bases if bases.keep(b)]
    if guard:
        kept.append(cst.Arg(cst.Name(bases.shim)))
    kept = [b.with_changes(comma=cst.MaybeSentinel.DEFAULT) for b in kept]
    kept = [
        b.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        if i < len(kept) - 1
        else b
        for i, b in enumerate(kept)
    ]
    parens = {} if kept else {"lpar": cst.MaybeSentinel.DEFAULT, "rpar": cst.MaybeSentinel.DEFAULT}
    return classdef.with_changes(body=classdef.body.with_changes(body=body), bases=kept, **parens)


def _runtime_names(
    text: str, tree: ast.Module, spec: str | None
) -> tuple[dict[str, str], list[str]]:
    """The name each runtime helper has in this file, and the helpers to add.

    A helper the file already defines exactly (or, with ``spec``, imports from the helper
    module) is reused; a name the file uses for anything else is left to it, and the helper
    gets the next free name."""
    taken = set(_IDENTIFIER.findall(text))
    imported: dict[str, str] = {}
    sources: dict[str, str] = {}
    if spec is not None:
        imported = helper_module.imported_helpers(tree, spec)
    else:
        lines = text.replace("\r\n", "\n").replace("\r", "\n").splitlines(keepends=True)
        sources = {
            n.name: "".join(
                lines[min([n.lineno] + [d.lineno for d in n.decorator_list]) - 1 : n.end_lineno]
            )
            for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef))
        }
    names: dict[str, str] = {}
    insert: list[str] = []
    for helper, source in codegen.runtime_sources().items():
        if spec is not None and helper in imported:
            names[helper] = imported[helper]
            continue
        for i in range(len(taken) + 1):
            name = helper if i == 0 else f"{helper}_{i}"
            if spec is None and sources.get(name) == codegen.renamed(source, helper, name):
                names[helper] = name
                break
            if name not in taken:
                insert.append(helper)
                names[helper] = name
                break
    return names, insert


def _insert_runtime(
    module: cst.Module,
    tree: ast.Module,
    names: dict[str, str],
    insert: list[str],
    spec: str | None,
) -> cst.Module:
    """Put the runtime helpers the file lacks (their definitions, or an import of them from
    ``spec``) after its leading imports, with ``import torch`` unless the module has it."""
    if not insert:
        return module
    if spec is None:
        sources = codegen.runtime_sources()
        text = "\n\n".join(codegen.renamed(sources[h], h, names[h]) for h in insert)
    else:
        aliases = ", ".join(h if names[h] == h else f"{h} as {names[h]}" for h in sorted(insert))
        text = f"from {spec} import {aliases}\n"
    body = list(module.body)
    used = set(names.values())
    limit = next((i for i, stmt in enumerate(body) if used & names_in(stmt)), len(body))
    index = 0
    for i, stmt in enumerate(body[:limit]):
        if _is_import_block(stmt) or (i == 0 and is_docstring(stmt)):
            index = i + 1
    first_line = tree.body[index].lineno if index < len(tree.body) else 10**9
    if not uses.torch_imported(tree, first_line):
        text = "import torch\n" + ("\n\n" if spec is None else "") + text
    helpers = list(cst.parse_module("\n\n" + text).body)
    spacing = [cst.EmptyLine(), cst.EmptyLine()] if spec is None else []
    if spec is not None and index == 0:
        spacing = []
    elif spec is not None:
        spacing = [] if _is_import_block(body[index - 1]) else [cst.EmptyLine()]
    helpers[0] = helpers[0].with_changes(leading_lines=spacing + list(helpers[0].leading_lines)[2:])
    return module.with_changes(body=body[:index] + helpers + body[index:])


def _is_import_block(stmt: cst.BaseStatement) -> bool:
    """An import, or a try/if block whose statements only import (or assign, as fallbacks)."""
    if _is_import(stmt):
        return True
    if isinstance(stmt, (cst.Try, cst.If)):
        blocks = [stmt.body.body]
        if isinstance(stmt, cst.Try):
            blocks += [h.body.body for h in stmt.handlers]
            blocks += [b.body.body for b in (stmt.orelse, stmt.finalbody) if b is not None]
        elif stmt.orelse is not None:
            return False
        return all(
            _is_import(s)
            or (
                isinstance(s, cst.SimpleStatementLine)
                and all(isinstance(x, (cst.Assign, cst.Pass)) for x in s.body)
            )
            for block in blocks
            for s in block
        ) and any(_is_import(s) for s in stmt.body.body)
    return False


def _is_import(stmt: cst.BaseStatement | cst.BaseSmallStatement) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(
        isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body
    )
