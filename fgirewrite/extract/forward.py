"""The forward of an old-style Function: its code kept verbatim, its ctx statements read.

The forward value ``f`` is never interpreted: its statements are copied as they are (under
``torch.no_grad()``, as autograd runs them), so whatever the forward does, random draws and
library calls included, happens exactly as before. Only the ``ctx`` statements are taken out:
``ctx.save_for_backward(...)`` and ``ctx.attr = value`` become values the backward can read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import libcst as cst

from fgirewrite.discover import qualify
from fgirewrite.extract import rules
from fgirewrite.extract.values import (
    Const,
    Ctx,
    Names,
    Unsupported,
    contains,
    dotted,
    is_docstring,
    names_in,
    walk,
)

# A statement of a module or an indented block: what cst.Module takes.
Statement = cst.SimpleStatementLine | cst.BaseCompoundStatement


@dataclass
class Forward:
    """The forward of a Function, ready for code generation."""

    statements: list[Statement]  # verbatim, ctx statements removed or replaced
    result: cst.BaseExpression  # the returned expression
    ctx: Ctx
    assigned: set[str]  # every name the forward binds
    # ``if x.requires_grad: ctx.save_for_backward(...)``: blocks that only prepare the backward,
    # evaluated with it, when a gradient is needed.
    deferred: list[list[Statement]] = field(default_factory=list)


def assigned_names(node: cst.CSTNode) -> set[str]:
    """Names a statement binds (assignment targets, loop targets, imports, defs)."""
    found: set[str] = set()

    def targets(target: cst.CSTNode) -> None:
        if isinstance(target, cst.Name):
            found.add(target.value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                targets(element.value)
        elif isinstance(target, cst.StarredElement):
            targets(target.value)

    for n in walk(node, lambda n: not isinstance(n, (cst.FunctionDef, cst.ClassDef))):
        if isinstance(n, (cst.FunctionDef, cst.ClassDef)):
            found.add(n.name.value)
        elif isinstance(n, (cst.AssignTarget, cst.AugAssign, cst.AnnAssign, cst.For)):
            targets(n.target)
        elif isinstance(n, cst.NamedExpr):
            targets(n.target)
        elif isinstance(n, cst.AsName):
            targets(n.name)
        elif isinstance(n, cst.ImportAlias) and n.asname is None:
            found.add(cst.Module([]).code_for_node(n.name).split(".")[0])
    return found


NO_GRAD = frozenset({"torch.no_grad", "torch.autograd.no_grad", "torch.autograd.grad_mode.no_grad"})


def _without_no_grad(
    body: list[Statement], imports: dict[str, str], nested: bool = False
) -> list[Statement]:
    """``with torch.no_grad():`` blocks opened into their statements: the generated code runs
    the whole forward without grad (as autograd runs it), so they change nothing. With
    ``nested``, those in the branches of ``if`` statements too."""
    flat: list[Statement] = []
    for stmt in body:
        if (
            isinstance(stmt, cst.With)
            and stmt.items
            and all(
                isinstance(item.item, cst.Call)
                and not item.item.args
                and item.asname is None
                and qualify(dotted(item.item.func) or "", imports) in NO_GRAD
                for item in stmt.items
            )
        ):
            flat.extend(_without_no_grad(_statements(stmt.body), imports, nested))
        elif nested and isinstance(stmt, cst.If):
            flat.append(_if_without_no_grad(stmt, imports))
        else:
            flat.append(stmt)
    return flat


def _if_without_no_grad(stmt: cst.If, imports: dict[str, str]) -> cst.If:
    body = _without_no_grad(_block(stmt.body), imports, nested=True)
    orelse = stmt.orelse
    if isinstance(orelse, cst.If):
        orelse = _if_without_no_grad(orelse, imports)
    elif isinstance(orelse, cst.Else):
        flat = _without_no_grad(_block(orelse.body), imports, nested=True)
        orelse = orelse.with_changes(body=cst.IndentedBlock(flat))
    return stmt.with_changes(body=cst.IndentedBlock(body), orelse=orelse)


def _block(suite: cst.BaseSuite) -> list[Statement]:
    """A suite's statements; those of a one-line suite (``if c: return x``) as one line."""
    if isinstance(suite, cst.SimpleStatementSuite):
        return [cst.SimpleStatementLine(list(suite.body))]
    return _statements(suite)


