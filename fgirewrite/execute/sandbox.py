"""Evaluate a surrogate without running the file that defines it.

Only a slice of the module is executed: its imports, the top-level definitions and
assignments that the Function class (transitively) reads, and the class itself. A training
loop, a download or anything under ``if __name__ == "__main__":`` at the top level of the
file is never run. Imports do run the imported libraries' code.
"""

from __future__ import annotations

import ast
import io
import os
import sys
import traceback
from collections.abc import Collection, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import ModuleType

from fgirewrite.config import ConfigError, settings_for
from fgirewrite.discover import ClassSite, ModuleInfo
from fgirewrite.project import import_roots, not_found, package_of
from fgirewrite.source import first_line


class SandboxError(Exception):
    """The slice a surrogate needs cannot be evaluated."""


def _reads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _binds(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement binds in the module (not inside functions or classes)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}  # "*" for a star
    if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    if (configured := _configures(stmt)) is not None:
        return {configured}
    names: set[str] = set()
    for field in ("body", "orelse", "finalbody", "handlers"):
        for child in getattr(stmt, field, []):
            if isinstance(child, ast.ExceptHandler):
                names |= {n for c in child.body for n in _binds(c)}
            else:
                names |= _binds(child)
    return names


def _is_import_block(stmt: ast.stmt) -> bool:
    """An import, or a try/if whose bodies only import (optional dependencies)."""
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return True
    if isinstance(stmt, ast.Try):
        parts = stmt.body + stmt.orelse + [s for h in stmt.handlers for s in h.body]
        return all(_is_import_block(s) or isinstance(s, (ast.Pass, ast.Assign)) for s in parts)
    return False


def _closure(body: list[ast.stmt], needed: set[str]) -> set[int]:
    """Indices of the imports and definitions that ``needed`` names (transitively) require."""
    chosen: set[int] = set()
    changed = True
    while changed:
        changed = False
        for i, stmt in enumerate(body):
            binds = _binds(stmt)
            if (
                i not in chosen
                and (binds & needed or "*" in binds)  # a star import may bind any name
                and (_is_import_block(stmt) or _definition(stmt))
            ):
                chosen.add(i)
                needed |= _reads(stmt)
                changed = True
    return chosen


def _join(info: ModuleInfo, statements: list[ast.stmt], extra: list[tuple[int, str]]) -> str:
    """The statements' source in file order, each at its own line where room allows (so that
    errors point at the file's lines); ``extra`` holds (line, text) parts placed likewise."""
    parts = list(extra)
    for stmt in statements:
        text = info.segment(stmt.lineno, stmt.end_lineno or stmt.lineno)
        parts.append((-1 if _is_future(stmt) else stmt.lineno, text))
    out: list[str] = []
    line = 1
    for target, text in sorted(parts, key=lambda p: p[0]):
        if target > line:
            out.append("\n" * (target - line))
            line = target
        if not text.endswith(("\n", "\r")):
            text += "\n"
        out.append(text)
        line += len(text.splitlines())
    return "".join(out)


def slice_names(tree: ast.Module, info: ModuleInfo, names: set[str]) -> str:
    """Source of the imports and top-level definitions that ``names`` need, in file order."""
    body = [s for s in tree.body if not _is_main_guard(s)]
    chosen = _closure(body, set(names))
    return _join(info, [body[i] for i in sorted(chosen)], [])


def slice_source(
    tree: ast.Module,
    info: ModuleInfo,
    site: ClassSite,
    extra: set[str],
    first_line: int | None = None,
) -> str:
    """Source of the statements the class needs and of the class itself, in file order
    (from ``first_line`` on, when given: a rewritten class with its function before it)."""
    holder = next(s for s in tree.body if _contains_line(s, site.line))
    class_node = _find_class(holder, site)
    body = [s for s in tree.body if s is not holder and not _is_main_guard(s)]
    chosen = _closure(body, set(extra) | _reads(class_node))
    first = min([class_node.lineno] + [d.lineno for d in class_node.decorator_list])
    first = min(first, first_line or first)
    segment = info.segment(first, class_node.end_lineno or class_node.lineno)
    prefix = "".join(
        f"{name} = {value}\n" if name else f"{value}\n"
        for name, value in factory_bindings(holder, site)
    ) + ("if 1:\n" if class_node.col_offset else "")
    start = max(holder.lineno, first - prefix.count("\n"))
    return _join(info, [body[i] for i in sorted(chosen)], [(start, prefix + segment)])


