"""Extraction: a Function class in, a ``Surrogate`` (or a ``Skip`` with its reason) out.

``forward.py`` reads the forward (kept verbatim) and what it stores on ctx; ``symbolic.py``
evaluates setup_context and the backward, proving the returned gradients linear and
elementwise in grad_output; ``rules.py`` holds the tables of operations both rely on.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import cast

import libcst as cst

from fgirewrite.discover import ClassSite, ModuleInfo
from fgirewrite.extract.calls import misaligned
from fgirewrite.extract.classes import (
    STAR_FORWARD,
    Snippet,
    annotated_tensor,
    inherited,
    keyword_only,
    locate,
    star_arg,
)
from fgirewrite.extract.classes import methods as class_methods
from fgirewrite.extract.classes import params as params_of
from fgirewrite.extract.effects import check_decorators, check_forward
from fgirewrite.extract.forward import Forward, assigned_names, read_forward
from fgirewrite.extract.symbolic import Evaluator
from fgirewrite.extract.templates import (
    backward_order,
    code,
    derivative,
    out_typed_names,
    readable,
)
from fgirewrite.extract.values import (
    Const,
    Ctx,
    Lin,
    Names,
    Seq,
    State,
    Sym,
    Unbound,
    Unsupported,
    as_const,
    dotted,
    is_docstring,
    names_in,
    walk,
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
            indented=site.column > 1,
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


@dataclass
class _Methods:
    """The protocol methods of a Function class and its forward's parameters."""

    forward: cst.FunctionDef
    backward: cst.FunctionDef
    setup_context: cst.FunctionDef | None
    params: list[cst.Param]
    ctx_name: str | None

    @property
    def param_names(self) -> list[str]:
        return [p.name.value for p in self.params]


@dataclass
class _Code:
    """The generated function's pieces, as source text, and the names they read."""

    forward: str
    prelude: str
    gradients: list[Gradient]
    used: set[str]  # names the prelude and the gradients read
    forward_reads: set[str]


def _extract(
    site: ClassSite, info: ModuleInfo, path: str, snippet: Snippet, snippets: list[Snippet]
) -> Surrogate:
    classdef = snippet.node
    assert isinstance(classdef, cst.ClassDef)
    names_of = _Resolved(site, info)
    m = _methods(classdef, info, snippets, names_of.module_class)
    protocol = {"forward": m.forward, "backward": m.backward}
    autocast = check_decorators(
        protocol | ({"setup_context": m.setup_context} if m.setup_context else {}),
        names_of.imports,
    )
    param_names = m.param_names
    names = Names(_taken(m, info))
    fwd = read_forward(m.forward, m.ctx_name, param_names, names, names_of.imports)
    check_forward(
        fwd.statements,
        fwd.result,
        set(param_names) | fwd.assigned,
        names_of.imports,
        param_names,
    )
    out_name = _output_name(fwd, param_names, names)
    # A parameter the forward rebinds is read after the forward through a snapshot.
    snapshots = {p: names.fresh(p + "_0") for p in param_names if p in fwd.assigned}
    entry = {p: snapshots.get(p, p) for p in param_names}
    shadowed = fwd.assigned | set(param_names) | {out_name} | set(snapshots.values())
    state = State(names, names_of.imports, _helper_reader(names_of, snippets), out_name, shadowed)
    ctx = _context(m, fwd, entry, out_name, state)
    before = _copy_state(state)
    grad_param, result = _backward(m.backward, state, ctx)
    if "needs_input_grad" in names_in(m.backward):
        _needs_input_grad_only_guards(m, before, ctx, result, state)
    built = _code(m, fwd, out_name, state, result, snippets, path)

    inputs = _inputs(m, ctx, built, snapshots, names)
    if autocast is not None and autocast.cast_inputs is not None:
        _castable(m, inputs.detach)
    bound = shadowed | built.forward_reads | built.used | {v for _, v in inputs.live}
    gradients = _with_deltas(built.gradients, grad_param, bound, names)
    module_names = set(info.imports) | set(info.functions) | set(info.classes) | info.assigned
    returned = len(result.items) if isinstance(result, Seq) else 1
    free = (built.forward_reads | built.used | {"torch"}) & module_names
    return Surrogate(
        name=site.qualname,
        location=Location(path, site.line, site.column),
        params=cst.Module([]).code_for_node(cst.Parameters(params=m.params)) if m.params else "",
        param_names=tuple(param_names),
        forward=built.forward,
        output=out_name,
        prelude=built.prelude,
        gradients=tuple(gradients),
        snapshots=inputs.snapshots,
        live=inputs.live,
        detach=inputs.detach,
        maybe_tensors=inputs.maybe_tensors,
        passed=returned if returned < len(param_names) else None,
        helpers=tuple(dict.fromkeys(state.helpers)),
        free_names=tuple(sorted(free)),
        autocast=autocast,
        imports=tuple((n, info.imports[n]) for n in sorted(free) if n in info.imports),
        saved=tuple(
            dict.fromkeys(c.node.value for c in ctx.saved or [] if isinstance(c.node, cst.Name))
        ),
    )


