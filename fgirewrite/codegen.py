"""Code generation: a ``Surrogate`` in, the source of its FGI function out.

The generated function keeps the forward's signature and runs the forward verbatim under
``torch.no_grad()``. When a gradient can be asked for, it builds, for each differentiable
input, a term whose derivative is that input's surrogate gradient (the backward's own
expression applied to ``_fgi_seed``, the input itself) and injects it with ``_fgi_inject``,
which adds the terms and then overwrites the value with the forward's, bit for bit.
"""

from __future__ import annotations

import ast
import re
import textwrap
import types
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import libcst as cst

from fgirewrite.surrogate import GRAD, RUNTIME_NAMES, SHIM_BASE, Surrogate


@cache
def runtime_sources() -> dict[str, str]:
    """Each helper of ``_runtime.py`` (and the base of rewritten classes), as copied into
    rewritten files: its name and source. Read from the file, so static rewriting never
    imports torch."""
    text = (Path(__file__).parent / "_runtime.py").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    nodes = [n for n in ast.parse(text).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert tuple(n.name for n in nodes) == (*RUNTIME_NAMES, SHIM_BASE)
    return {n.name: "".join(lines[n.lineno - 1 : n.end_lineno]) for n in nodes}


def renamed(source: str, helper: str, name: str) -> str:
    """A helper's source under another name (its references to itself included)."""
    return re.sub(rf"\b{re.escape(helper)}\b", name, source)


def _live(s: Surrogate, param: str) -> str:
    return dict(s.live).get(param, param)


class _Substitute(cst.CSTTransformer):
    def __init__(self, name: str):
        self.name = name

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        return cst.Name(self.name) if updated.value == GRAD else updated


def injected_terms(s: Surrogate) -> list[str]:
    """Each gradient's template applied to its input's zero."""
    module = cst.Module([])
    terms = []
    for g in s.gradients:
        term = cst.parse_expression(g.template).visit(_Substitute(g.delta))
        assert isinstance(term, cst.BaseExpression)  # names replaced by names
        terms.append(module.code_for_node(term))
    return terms


def _annotated(params: str) -> str:
    """Give literal defaults a type so TorchScript does not take the parameter for a Tensor."""
    if not params:
        return params
    node = cst.parse_statement(f"def _({params}): pass\n")
    assert isinstance(node, cst.FunctionDef)
    kinds: dict[type, str] = {cst.Float: "float", cst.Integer: "int"}
    changed = []
    for param in node.params.params:
        kind = kinds.get(type(param.default)) if param.annotation is None else None
        if (
            kind is None
            and isinstance(param.default, cst.Name)
            and param.default.value in ("True", "False")
            and param.annotation is None
        ):
            kind = "bool"
        if kind is not None:
            param = param.with_changes(
                annotation=cst.Annotation(cst.Name(kind)),
                equal=cst.AssignEqual(cst.SimpleWhitespace(" "), cst.SimpleWhitespace(" ")),
            )
        changed.append(param)
    return cst.Module([]).code_for_node(node.params.with_changes(params=changed))


def function_source(s: Surrogate, name: str, helpers: Mapping[str, str] | None = None) -> str:
    """The FGI function for a surrogate, as a top-level ``def``; ``helpers`` renames the
    runtime helpers it calls (a file may already use their names)."""
    helper = {h: (helpers or {}).get(h, h) for h in RUNTIME_NAMES}
    indent = "    "
    lines = [f"def {name}({_annotated(s.params)}):"]
    lines.append(
        f'{indent}"""FGI form of `{s.name.split(".")[-1]}`: same values, same gradient '
        '(fgirewrite)."""'
    )
    live = dict(s.live)
    for param in s.detach:
        if param in live:
            lines.append(f"{indent}{live[param]}, {param} = {param}, {param}.detach()")
        else:
            lines.append(f"{indent}{param} = {param}.detach()")
    for param in s.maybe_tensors:
        # Possibly a tensor that requires grad, whose gradient the backward returns as None:
        # read detached, so that none flows to it.
        lines.append(
            f"{indent}{param} = {param}.detach() if isinstance({param}, torch.Tensor) else {param}"
        )
    for fresh, param in s.snapshots:
        lines.append(f"{indent}{fresh} = {param}")
    lines.append(f"{indent}with torch.no_grad():")
    lines.append(textwrap.indent(s.forward.rstrip("\n"), indent * 2))
    lines.append(f"{indent}if {helper['_fgi_needs_grad']}():")
    first = s.param_names[0]
    for g in s.gradients:
        also = "" if g.param == first else f", {first}"
        lines.append(
            f"{indent * 2}{g.delta} = {helper['_fgi_seed']}({_live(s, g.param)}, {s.output}{also})"
        )
    if s.prelude:
        lines.append(textwrap.indent(s.prelude.rstrip("\n"), indent * 2))
    terms = ", ".join(injected_terms(s))
    lines.append(f"{indent * 2}{s.output} = {helper['_fgi_inject']}({s.output}, [{terms}])")
    lines.append(f"{indent}return {s.output}")
    return "\n".join(lines) + "\n"


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
