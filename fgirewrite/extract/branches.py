"""A branch of a backward on a value known only at run time (a closure flag, the output's
rank) whose branches compute the gradient: each branch is evaluated on its own, its
statements kept under the same ``if``, and every value the branches leave different merged
as a conditional expression (``g * a if flag else g * b``), which stays linear."""

from __future__ import annotations

import libcst as cst

from fgirewrite.extract.calls import same_dtype
from fgirewrite.extract.values import (
    UNKNOWN,
    Const,
    Lin,
    Seq,
    Statements,
    Sym,
    Unbound,
    Unsupported,
)

SHAPES = frozenset({"shape", "ndim", "dtype", "device"})
SHAPE_CALLS = frozenset({"dim", "size", "numel", "len"})


def static_condition(evaluator, test: cst.BaseExpression) -> bool:
    """A condition on Python values: a closure or module name, a literal, the rank or shape
    of a tensor. Not one on a tensor's values, which would make the rewrite's forward branch
    on data (a graph break for torch.compile, an error under vmap)."""
    ok = True

    class V(cst.CSTVisitor):
        def visit_Comparison(self, node: cst.Comparison) -> bool:
            # ``x is None``: an identity, decided without looking at any tensor's values
            return not all(isinstance(t.operator, (cst.Is, cst.IsNot)) for t in node.comparisons)

        def visit_Attribute(self, node: cst.Attribute) -> bool:
            nonlocal ok
            if evaluator.is_ctx(node.value):
                ok = (
                    ok
                    and evaluator.ctx.attrs.get(node.attr.value, Const(node)).value is not UNKNOWN
                )
                return False
            return node.attr.value not in SHAPES

        def visit_Call(self, node: cst.Call) -> bool:
            func = node.func
            name = (
                func.attr.value if isinstance(func, cst.Attribute) else getattr(func, "value", None)
            )
            if name in SHAPE_CALLS:
                return False
            return True

        def visit_Name(self, node: cst.Name) -> None:
            nonlocal ok
            value = evaluator.env.get(node.value)
            if value is not None and not (isinstance(value, Const) and value.value is not UNKNOWN):
                ok = False

    test.visit(V())
    return ok


def gradient_branch(evaluator, stmt: cst.If, test: Const) -> Sym | None:
    """Evaluate ``if test: ... else: ...`` with the gradient in its branches."""
    if not static_condition(evaluator, stmt.test):
        raise Unsupported(
            "backward-control-flow",
            "branches on values that may be a tensor's, which the rewrite's forward would then do",
            stmt.test,
        )
    condition = evaluator.materialize(test, "branch")
    assert isinstance(condition, Const)
    orelse: Statements = []
    if isinstance(stmt.orelse, cst.If):
        orelse = [stmt.orelse]
    elif stmt.orelse is not None:
        orelse = stmt.orelse.body.body
    taken = _evaluate(evaluator, stmt.body.body)
    other = _evaluate(evaluator, orelse)
    (env_a, prelude_a, result_a), (env_b, prelude_b, result_b) = taken, other
    if (result_a is None) != (result_b is None):
        raise Unsupported(
            "backward-control-flow", "returns from one branch of a runtime condition only", stmt
        )
    names = evaluator.state.names
    merged: dict[str, Sym | Unbound] = {}
    for name in sorted(set(env_a) | set(env_b)):
        a, b = env_a.get(name), env_b.get(name)
        if a is b:
            continue
        if a is None or b is None:
            merged[name] = Unbound(name)  # bound in one branch only: refused if read later
            continue
        merged[name] = _merge(a, b, condition, names, prelude_a, prelude_b, stmt)
    result = None
    if result_a is not None:
        result = _merge(result_a, result_b, condition, names, prelude_a, prelude_b, stmt)
    evaluator.emit(
        cst.If(
            test=condition.node,
            body=cst.IndentedBlock(prelude_a or [cst.SimpleStatementLine([cst.Pass()])]),
            orelse=cst.Else(cst.IndentedBlock(prelude_b)) if prelude_b else None,
        )
    )
    evaluator.env.update(merged)
    return result


def _evaluate(evaluator, body: Statements):
    """A branch on its own: its environment, the statements it emits, what it returns."""
    state = evaluator.state
    saved = state.prelude
    state.prelude = []
    branch = type(evaluator)(
        state, dict(evaluator.env), evaluator.ctx_name, evaluator.ctx, evaluator.mode
    )
    try:
        result = branch.block(body)
        return branch.env, state.prelude, result
    finally:
        state.prelude = saved


def _merge(a: Sym, b: Sym, condition: Const, names, prelude_a, prelude_b, stmt) -> Sym:
    if isinstance(a, Seq) and isinstance(b, Seq) and len(a.items) == len(b.items):
        return Seq(
            [
                _merge(x, y, condition, names, prelude_a, prelude_b, stmt)
                for x, y in zip(a.items, b.items, strict=True)
            ]
        )
    a, b = _as_gradient(a, b), _as_gradient(b, a)
    if isinstance(a, Lin) and isinstance(b, Lin):
        if (a.reduction is None) != (b.reduction is None):
            raise Unsupported("backward-not-linear", "a gradient reduced in one branch only", stmt)
        node = cst.IfExp(test=condition.node, body=_grouped(a.node), orelse=_grouped(b.node))
        return Lin(node, reduction=a.reduction, dtype=same_dtype(a, b), reduced_at=a.reduced_at)
    if isinstance(a, Const) and isinstance(b, Const):
        fresh = names.fresh("chosen")
        for prelude, value in ((prelude_a, a), (prelude_b, b)):
            prelude.append(
                cst.SimpleStatementLine(
                    [cst.Assign([cst.AssignTarget(cst.Name(fresh))], value.node)]
                )
            )
        return Const(cst.Name(fresh), simple=True, value=a.value if a.value == b.value else UNKNOWN)
    raise Unsupported(
        "backward-not-linear", "a gradient in one branch, a non-zero constant in the other", stmt
    )


def _as_gradient(value: Sym, other: Sym) -> Sym:
    """A zero constant facing a gradient is the zero gradient."""
    if isinstance(value, Const) and value.zero and isinstance(other, Lin):
        from fgirewrite.surrogate import GRAD

        return Lin(cst.parse_expression(f"{GRAD} * 0"), reduction=other.reduction)
    return value


def _grouped(node: cst.BaseExpression) -> cst.BaseExpression:
    if isinstance(node, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) or node.lpar:
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
