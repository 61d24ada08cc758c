"""Extraction: a Function class in, a ``Surrogate`` (or a ``Skip`` with its reason) out.

``forward.py`` reads the forward (kept verbatim) and what it stores on ctx; ``symbolic.py``
evaluates setup_context and the backward, proving the returned gradients linear and
elementwise in grad_output; ``rules.py`` holds the tables of operations both rely on.
"""

from __future__ import annotations

import re
from dataclasses import replace

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from fgirewrite.codegen import RUNTIME_NAMES
from fgirewrite.discover import ClassSite, ModuleInfo
from fgirewrite.extract.forward import Forward, assigned_names, read_forward
from fgirewrite.extract.symbolic import Evaluator
from fgirewrite.extract.values import (
    Const,
    Ctx,
    Lin,
    Names,
    Seq,
    State,
    Unsupported,
    as_const,
    dotted,
    names_in,
    standalone,
)
from fgirewrite.surrogate import GRAD, Gradient, Location, Skip, Surrogate

PROTOCOL = frozenset({"forward", "backward", "setup_context", "jvp", "vmap"})


class _Snippet:
    """Source lines parsed on their own, with positions mapped back to the file."""

    def __init__(self, text: str, first_line: int, indented: bool):
        self.offset = first_line - 1
        if indented:
            text, self.offset = "if 1:\n" + text, self.offset - 1
        self.text = text
        self.module = cst.parse_module(text)
        self._positions = None
        body = self.module.body[0]
        self.node = body.body.body[0] if indented else body  # type: ignore[union-attr]

    @property
    def positions(self):
        """Computed on first use only: most classes never need a location inside them."""
        if self._positions is None:
            wrapper = MetadataWrapper(self.module, unsafe_skip_copy=True)
            self._positions = wrapper.resolve(PositionProvider)
        return self._positions

    def method_location(self, function: cst.FunctionDef, path: str) -> Location | None:
        """Where a method of this snippet's class starts, found without a position pass."""
        if function not in getattr(self.node.body, "body", ()):  # type: ignore[union-attr]
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


def extract(site: ClassSite, info: ModuleInfo, path: str) -> Surrogate | Skip:
    """Extract the surrogate a Function class implements, or say why not."""
    here = Location(path, site.line, site.column)
    if site.unresolved is not None:
        return Skip(
            site.qualname,
            here,
            "unresolved-base",
            f"base `{site.unresolved}` is not imported from torch.autograd",
        )
    snippets: list[_Snippet] = []
    try:
        snippet = _Snippet(
            info.segment(site.first_line, site.end_line),
            site.first_line,
            indented=site.scope != "module",
        )
        snippets.append(snippet)
        return _extract(site, info, path, snippet, snippets)
    except Unsupported as exc:
        where = next((loc for s in snippets if (loc := s.locate(exc.node, path))), here)
        return Skip(site.qualname, where, exc.code, exc.message)
    except RecursionError:
        return Skip(site.qualname, here, "unsupported-syntax", "nested too deeply to analyse")
    except (cst.ParserSyntaxError, cst.CSTValidationError) as exc:
        # Python that libcst cannot parse (``return* x``): in the class, a base or a helper.
        return Skip(
            site.qualname, here, "unsupported-syntax", f"libcst cannot parse it: {_line(exc)}"
        )


def _line(exc: Exception) -> str:
    """The first line of a libcst error's own message."""
    return (str(getattr(exc, "message", None) or exc).splitlines() or [""])[0]


def _methods(classdef: cst.ClassDef) -> dict[str, cst.FunctionDef]:
    found = {}
    for stmt in classdef.body.body:
        if isinstance(stmt, cst.FunctionDef):
            found[stmt.name.value] = stmt
    return found