def _hoisted_torch(body: list[Statement]) -> list[Statement]:
    """``import torch`` statements dropped: the rewritten module imports torch at its top,
    and an import inside the generated function would make ``torch`` local to all of it."""
    kept = []
    for stmt in body:
        if isinstance(stmt, cst.SimpleStatementLine) and all(
            isinstance(s, cst.Import)
            and all(cst.Module([]).code_for_node(a) == "torch" for a in s.names)
            for s in stmt.body
        ):
            continue
        kept.append(stmt)
    return kept


def read_forward(
    function: cst.FunctionDef,
    ctx_name: str | None,
    params: list[str],
    names: Names,
    imports: dict[str, str],
) -> Forward:
    """Split a forward body into kept statements, the returned expression and ctx contents."""
    body = _statements(function.body)
    first = body[0] if body else None
    if isinstance(first, cst.SimpleStatementLine) and len(first.body) == 1 and is_docstring(first):
        body = body[1:]
    body = _hoisted_torch(_without_no_grad(body, imports))
    if ctx_name is not None:
        _refuse_marks(function, ctx_name)
    _refuse_metadata_changes(body, params)
    body, result = _split_return(body, function, names, imports)
    later: list[set[str]] = []  # names bound at or after each statement
    acc: set[str] = set()
    for stmt in reversed(body):
        acc = acc | assigned_names(stmt)
        later.append(acc)
    later.reverse()
    assigned = later[0] if later else set()
    ctx = Ctx(n_inputs=len(params))
    forward = Forward([], result, ctx, assigned)

    for i, stmt in enumerate(body):
        after = later[i + 1] if i + 1 < len(later) else set()
        if ctx_name is not None and not _writes_ctx(stmt, ctx_name):
            visited = stmt.visit(_CtxReads(ctx_name, forward.ctx))
            # reads replaced, nothing removed
            assert isinstance(visited, (cst.SimpleStatementLine, cst.BaseCompoundStatement))
            stmt = visited
        if ctx_name is None or ctx_name not in names_in(stmt):
            forward.statements.append(stmt)
            continue
        if isinstance(stmt, cst.If) and _only_prepares_backward(
            stmt, body[i + 1 :], result, after, imports
        ):
            forward.deferred.append(_statements(stmt.body))
            continue
        if not isinstance(stmt, cst.SimpleStatementLine):
            raise Unsupported("unsupported-ctx", "the forward uses ctx inside a block", stmt)
        kept: list[cst.BaseSmallStatement] = []
        for small in stmt.body:
            kept.extend(
                _ctx_statement(small, ctx_name, forward, after, params, names, assigned, imports)
            )
        if kept:
            forward.statements.append(stmt.with_changes(body=kept))
    if ctx_name is not None:
        read = result.visit(_CtxReads(ctx_name, forward.ctx))
        assert isinstance(read, cst.BaseExpression)
        forward.result = read
        if ctx_name in names_in(forward.result):
            raise Unsupported(
                "unsupported-ctx", "the forward returns something built from ctx", result
            )
    return forward


