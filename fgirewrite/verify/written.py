"""Verify what is written: the rewritten module, through the names its callers reach.

For each rewritten surrogate, the slice of the *rewritten* source that its names need is
executed exactly as ``--write`` would leave it (its helpers, its imports, every later
rebinding of the class's name), and each name a caller can reach in it is compared with the
same name in the original module: ``Cls.apply``, module-level aliases (``spike =
Cls.apply``, ``Fn = Cls``) and the function that the rewritten call sites call. A second run
of the rewriter on the rewritten source must change nothing.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import sys
import types
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fgirewrite import discover
from fgirewrite.execute.sandbox import (
    TEST_CALLABLE,
    SandboxError,
    evaluate,
    evaluate_names,
    factory_bindings,
    unbound_arguments,
    unbound_message,
)
from fgirewrite.project import package_of
from fgirewrite.rewrite import Rewrite, rewrite_source
from fgirewrite.surrogate import Surrogate, key
from fgirewrite.verify.pair import SurrogateReport, verify_pair


@dataclass(frozen=True)
class Module:
    """One side (original or rewritten) of a file: its text, tree and module facts."""

    path: Path
    text: str
    tree: ast.Module
    info: discover.ModuleInfo
    pythonpath: tuple[Path, ...] | None = None  # import roots beyond the project's own

    @classmethod
    def of(cls, data: bytes, path: Path, pythonpath: Sequence[Path] | None = None) -> Module:
        parsed = discover.parse(data, str(path))
        extra = None if pythonpath is None else tuple(pythonpath)
        return cls(path, parsed.text, parsed.tree, parsed.info, extra)


@dataclass(frozen=True)
class Target:
    """A way callers reach a surrogate: how it is spelled in each module."""

    label: str
    original: str
    rewritten: str


@dataclass
class Pair:
    """A surrogate's original and rewritten callables, the way callers reach them."""

    reached: list[tuple[str, Callable, Callable]]
    call_args: list[object] | None
    closure: dict[str, str]
    unbound: dict[str, str] = field(default_factory=dict)  # factory argument -> function


def _path_of(qualname: str) -> str | None:
    """``Outer.Inner`` for a class reachable from the module's top level, else None."""
    return None if "<locals>" in qualname else qualname


def aliases(tree: ast.Module, path: str) -> list[Target]:
    """Module-level names bound to the class or its ``apply`` (``spike = Cls.apply``)."""
    found = []
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
            continue
        target, value = stmt.targets[0], discover.dotted(stmt.value)
        if not isinstance(target, ast.Name) or value is None:
            continue
        if value == f"{path}.apply":
            found.append(Target(target.id, target.id, target.id))
        elif value == path:
            found.append(Target(f"{target.id}.apply", f"{target.id}.apply", f"{target.id}.apply"))
    return found


def targets(original: Module, surrogate: Surrogate) -> list[Target]:
    """Every name the module's callers can reach the surrogate by."""
    path = _path_of(surrogate.name)
    assert path is not None
    return [Target(f"{path}.apply", f"{path}.apply", f"{path}.apply")] + aliases(
        original.tree, path
    )


def _resolve(namespace: dict, expression: str):
    value = eval(expression, dict(namespace))  # noqa: S307 - a dotted name of the module
    return getattr(value, "__func__", value) if isinstance(value, staticmethod) else value


def _identity(value: Any) -> tuple:
    """Bound methods are made afresh on each access: compare what they bind."""
    bound = getattr(value, "__self__", None)
    return (id(bound), id(value.__func__)) if bound is not None else (id(value),)