def _castable(m: _Methods, tensors: tuple[str, ...]) -> None:
    """``custom_fwd(cast_inputs=...)`` casts tensors inside tuple and list arguments too, which
    the generated code does not: every input must be a tensor or a number."""
    for param in m.params:
        name = param.name.value
        shown = (
            cst.Module([]).code_for_node(param.annotation.annotation).lower()
            if param.annotation
            else None
        )
        iterable = shown is None or any(k in shown for k in ("tuple", "list", "sequence", "iter"))
        if name not in tensors and not _number(param) and iterable:
            raise Unsupported(
                "unknown-decorator",
                f"`custom_fwd(cast_inputs=...)` on the forward also casts tensors inside a tuple "
                f"or list argument, and `{name}` may be one: annotate it (a tensor or a number)",
                param,
            )


def _copy_state(state: State) -> State:
    """The state as it is now, for evaluating the backward again from here."""
    return replace(
        state,
        names=Names(set(state.names.taken)),
        prelude=list(state.prelude),
        free=set(state.free),
        helpers=list(state.helpers),
    )


def _gradient_texts(result: Sym | None, state: State, params: list[str]) -> dict[str, str | None]:
    """Each input's returned gradient, with the statements it needs, as text; None for a
    gradient returned as None. Anything else (``-None``: the original would raise) is left
    out."""
    items = result.items if isinstance(result, Seq) else [result]
    texts: dict[str, str | None] = {}
    for param, item in zip(params, items, strict=False):
        if isinstance(item, Const) and item.value is None:
            texts[param] = None
        if not isinstance(item, Lin):
            continue
        needed = names_in(item.node)
        kept = []
        for stmt in reversed(state.prelude):
            if assigned_names(stmt) & needed:
                kept.append(stmt)
                needed |= names_in(stmt)
        module = cst.Module([])
        texts[param] = "".join(module.code_for_node(s) for s in reversed(kept)) + code(item.node)
    return texts


def _needs_input_grad_only_guards(
    m: _Methods, before: State, ctx: Ctx, result: Sym | None, after: State
) -> None:
    """``ctx.needs_input_grad[k]`` may only decide whether input k's own gradient is computed:
    the rewrite computes every gradient at once, as if all were needed. Evaluated again with
    each input not needing its gradient, every other input's gradient must stay the same."""
    expected = _gradient_texts(result, after, m.param_names)
    for k, param in enumerate(m.param_names):
        state = _copy_state(before)
        changed = replace(ctx, unneeded={k})
        try:
            _, again = _backward(m.backward, state, changed)
        except Unsupported:
            continue  # the backward cannot run so (``-None``): the flag only guarded
        texts = _gradient_texts(again, state, m.param_names)
        for other, text in expected.items():
            if other != param and other in texts and texts[other] != text:
                raise Unsupported(
                    "unsupported-ctx",
                    f"uses ctx.needs_input_grad[{k}] as a value: whether `{param}` requires "
                    f"grad changes the gradient of `{other}`, and the rewrite computes every "
                    "gradient as if all were needed",
                    m.backward,
                )