def _inherited(
    classdef: cst.ClassDef, info: ModuleInfo, snippets: list[_Snippet], depth: int = 0
) -> dict[str, cst.FunctionDef]:
    """Methods from the module's own base classes (a mixin defining ``backward``), by MRO-ish
    order: later bases first, so earlier ones override them."""
    found: dict[str, cst.FunctionDef] = {}
    for base in reversed(classdef.bases):
        node = info.classes.get(dotted(base.value) or "")
        if node is None or depth > 8:
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        snippet = _Snippet(info.segment(first, node.end_lineno or node.lineno), first, False)
        snippets.append(snippet)
        assert isinstance(snippet.node, cst.ClassDef)
        found |= _inherited(snippet.node, info, snippets, depth + 1) | _methods(snippet.node)
    return found


def _params(function: cst.FunctionDef, skip_first: bool) -> tuple[list[cst.Param], str | None]:
    params = function.params
    if params.star_arg not in (cst.MaybeSentinel.DEFAULT, None) or params.star_kwarg:
        raise Unsupported("unsupported-syntax", "the forward takes *args or **kwargs", function)
    ordered = list(params.posonly_params) + list(params.params) + list(params.kwonly_params)
    if not skip_first:
        return ordered, None
    if not ordered:
        raise Unsupported("unsupported-ctx", "the forward takes no ctx", function)
    return ordered[1:], ordered[0].name.value


def _annotated_tensor(param: cst.Param) -> bool:
    if param.annotation is None:
        return False
    text = cst.Module([]).code_for_node(param.annotation.annotation)
    return text.split(".")[-1] == "Tensor"