def pair(original: Module, written: Module, surrogate: Surrogate, function: str) -> Pair:
    """Execute both modules' slices and resolve every reached name in each."""
    site = _site(original.tree, original.info, surrogate)
    call_args = call_site_arguments(original.tree, site.name)
    if _path_of(surrogate.name) is None:
        return _factory_pair(original, written, surrogate, site, call_args, function)
    reach = targets(original, surrogate)
    names = {t.original.split(".")[0] for t in reach}
    try:
        before = evaluate_names(
            original.path,
            original.tree,
            original.info,
            names,
            f"what {surrogate.name} needs",
            original.pythonpath,
        )
    except SandboxError as exc:
        raise CannotRun(str(exc)) from None
    after = evaluate_names(
        written.path,
        written.tree,
        written.info,
        names | {function},
        f"the rewritten module for {surrogate.name}",
        written.pythonpath,
    )
    reached, seen = [], set()
    for target in reach:
        try:
            old = _resolve(before, target.original)
        except Exception:  # noqa: BLE001 - the original does not bind it: not a reach name
            continue
        try:
            new = _resolve(after, target.rewritten)
        except Exception as exc:  # noqa: BLE001
            raise SandboxError(
                f"the rewritten module does not bind `{target.rewritten}`: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        key = (_identity(old), _identity(new))
        if key not in seen:
            seen.add(key)
            reached.append((target.label, old, new))
    if "." not in surrogate.name:  # the call sites now call the function: what they reached
        cls = _original(
            evaluate,
            original.path,
            original.text,
            original.tree,
            original.info,
            site,
            set(surrogate.free_names),
            None,
            original.pythonpath,
        )[site.name]  # the class statement's value, before any later rebinding of its name
        old, new = getattr(cls, "apply", None), after.get(function)
        if old is not None and new is not None and (_identity(old), _identity(new)) not in seen:
            reached.append((f"{function}() (the rewritten call sites)", old, new))
    if not reached:
        raise SandboxError(f"no name of the module reaches {surrogate.name}; nothing to compare")
    return Pair(reached, call_args, {})


def _factory_pair(
    original: Module,
    written: Module,
    surrogate: Surrogate,
    site: discover.ClassSite,
    call_args: list[object] | None,
    function: str,
) -> Pair:
    """A class made inside a function: the class statement alone on each side (with the
    function's imports and literal defaults), the rewritten one with its FGI function (or
    that function alone, where nothing but the class's ``apply`` was used)."""
    before = _original(
        evaluate,
        original.path,
        original.text,
        original.tree,
        original.info,
        site,
        set(surrogate.free_names),
        None,
        original.pythonpath,
    )
    cls = before[site.name]
    shim, function_line = _rewritten_site(written.tree, site, function)
    names = [*written.info.functions, *written.info.classes, *written.info.imports]
    extra = set(surrogate.free_names) | {n for n in names if n.startswith(_RUNTIME)}
    after = evaluate(
        written.path,
        written.text,
        written.tree,
        written.info,
        shim,
        extra,
        function_line,
        written.pythonpath,
    )
    holder = next(s for s in original.tree.body if s.lineno <= site.line <= (s.end_lineno or 0))
    closure = {
        k: "a test callable, exp(-|first argument|)"
        if v == TEST_CALLABLE
        else f"{v} (default of the enclosing function)"
        for k, v in factory_bindings(holder, site)
        if k
    }
    old = getattr(cls, "__func__", cls).apply
    new = after[shim.name]
    new = getattr(new, "__func__", new).apply if shim.name != function else new
    unbound = unbound_arguments(holder, site)
    return Pair([(f"{site.qualname}.apply", old, new)], call_args, closure, unbound)


_RUNTIME = ("_fgi_", "_FGI")  # the runtime helpers, under any name the rewrite gave them


class CannotRun(SandboxError):
    """The original module's slice cannot run here: nothing can be verified."""


def _original(evaluate_: Callable, *args):
    try:
        return evaluate_(*args)
    except SandboxError as exc:
        raise CannotRun(str(exc)) from None


def _site(tree: ast.Module, info: discover.ModuleInfo, s: Surrogate) -> discover.ClassSite:
    return next(
        c
        for c in discover.find_classes(tree, info.imports)
        if (c.qualname, c.line) == (s.name, s.location.line)
    )


def _rewritten_site(
    tree: ast.Module, site: discover.ClassSite, function: str
) -> tuple[discover.ClassSite, int]:
    """The rewritten class at the original's qualified name and occurrence, and the line of
    the FGI function written just before it; for a local class that is gone (only its
    ``apply`` was used), the FGI function written in its place."""
    scope = site.qualname.rpartition(".")[0]
    for found in discover.class_statements(tree):
        if (found.qualname, found.occurrence) == (site.qualname, site.occurrence):
            node = found.node
            i = next(i for i, stmt in enumerate(found.block) if stmt is node)
            before = found.block[i - 1] if i else node
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return replace(
                site,
                line=node.lineno,
                first_line=min(first, before.lineno),
                end_line=node.end_lineno or 0,
            ), before.lineno
    for node in _functions_in(tree.body, ""):
        if node[0] == f"{scope}.{function}":
            defined = node[1]
            where = replace(
                site,
                name=function,
                qualname=node[0],
                line=defined.lineno,
                first_line=defined.lineno,
                end_line=defined.end_lineno or defined.lineno,
            )
            return where, defined.lineno
    raise SandboxError(f"the rewritten module has no class {site.qualname}")


def _functions_in(body: list[ast.stmt], prefix: str):
    """(qualified name, node) of every function, classes' and functions' own included."""
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{stmt.name}"
            yield name, stmt
            yield from _functions_in(stmt.body, f"{name}.<locals>.")
        elif isinstance(stmt, ast.ClassDef):
            yield from _functions_in(stmt.body, f"{prefix}{stmt.name}.")


def call_site_arguments(tree: ast.Module, class_name: str) -> list[object] | None:
    """Literal arguments of the first ``Class.apply(...)`` call in the file, if any."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "apply"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == class_name
            and len(node.args) > 1
        ):
            try:
                return [None] + [ast.literal_eval(a) for a in node.args[1:]]
            except ValueError:
                continue
    return None


def instability(rewrite: Rewrite, imposed: Collection[str] = ()) -> str | None:
    """Why a second run on the rewritten source would change it, or None. A class the first
    run left alone because verification refused it is proposed again by a static run: that
    is the same verdict, not a change, and so are the classes that refusal holds back. So is
    a class named in ``imposed``: left alone for what other files do with it."""
    assert rewrite.new_source is not None
    refused = {
        f.name for f in rewrite.skipped if f.code in ("verification-failed", "cannot-verify")
    } | set(imposed)
    again = rewrite_source(rewrite.new_source, rewrite.path)
    if refused:  # the same verdicts again, by name (lines moved); what they hold back stays too
        same = {key(s): ("verification-failed", "") for s in again.surrogates if s.name in refused}
        again = rewrite_source(rewrite.new_source, rewrite.path, same)
    new = [s.name for s in again.surrogates]
    if new or again.changed:
        what = ", ".join(new) or "the helpers"
        return f"a second run would rewrite it again ({what}); left as it is"
    return None


@contextlib.contextmanager
def helpers_importable(rewrite: Rewrite, path: Path) -> Iterator[None]:
    """The package's helper module, as it will be written, importable by the rewritten file
    (it may not exist on disk yet, or hold an older text)."""
    if rewrite.helper_module is None:
        yield
        return
    from fgirewrite.rewrite.helpers import module_source

    package = package_of(path)[0].rpartition(".")[0]
    name = importlib.util.resolve_name(rewrite.helper_module, package)
    module = types.ModuleType(name)
    exec(compile(module_source(True), name, "exec"), module.__dict__)  # noqa: S102 - ours
    saved = sys.modules.get(name)
    sys.modules[name] = module
    try:
        yield
    finally:
        if saved is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = saved


def verify_rewrite(
    rewrite: Rewrite, path: Path | None = None, pythonpath: Sequence[Path] | None = None
) -> list[SurrogateReport]:
    """Verify every rewritten surrogate of a file through the module as it will be written,
    with the file's import roots (``project.import_roots``, then ``pythonpath``)."""
    path = Path(path or rewrite.path)
    if not rewrite.surrogates or rewrite.new_source is None:
        return []
    with helpers_importable(rewrite, path):
        return _verify_each(rewrite, path, pythonpath)


def _verify_each(
    rewrite: Rewrite, path: Path, pythonpath: Sequence[Path] | None
) -> list[SurrogateReport]:
    assert rewrite.new_source is not None
    original = Module.of(rewrite.source, path, pythonpath)
    written = Module.of(rewrite.new_source, path, pythonpath)
    reports = []
    for surrogate in rewrite.surrogates:
        function = rewrite.function(surrogate) or "rewritten"
        where = str(surrogate.location)
        try:
            found = pair(original, written, surrogate, function)
        except SandboxError as exc:
            unverifiable = isinstance(exc, CannotRun)
            report = SurrogateReport(
                surrogate.name, where, function, error=str(exc), unverifiable=unverifiable
            )
            reports.append(report)
            continue
        except Exception as exc:  # noqa: BLE001 - generated code that does not compile
            error = f"{type(exc).__name__}: {exc}"
            reports.append(SurrogateReport(surrogate.name, where, function, error=error))
            continue
        reports.append(_verified(surrogate, function, found))
    return reports


def _verified(surrogate: Surrogate, function: str, found: Pair) -> SurrogateReport:
    """The first reached name's full report; any other reached name must verify too."""
    (label, old, new), *others = found.reached
    report = verify_pair(old, new, surrogate, function, found.call_args)
    report = replace(report, arguments={**report.arguments, **found.closure}, reached=(label,))
    if report.cannot_run:
        notes = " ".join(n for c in report.checks for n in c.notes)
        for name, function in found.unbound.items():
            if f"name '{name}' is not defined" in notes:
                return replace(report, unverifiable=True, error=unbound_message(name, function))
    for other, old, new in others if report.ok else ():
        extra = verify_pair(old, new, surrogate, function, found.call_args)
        report = replace(report, reached=(*report.reached, other))
        if not extra.ok:
            return replace(report, error=f"through `{other}`: {extra.failures()[0]}")
    return report


def evaluate_surrogate(rewrite: Rewrite, surrogate: Surrogate, path: Path | None = None):
    """The original ``apply``, the rewritten module's, call-site arguments and closure
    defaults (for plots)."""
    path = Path(path or rewrite.path)
    assert rewrite.new_source is not None
    found = pair(
        Module.of(rewrite.source, path),
        Module.of(rewrite.new_source, path),
        surrogate,
        rewrite.function(surrogate) or "rewritten",
    )
    _, original, rewritten = found.reached[0]
    return original, rewritten, found.call_args, found.closure