def _methods(
    classdef: cst.ClassDef,
    info: ModuleInfo,
    snippets: list[Snippet],
    module_class: Callable[[str], bool],
) -> _Methods:
    methods = inherited(classdef, info, snippets, module_class) | class_methods(classdef)
    if "forward" not in methods:
        raise Unsupported("no-forward", "defines no forward", classdef)
    if "backward" not in methods:
        raise Unsupported("no-backward", "defines no backward", classdef)
    setup = methods.get("setup_context")
    forward, backward = methods["forward"], methods["backward"]
    _one_output(forward, backward)
    for method in (forward, backward, setup):
        _refuse_class_reads(method, classdef.name.value)
    forward = _with_constants(forward)
    params, ctx_name = params_of(forward, skip_first=setup is None)
    return _Methods(forward, backward, setup, params, ctx_name)


def _refuse_class_reads(method: cst.FunctionDef | None, name: str) -> None:
    """A classmethod that reads its class (``cls.alpha``): the class ``apply`` was called on,
    which may be a subclass that changes it; the rewrite is one function for the class."""
    if method is None or not any(_decorator(d) == "classmethod" for d in method.decorators):
        return
    ordered = [*method.params.posonly_params, *method.params.params]
    if not ordered:
        return
    cls = ordered[0].name.value
    nodes = list(walk(method.body))
    labels = {id(n.attr) for n in nodes if isinstance(n, cst.Attribute)}
    labels |= {id(n.keyword) for n in nodes if isinstance(n, cst.Arg) and n.keyword is not None}
    for node in nodes:
        if id(node) in labels:  # ``ctx.cls``, ``f(cls=1)``: a label, not the variable
            continue
        if isinstance(node, cst.Attribute) and isinstance(node.value, cst.Name):
            if node.value.value == cls:
                attr = node.attr.value
                raise Unsupported(
                    "unsupported-syntax",
                    f"the {method.name.value} reads `{cls}.{attr}`, from the class `apply` is "
                    "called on, which a subclass may change; the rewrite is one function for "
                    f"the class (read `{name}.{attr}` to make it rewritable)",
                    node,
                )
        elif isinstance(node, cst.Name) and node.value == cls:
            raise Unsupported(
                "unsupported-syntax",
                f"the {method.name.value} uses `{cls}`, the class `apply` is called on; the "
                f"rewrite is one function for the class (use `{name}` to make it rewritable)",
                node,
            )


def _decorator(decorator: cst.Decorator) -> str | None:
    target = decorator.decorator
    return dotted(target.func if isinstance(target, cst.Call) else target)


def _one_output(forward: cst.FunctionDef, backward: cst.FunctionDef) -> None:
    """Refuse several outputs first: it is the reason that tells what the class is (a
    reversible block's ``forward(ctx, fn, *args)`` returning a tuple is no surrogate)."""
    for node in walk(forward.body, lambda n: not isinstance(n, (cst.FunctionDef, cst.Lambda))):
        if isinstance(node, cst.Return) and node.value is not None and _several(node.value):
            raise Unsupported("multiple-outputs", "the forward returns a tuple", node.value)
    grads, _ = params_of(backward, skip_first=True, star=True)
    if len(grads) > 1:
        raise Unsupported("multiple-outputs", "the backward takes several gradients", backward)


def _several(value: cst.BaseExpression) -> bool:
    """A tuple or list display, or one built by ``tuple(...)`` or ``list(...)``."""
    if isinstance(value, (cst.Tuple, cst.List)):
        return True
    return isinstance(value, cst.Call) and dotted(value.func) in ("tuple", "list")


