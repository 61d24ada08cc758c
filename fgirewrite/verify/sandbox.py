"""Evaluate a surrogate without running the file that defines it.

Only a slice of the module is executed: its imports, the top-level definitions and
assignments that the Function class (transitively) reads, and the class itself. A training
loop, a download or anything under ``if __name__ == "__main__":`` at the top level of the
file is never run. Imports do run the imported libraries' code.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from types import ModuleType

from fgirewrite.discover import ClassSite, ModuleInfo


class SandboxError(Exception):
    """The slice a surrogate needs cannot be evaluated."""


def _reads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _binds(stmt: ast.stmt) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(stmt):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


def _is_import_block(stmt: ast.stmt) -> bool:
    """An import, or a try/if whose bodies only import (optional dependencies)."""
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return True
    if isinstance(stmt, ast.Try):
        parts = stmt.body + stmt.orelse + [s for h in stmt.handlers for s in h.body]
        return all(_is_import_block(s) or isinstance(s, (ast.Pass, ast.Assign)) for s in parts)
    return False


def module_name(path: Path) -> tuple[str, Path]:
    """The dotted module name of a file, and the directory its top package lives in."""
    path = path.resolve()
    parts = [path.stem]
    parent = path.parent
    while (parent / "__init__.py").exists():
        parts.append(parent.name)
        parent = parent.parent
    return ".".join(reversed(parts)), parent


def slice_source(tree: ast.Module, info: ModuleInfo, site: ClassSite, extra: set[str]) -> str:
    """Source of the statements the class needs, in file order, then the class itself."""
    body = [s for s in tree.body if not _contains_line(s, site.line)]
    needed = set(extra)
    holder = next(s for s in tree.body if _contains_line(s, site.line))
    class_node = _find_class(holder, site)
    needed |= _reads(class_node)
    chosen: set[int] = set()
    changed = True
    while changed:
        changed = False
        for i, stmt in enumerate(body):
            if i in chosen:
                continue
            if _is_main_guard(stmt):
                continue
            if _is_import_block(stmt) or (_binds(stmt) & needed and _definition(stmt)):
                chosen.add(i)
                needed |= _reads(stmt)
                changed = True
    parts = [
        info.segment(body[i].lineno, body[i].end_lineno or body[i].lineno)
        for i in sorted(chosen)
        if not _is_future(body[i])
    ]
    futures = [info.segment(s.lineno, s.end_lineno or s.lineno) for s in body if _is_future(s)]
    first = min([class_node.lineno] + [d.lineno for d in class_node.decorator_list])
    segment = info.segment(first, class_node.end_lineno or class_node.lineno)
    if class_node.col_offset:
        segment = "if 1:\n" + segment
    return "".join(futures + parts) + segment


def _definition(stmt: ast.stmt) -> bool:
    """Statements that define names without doing work: defs, classes, plain assignments."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return True
    if isinstance(stmt, ast.If):
        return all(_definition(s) or _is_import_block(s) for s in stmt.body + stmt.orelse)
    return False


def _is_future(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"


def _is_main_guard(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.If) and "__name__" in _reads(stmt.test)


def _contains_line(stmt: ast.stmt, line: int) -> bool:
    return stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno)


def _find_class(node: ast.AST, site: ClassSite) -> ast.ClassDef:
    for child in ast.walk(node):
        if isinstance(child, ast.ClassDef) and child.lineno == site.line:
            return child
    raise SandboxError(f"class {site.qualname} not found")


def evaluate(
    path: Path,
    source: str,
    tree: ast.Module,
    info: ModuleInfo,
    site: ClassSite,
    extra: set[str] = frozenset(),
) -> dict:
    """Execute the slice a class needs; its namespace, with the class under its own name."""
    name, root = module_name(path)
    package = name.rpartition(".")[0]
    namespace: dict = {
        "__name__": f"{name}",
        "__package__": package or None,
        "__file__": str(path),
        "__builtins__": __builtins__,
    }
    code = slice_source(tree, info, site, set(extra))
    added = str(root) not in sys.path
    if added:
        sys.path.insert(0, str(root))
    module = ModuleType(name)
    module.__dict__.update(namespace)
    try:
        exec(compile(code, str(path), "exec"), module.__dict__)  # noqa: S102 - the slice only
    except Exception as exc:  # the slice itself failed: say what and where
        raise SandboxError(
            f"evaluating what {site.qualname} needs failed: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        if added:
            sys.path.remove(str(root))
    if site.name not in module.__dict__:
        raise SandboxError(f"{site.qualname} was not defined by its own source")
    return module.__dict__