TEST_CALLABLE = "__fgi_test_callable__"


def test_callable(*args):
    """Stands in for a callable the caller passes to a Function (a surrogate-gradient object):
    pure and elementwise in its first argument."""
    import torch

    return torch.exp(-args[0].abs())


def factory_bindings(holder: ast.stmt, site: ClassSite) -> list[tuple[str, str]]:
    """For a class made inside functions, what its closure reads, as (name, source): the
    enclosing functions' imports, their parameters' literal defaults, and a test callable for
    a parameter the class (or the FGI function written before it) calls. Verification uses
    these values."""
    found: list[tuple[str, str]] = []
    called = {
        n.func.id
        for n in ast.walk(holder)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and site.first_line <= n.lineno <= site.end_line
    }
    for node in ast.walk(holder):
        if not (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and _contains_line(node, site.line)
        ):
            continue
        for stmt in node.body:
            before = stmt.lineno < site.line and not _contains_line(stmt, site.line)
            if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef)) and before:
                found.append(("", ast.unparse(stmt)))  # imports, and helpers made in there
        args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
        defaults = dict(
            zip(
                reversed(node.args.posonlyargs + node.args.args),
                reversed(node.args.defaults),
                strict=False,
            )
        )
        defaults |= {
            a: d
            for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True)
            if d is not None
        }
        for arg in args:
            default = defaults.get(arg)
            try:
                if default is None:
                    raise ValueError
                ast.literal_eval(default)
                found.append((arg.arg, ast.unparse(default)))
            except ValueError:
                if arg.arg in called:
                    found.append((arg.arg, TEST_CALLABLE))
    return found


def unbound_arguments(holder: ast.stmt, site: ClassSite) -> dict[str, str]:
    """Arguments of the functions around a class that verification cannot give a value
    (no literal default, not called): argument -> function."""
    bound = {name for name, _ in factory_bindings(holder, site)}
    found = {}
    for node in ast.walk(holder):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _contains_line(
            node, site.line
        ):
            for arg in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
                if arg.arg not in bound:
                    found[arg.arg] = node.name
    return found


def _definition(stmt: ast.stmt) -> bool:
    """Statements that define names without doing work: defs, classes, plain assignments."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return True
    if isinstance(stmt, ast.If):
        return all(_definition(s) or _is_import_block(s) for s in stmt.body + stmt.orelse)
    return _configures(stmt) is not None


# A top-level call of one of these methods only configures the object it is called on (an
# ``argparse`` parser): it runs with the slice whenever that object does, so that
# ``args = parser.parse_args()`` has the arguments' defaults.
CONFIGURING = frozenset({"add_argument", "add_argument_group", "set_defaults"})


def _configures(stmt: ast.stmt) -> str | None:
    """The name a ``name.add_argument(...)`` statement configures, or None."""
    call = stmt.value if isinstance(stmt, ast.Expr) else None
    if (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr in CONFIGURING
        and isinstance(call.func.value, ast.Name)
    ):
        return call.func.value.id
    return None


def _is_future(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"


def _is_main_guard(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.If) and "__name__" in _reads(stmt.test)


def _contains_line(stmt: ast.stmt, line: int) -> bool:
    return stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno)


def _find_class(node: ast.AST, site: ClassSite) -> ast.ClassDef | ast.FunctionDef:
    """The class (or, for a site made for one, the function) defined at the site's line."""
    for child in ast.walk(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef)) and child.lineno == site.line:
            return child
    raise SandboxError(f"class {site.qualname} not found")


def evaluate(
    path: Path,
    source: str,
    tree: ast.Module,
    info: ModuleInfo,
    site: ClassSite,
    extra: Collection[str] = frozenset(),
    first_line: int | None = None,
    pythonpath: Sequence[Path] | None = None,
) -> dict:
    """Execute the slice a class needs; its namespace, with the class under its own name."""
    code = slice_source(tree, info, site, set(extra), first_line)
    holder = next(s for s in tree.body if _contains_line(s, site.line))
    unbound = unbound_arguments(holder, site)
    try:
        namespace = run_slice(path, code, f"what {site.qualname} needs", pythonpath)
    except SandboxError as exc:
        name = getattr(exc.__cause__, "name", None) if exc.__cause__ else None
        if name in unbound:
            raise SandboxError(unbound_message(name, unbound[name])) from None
        raise
    if site.name not in namespace:
        raise SandboxError(f"{site.qualname} was not defined by its own source")
    return namespace