def _with_constants(forward: cst.FunctionDef) -> cst.FunctionDef:
    """The forward with its keyword-only parameters bound to their defaults, after its
    docstring: ``Function.apply`` never passes them."""
    constants = [
        cst.SimpleStatementLine(
            [
                cst.Assign(
                    [cst.AssignTarget(cst.Name(p.name.value))], cast(cst.BaseExpression, p.default)
                )
            ]
        )
        for p in keyword_only(forward)
    ]
    if not constants:
        return forward
    suite = forward.body
    body: list[cst.BaseStatement] = (
        list(suite.body)
        if isinstance(suite, cst.IndentedBlock)
        else [cst.SimpleStatementLine(cast(cst.SimpleStatementSuite, suite).body)]
    )
    at = 1 if body and is_docstring(body[0]) else 0
    positional = list(forward.params.params)
    if positional:  # no comma left dangling before the ``*`` that goes
        positional[-1] = positional[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    return forward.with_changes(
        body=cst.IndentedBlock([*body[:at], *constants, *body[at:]]),
        params=forward.params.with_changes(
            params=positional, star_arg=cst.MaybeSentinel.DEFAULT, kwonly_params=[]
        ),
    )


def _taken(m: _Methods, info: ModuleInfo) -> set[str]:
    """Names a fresh name must avoid: everything the generated function reads or binds. The
    backward's own locals may be reused, since the generated code rebinds them explicitly."""
    backward_reads = names_in(m.backward) - assigned_names(m.backward.body)
    backward_reads -= {p.name.value for p in params_of(m.backward, False, star=True)[0]}
    backward_reads -= {p.name.value for p in [star_arg(m.backward)] if p is not None}
    taken = names_in(m.forward) | backward_reads | set(info.imports) | set(info.functions)
    taken |= set(info.classes) | info.assigned | {"torch", SHIM_BASE, *RUNTIME_NAMES}
    if m.setup_context is not None:
        taken |= names_in(m.setup_context)
    return taken


class _Resolved:
    """What the free names of a class's methods mean, by scope: the imports they reach (a
    factory's own included; a name the factory or the module rebinds otherwise is none),
    and the module-level functions they reach (not one a factory's local shadows, nor one
    the module rebinds)."""

    def __init__(self, site: ClassSite, info: ModuleInfo):
        self.info = info
        scopes = info.scopes
        classdef = scopes.class_at(site.line, site.column)
        self.scope = scopes.module if classdef is None else scopes.methods_scope(classdef)
        candidates = set(info.imports)
        for scope in self.scope.enclosing():
            candidates |= {n for n, b in scope.bindings.items() if b[0].imported is not None}
        self.imports = {
            name: target
            for name in sorted(candidates)
            if (target := scopes.imported(name, self.scope)) is not None
        }
        own = scopes.own(classdef) if classdef is not None else None
        self.statement_scope = own.parent if own is not None and own.parent else scopes.module

    def module_class(self, name: str) -> bool:
        """A base's name, read where the class statement stands, means the module-level class
        of that name, which the module binds once."""
        scopes = self.info.scopes
        if scopes.resolve(name.split(".")[0], self.statement_scope) is not scopes.module:
            return False
        node = self.info.classes.get(name)
        bindings = [b.node for b in scopes.module.bindings.get(name, []) if not b.fallback]
        return node is not None and bindings == [node]

    def function(self, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        node = self.info.functions.get(name)
        scopes = self.info.scopes
        if node is None or scopes.resolve(name, self.scope) is not scopes.module:
            return None
        bindings = [b for b in scopes.module.bindings.get(name, []) if not b.fallback]
        return node if [b.node for b in bindings] == [node] else None


def _helper_reader(
    names_of: _Resolved, snippets: list[Snippet]
) -> Callable[[str], cst.FunctionDef | None]:
    """Looks up a module-level helper function by name, parsing only its own lines."""
    info = names_of.info

    def function(name: str) -> cst.FunctionDef | None:
        node = names_of.function(name)
        if node is None or node.lineno is None:
            return None
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        helper = Snippet(info.segment(first, node.end_lineno or node.lineno), first, False)
        snippets.append(helper)
        return helper.node if isinstance(helper.node, cst.FunctionDef) else None

    return function


def _context(m: _Methods, fwd: Forward, entry: dict[str, str], out_name: str, state: State) -> Ctx:
    """What the forward (or setup_context) stores on ctx, and which inputs are tensors."""
    param_names = m.param_names
    ctx = fwd.ctx
    if m.setup_context is not None:
        ctx = _setup_context(m.setup_context, entry, out_name, state, len(m.params))
    if fwd.deferred:
        visible = {
            n: Const(cst.Name(n), simple=True, external=n in entry)
            for n in fwd.assigned | set(param_names)
        }
        for block in fwd.deferred:
            Evaluator(state, dict(visible), m.ctx_name, ctx, "setup").block(block)
    saved_names = {c.node.value for c in ctx.saved or [] if isinstance(c.node, cst.Name)}
    for i, p in enumerate(param_names):
        if annotated_tensor(m.params[i]) or entry[p] in saved_names:
            ctx.tensor_inputs.add(i)
    return ctx


def _backward(backward: cst.FunctionDef, state: State, ctx: Ctx) -> tuple[str, Sym | None]:
    """The backward's grad_output parameter, and what it returns, evaluated symbolically."""
    back_params, back_ctx = params_of(backward, skip_first=True, star=True)
    keyword_only(backward)  # autograd passes none: each is its (literal) default
    star = star_arg(backward)
    dtype = cst.Attribute(cst.Name(state.out), cst.Name("dtype"))  # grad_output's: the output's
    grad = Lin(cst.Name(GRAD), plain=True, external=True, dtype=dtype)
    env: dict[str, Sym | Unbound] = {}
    if back_params:
        grad_param = back_params[0].name.value
        env[grad_param] = grad
        if star is not None:  # ``backward(ctx, g, *rest)``: nothing is left for ``rest``
            env[star.name.value] = Seq([])
    elif star is not None:  # ``backward(ctx, *grads)``: the one output's gradient
        env[star.name.value] = Seq([grad])
        grad_param = state.names.fresh("grad_output")  # names the gradient in the rewrite
    elif back_ctx is not None and back_ctx in ("ctx", "context", "self"):
        raise Unsupported(
            "no-gradient", "the backward takes no gradient (autograd passes it one)", backward
        )
    else:  # ``backward(grad_output)``: one parameter, where autograd passes ctx and a gradient
        raise Unsupported(
            "unsupported-ctx", "the backward takes no ctx (autograd passes it one)", backward
        )
    for param in keyword_only(backward):
        env[param.name.value] = Const(cast(cst.BaseExpression, param.default), simple=True)
    return grad_param, Evaluator(state, dict(env), back_ctx, ctx, "backward").block(
        backward.body.body
    )


def _code(
    m: _Methods,
    fwd: Forward,
    out_name: str,
    state: State,
    result: Sym | None,
    snippets: list[Snippet],
    path: str,
) -> _Code:
    # Inputs annotated as numbers, and tensors of the output's dtype: steps by them keep
    # grad_output's dtype, as numbers do.
    scalars = {p.name.value for p in m.params if _number(p)}
    scalars |= out_typed_names(state.prelude, out_name)
    optional = {p.name.value for p in m.params if p.default is not None}
    gradients = _gradients(
        result, m.param_names, m.backward, snippets, path, scalars, out_name, optional, state.zeros
    )
    prelude = _dead_code_eliminated(state.prelude, gradients)
    gradients = [replace(g, derivative=readable(g.derivative, prelude)) for g in gradients]
    module = cst.Module([])
    forward_code = module.code_for_node(cst.Module(fwd.statements)) if fwd.statements else ""
    if not (isinstance(fwd.result, cst.Name) and fwd.result.value == out_name):
        forward_code += module.code_for_node(
            cst.SimpleStatementLine(
                [cst.Assign([cst.AssignTarget(cst.Name(out_name))], fwd.result)]
            )
        )
    prelude_code = "".join(module.code_for_node(s) for s in prelude)
    used = names_in(cst.parse_module(prelude_code))
    for g in gradients:
        used |= names_in(cst.parse_expression(g.template))
    forward_reads = names_in(cst.parse_module(forward_code))
    return _Code(forward_code, prelude_code, gradients, used, forward_reads)


@dataclass(frozen=True)
class _Inputs:
    snapshots: tuple[tuple[str, str], ...]  # (snapshot, parameter) the gradient code reads
    live: tuple[tuple[str, str], ...]  # (parameter, its live handle), differentiable ones
    detach: tuple[str, ...]  # parameters known to be tensors, detached on entry
    maybe_tensors: tuple[str, ...]  # parameters the gradient code reads that may be tensors


def _inputs(
    m: _Methods,
    ctx: Ctx,
    built: _Code,
    snapshots: dict[str, str],
    names: Names,
) -> _Inputs:
    """How the generated function treats each parameter. Every input known to be a tensor is
    detached on entry (the forward and the gradient code then never record a graph or carry a
    forward-mode tangent); each differentiable one keeps its live handle, from which its
    injected zero is made."""
    param_names = m.param_names
    differentiable = {g.param for g in built.gradients}
    # ``_context`` counted the annotated and the saved inputs among ``tensor_inputs``.
    tensors = {param_names[i] for i in ctx.tensor_inputs} | differentiable
    used = built.used
    return _Inputs(
        snapshots=tuple((snapshots[p], p) for p in param_names if snapshots.get(p) in used),
        live=tuple((p, names.fresh(p + "_in")) for p in param_names if p in differentiable),
        detach=tuple(p for p in param_names if p in tensors),
        maybe_tensors=tuple(p for p in param_names if p in used and p not in tensors),
    )


def _with_deltas(
    gradients: list[Gradient], grad_param: str, bound: set[str], names: Names
) -> list[Gradient]:
    """Name each gradient's incoming delta: the backward's own grad_output name when it is
    the only one and nothing else binds it, fresh names otherwise."""
    if len(gradients) == 1 and grad_param not in bound:
        deltas = [grad_param]
    else:
        deltas = [names.fresh(f"grad_{g.param}") for g in gradients]
    return [replace(g, delta=d) for g, d in zip(gradients, deltas, strict=True)]


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
    env: dict[str, Sym | Unbound] = {params[0].name.value: inputs, params[1].name.value: output}
    ctx = Ctx(n_inputs=n_inputs)
    Evaluator(state, env, ctx_name, ctx, "setup").block(function.body.body)
    return ctx


def _gradients(
    result: Sym | None,
    params: list[str],
    backward: cst.FunctionDef,
    snippets: list[Snippet],
    path: str,
    scalars: set[str],
    out: str,
    optional: set[str],
    zeros: set[str],
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
    if len(items) < len(params) or any(
        (const := as_const(extra)) is None or const.value is not None
        for extra in items[len(params) :]
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
    assert location is not None  # the backward is a method of one of the snippets
    gradients = []
    for param, item in zip(params, items, strict=False):
        if isinstance(item, Lin):
            reduction = None if item.reduction is None else code(item.reduction)
            if item.reduction is not None and (dims := misaligned(item.reduction)) is not None:
                raise Unsupported(
                    "backward-not-elementwise",
                    f"the gradient for `{param}` is summed over {dims} without "
                    "keepdim: the sum no longer lines up with the output's dimensions, as the "
                    "rewrite's broadcasting needs (keepdim=True, or a view back to the "
                    "input's layout, makes it rewritable)",
                    item.reduced_at,
                )
            template = code(item.node)
        elif isinstance(item, Const) and item.zero:
            reduction, template = None, f"{GRAD} * 0"
        elif (const := as_const(item)) is not None and const.value is None:
            continue
        else:
            raise Unsupported(
                "backward-not-linear",
                f"the gradient for `{param}` does not depend on grad_output",
                backward,
            )
        shown = derivative(template)
        template = code(backward_order(cst.parse_expression(template), scalars, out, zeros))
        gradients.append(Gradient(param, template, shown, location, "", reduction))
    if not gradients:
        raise Unsupported("no-gradient", "the backward returns None for every input", backward)
    return gradients


def _dead_code_eliminated(
    prelude: list[cst.BaseStatement], gradients: list[Gradient]
) -> list[cst.BaseStatement]:
    needed: set[str] = set()
    for g in gradients:
        needed |= names_in(cst.parse_expression(g.template))
    kept: list[cst.BaseStatement] = []
    for stmt in reversed(prelude):
        if assigned_names(stmt) & needed:
            kept.append(stmt)
            needed |= names_in(stmt)
    return list(reversed(kept))
