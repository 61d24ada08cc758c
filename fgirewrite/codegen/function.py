"""A ``Surrogate`` in, the source of its FGI function out.

The generated function keeps the forward's signature and runs the forward verbatim under
``torch.no_grad()``. When a gradient can be asked for, it computes what the backward reads
(its temporaries, its factors and masks) under ``torch.no_grad()`` too, then applies the
backward's own linear map to ``_fgi_seed`` (the input itself, in the dtype the backward
computed in) and injects the result with ``_fgi_inject``, which adds the terms and then
overwrites the value with the forward's, bit for bit. Only the seed carries a gradient.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import libcst as cst

from fgirewrite.codegen.operands import Operands, Scope, definitions, read_safely
from fgirewrite.extract.values import names_in
from fgirewrite.surrogate import GRAD, RUNTIME_NAMES, Surrogate

INDENT = "    "
# Libraries whose module attributes are never tensors someone trains.
SAFE_LIBRARIES = ("torch", "math", "numpy", "operator", "functools", "builtins")


class _Substitute(cst.CSTTransformer):
    """The seed's name for ``GRAD``, on one line (the template may span several)."""

    def __init__(self, name: str):
        self.name = name

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        return cst.Name(self.name) if updated.value == GRAD else updated

    def leave_ParenthesizedWhitespace(
        self, original: cst.ParenthesizedWhitespace, updated: cst.ParenthesizedWhitespace
    ) -> cst.SimpleWhitespace:
        return cst.SimpleWhitespace(" ")

    def leave_LeftParen(self, original: cst.LeftParen, updated: cst.LeftParen) -> cst.LeftParen:
        return updated.with_changes(whitespace_after=cst.SimpleWhitespace(""))

    def leave_RightParen(self, original: cst.RightParen, updated: cst.RightParen) -> cst.RightParen:
        return updated.with_changes(whitespace_before=cst.SimpleWhitespace(""))


def _statements(code: str) -> list[cst.BaseStatement]:
    return list(cst.parse_module(code).body) if code.strip() else []


def _scope(s: Surrogate) -> Scope:
    modules = {local for local, qualified in s.imports if qualified.split(".")[0] in SAFE_LIBRARIES}
    entry = [cst.parse_statement(f"{fresh} = {param}\n") for fresh, param in s.snapshots]
    found = definitions([*entry, *_statements(s.forward), *_statements(s.prelude)])
    return Scope(
        tensors=set(s.detach),
        maybe_tensors=set(s.maybe_tensors),
        modules=modules,
        saved=set(s.saved),
        definitions=found,
    )


def gradient_code(s: Surrogate) -> tuple[list[str], list[str]]:
    """The statements run under ``torch.no_grad()`` before injection (the prelude, then the
    copies the construction needs), and each gradient's term applied to its seed."""
    scope = _scope(s)
    module = cst.Module([])
    taken = names_in(cst.parse_module(s.forward or "pass\n"))
    taken |= set(s.param_names) | set(s.free_names) | {g.delta for g in s.gradients}
    taken |= {name for _, name in s.live} | {fresh for fresh, _ in s.snapshots}
    taken |= names_in(cst.parse_module(s.prelude or "pass\n")) | {s.output, *RUNTIME_NAMES}
    for g in s.gradients:
        taken |= names_in(cst.parse_expression(g.template))
    operands = Operands([], taken)
    terms = []
    for g in s.gradients:
        safe = read_safely(cst.parse_expression(g.template), scope, operands)
        term = safe.visit(_Substitute(g.delta))
        assert isinstance(term, cst.BaseExpression)  # names replaced by names
        terms.append(module.code_for_node(term))
    statements = [line for line in s.prelude.splitlines() if line.strip()]
    return statements + operands.statements, terms


def _plus(term: str) -> str:
    """`` + term`` (`` - inner`` for ``-inner``), grouped where precedence needs it."""
    node = cst.parse_expression(term)
    sign = " + "
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        sign, node = " - ", node.expression
    tight = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.UnaryOperation)
    product = isinstance(node, cst.BinaryOperation) and isinstance(
        node.operator, (cst.Multiply, cst.Divide, cst.Power)
    )
    text = cst.Module([]).code_for_node(node)
    return sign + (text if isinstance(node, tight) or product or node.lpar else f"({text})")


