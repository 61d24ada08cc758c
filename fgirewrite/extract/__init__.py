"""Extraction: a Function class in, a ``Surrogate`` (or a ``Skip`` with its reason) out.

``forward.py`` reads the forward (kept verbatim) and what it stores on ctx; ``symbolic.py``
evaluates setup_context and the backward, proving the returned gradients linear and
elementwise in grad_output; ``rules.py`` holds the tables of operations both rely on.
"""

from __future__ import annotations

from dataclasses import replace

import libcst as cst

from fgirewrite.discover import ClassSite, ModuleInfo
from fgirewrite.extract.classes import (
    STAR_FORWARD,
    Snippet,
    annotated_tensor,
    inherited,
    locate,
)
from fgirewrite.extract.classes import methods as class_methods
from fgirewrite.extract.classes import params as params_of
from fgirewrite.extract.forward import Forward, assigned_names, read_forward
from fgirewrite.extract.symbolic import Evaluator
from fgirewrite.extract.templates import backward_order, code, derivative, readable
from fgirewrite.extract.values import (
    Const,
    Ctx,
    Lin,
    Names,
    Seq,
    State,
    Unsupported,
    as_const,
    names_in,
)
from fgirewrite.source import first_line
from fgirewrite.surrogate import GRAD, RUNTIME_NAMES, SHIM_BASE, Gradient, Location, Skip, Surrogate


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
    if site.star_forward is not None:
        where = Location(path, *site.star_forward)
        return Skip(site.qualname, where, "unsupported-syntax", STAR_FORWARD)
    snippets: list[Snippet] = []
    try:
        snippet = Snippet(
            info.segment(site.first_line, site.end_line),
            site.first_line,
            indented=site.scope != "module",
        )
        snippets.append(snippet)
        return _extract(site, info, path, snippet, snippets)
    except Unsupported as exc:
        where = locate(snippets, exc.node, path) or here
        return Skip(site.qualname, where, exc.code, exc.message)
    except RecursionError:
        return Skip(site.qualname, here, "unsupported-syntax", "nested too deeply to analyse")
    except (cst.ParserSyntaxError, cst.CSTValidationError) as exc:
        # Python that libcst cannot parse (``return* x``): in the class, a base or a helper.
        return Skip(
            site.qualname, here, "unsupported-syntax", f"libcst cannot parse it: {first_line(exc)}"
        )


def _extract(
    site: ClassSite, info: ModuleInfo, path: str, snippet: Snippet, snippets: list[Snippet]
) -> Surrogate:
    classdef = snippet.node
    assert isinstance(classdef, cst.ClassDef)
    methods = inherited(classdef, info, snippets) | class_methods(classdef)
    if "forward" not in methods:
        raise Unsupported("no-forward", "defines no forward", classdef)
    if "backward" not in methods:
        raise Unsupported("no-backward", "defines no backward", classdef)
    forward_def, backward_def = methods["forward"], methods["backward"]
    new_style = "setup_context" in methods
    params, ctx_name = params_of(forward_def, skip_first=not new_style)
    param_names = [p.name.value for p in params]

    # Fresh names avoid everything the generated function reads or binds; the backward's own
    # locals may be reused, since the generated code rebinds them explicitly.
    backward_reads = names_in(backward_def) - assigned_names(backward_def.body)
    backward_reads -= {p.name.value for p in params_of(backward_def, skip_first=False)[0]}
    taken = names_in(forward_def) | backward_reads | set(info.imports) | set(info.functions)
    taken |= set(info.classes) | info.assigned | {"torch", SHIM_BASE, *RUNTIME_NAMES}
    if new_style:
        taken |= names_in(methods["setup_context"])
    names = Names(taken)
    known = {p.name.value for p in params if annotated_tensor(p)}
    fwd = read_forward(forward_def, ctx_name, param_names, names, info.imports)

    out_name = _output_name(fwd, param_names, names)
    # A parameter the forward rebinds is read after the forward through a snapshot.
    snapshots = {p: names.fresh(p + "_0") for p in param_names if p in fwd.assigned}
    entry = {p: snapshots.get(p, p) for p in param_names}

    def function(name: str) -> cst.FunctionDef | None:
        node = info.functions.get(name)
        if node is None or node.lineno is None:
            return None
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        helper = Snippet(info.segment(first, node.end_lineno or node.lineno), first, False)
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

    back_params, back_ctx = params_of(backward_def, skip_first=True)
    if not back_params:
        raise Unsupported(
            "unsupported-ctx", "the backward takes no ctx (autograd passes it one)", backward_def
        )
    if len(back_params) != 1:
        raise Unsupported("multiple-outputs", "the backward takes several gradients", backward_def)
    grad_param = back_params[0].name.value
    env = {grad_param: Lin(cst.Name(GRAD), plain=True, external=True)}
    result = Evaluator(state, dict(env), back_ctx, ctx, "backward").block(backward_def.body.body)
    scalars = {p.name.value for p in params if _number(p)}
    optional = {p.name.value for p in params if p.default is not None}
    returned = len(result.items) if isinstance(result, Seq) else 1
    gradients = _gradients(
        result, param_names, backward_def, snippets, path, scalars, out_name, optional
    )

    prelude = _dead_code_eliminated(state.prelude, gradients)
    gradients = [replace(g, derivative=readable(g.derivative, prelude)) for g in gradients]
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
    numbers = {p.name.value for p in params if _not_a_tensor(p)}
    maybe_tensors = tuple(
        p for p in param_names if p in used and p not in tensors and p not in numbers
    )
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
        params=code.code_for_node(cst.Parameters(params=params)) if params else "",
        param_names=tuple(param_names),
        forward=forward_code,
        output=out_name,
        prelude=prelude_code,
        gradients=tuple(gradients),
        snapshots=used_snapshots,
        live=tuple(live.items()),
        detach=detach,
        maybe_tensors=maybe_tensors,
        passed=returned if returned < len(param_names) else None,
        helpers=tuple(dict.fromkeys(state.helpers)),
        free_names=tuple(sorted((free | {"torch"}) & module_names)),
    )


