"""Gradient templates: the order their products are built in, and how they read.

A template is the backward's result with ``GRAD`` standing for the incoming gradient.
``backward_order`` rebuilds a chain of products and quotients so that autograd's backward
multiplies in the original's order (bit-identical gradients); ``derivative`` and ``readable``
give the expression people see in reports (``GRAD = 1``, temporaries written out).
"""

from __future__ import annotations

import re

import libcst as cst

from fgirewrite.extract.values import names_in, standalone
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


def backward_order(template: cst.BaseExpression) -> cst.BaseExpression:
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


def derivative(template: str) -> str:
    return code(cst.parse_expression(template).visit(_One()))


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
            values[stmt.targets[0].target.value] = stmt.value.visit(_Inline(values))
    result = cst.parse_expression(derivative).visit(_Inline(values))
    text = cst.Module([]).code_for_node(result.with_changes(lpar=[], rpar=[]))
    text = text.replace("\\\n", " ")
    return re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", " ".join(text.split())))
