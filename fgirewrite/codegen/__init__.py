"""Code generation: a ``Surrogate`` in, the source of its FGI function out, and the helpers
that generated code calls (``_runtime.py``), as written into rewritten files or packages."""

from __future__ import annotations

import ast
import re
import types
from functools import cache
from pathlib import Path

from fgirewrite.codegen.function import function_source
from fgirewrite.surrogate import RUNTIME_NAMES, SHIM_BASE, Surrogate

__all__ = [
    "compile_surrogate",
    "function_source",
    "renamed",
    "runtime_sources",
]


@cache
def runtime_sources() -> dict[str, str]:
    """Each helper of ``_runtime.py`` (and the base of rewritten classes), as written into
    rewritten code: its name and source. Read from the file, so static rewriting never
    imports torch."""
    text = (Path(__file__).parent.parent / "_runtime.py").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    nodes = [n for n in ast.parse(text).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert tuple(n.name for n in nodes) == (*RUNTIME_NAMES, SHIM_BASE)
    first = {n.name: min([n.lineno] + [d.lineno for d in n.decorator_list]) for n in nodes}
    return {n.name: "".join(lines[first[n.name] - 1 : n.end_lineno]) for n in nodes}


def renamed(source: str, helper: str, name: str) -> str:
    """A helper's source under another name (its references to itself included)."""
    return re.sub(rf"\b{re.escape(helper)}\b", name, source)


def compile_surrogate(s: Surrogate, namespace: dict, name: str | None = None) -> types.FunctionType:
    """Execute the generated function in ``namespace`` (with the runtime helpers) and return it."""
    from fgirewrite import _runtime

    name = name or "_fgi_" + s.name.replace(".", "_").replace("<locals>", "locals")
    for helper in _runtime.HELPERS:
        namespace.setdefault(helper.__name__, helper)
    namespace.setdefault("torch", __import__("torch"))
    code = compile(function_source(s, name), f"<fgirewrite {s.name}>", "exec", dont_inherit=True)
    exec(code, namespace)  # noqa: S102 - the code is generated from the surrogate
    return namespace[name]