def _split_return(
    body: list[Statement], function: cst.FunctionDef, names: Names, imports: dict[str, str]
) -> tuple[list[Statement], cst.BaseExpression]:
    """The statements before the final ``return``, and the returned expression: a forward
    returns one tensor, at its end, or from branches of ``if`` statements (each ``return v``
    then becomes ``OUT = v`` in tail position, the statements after an early return move
    into the branch that falls through, and a path that falls off the end returns None, as
    the original's ``apply`` then does)."""
    if not body:
        raise Unsupported("forward-control-flow", "the forward has no body", function)
    last = body[-1]
    early = [s for s in body[:-1] if contains(s, cst.Return, nested_scopes=False)]
    if (
        isinstance(last, cst.SimpleStatementLine)
        and isinstance(final := last.body[-1], cst.Return)
        and (result := final.value) is not None
        and not early
        and not _returns(last.body[:-1])
    ):
        _one_output(result)
        rest = [last.with_changes(body=last.body[:-1])] if len(last.body) > 1 else []
        return body[:-1] + rest, result
    if not any(contains(s, cst.Return, nested_scopes=False) for s in body):
        raise Unsupported("forward-control-flow", "the forward does not end by returning", last)
    out = names.fresh("out")
    statements, _ = _returning(_without_no_grad(body, imports, nested=True), out)
    return statements, cst.Name(out)


def _returns(smalls: Sequence[cst.BaseSmallStatement]) -> bool:
    return any(isinstance(s, cst.Return) for s in smalls)


def _one_output(value: cst.BaseExpression) -> None:
    if isinstance(value, (cst.Tuple, cst.List)):
        raise Unsupported("multiple-outputs", "the forward returns a tuple", value)


def _returning(body: list[Statement], out: str) -> tuple[list[Statement], bool]:
    """``body`` with its returns made assignments to ``out`` in tail position, and whether
    every path through it ends in one (else it falls through to what follows it)."""
    for i, stmt in enumerate(body):
        if not contains(stmt, cst.Return, nested_scopes=False):
            continue
        head, rest = body[:i], body[i + 1 :]
        if isinstance(stmt, cst.SimpleStatementLine):
            *before, last = stmt.body
            if not isinstance(last, cst.Return) or _returns(before) or rest:
                raise Unsupported(
                    "forward-control-flow", "the forward has code after a return", stmt
                )
            return [*head, stmt.with_changes(body=[*before, _returned(last, out)])], True
        if isinstance(stmt, cst.If):
            return [*head, _if_returning(stmt, rest, out)], True
        kind = type(stmt).__name__.lower()
        raise Unsupported(
            "forward-control-flow", f"the forward returns from inside a `{kind}` block", stmt
        )
    return body, False


def _returned(ret: cst.Return, out: str) -> cst.BaseSmallStatement:
    """``return v`` as ``OUT = v``; a bare ``return`` (None) stays a return."""
    if ret.value is None or (isinstance(ret.value, cst.Name) and ret.value.value == "None"):
        return cst.Return(cst.Name("None"))
    _one_output(ret.value)
    return cst.Assign([cst.AssignTarget(cst.Name(out))], ret.value)


def _if_returning(stmt: cst.If, rest: list[Statement], out: str) -> cst.If:
    """An ``if``/``elif``/``else`` chain that returns from some branches, followed by
    ``rest``: ``rest`` moves into the one branch that falls through (several would repeat
    it: refused); with nothing after it, a branch that falls through returns None."""
    chain: list[cst.If] = [stmt]
    while isinstance(chain[-1].orelse, cst.If):
        chain.append(chain[-1].orelse)
    final = chain[-1].orelse
    bodies = [_block(b.body) for b in chain]
    bodies.append(_block(final.body) if isinstance(final, cst.Else) else [])
    done = [_returning(b, out) for b in bodies]
    open_ = [i for i, (_, ends) in enumerate(done) if not ends]
    if rest and len(open_) > 1:
        raise Unsupported(
            "forward-control-flow",
            "the forward returns from some branches and runs on after several others",
            stmt,
        )
    for i in open_:
        if rest:
            done[i] = _returning(bodies[i] + rest, out)
        if not done[i][1]:  # falls off the end of the forward: it returns None
            none = cst.SimpleStatementLine([cst.Return(cst.Name("None"))])
            done[i] = (done[i][0] + [none], True)
    new_else: cst.If | cst.Else | None = (
        cst.Else(cst.IndentedBlock(done[-1][0])) if done[-1][0] else None
    )
    for link, (body, _) in zip(reversed(chain), reversed(done[:-1]), strict=True):
        new_else = link.with_changes(body=cst.IndentedBlock(body), orelse=new_else)
    assert isinstance(new_else, cst.If)
    return new_else