def _extract(
    site: ClassSite, info: ModuleInfo, path: str, snippet: _Snippet, snippets: list[_Snippet]
) -> Surrogate:
    classdef = snippet.node
    assert isinstance(classdef, cst.ClassDef)
    methods = _inherited(classdef, info, snippets) | _methods(classdef)
    if "forward" not in methods:
        raise Unsupported("no-forward", "defines no forward", classdef)
    if "backward" not in methods:
        raise Unsupported("no-backward", "defines no backward", classdef)
    forward_def, backward_def = methods["forward"], methods["backward"]
    new_style = "setup_context" in methods
    params, ctx_name = _params(forward_def, skip_first=not new_style)
    param_names = [p.name.value for p in params]

    # Fresh names avoid everything the generated function reads or binds; the backward's own
    # locals may be reused, since the generated code rebinds them explicitly.
    backward_reads = names_in(backward_def) - assigned_names(backward_def.body)
    backward_reads -= {p.name.value for p in _params(backward_def, skip_first=False)[0]}
    taken = names_in(forward_def) | backward_reads | set(info.imports) | set(info.functions)
    taken |= set(info.classes) | info.assigned | {"torch"} | set(RUNTIME_NAMES)
    if new_style:
        taken |= names_in(methods["setup_context"])
    names = Names(taken)
    known = {p.name.value for p in params if _annotated_tensor(p)}
    fwd = read_forward(forward_def, ctx_name, param_names, names)

    out_name = _output_name(fwd, param_names, names)
    # A parameter the forward rebinds is read after the forward through a snapshot.
    snapshots = {p: names.fresh(p + "_0") for p in param_names if p in fwd.assigned}
    entry = {p: snapshots.get(p, p) for p in param_names}

    def function(name: str) -> cst.FunctionDef | None:
        node = info.functions.get(name)
        if node is None or node.lineno is None:
            return None
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        helper = _Snippet(info.segment(first, node.end_lineno or node.lineno), first, False)
        snippets.append(helper)
        return helper.node if isinstance(helper.node, cst.FunctionDef) else None

    shadowed = fwd.assigned | set(param_names) | {out_name} | set(snapshots.values())
    state = State(names, info.imports, function, out_name, shadowed)

    ctx = fwd.ctx
    if new_style:
        ctx = _setup_context(methods["setup_context"], entry, out_name, state, len(params))
    if fwd.deferred:
        visible = {
            n: Const(cst.Name(n), simple=True, external=n in entry)
            for n in fwd.assigned | set(param_names)
        }
        for block in fwd.deferred:
            Evaluator(state, dict(visible), ctx_name, ctx, "setup").block(block)
    for i, p in enumerate(param_names):
        if p in known:
            ctx.tensor_inputs.add(i)
    saved_names = {c.node.value for c in ctx.saved or [] if isinstance(c.node, cst.Name)}
    for i, p in enumerate(param_names):
        if entry[p] in saved_names:
            ctx.tensor_inputs.add(i)

    back_params, back_ctx = _params(backward_def, skip_first=True)
    if len(back_params) != 1:
        raise Unsupported("multiple-outputs", "the backward takes several gradients", backward_def)
    grad_param = back_params[0].name.value
    env = {grad_param: Lin(cst.Name(GRAD), plain=True, external=True)}
    result = Evaluator(state, dict(env), back_ctx, ctx, "backward").block(backward_def.body.body)
    gradients = _gradients(result, param_names, backward_def, snippets, path)

    prelude = _dead_code_eliminated(state.prelude, gradients)
    gradients = [replace(g, derivative=_readable(g.derivative, prelude)) for g in gradients]
    code = cst.Module([])
    forward_code = code.code_for_node(cst.Module(fwd.statements)) if fwd.statements else ""
    if not (isinstance(fwd.result, cst.Name) and fwd.result.value == out_name):
        forward_code += code.code_for_node(
            cst.SimpleStatementLine(
                [cst.Assign([cst.AssignTarget(cst.Name(out_name))], fwd.result)]
            )
        )
    prelude_code = "".join(code.code_for_node(s) for s in prelude)
    used = names_in(cst.parse_module(prelude_code))
    for g in gradients:
        used |= names_in(cst.parse_expression(g.template))
    used_snapshots = tuple(
        (snapshots[p], p) for p in param_names if p in snapshots and snapshots[p] in used
    )
    # Every input known to be a tensor is detached on entry (the forward and the gradient
    # code then never record a graph or carry a forward-mode tangent); each differentiable one
    # keeps its live handle, from which its injected zero is made.
    differentiable = {g.param for g in gradients}
    tensors = {param_names[i] for i in ctx.tensor_inputs} | differentiable
    tensors |= {p for p in param_names if entry[p] in saved_names}
    detach = tuple(p for p in param_names if p in tensors)
    live = {p: names.fresh(p + "_in") for p in param_names if p in differentiable}
    forward_reads = names_in(cst.parse_module(forward_code))
    bound = shadowed | forward_reads | used | set(live.values())
    if len(gradients) == 1 and grad_param not in bound:
        deltas = [grad_param]
    else:
        deltas = [names.fresh(f"grad_{g.param}") for g in gradients]
    gradients = [replace(g, delta=d) for g, d in zip(gradients, deltas, strict=True)]
    module_names = set(info.imports) | set(info.functions) | set(info.classes) | info.assigned
    free = forward_reads | used
    return Surrogate(
        name=site.qualname,
        location=Location(path, site.line, site.column),
        style="new" if new_style else "old",
        params=code.code_for_node(cst.Parameters(params=params)) if params else "",
        param_names=tuple(param_names),
        forward=forward_code,
        output=out_name,
        prelude=prelude_code,
        gradients=tuple(gradients),
        snapshots=used_snapshots,
        live=tuple(live.items()),
        detach=detach,
        helpers=tuple(dict.fromkeys(state.helpers)),
        free_names=tuple(sorted((free | {"torch"}) & module_names)),
    )


def _output_name(fwd: Forward, params: list[str], names: Names) -> str:
    result = fwd.result
    if isinstance(result, cst.Name) and result.value not in params and result.value in fwd.assigned:
        return result.value
    return names.fresh("out")