def unbound_message(argument: str, function: str) -> str:
    """Why a factory's class cannot be verified alone, and the entry that verifies it."""
    return (
        f"`{argument}` is an argument of `{function}` without a literal default, so "
        "verification cannot give it a value: `--write --entry FILE:FUNCTION` verifies it "
        f"through the model, where FUNCTION returns (model, example_inputs) and the model is "
        f"built with `{function}`; or give `{argument}` a default"
    )


def evaluate_names(
    path: Path,
    tree: ast.Module,
    info: ModuleInfo,
    names: set[str],
    what: str,
    pythonpath: Sequence[Path] | None = None,
):
    """Execute the imports and top-level definitions that ``names`` need; the namespace."""
    return run_slice(path, slice_names(tree, info, names), what, pythonpath)


def run_slice(path: Path, code: str, what: str, pythonpath: Sequence[Path] | None = None) -> dict:
    """Execute source as the module at ``path`` would run: with its import roots
    (``project.import_roots``, then ``pythonpath``, by default its ``[tool.fgirewrite]``'s)
    first on sys.path. The project's own modules it imports are forgotten afterwards
    (``sys.modules``), so that another file's slice, with other roots, imports its own."""
    name, _ = package_of(path)
    if pythonpath is None:
        try:
            pythonpath = settings_for(path).pythonpath
        except ConfigError as exc:
            raise SandboxError(f"cannot read the settings for {what}: {exc}") from None
    roots = import_roots(path, pythonpath)
    package = name.rpartition(".")[0]
    module = ModuleType(name)
    module.__dict__.update(
        {
            "__name__": name,
            "__package__": package or None,
            "__file__": str(path),
            "__builtins__": __builtins__,
            TEST_CALLABLE: test_callable,
        }
    )
    added = [str(r) for r in roots if str(r) not in sys.path]
    sys.path[:0] = added
    loaded, argv = set(sys.modules), sys.argv
    sys.argv = [str(path)]  # as a script run without arguments: ``parse_args()`` sees none
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):  # ours, not its
            exec(compile(code, str(path), "exec", dont_inherit=True), module.__dict__)  # noqa: S102 - the slice only
    except (Exception, SystemExit) as exc:  # the slice itself failed: say what and where
        raise SandboxError(
            f"evaluating {what} failed: {_described(exc)}{advice(exc, roots)}"
        ) from exc
    finally:
        sys.argv = argv
        for root in added:
            sys.path.remove(root)
        forget(loaded, added)
    return module.__dict__


def forget(loaded: set[str], added: list[str]) -> None:
    """Drop from ``sys.modules`` the modules loaded since ``loaded`` from the folders in
    ``added`` (the project's own, found only through the import roots added for a slice)."""
    folders = tuple(os.path.join(folder, "") for folder in added)
    for name in set(sys.modules) - loaded:
        if name.split(".")[0] in loaded:  # a package Python found before: not the project's
            continue
        module = sys.modules.get(name)
        where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "")
        if str(where).startswith(folders):
            del sys.modules[name]


def advice(exc: BaseException, roots: Sequence[Path] = ()) -> str:
    """What to do when code cannot run here: a missing module (the folders searched, and the
    setting that adds one), CUDA, a relative import outside its package."""
    text = str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"; {not_found(exc.name, roots)}; or write with --no-verify"
    if isinstance(exc, ImportError) and "relative import" in text:
        return (
            "; a relative import outside its package: run fgirewrite where the file's "
            "package (its folders with __init__.py) is, or write with --no-verify"
        )
    if "CUDA" in text or "NVIDIA" in text or "cuda" in text:
        return (
            "; it needs CUDA (a `.cuda()` or a cuda device in its code): verify on a machine "
            "with a GPU, or write with --no-verify"
        )
    return ""


def _described(exc: BaseException) -> str:
    """The exception in one line, with the line of the file that raised it."""
    first = first_line(exc)
    line = next(
        (f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__)) if f.lineno),
        None,
    )
    return f"{type(exc).__name__}: {first}" + (f" (line {line})" if line else "")