def _annotated(params: str) -> str:
    """Give literal defaults a type so TorchScript does not take the parameter for a Tensor."""
    if not params:
        return params
    node = cst.parse_statement(f"def _({params}): pass\n")
    assert isinstance(node, cst.FunctionDef)
    kinds: dict[type, str] = {cst.Float: "float", cst.Integer: "int"}
    changed = []
    for param in node.params.params:
        default = param.default
        if isinstance(default, cst.UnaryOperation) and isinstance(default.operator, cst.Minus):
            default = default.expression
        kind = kinds.get(type(default)) if param.annotation is None else None
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


def _entry(s: Surrogate) -> list[str]:
    """Inputs detached on entry (the live handle of each differentiable one kept), and the
    snapshots of inputs the forward rebinds."""
    lines = []
    live = dict(s.live)
    for param in s.detach:
        if param in live:
            lines.append(f"{live[param]}, {param} = {param}, {param}.detach()")
        else:
            lines.append(f"{param} = {param}.detach()")
    for param in s.maybe_tensors:
        # Possibly a tensor that requires grad, whose gradient the backward returns as None:
        # read detached, so that none flows to it.
        lines.append(
            f"{param} = {param}.detach() if isinstance({param}, torch.Tensor) else {param}"
        )
    lines.extend(f"{fresh} = {param}" for fresh, param in s.snapshots)
    return lines


def _autocast(s: Surrogate) -> tuple[list[str], str | None]:
    """What ``@custom_fwd(cast_inputs=dtype)`` does, as the generated code's first lines: when
    autocast is on, floating inputs on its device (float64 aside) are cast to ``dtype``, and
    the forward (and the gradient, as ``custom_bwd`` runs it) runs with autocast off."""
    a = s.autocast
    if a is None or a.cast_inputs is None:
        return [], None
    enabled = (
        "torch.is_autocast_enabled()" if a.legacy else f"torch.is_autocast_enabled({a.device})"
    )
    lines = [f"if {enabled}:  # as @custom_fwd(cast_inputs={a.cast_inputs}) on the forward"]
    for p in s.param_names:
        cond = f"{p}.is_floating_point() and {p}.device.type == {a.device}"
        cond += f" and {p}.dtype != torch.float64"
        if p not in s.detach:
            cond = f"isinstance({p}, torch.Tensor) and {cond}"
        lines.append(f"{INDENT}{p} = {p}.to({a.cast_inputs}) if {cond} else {p}")
    return lines, f"with torch.autocast({a.device}, enabled=False):"


def function_source(
    s: Surrogate,
    name: str,
    helpers: Mapping[str, str] | None = None,
    annotate: bool = False,
) -> str:
    """The FGI function for a surrogate, as a top-level ``def``; ``helpers`` renames the
    runtime helpers it calls (a file may already use their names); ``annotate`` types literal
    defaults for TorchScript."""
    helper = {h: (helpers or {}).get(h, h) for h in RUNTIME_NAMES}
    params = _annotated(s.params) if annotate else s.params
    body = [
        *_entry(s),
        "with torch.no_grad():",
        textwrap.indent(s.forward.rstrip("\n"), INDENT),
        f"if {helper['_fgi_needs_grad']}():",
    ]
    constants, terms = gradient_code(s)
    injection = []
    if constants:
        injection.append("with torch.no_grad():")
        injection.extend(INDENT + line for line in constants)
    live = dict(s.live)
    first = s.param_names[0]
    for g in s.gradients:
        seed = f"{helper['_fgi_seed']}({live.get(g.param, g.param)}, {s.output})"
        if g.param != first:  # as grad_output was: the output's shape
            seed += f".expand({s.output}.shape)"
        injection.append(f"{g.delta} = {seed}")
    term = terms[0]
    for other in terms[1:]:
        term += _plus(other)
    injection.append(f"{s.output} = {helper['_fgi_inject']}({s.output}, {term})")
    body.extend(INDENT + line for line in injection)
    body.append(f"return {s.output}")
    prologue, context = _autocast(s)
    if context is not None:
        body = [*prologue, context, *(textwrap.indent(b, INDENT) for b in body)]
    doc = f'"""FGI form of `{s.name.split(".")[-1]}`: same values, same gradient (fgirewrite)."""'
    lines = [f"def {name}({params}):", *(textwrap.indent(b, INDENT) for b in [doc, *body])]
    return "\n".join(lines) + "\n"
