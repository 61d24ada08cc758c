"""Gradient templates: the order their products are built in, and how they read.

A template is the backward's result with ``GRAD`` standing for the incoming gradient.
``backward_order`` rebuilds a chain of products and quotients so that autograd's backward
multiplies in the original's order (bit-identical gradients); ``derivative`` and ``readable``
give the expression people see in reports (``GRAD = 1``, temporaries written out).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

import libcst as cst

from fgirewrite.extract.values import dotted, names_in, standalone
from fgirewrite.surrogate import GRAD


def code(node: cst.CSTNode) -> str:
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


Step = Callable[[cst.BaseExpression], cst.BaseExpression]


def _zero(node: cst.BaseExpression, zeros: Collection[str] = frozenset()) -> bool:
    """A literal zero, ``torch.zeros_like(t)``, or a branch extraction proved zero (``zeros``:
    ``torch.tensor(0.0, device=d)``, ``T.zeros_like(t)`` under ``import torch as T``)."""
    if code(node) in zeros:
        return True
    if isinstance(node, cst.Call):
        return (
            dotted(node.func) == "torch.zeros_like"
            and len(node.args) == 1
            and not (node.args[0].keyword or node.args[0].star)
        )
    return isinstance(node, (cst.Integer, cst.Float)) and float(node.value.replace("_", "")) == 0


def _grad_in(node: cst.CSTNode) -> bool:
    return GRAD in names_in(node)


Peeled = tuple[Step, cst.BaseExpression, object]


def _peel(node: cst.BaseExpression, zeros: Collection[str]) -> Peeled | None:
    """The outermost unary linear step applied to the gradient (a product or quotient by a
    constant, a negation, a mask), as a builder, what it is applied to, and its factor (None
    for a step that cannot change the dtype); else None."""
    bare = node.with_changes(lpar=[], rpar=[])
    if isinstance(bare, (cst.BinaryOperation, cst.UnaryOperation)):
        return _peel_operator(bare)
    if isinstance(bare, cst.Call) and isinstance(bare.func, cst.Attribute):
        return _peel_call(bare, bare.func, zeros)
    return None


def _peel_operator(bare: cst.BinaryOperation | cst.UnaryOperation) -> Peeled | None:
    """``g * c``, ``c * g``, ``g / c``, ``-g``, ``+g``."""
    if isinstance(bare, cst.UnaryOperation):
        if isinstance(bare.operator, (cst.Minus, cst.Plus)):
            return (
                (lambda inner: bare.with_changes(expression=_grouped(inner))),
                bare.expression,
                None,
            )
        return None
    if not isinstance(bare.operator, (cst.Multiply, cst.Divide)):
        return None
    left, right = _grad_in(bare.left), _grad_in(bare.right)
    if left and not right:
        return (lambda inner: bare.with_changes(left=_left(inner))), bare.left, bare.right
    if right and not left and isinstance(bare.operator, cst.Multiply):
        return (lambda inner: bare.with_changes(right=_grouped(inner))), bare.right, bare.left
    return None


def _peel_call(bare: cst.Call, func: cst.Attribute, zeros: Collection[str]) -> Peeled | None:
    """``g.clone()``, ``g.contiguous()``, ``g.masked_fill(m, 0)``, ``torch.where(m, g, 0)``."""
    method, receiver = func.attr.value, func.value
    args = [a.value for a in bare.args]
    if method in ("clone", "contiguous") and not args:
        return (lambda inner: inner), receiver, None
    if method == "masked_fill" and len(args) == 2 and _zero(args[1], zeros):
        if _grad_in(receiver) and not _grad_in(args[0]):
            return (
                (lambda inner: bare.with_changes(func=func.with_changes(value=_grouped(inner)))),
                receiver,
                None,
            )
    if method == "where" and isinstance(receiver, cst.Name) and receiver.value == "torch":
        if len(args) == 3 and not _grad_in(args[0]):
            for branch, other in ((1, 2), (2, 1)):
                if _grad_in(args[branch]) and _zero(args[other], zeros):

                    def step(inner: cst.BaseExpression, branch: int = branch) -> cst.BaseExpression:
                        changed = list(bare.args)
                        changed[branch] = changed[branch].with_changes(value=inner)
                        return bare.with_changes(args=changed)

                    return step, args[branch], None
    return None


def _left(node: cst.BaseExpression) -> cst.BaseExpression:
    """The left operand of a product or quotient: a product or quotient needs no parentheses."""
    if isinstance(node, cst.BinaryOperation) and isinstance(
        node.operator, (cst.Multiply, cst.Divide)
    ):
        return node
    return _grouped(node)


def _grouped(node: cst.BaseExpression) -> cst.BaseExpression:
    if isinstance(node, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) or node.lpar:
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def backward_order(
    template: cst.BaseExpression,
    scalars: Collection[str] = frozenset(),
    out: str | None = None,
    zeros: Collection[str] = frozenset(),
) -> cst.BaseExpression:
    """A chain of unary linear steps on the gradient, nested in reverse.

    Autograd's backward of the rewrite applies the outermost operation of the injected term
    first, so the step the original applied first (innermost in its expression) must be the
    outermost: ``g * a / b`` becomes ``g / b * a``, whose backward computes ``(grad * a) / b``
    with the original's rounding, and ``where(m, 0, g * c)`` becomes ``where(m, 0, g) * c``,
    whose backward masks last, giving the original's zeros even where ``c`` is infinite. A
    selection between two gradients, ``where(m, g * a, g * b)``, becomes the sum of both
    chains on masked gradients, each masked last.

    The original's first steps by numbers (``scalars`` names number inputs) round in
    grad_output's dtype, the output's: the rewrite casts to ``out``'s dtype below them, so
    that its backward rounds them there too (a float16 output of a float32 input).
    ``zeros`` holds the code of the zero branches extraction proved zero. Anything else is
    kept as it is."""
    rebuilt = _reordered(template, cst.Name(GRAD), scalars, out, zeros, top=True)
    return template if rebuilt is None else rebuilt


def _reordered(
    template: cst.BaseExpression,
    seed: cst.BaseExpression,
    scalars: Collection[str],
    out: str | None,
    zeros: Collection[str],
    top: bool = False,
) -> cst.BaseExpression | None:
    """``template`` reordered for the backward and applied to ``seed``, or None."""
    steps: list[tuple[Step, object]] = []
    node = template
    while (peeled := _peel(node, zeros)) is not None:
        step, node, factor = peeled
        steps.append((step, factor))
    if isinstance(node, cst.Name) and node.value == GRAD:
        return _chain(steps, seed, scalars, out, top)
    branches = _selection(node)
    if branches is None:
        return None
    cond, chosen, other = branches
    inner = _chain(steps, seed, set(), None, False) or seed
    left, right = (
        _reordered(chosen, _where(cond, inner, cst.Integer("0")), scalars, None, zeros),
        _reordered(other, _where(cond, cst.Integer("0"), inner), scalars, None, zeros),
    )
    if left is None or right is None:
        return None
    return cst.BinaryOperation(
        left=_grouped(left),
        operator=cst.Add(),
        right=_grouped(right),
    )


def _chain(
    steps: list[tuple[Step, object]],
    seed: cst.BaseExpression,
    scalars: Collection[str],
    out: str | None,
    top: bool,
) -> cst.BaseExpression | None:
    first = len(steps)  # the original's first steps are the last ones peeled
    while first and _neutral(steps[first - 1][1], scalars):
        first -= 1
    numbers = bool([f for _, f in steps[first:] if f is not None]) and out is not None
    if top and len(steps) < 2 and not numbers:
        return None
    node = seed
    for i, (step, _) in enumerate(steps):  # the original's last step first: innermost here
        if i == first and numbers:
            assert out is not None  # ``numbers`` implies it
            node = _cast(node, out)
        node = step(node)
    if first == len(steps) and numbers:
        assert out is not None
        node = _cast(node, out)
    return node


def _selection(node: cst.BaseExpression):
    """``torch.where(cond, a, b)`` with the gradient in both branches: (cond, a, b)."""
    bare = node.with_changes(lpar=[], rpar=[])
    if (
        isinstance(bare, cst.Call)
        and isinstance(bare.func, cst.Attribute)
        and bare.func.attr.value == "where"
        and isinstance(bare.func.value, cst.Name)
        and bare.func.value.value == "torch"
        and len(bare.args) == 3
    ):
        cond, a, b = (arg.value for arg in bare.args)
        if not _grad_in(cond) and _grad_in(a) and _grad_in(b):
            return cond, a, b
    return None


def _where(cond: cst.BaseExpression, a: cst.BaseExpression, b: cst.BaseExpression) -> cst.Call:
    return cst.Call(
        cst.Attribute(cst.Name("torch"), cst.Name("where")),
        [cst.Arg(cond), cst.Arg(a), cst.Arg(b)],
    )


def _neutral(factor: object, scalars: Collection[str]) -> bool:
    """A step that keeps the dtype: no factor (a mask, a negation), a number, or a tensor of
    the output's dtype (``scalars`` names both kinds)."""
    if factor is None:
        return True
    return isinstance(factor, cst.BaseExpression) and _keeps_dtype(factor, scalars, None)