def _setup_context(
    function: cst.FunctionDef, entry: dict[str, str], out_name: str, state: State, n_inputs: int
) -> Ctx:
    params, ctx_name = _params(function, skip_first=True)
    if len(params) != 2:
        raise Unsupported(
            "unsupported-ctx", "setup_context does not take (ctx, inputs, output)", function
        )
    inputs = Seq([Const(cst.Name(name), simple=True, external=True) for name in entry.values()])
    output = Const(cst.Name(out_name), simple=True)
    env = {params[0].name.value: inputs, params[1].name.value: output}
    ctx = Ctx(n_inputs=n_inputs)
    Evaluator(state, env, ctx_name, ctx, "setup").block(function.body.body)
    return ctx


def _gradients(
    result: object,
    params: list[str],
    backward: cst.FunctionDef,
    snippets: list[_Snippet],
    path: str,
) -> list[Gradient]:
    if result is None:
        raise Unsupported("no-gradient", "the backward returns nothing", backward)
    items = result.items if isinstance(result, Seq) else [result]
    if (
        len(items) < len(params)
        or any(
            as_const(extra) is None or as_const(extra).value is not None  # type: ignore[union-attr]
            for extra in items[len(params) :]
        )
    ):
        raise Unsupported(
            "gradient-count",
            f"the backward returns {len(items)} gradients for {len(params)} inputs",
            backward,
        )
    location = next(
        (loc for s in snippets if (loc := s.method_location(backward, path))), None
    ) or next(loc for s in snippets if (loc := s.locate(backward, path)))
    gradients = []
    for param, item in zip(params, items, strict=False):
        if isinstance(item, Lin):
            reduction = None if item.reduction is None else _code(item.reduction)
            template = _code(item.node)
        elif isinstance(item, Const) and item.zero:
            reduction, template = None, f"{GRAD} * 0"
        elif as_const(item) is not None and as_const(item).value is None:  # type: ignore[union-attr]
            continue
        else:
            raise Unsupported(
                "backward-not-linear",
                f"the gradient for `{param}` does not depend on grad_output",
                backward,
            )
        derivative = _derivative(template)
        template = _code(_backward_order(cst.parse_expression(template)))
        gradients.append(Gradient(param, template, derivative, location, "", reduction))
    if not gradients:
        raise Unsupported("no-gradient", "the backward returns None for every input", backward)
    return gradients


def _dead_code_eliminated(
    prelude: list[cst.BaseStatement], gradients: list[Gradient]
) -> list[cst.BaseSmallStatement]:
    needed: set[str] = set()
    for g in gradients:
        needed |= names_in(cst.parse_expression(g.template))
    kept: list[cst.BaseSmallStatement] = []
    for stmt in reversed(prelude):
        if assigned_names(stmt) & needed:
            kept.append(stmt)
            needed |= names_in(stmt)
    return list(reversed(kept))


def _code(node: cst.CSTNode) -> str:
    if isinstance(node, cst.BaseExpression):
        node = standalone(node)
    return cst.Module([]).code_for_node(node)


class _One(cst.CSTTransformer):
    """The template with grad_output = 1, lightly simplified, for people to read."""

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.BaseExpression:
        return cst.Integer("1") if updated.value == GRAD else updated

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        value = updated.value
        if isinstance(value, cst.Integer) and not value.lpar:  # ``1.mul`` does not parse
            value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
            return updated.with_changes(value=value)
        return updated

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        func = updated.func
        if not (isinstance(func, cst.Attribute) and _is_one(func.value)):
            return updated
        if func.attr.value in ("clone", "contiguous", "float", "double", "half", "to", "type_as"):
            return cst.Integer("1")
        if func.attr.value in ("mul", "multiply") and len(updated.args) == 1:
            factor = updated.args[0].value  # ``grad_output.mul(g)``: g
            if (
                isinstance(factor, (cst.Name, cst.Attribute, cst.Call, cst.Subscript))
                or factor.lpar
            ):
                return factor
            return factor.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        return updated

    def leave_BinaryOperation(
        self, original: cst.BinaryOperation, updated: cst.BinaryOperation
    ) -> cst.BaseExpression:
        if isinstance(updated.operator, cst.Multiply):
            for one, other in ((updated.left, updated.right), (updated.right, updated.left)):
                if _is_one(one):
                    if updated.lpar and not other.lpar:  # ``(1 * 2).to(...)``: keep grouping
                        return other.with_changes(lpar=updated.lpar, rpar=updated.rpar)
                    return other
        return updated


