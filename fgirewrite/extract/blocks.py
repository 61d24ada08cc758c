"""Loops and branches in a backward that only compute constants.

``for i in range(1, ctx.n): grad_x += torch.cos_((2 * i - 1.0) * w * x)`` never touches the
incoming gradient: it is kept as it is in the generated code (no unrolling), with its names
mapped onto the generated function's and ``ctx`` reads replaced by what they stand for.
A block that touches the gradient, or mutates a tensor the caller holds, is refused.
"""

from __future__ import annotations

import libcst as cst

from fgirewrite.extract import rules
from fgirewrite.extract.forward import assigned_names
from fgirewrite.extract.values import Const, Lin, Seq, Unsupported, contains

REASON = {cst.For: "backward-loop", cst.While: "backward-loop", cst.If: "backward-control-flow"}


def const_block(evaluator, stmt: cst.BaseCompoundStatement) -> None:
    """Emit a gradient-free compound statement into the prelude; rebind what it assigns."""
    code = REASON[type(stmt)]
    what = "a branch on a value known only at run time" if code != "backward-loop" else "a loop"
    if contains(stmt, (cst.Return, cst.Yield)):
        raise Unsupported(code, f"returns from inside {what}", stmt)
    scopes = (
        cst.FunctionDef,
        cst.ClassDef,
        cst.Lambda,
        cst.ListComp,
        cst.SetComp,
        cst.DictComp,
        cst.GeneratorExp,
        cst.Global,
        cst.Nonlocal,
    )
    if contains(stmt, scopes):
        raise Unsupported(code, f"a nested scope inside {what}", stmt)
    env = evaluator.env
    assigned = assigned_names(stmt)
    mapping: dict[str, str] = {}
    used = _names(stmt)
    for name in sorted(used):
        value = env.get(name)
        if value is None:
            continue
        if isinstance(value, (Lin, Seq)) or not isinstance(value, Const):
            raise Unsupported(code, f"{what} that uses the gradient (`{name}`)", stmt)
        if name in assigned:
            # Rebinding the name is no write to the object it held; writes into it (an
            # in-place op, ``+=``, an indexed assignment) are refused below.
            fresh = evaluator.state.names.fresh(name)
            evaluator.emit(cst.Assign([cst.AssignTarget(cst.Name(fresh))], value.node))
            mapping[name] = fresh
        elif isinstance(value.node, cst.Name):
            mapping[name] = value.node.value
        else:
            mapping[name] = _bind(evaluator, name, value)
    for name in sorted(assigned - set(mapping)):
        mapping[name] = evaluator.state.names.fresh(name)
    for name in used - set(mapping) - {evaluator.ctx_name}:
        evaluator.e_Name(cst.Name(name))  # a global: record it, refuse if shadowed
    _refuse_mutation(evaluator, stmt, used)
    rewritten = stmt.visit(_Rename(evaluator, mapping))
    assert isinstance(rewritten, cst.BaseCompoundStatement)  # names renamed, nothing removed
    evaluator.emit(rewritten)
    for name in assigned:
        evaluator.env[name] = Const(cst.Name(mapping[name]), simple=True)


def touches_gradient(evaluator, stmt: cst.CSTNode) -> bool:
    """A block that reads a gradient (or a tuple holding one) of the evaluation."""
    return any(isinstance(evaluator.env.get(n), (Lin, Seq)) for n in _names(stmt))


def _names(node: cst.CSTNode) -> set[str]:
    """Identifiers used as variables: not attribute names, not keyword names."""
    found: set[str] = set()

    class V(cst.CSTVisitor):
        def visit_Attribute(self, n: cst.Attribute) -> bool:
            n.value.visit(self)
            return False

        def visit_Arg(self, n: cst.Arg) -> bool:
            n.value.visit(self)
            return False

        def visit_Name(self, n: cst.Name) -> None:
            found.add(n.value)

    node.visit(V())
    return found


def _bind(evaluator, name: str, value: Const) -> str:
    fresh = evaluator.state.names.fresh(name)
    evaluator.emit(cst.Assign([cst.AssignTarget(cst.Name(fresh))], value.node))
    return fresh


class _Rename(cst.CSTTransformer):
    """Map names, and replace ctx reads by the values they stand for."""

    def __init__(self, evaluator, mapping: dict[str, str]):
        self.evaluator = evaluator
        self.mapping = mapping

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        return not self.evaluator.is_ctx(node.value)

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute):
        if self.evaluator.is_ctx(original.value):
            value = self.evaluator.e_Attribute(original)
            if not isinstance(value, Const):
                raise Unsupported("backward-loop", "a loop reads ctx.saved_tensors whole", original)
            return value.node
        return updated.with_changes(attr=original.attr)  # never rename an attribute's name

    def leave_Subscript(self, original: cst.Subscript, updated: cst.Subscript):
        if isinstance(original.value, cst.Attribute) and self.evaluator.is_ctx(
            original.value.value
        ):
            value = self.evaluator.e_Subscript(original)
            if isinstance(value, Const):
                return value.node
        return updated

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        return updated.with_changes(keyword=original.keyword)

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        return cst.Name(self.mapping[updated.value]) if updated.value in self.mapping else updated


def _refuse_mutation(evaluator, stmt: cst.CSTNode, used: set[str]) -> None:
    """A write into a name that stands for the caller's tensor (an in-place op, ``+=``, an
    indexed assignment) would mutate it. Rebinding the name is no write."""
    external = {
        name
        for name in used
        if isinstance(value := evaluator.env.get(name), Const) and (value.external or value.aliased)
    }

    def refuse(target: cst.BaseExpression | None, what: str, node: cst.CSTNode) -> None:
        if isinstance(target, cst.Name) and target.value in external:
            raise Unsupported(
                "in-place-alias",
                f"{what} `{target.value}`, which may share memory with the caller's tensors",
                node,
            )

    class V(cst.CSTVisitor):
        def visit_Call(self, call: cst.Call) -> None:
            func = call.func
            if not isinstance(func, cst.Attribute) or not rules.is_inplace(func.attr.value):
                return
            target = (
                func.value
                if not evaluator.qualified(func)
                else (call.args[0].value if call.args else None)
            )
            refuse(target, "an in-place op on", call)

        def visit_AugAssign(self, node: cst.AugAssign) -> None:
            refuse(_written(node.target), "an augmented assignment (in place on a tensor) to", node)

        def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
            if isinstance(node.target, (cst.Subscript, cst.Attribute)):
                refuse(_written(node.target), "an indexed or attribute assignment into", node)

    stmt.visit(V())


def _written(target: cst.BaseExpression) -> cst.BaseExpression:
    """The name whose object a write goes into: ``a`` of ``a``, ``a[i]``, ``a.data[i]``."""
    while isinstance(target, (cst.Subscript, cst.Attribute)):
        target = target.value
    return target