_ELEMENTWISE = frozenset(
    {"sigmoid", "exp", "tanh", "abs", "neg", "square", "reciprocal", "sqrt", "cos", "sin"}
)


def _keeps_dtype(node: cst.BaseExpression, names: Collection[str], out: str | None) -> bool:
    """A number, or a tensor of the output's dtype: ``out`` itself, a cast to its dtype, a
    name in ``names``, or arithmetic and elementwise functions of these."""
    bare = node.with_changes(lpar=[], rpar=[]) if node.lpar else node
    if isinstance(bare, (cst.Integer, cst.Float)):
        return True
    if isinstance(bare, cst.Name):
        return bare.value in names or bare.value == out
    if isinstance(bare, cst.UnaryOperation):
        return _keeps_dtype(bare.expression, names, out)
    if isinstance(bare, cst.BinaryOperation):
        return _keeps_dtype(bare.left, names, out) and _keeps_dtype(bare.right, names, out)
    if isinstance(bare, cst.Call) and isinstance(bare.func, cst.Attribute):
        method, args = bare.func.attr.value, [a.value for a in bare.args]
        if method in ("to", "type_as") and len(args) == 1 and out is not None:
            target = dotted(args[0])
            return target in (out, f"{out}.dtype")
        if method in _ELEMENTWISE and not args:
            return _keeps_dtype(bare.func.value, names, out)
        if dotted(bare.func) in {f"torch.{m}" for m in _ELEMENTWISE} and len(args) == 1:
            return _keeps_dtype(args[0], names, out)
    return False