def _is_one(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Integer) and node.value == "1"


def _is_grad_leaf(node: cst.BaseExpression) -> bool:
    """The incoming gradient itself, cloned or negated (both exact)."""
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, (cst.Minus, cst.Plus)):
        return _is_grad_leaf(node.expression)
    if (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and not node.args
        and node.func.attr.value in ("clone", "contiguous")
    ):
        return _is_grad_leaf(node.func.value)
    return isinstance(node, cst.Name) and node.value == GRAD


def _backward_order(template: cst.BaseExpression) -> cst.BaseExpression:
    """``g * a / b`` becomes ``g / b * a``: autograd differentiates the outermost operation
    first, so the backward then computes ``(grad * a) / b``, in the original's order and with
    its rounding. Anything but a chain of products and quotients on the gradient is kept."""
    chain: list[tuple[cst.BaseBinaryOp, cst.BaseExpression]] = []
    prefix = None
    node = template
    while isinstance(node, cst.BinaryOperation) and isinstance(
        node.operator, (cst.Multiply, cst.Divide)
    ):
        if GRAD in names_in(node.right):
            if (
                isinstance(node.operator, cst.Multiply)
                and _is_grad_leaf(node.right)
                and GRAD not in names_in(node.left)
            ):
                prefix, node = node.left, node.right  # ``c * g``: c multiplies first
            break
        chain.append((node.operator, node.right))
        node = node.left
    if not _is_grad_leaf(node) or len(chain) + (prefix is not None) < 2:
        return template
    return _rebuild(node, chain, prefix)


def _rebuild(leaf, chain, prefix) -> cst.BaseExpression:
    # ``chain`` holds the operations outermost first; applied to the leaf in that order they
    # nest so that the original's first operation is the outermost of the result.
    result = leaf
    for operator, value in chain:
        result = cst.BinaryOperation(left=result, operator=operator, right=value)
    if prefix is not None:
        if isinstance(prefix, (cst.BinaryOperation, cst.BooleanOperation, cst.IfExp)) and not (
            prefix.lpar
        ):
            prefix = prefix.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        result = cst.BinaryOperation(left=result, operator=cst.Multiply(), right=prefix)
    return result


def _derivative(template: str) -> str:
    return _code(cst.parse_expression(template).visit(_One()))


class _Inline(cst.CSTTransformer):
    def __init__(self, values: dict[str, cst.BaseExpression]):
        self.values = values

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.BaseExpression:
        value = self.values.get(updated.value)
        if value is None:
            return updated
        if isinstance(value, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) or value.lpar:
            return value
        return value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def _readable(derivative: str, prelude: list[cst.BaseStatement]) -> str:
    """The derivative with the backward's temporaries written out, for reports."""
    values: dict[str, cst.BaseExpression] = {}
    for line in prelude:
        stmt = line.body[0] if isinstance(line, cst.SimpleStatementLine) else None
        if (
            isinstance(stmt, cst.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0].target, cst.Name)
        ):
            values[stmt.targets[0].target.value] = stmt.value.visit(_Inline(values))
    result = cst.parse_expression(derivative).visit(_Inline(values))
    text = cst.Module([]).code_for_node(result.with_changes(lpar=[], rpar=[]))
    text = text.replace("\\\n", " ")
    return re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", " ".join(text.split())))