def _not_a_tensor(param: cst.Param) -> bool:
    """A parameter annotated as a number, bool or string (a default proves nothing: a caller
    may pass a tensor that requires grad where the default is a float)."""
    if param.annotation is None:
        return False
    text = cst.Module([]).code_for_node(param.annotation.annotation)
    return text in ("float", "int", "bool", "str", "complex")


def _number(param: cst.Param) -> bool:
    """A parameter annotated or defaulted as a number: it never widens a tensor's dtype."""
    if param.annotation is not None:
        text = cst.Module([]).code_for_node(param.annotation.annotation)
        return text in ("float", "int")
    default = param.default
    if isinstance(default, cst.UnaryOperation):
        default = default.expression
    return isinstance(default, (cst.Integer, cst.Float))


def _output_name(fwd: Forward, params: list[str], names: Names) -> str:
    result = fwd.result
    if isinstance(result, cst.Name) and result.value not in params and result.value in fwd.assigned:
        return result.value
    return names.fresh("out")


def _setup_context(
    function: cst.FunctionDef, entry: dict[str, str], out_name: str, state: State, n_inputs: int
) -> Ctx:
    params, ctx_name = params_of(function, skip_first=True)
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
    snippets: list[Snippet],
    path: str,
    scalars: set[str],
    out: str,
    optional: set[str],
) -> list[Gradient]:
    if result is None:
        raise Unsupported("no-gradient", "the backward returns nothing", backward)
    items = result.items if isinstance(result, Seq) else [result]
    if len(items) < len(params) and all(p in optional for p in params[len(items) :]):
        # Fewer gradients than inputs, the rest defaulted: autograd accepts it while callers
        # leave those out, which is how the rewrite is verified (and the rewrite takes them).
        items = [
            *items,
            *(Const(cst.Name("None"), simple=True, value=None) for _ in params[len(items) :]),
        ]
    if (
        len(items) < len(params)
        or any(
            as_const(extra) is None or as_const(extra).value is not None  # type: ignore[union-attr]
            for extra in items[len(params) :]
        )
    ):
        raise Unsupported(
            "gradient-count",
            f"the backward returns {len(items)} gradient{'s' * (len(items) != 1)} "
            f"for {len(params)} input{'s' * (len(params) != 1)}",
            backward,
        )
    location = next(
        (loc for s in snippets if (loc := s.method_location(backward, path))), None
    ) or locate(snippets, backward, path)
    gradients = []
    for param, item in zip(params, items, strict=False):
        if isinstance(item, Lin):
            reduction = None if item.reduction is None else code(item.reduction)
            template = code(item.node)
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
        shown = derivative(template)
        template = code(backward_order(cst.parse_expression(template), scalars, out))
        gradients.append(Gradient(param, template, shown, location, "", reduction))
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