def out_typed_names(prelude: list[cst.BaseStatement], out: str) -> set[str]:
    """Names the backward's statements bind to tensors of the output's dtype (a saved output,
    ``s.to(out.dtype)``): a gradient scaled by one keeps grad_output's dtype."""
    names: set[str] = set()
    for stmt in prelude:
        small = stmt.body[0] if isinstance(stmt, cst.SimpleStatementLine) else None
        if (
            isinstance(small, cst.Assign)
            and len(small.targets) == 1
            and isinstance(small.targets[0].target, cst.Name)
            and _keeps_dtype(small.value, names, out)
            and not isinstance(small.value, (cst.Integer, cst.Float))
        ):
            names.add(small.targets[0].target.value)
    return names


def _cast(node: cst.BaseExpression, out: str) -> cst.BaseExpression:
    return cst.parse_expression(f"({code(node)}).to({out}.dtype)")


def derivative(template: str) -> str:
    node = cst.parse_expression(template).visit(_One())
    assert isinstance(node, cst.BaseExpression)  # _One replaces expressions by expressions
    return code(node)


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


def readable(derivative: str, prelude: list[cst.BaseStatement]) -> str:
    """The derivative with the backward's temporaries written out, for reports."""
    values: dict[str, cst.BaseExpression] = {}
    for line in prelude:
        stmt = line.body[0] if isinstance(line, cst.SimpleStatementLine) else None
        if (
            isinstance(stmt, cst.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0].target, cst.Name)
        ):
            value = stmt.value.visit(_Inline(values))
            assert isinstance(value, cst.BaseExpression)  # _Inline replaces names only
            values[stmt.targets[0].target.value] = value
    result = cst.parse_expression(derivative).visit(_Inline(values))
    assert isinstance(result, cst.BaseExpression)
    text = cst.Module([]).code_for_node(result.with_changes(lpar=[], rpar=[]))
    text = text.replace("\\\n", " ")
    return re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", " ".join(text.split())))