def _refuse_metadata_changes(body: list[Statement], params: list[str]) -> None:
    """An input whose shape, storage or autograd flags the forward changes in place
    (``placeholder.set_(tensor)``): the rewrite's forward works on a detached alias, which
    shares the values but not those, so the caller's tensor would not change."""
    inputs = set(params)
    for stmt in body:
        for call in walk(stmt, lambda n: not isinstance(n, (cst.FunctionDef, cst.Lambda))):
            if not (isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute)):
                continue
            method, receiver = call.func.attr.value, call.func.value
            if method in rules.METADATA_INPLACE and isinstance(receiver, cst.Name):
                if receiver.value in inputs:
                    raise Unsupported(
                        "in-place-alias",
                        f"the forward changes input `{receiver.value}` in place with "
                        f"`.{method}()`, which the rewrite (working on a detached alias of "
                        "it) would not pass on to the caller's tensor",
                        call,
                    )
        inputs -= assigned_names(stmt)  # rebound: no longer the caller's tensor


def _refuse_marks(function: cst.FunctionDef, ctx_name: str) -> None:
    """``ctx.mark_dirty`` or ``ctx.mark_non_differentiable`` anywhere in the forward (in a
    branch too): the decisive reason, reported before any other."""

    if not rules.CTX_REFUSED & names_in(function.body):
        return  # the visitor below finds the first in source order, but is slow

    class V(cst.CSTVisitor):
        def visit_Call(self, call: cst.Call) -> None:
            func = call.func
            if (
                isinstance(func, cst.Attribute)
                and _is_name(func.value, ctx_name)
                and func.attr.value in rules.CTX_REFUSED
            ):
                raise Unsupported(
                    "non-differentiable-output", f"calls ctx.{func.attr.value}()", call
                )

    function.body.visit(V())


def _writes_ctx(stmt: cst.BaseStatement, ctx_name: str) -> bool:
    """A statement that stores on ctx (``ctx.a = ...``, ``ctx.save_for_backward``)."""
    if not isinstance(stmt, cst.SimpleStatementLine):
        return False
    for small in stmt.body:
        if isinstance(small, cst.Assign) and any(
            ctx_name in names_in(t.target) for t in small.targets
        ):
            return True
        if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
            func = small.value.func
            if isinstance(func, cst.Attribute) and _is_name(func.value, ctx_name):
                return True
    return False


class _CtxReads(cst.CSTTransformer):
    """``ctx.attr`` read in the forward after the forward set it: the value it was set to."""

    def __init__(self, ctx_name: str, ctx: Ctx):
        self.ctx_name = ctx_name
        self.ctx = ctx

    def leave_Attribute(
        self, original: cst.Attribute, updated: cst.Attribute
    ) -> cst.BaseExpression:
        if _is_name(updated.value, self.ctx_name) and updated.attr.value in self.ctx.attrs:
            value = self.ctx.attrs[updated.attr.value].node
            if isinstance(value, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)):
                return value
            return value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        return updated


