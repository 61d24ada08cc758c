"""Symbolic evaluation of a backward (or setup_context) body.

Every value the body computes is classified as one of:

- ``Const``: does not depend on the incoming gradient. Its expression is kept (with the
  body's local names replaced by what they stand for) and becomes plain code.
- ``Lin``: linear and elementwise in the incoming gradient. Its expression is a *template*
  in which the name ``GRAD`` stands for the incoming gradient.
- ``Seq``: a tuple (``ctx.saved_tensors``, a returned ``grad, None``).

Anything else (a product of two gradients, a gradient passed to an unknown function, a random
draw, a loop) raises ``Unsupported`` with a stable reason code. In-place ops become
out-of-place ops that rebind every name sharing the mutated object; an in-place op on a tensor
that may share memory with something else is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import overload

import libcst as cst

from fgirewrite.extract import rules
from fgirewrite.extract.blocks import const_block, touches_gradient
from fgirewrite.extract.branches import gradient_branch
from fgirewrite.extract.calls import CallRules, keeps_dtype
from fgirewrite.extract.values import (
    AUG_TO_BIN,
    BOOL_OPS,
    BUILTINS,
    CTX,
    UNKNOWN,
    Const,
    Ctx,
    Lin,
    Seq,
    State,
    Statements,
    Sym,
    Unbound,
    Unsupported,
    as_const,
    dotted,
    literal_value,
    node_of,
    op_text,
    operand,
    same_slice,
    standalone,
)


class Evaluator(CallRules):
    """Evaluates statements and expressions of one function body."""

    def __init__(
        self,
        state: State,
        env: dict[str, Sym | Unbound],
        ctx_name: str | None,
        ctx: Ctx,
        mode: str,
    ):
        self.state = state
        self.env = env
        self.ctx_name = ctx_name
        self.ctx = ctx
        self.mode = mode  # "backward" reads ctx; "setup" writes it
        # the index of a masked assignment in progress
        self.mask: Sequence[cst.SubscriptElement] | None = None

    # ---------------------------------------------------------------- statements

    def block(self, body: Statements) -> Sym | None:
        """Evaluate statements; the returned value, or None if the block falls through."""
        for stmt in body:
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    result = self.small(small)
                    if result is not None:
                        return result
            else:
                result = self.compound(stmt)
                if result is not None:
                    return result
        return None

    def small(self, stmt: cst.BaseSmallStatement) -> Sym | None:
        if isinstance(stmt, cst.Return):
            if stmt.value is None:
                return Const(cst.Name("None"), simple=True, value=None)
            return self.expr(stmt.value)
        if isinstance(stmt, (cst.Pass, cst.Assert)):
            return None
        if isinstance(stmt, cst.Expr):
            self.expression_statement(stmt)
            return None
        if isinstance(stmt, cst.Assign):
            if len(stmt.targets) == 1 and isinstance(stmt.targets[0].target, cst.Subscript):
                self.masked_assign(stmt.targets[0].target, stmt.value)
                return None
            value = self.expr(stmt.value)
            for target in stmt.targets:
                self.bind(target.target, value, stmt.value)
            return None
        if isinstance(stmt, cst.AnnAssign):
            if stmt.value is not None:
                self.bind(stmt.target, self.expr(stmt.value), stmt.value)
            return None
        if isinstance(stmt, cst.AugAssign):
            self.aug_assign(stmt)
            return None
        if isinstance(stmt, cst.Del):
            return None
        if isinstance(stmt, (cst.Import, cst.ImportFrom)):
            self.imported(stmt)
            return None
        if isinstance(stmt, cst.Raise):
            raise Unsupported("backward-control-flow", "the body raises unconditionally", stmt)
        raise Unsupported(
            "unsupported-syntax", f"`{type(stmt).__name__}` statement in the body", stmt
        )

    def compound(self, stmt: cst.BaseStatement | cst.BaseSmallStatement) -> Sym | None:
        if isinstance(stmt, cst.If):
            test = self.expr(stmt.test)
            if not isinstance(test, Const):
                raise Unsupported(
                    "backward-control-flow", "branches on the gradient's value", stmt.test
                )
            if test.value is UNKNOWN:
                if touches_gradient(self, stmt):
                    return gradient_branch(self, stmt, test)
                const_block(self, stmt)
                return None
            if test.value:
                return self.block(stmt.body.body)
            if stmt.orelse is None:
                return None
            if isinstance(stmt.orelse, cst.If):
                return self.compound(stmt.orelse)
            return self.block(stmt.orelse.body.body)
        if isinstance(stmt, (cst.For, cst.While)):
            const_block(self, stmt)
            return None
        if isinstance(stmt, cst.With):
            for item in stmt.items:
                name = self.qualified(item.item.func) if isinstance(item.item, cst.Call) else None
                if name not in ("torch.no_grad", "torch.autograd.no_grad"):
                    raise Unsupported(
                        "unsupported-syntax", "a `with` block other than torch.no_grad()", stmt
                    )
            return self.block(stmt.body.body)
        raise Unsupported(
            "unsupported-syntax", f"`{type(stmt).__name__}` statement in the body", stmt
        )

    def expression_statement(self, stmt: cst.Expr) -> None:
        value = stmt.value
        if isinstance(value, (cst.SimpleString, cst.ConcatenatedString)):
            return None
        if isinstance(value, cst.Call) and any(
            a.keyword is not None and a.keyword.value == "out" for a in value.args
        ):  # ``torch.where(c, g, 0, out=g)``: writes into ``g``
            self.expr(value)
            return None
        if isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute):
            receiver = value.func.value
            method = value.func.attr.value
            if self.is_ctx(receiver):
                self.ctx_call(value, method)
                return None
            if rules.is_inplace(method):
                self.expr(value)
                return None
        raise Unsupported("backward-side-effect", "a statement whose result is not used", stmt)

    def aug_assign(self, stmt: cst.AugAssign) -> None:
        value = stmt.value  # ``a *= b / c`` is ``a = a * (b / c)``: keep the grouping
        if not isinstance(value, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) and not (
            value.lpar
        ):
            value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        op = cst.BinaryOperation(
            left=stmt.target, operator=AUG_TO_BIN[type(stmt.operator)](), right=value
        )
        if isinstance(stmt.target, cst.Subscript):
            self.masked_assign(stmt.target, op)
            return None
        if not isinstance(stmt.target, cst.Name):
            raise Unsupported("unsupported-syntax", "augmented assignment to an attribute", stmt)
        name = stmt.target.value
        old = self.expr(stmt.target)
        self.check_inplace(old, name, stmt)
        self.env[name] = self.kept_dtype(old)  # ``g *= t`` is in place on a tensor
        try:
            new = self.expr(op)
        finally:
            self.env[name] = old
        if isinstance(new, Lin) and isinstance(old, Lin):
            new.dtype = old.dtype
        self.rebind(old, new, name)
        return None

    def imported(self, stmt: cst.Import | cst.ImportFrom) -> None:
        """An import in the body: its names must be the module's own imports (the generated
        code reads them as globals; the rewrite adds ``import torch`` where it is missing)."""
        module = cst.Module([])
        for alias in stmt.names if not isinstance(stmt.names, cst.ImportStar) else []:
            full = module.code_for_node(alias.name)
            if isinstance(stmt, cst.ImportFrom):
                if stmt.module is None or stmt.relative:
                    break
                full = f"{module.code_for_node(stmt.module)}.{full}"
            bound = alias.evaluated_alias or alias.evaluated_name.split(".")[0]
            target = full if alias.asname or isinstance(stmt, cst.ImportFrom) else bound
            if target == "torch" or self.state.imports.get(bound) == target:
                self.env.pop(bound, None)
                continue
            break
        else:
            return
        raise Unsupported(
            "unsupported-syntax",
            f"an import the module itself does not have (`{module.code_for_node(stmt)}`)",
            stmt,
        )

    def bind(self, target: cst.BaseExpression, value: Sym, source: cst.BaseExpression) -> None:
        """``target = value``: a name, a tuple of names, a masked element, or a ctx attribute."""
        if isinstance(target, cst.Name):
            self.env[target.value] = self.materialize(value, target.value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            self.bind_unpacked(target, value, source)
        elif isinstance(target, cst.Subscript):
            self.masked_assign(target, source)
        elif isinstance(target, cst.Attribute) and self.is_ctx(target.value):
            if self.mode != "setup":
                raise Unsupported("unsupported-ctx", "the backward writes to ctx", target)
            if not isinstance(value, Const):
                raise Unsupported("unsupported-ctx", "stores a non-constant on ctx", target)
            self.ctx.attrs[target.attr.value] = self.materialize(value, target.attr.value)
        else:
            raise Unsupported("unsupported-syntax", "assignment to an attribute", target)

    def bind_unpacked(
        self, target: cst.Tuple | cst.List, value: Sym, source: cst.BaseExpression
    ) -> None:
        """``a, b = value``: a tuple's items one by one, or one statement for a constant."""
        if any(isinstance(e, cst.StarredElement) for e in target.elements):
            raise Unsupported("unsupported-syntax", "starred assignment", target)
        elements = [e.value for e in target.elements]
        if isinstance(value, Const) and not value.simple:
            # ``a, b = f(x)``: one statement, fresh names for its parts
            if not all(isinstance(e, cst.Name) for e in elements):
                raise Unsupported("unsupported-syntax", "nested unpacking", target)
            names = [e.value for e in elements if isinstance(e, cst.Name)]
            fresh = [self.state.names.fresh(n) for n in names]
            tup = cst.Tuple([cst.Element(cst.Name(n)) for n in fresh])
            self.emit(cst.Assign([cst.AssignTarget(tup)], value.node))
            for name, new in zip(names, fresh, strict=True):
                self.env[name] = Const(cst.Name(new), simple=True)
            return
        if not isinstance(value, Seq):
            raise Unsupported("unsupported-syntax", "unpacking a value that is not a tuple", source)
        if len(value.items) != len(elements):
            raise Unsupported(
                "unsupported-syntax",
                f"unpacks {len(value.items)} values into {len(elements)} names",
                target,
            )
        for e, item in zip(elements, value.items, strict=True):
            self.bind(e, item, source)

    @overload
    def materialize(self, value: Const, name: str) -> Const: ...
    @overload
    def materialize(self, value: Sym, name: str) -> Sym: ...
    def materialize(self, value: Sym, name: str) -> Sym:
        """Give a compound constant a statement of its own so repeated uses compute it once."""
        if isinstance(value, Const) and not value.simple:
            fresh = self.state.names.fresh(name)
            self.emit(cst.Assign([cst.AssignTarget(cst.Name(fresh))], value.node))
            return Const(
                cst.Name(fresh),
                simple=True,
                value=value.value,
                is_bool=value.is_bool,
                tensor=value.tensor,
                integral=value.integral,
                zero=value.zero,
                external=value.external,
                aliased=value.aliased,
                keeps_dtype=value.keeps_dtype,
            )
        return value

    def emit(self, stmt: cst.BaseSmallStatement | cst.BaseStatement) -> None:
        if isinstance(stmt, cst.Assign):
            stmt = stmt.with_changes(value=standalone(stmt.value))
        if isinstance(stmt, cst.BaseSmallStatement):
            stmt = cst.SimpleStatementLine([stmt])
        self.state.prelude.append(stmt)

    def rebind(self, old: Sym, new: Sym, name: str) -> None:
        """An in-place op: every name bound to the mutated object now sees the new value."""
        new = self.materialize(new, name)
        for key, val in list(self.env.items()):
            if val is old:
                self.env[key] = new
            elif isinstance(val, Seq):  # ``pair = (a, b)`` holds a itself, not a copy
                _replace_in(val, old, new)

    def held(self, value: Sym) -> bool:
        """A name is bound to this very value, or to a tuple holding it."""
        return any(
            v is value or (isinstance(v, Seq) and _holds(v, value)) for v in self.env.values()
        )

    def check_inplace(self, target: Sym, label: str, node: cst.CSTNode) -> None:
        """Refuse an in-place op on a tensor that may share memory with another. The incoming
        gradient itself may be written into: autograd hands the backward that buffer, and the
        rewrite computes the same values out of place (see the README's numeric contract)."""
        if isinstance(target, Lin) and target.external and not target.aliased:
            return
        if isinstance(target, (Const, Lin)) and (target.external or target.aliased):
            shared = (
                "the caller's tensors"
                if target.external and not (isinstance(target, Lin) and target.aliased)
                else "a view or alias of it"
            )
            raise Unsupported(
                "in-place-alias",
                f"an in-place op on `{label}`, which may share memory with {shared}",
                node,
            )

    def masked_assign(self, target: cst.Subscript, value_node: cst.BaseExpression) -> None:
        """``g[mask] = v`` becomes ``g = torch.where(mask, v, g)``."""
        if len(target.slice) != 1 or not isinstance(target.slice[0].slice, cst.Index):
            raise Unsupported(
                "unsupported-syntax", "indexed assignment other than by a mask", target
            )
        if not isinstance(target.value, cst.Name):
            raise Unsupported("unsupported-syntax", "indexed assignment to an expression", target)
        label = target.value.value
        base = self.expr(target.value)
        self.check_inplace(base, label, target)
        mask = self.expr(target.slice[0].slice.value)
        if not isinstance(mask, Const) or not mask.is_bool:
            raise Unsupported(
                "unsupported-syntax",
                f"indexed assignment to `{label}` by an index not known to be a boolean mask "
                "(a comparison of tensors, or `&`, `|`, `*`, `+` of such masks)",
                target,
            )
        saved, self.mask = self.mask, target.slice
        try:
            value = self.expr(value_node)
        finally:
            self.mask = saved
        new = self.where(mask, value, base, target)
        self.rebind(base, new, label)

    # ---------------------------------------------------------------- expressions

    def expr(self, node: cst.BaseExpression) -> Sym:
        method = getattr(self, "e_" + type(node).__name__, None)
        if method is None:
            raise Unsupported("unsupported-syntax", f"`{type(node).__name__}` expression", node)
        return method(node)

    def is_ctx(self, node: cst.BaseExpression) -> bool:
        return (
            self.ctx_name is not None
            and isinstance(node, cst.Name)
            and node.value == self.ctx_name
            and node.value not in self.env
        )

    def qualified(self, node: cst.BaseExpression) -> str | None:
        """The qualified name of a global callable (``torch.where``), None for local values."""
        name = dotted(node)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        if head in self.env or head == self.ctx_name:
            return None
        if head in self.state.imports:
            return self.state.imports[head] + ("." + rest if rest else "")
        return name

    def e_Name(self, node: cst.Name) -> Sym:
        bound = self.env.get(node.value)
        if isinstance(bound, Unbound):
            raise Unsupported(
                "backward-control-flow",
                f"`{node.value}` is bound in one branch of a runtime condition only",
                node,
            )
        if bound is not None:
            return bound
        if self.is_ctx(node):
            return CTX
        value = literal_value(node)
        if value is UNKNOWN and node.value not in BUILTINS:
            if node.value in self.state.shadowed:
                raise Unsupported(
                    "unsupported-syntax",
                    f"reads module-level `{node.value}`, which the forward's own "
                    f"`{node.value}` would shadow in the rewrite",
                    node,
                )
            self.state.free.add(node.value)
        return Const(node, simple=True, value=value)

    def e_Integer(self, node: cst.Integer) -> Sym:
        value = literal_value(node)
        return Const(node, simple=True, value=value, zero=(value == 0), keeps_dtype=True)

    e_Float = e_Integer

    def e_SimpleString(self, node: cst.BaseExpression) -> Sym:
        return Const(node, simple=True)

    e_ConcatenatedString = e_SimpleString
    e_Imaginary = e_SimpleString
    e_Ellipsis = e_SimpleString

    def e_Attribute(self, node: cst.Attribute) -> Sym:
        attr = node.attr.value
        if self.is_ctx(node.value):
            return self.ctx_read(node, attr)
        base = self.expr(node.value)
        if isinstance(base, Lin):
            if attr in rules.SHAPE_ATTRIBUTES and base.plain:
                return Const(cst.Attribute(cst.Name(self.state.out), cst.Name(attr)), simple=True)
            if attr == "dtype" and base.dtype is not None:
                return Const(base.dtype, simple=True)
            if attr == "data":
                return base
            if attr == "dtype":
                raise self.not_linear(
                    node,
                    "`.dtype` of a gradient whose dtype fgirewrite cannot tell (a product "
                    "with a tensor that may widen it)",
                )
            raise self.not_linear(node, f"`.{attr}` of the gradient")
        if not isinstance(base, Const):
            raise Unsupported("unsupported-syntax", f"`.{attr}` of a tuple", node)
        aliasing = attr in rules.MAY_ALIAS_ATTRIBUTES
        if aliasing:  # ``x.T``, ``x.data``: a view, so x now shares memory with it
            base.aliased = True
        return Const(
            node.with_changes(value=operand(node.value, base.node)),
            simple=base.simple,
            tensor=base.tensor and attr not in rules.SHAPE_ATTRIBUTES,
            external=base.external and aliasing,
            aliased=aliasing or base.aliased,
        )

    def ctx_read(self, node: cst.Attribute, attr: str) -> Sym:
        if self.mode != "backward":
            raise Unsupported("unsupported-ctx", f"reads ctx.{attr} before backward", node)
        if attr in ("saved_tensors", "saved_variables"):
            if self.ctx.saved is None:
                raise Unsupported("unsupported-ctx", "reads ctx.saved_tensors but saves none", node)
            # A saved tensor is shared with ctx, and may be the output or a view of an input
            # the caller holds: an in-place op on it is never taken for a private update.
            return Seq([replace(c, external=True, tensor=True) for c in self.ctx.saved], saved=True)
        if attr == "needs_input_grad":
            items: list[Sym] = []
            for i in range(self.ctx.n_inputs):
                # The first input is the surrogate's argument: a tensor whenever its gradient
                # is asked for. Others may be plain numbers, for which autograd says False.
                known = i == 0 or i in self.ctx.tensor_inputs
                if i in self.ctx.unneeded:
                    items.append(Const(cst.Name("False"), simple=True, value=False))
                    continue
                items.append(Const(cst.Name("True"), simple=True, value=True if known else UNKNOWN))
            return Seq(items)
        if attr in self.ctx.attrs:
            return self.ctx.attrs[attr]
        raise Unsupported(
            "unsupported-ctx", f"reads ctx.{attr}, which the forward never sets", node
        )

    def e_Subscript(self, node: cst.Subscript) -> Sym:
        if self.mask is not None and same_slice(node.slice, self.mask):
            return self.expr(node.value)  # ``g[mask]`` inside ``g[mask] = ...`` is g there
        base = self.expr(node.value)
        if isinstance(base, Seq):
            if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
                index = self.expr(node.slice[0].slice.value)
                position = index.value if isinstance(index, Const) else None
                if isinstance(position, int):
                    try:
                        return base.items[position]
                    except IndexError:
                        raise Unsupported(
                            "unsupported-ctx", "indexes past the saved values", node
                        ) from None
            raise Unsupported("unsupported-syntax", "indexes a tuple by a computed value", node)
        if isinstance(base, Lin):
            raise self.not_linear(node, "indexing of the gradient")
        if not isinstance(base, Const):
            raise Unsupported("unsupported-syntax", "indexes ctx", node)
        elements = []
        for element in node.slice:
            elements.append(element.with_changes(slice=self.const_slice(element.slice)))
        base.aliased = True  # ``y = x[0]`` may be a view: an in-place op on x changes y
        return Const(
            node.with_changes(value=operand(node.value, base.node), slice=elements),
            tensor=base.tensor,
            external=base.external,
            aliased=True,
        )

    def const_slice(self, s: cst.BaseSlice) -> cst.BaseSlice:
        if isinstance(s, cst.Index):
            return s.with_changes(value=self.const(s.value).node)
        changes = {}
        for part in ("lower", "upper", "step"):
            value = getattr(s, part)
            if value is not None:
                changes[part] = self.const(value).node
        return s.with_changes(**changes)

    def const(self, node: cst.BaseExpression) -> Const:
        value = as_const(self.expr(node))
        if value is None:
            raise self.not_linear(node, "the gradient used where a constant is expected")
        return value

    def e_UnaryOperation(self, node: cst.UnaryOperation) -> Sym:
        value = self.expr(node.expression)
        if isinstance(value, Lin):
            if isinstance(node.operator, (cst.Minus, cst.Plus)):
                return self.lin_op(
                    value,
                    node.with_changes(expression=operand(node.expression, value.node)),
                    keep_reduction=True,
                    keeps=True,
                )
            raise self.not_linear(node, "a non-linear unary operator on the gradient")
        c = self.const(node.expression)
        known: object = UNKNOWN
        if isinstance(node.operator, cst.Not) and c.value is not UNKNOWN:
            known = not c.value
        if isinstance(node.operator, cst.Minus) and isinstance(c.value, (int, float)):
            known = -c.value
        return Const(
            node.with_changes(expression=operand(node.expression, c.node)),
            simple=c.simple,
            value=known,
            is_bool=isinstance(node.operator, cst.BitInvert) and c.is_bool,
            tensor=c.tensor,
            zero=c.zero,
            keeps_dtype=c.keeps_dtype,
        )

    def e_BinaryOperation(self, node: cst.BinaryOperation) -> Sym:
        left, right = self.expr(node.left), self.expr(node.right)
        op = node.operator
        rebuilt = node.with_changes(
            left=operand(node.left, node_of(left)), right=operand(node.right, node_of(right))
        )
        if isinstance(left, Lin) or isinstance(right, Lin):
            self.no_seq(left, right, node)
            if isinstance(left, Lin) and isinstance(right, Lin):
                if isinstance(op, (cst.Add, cst.Subtract)):
                    return self.lin_op(left, rebuilt, right, keeps=True)
                raise self.not_linear(node, "a product of two gradients")
            lin, other = (left, right) if isinstance(left, Lin) else (right, left)
            assert isinstance(other, Const)
            keeps = keeps_dtype(other)
            if isinstance(op, cst.Multiply) or (isinstance(op, cst.Divide) and lin is left):
                return self.lin_op(lin, rebuilt, keep_reduction=True, keeps=keeps)
            if isinstance(op, (cst.Add, cst.Subtract)) and other.zero:
                return self.lin_op(lin, rebuilt, keep_reduction=True, keeps=keeps)
            raise self.not_linear(
                node, f"a gradient combined with a constant by `{op_text(op)}`, which is not linear"
            )
        self.no_seq(left, right, node)
        assert isinstance(left, Const) and isinstance(right, Const)
        tensor = left.tensor or right.tensor
        return Const(
            rebuilt,
            is_bool=_boolean(op, left, right, tensor),
            tensor=tensor,
            zero=isinstance(op, cst.Multiply) and (left.zero or right.zero),
        )

    def e_Comparison(self, node: cst.Comparison) -> Sym:
        if any(
            isinstance(self.expr(part), Lin)
            for part in [node.left, *(t.comparator for t in node.comparisons)]
        ):
            raise self.not_linear(node, "a comparison of the gradient")
        left = self.const(node.left)
        comparators = [self.const(t.comparator) for t in node.comparisons]
        targets = [
            t.with_changes(comparator=operand(t.comparator, c.node))
            for t, c in zip(node.comparisons, comparators, strict=True)
        ]
        return Const(
            node.with_changes(left=operand(node.left, left.node), comparisons=targets),
            is_bool=True,
            tensor=left.tensor or any(c.tensor for c in comparators),
        )

    def e_BooleanOperation(self, node: cst.BooleanOperation) -> Sym:
        left, right = self.const(node.left), self.const(node.right)
        value = UNKNOWN
        if left.value is not UNKNOWN and right.value is not UNKNOWN:
            value = (
                (left.value and right.value)
                if isinstance(node.operator, cst.And)
                else (left.value or right.value)
            )
        elif isinstance(node.operator, cst.And) and left.value is False:
            value = False
        elif isinstance(node.operator, cst.Or) and left.value is True:
            value = True
        return Const(
            node.with_changes(
                left=operand(node.left, left.node), right=operand(node.right, right.node)
            ),
            value=value,
        )

    def e_IfExp(self, node: cst.IfExp) -> Sym:
        test = self.const(node.test)
        if test.value is not UNKNOWN:
            return self.expr(node.body if test.value else node.orelse)
        body, orelse = self.expr(node.body), self.expr(node.orelse)
        rebuilt = node.with_changes(
            test=operand(node.test, test.node),
            body=operand(node.body, node_of(body)),
            orelse=operand(node.orelse, node_of(orelse)),
        )
        if isinstance(body, Lin) and isinstance(orelse, Lin):
            return self.lin_op(body, rebuilt, orelse, keeps=True)
        if isinstance(body, Lin) or isinstance(orelse, Lin):
            raise self.not_linear(node, "a gradient in one branch of a conditional only")
        return Const(rebuilt)

    def e_Tuple(self, node: cst.Tuple | cst.List) -> Sym:
        items = []
        for element in node.elements:
            if isinstance(element, cst.StarredElement):
                raise Unsupported("unsupported-syntax", "starred element", element)
            items.append(self.expr(element.value))
        return Seq(items)

    def e_List(self, node: cst.List) -> Sym:
        return self.e_Tuple(node)


def _boolean(op: cst.BaseBinaryOp, left: Const, right: Const, tensor: bool) -> bool:
    """A boolean mask from two: ``&``, ``|``, ``^`` of any booleans; ``*`` and ``+`` of
    boolean tensors (logical and, or), not of Python bools (``True * True`` is the int 1)."""
    if not (left.is_bool and right.is_bool):
        return False
    return isinstance(op, BOOL_OPS) or (isinstance(op, (cst.Multiply, cst.Add)) and tensor)


def _replace_in(seq: Seq, old: Sym, new: Sym) -> None:
    for i, item in enumerate(seq.items):
        if item is old:
            seq.items[i] = new
        elif isinstance(item, Seq):
            _replace_in(item, old, new)


def _holds(seq: Seq, value: Sym) -> bool:
    return any(i is value or (isinstance(i, Seq) and _holds(i, value)) for i in seq.items)