def _ctx_statement(
    small: cst.BaseSmallStatement,
    ctx_name: str,
    forward: Forward,
    after: set[str],
    params: list[str],
    names: Names,
    assigned: set[str],
    imports: dict[str, str],
) -> list[cst.BaseSmallStatement]:
    """Read one small statement that mentions ctx; return what stays in the forward."""
    snapshots: list[cst.BaseSmallStatement] = []

    def value_of(expr: cst.BaseExpression, label: str) -> Const:
        used = names_in(expr)
        if ctx_name in used:
            raise Unsupported("unsupported-ctx", "stores a value computed from ctx", expr)
        if isinstance(expr, cst.Name) and expr.value not in after:
            return Const(expr, simple=True, external=expr.value in params)
        if not (used & assigned) and not _draws_random(expr, imports):
            # Only reads inputs the forward never rebinds: compute it when a gradient is needed.
            return Const(expr)
        fresh = names.fresh(label)
        snapshots.append(cst.Assign([cst.AssignTarget(cst.Name(fresh))], expr))
        return Const(cst.Name(fresh), simple=True)

    if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
        call = small.value
        func = call.func
        if isinstance(func, cst.Attribute) and _is_name(func.value, ctx_name):
            method = func.attr.value
            if method == "save_for_backward":
                if any(a.star or a.keyword for a in call.args):
                    raise Unsupported("unsupported-ctx", "saves *args or keywords", call)
                forward.ctx.saved = [value_of(a.value, "saved") for a in call.args]
                return snapshots
            if method in rules.CTX_HARMLESS:
                return []
            if method in rules.CTX_REFUSED:
                raise Unsupported("non-differentiable-output", f"calls ctx.{method}()", call)
            raise Unsupported("unsupported-ctx", f"calls ctx.{method}()", call)
    if isinstance(small, cst.Assign) and len(small.targets) == 1:
        target, value = small.targets[0].target, small.value
        pairs: list[tuple[cst.BaseExpression, cst.BaseExpression]] = [(target, value)]
        if (
            isinstance(target, cst.Tuple)
            and isinstance(value, cst.Tuple)
            and len(target.elements) == len(value.elements)
        ):  # ctx.low, ctx.high = low, high
            pairs = [
                (t.value, v.value) for t, v in zip(target.elements, value.elements, strict=True)
            ]
        if all(isinstance(t, cst.Attribute) and _is_name(t.value, ctx_name) for t, _ in pairs):
            for t, v in pairs:
                assert isinstance(t, cst.Attribute)
                forward.ctx.attrs[t.attr.value] = value_of(v, t.attr.value)
            return snapshots
    raise Unsupported("unsupported-ctx", "uses ctx in a statement fgirewrite does not model", small)


def _only_prepares_backward(
    stmt: cst.If,
    rest: list[Statement],
    result: cst.BaseExpression,
    after: set[str],
    imports: dict[str, str],
) -> bool:
    """An ``if`` without ``else`` whose body only computes what it stores on ctx: whether it
    runs cannot change the forward value, only what a backward can read."""
    if stmt.orelse is not None:
        return False
    if not all(isinstance(s, cst.SimpleStatementLine) for s in stmt.body.body):
        return False
    if _draws_random(stmt.body, imports) or contains(stmt.body, cst.Return, nested_scopes=False):
        return False
    bound = assigned_names(stmt.body)
    later_reads = set().union(*(names_in(s) for s in rest)) | names_in(result)
    return not (bound & later_reads) and not ((names_in(stmt.body) - bound) & after)


def _draws_random(node: cst.CSTNode, imports: dict[str, str]) -> bool:
    """A call in ``node`` may draw random numbers (``rules.may_draw_random``)."""
    for call in walk(node):
        if isinstance(call, cst.Call):
            func = call.func
            method = func.attr.value if isinstance(func, cst.Attribute) else None
            name = dotted(func)
            if rules.may_draw_random(qualify(name, imports) if name else None, method):
                return True
    return False


def _is_name(node: cst.BaseExpression, name: str) -> bool:
    return isinstance(node, cst.Name) and node.value == name


def _statements(suite: cst.BaseSuite) -> list[Statement]:
    """A suite's statements, as a list. Those of a one-line suite are small statements,
    which the checks on a forward refuse (it must end by returning from a statement line)."""
    return cast(list[Statement], list(suite.body))
