"""What the injected term may read as it is, and what it must read through a detached copy.

autograd runs a backward with grad mode off: whatever the backward reads besides the incoming
gradient is a constant to it. The FGI term is evaluated in the forward instead, so the
construction mirrors autograd. Every value the gradient's template applies to the seed (a
factor, a mask) is computed under ``torch.no_grad()`` from *trusted* values only: inputs
(detached on entry), numbers, torch and math, and what the generated code computes from them.
Any other value it reads (a module-level tensor, a closure's, a class attribute, a tuple's
element, what a callable returns) is read through ``.detach().clone()`` when it is a tensor,
so it carries neither a gradient nor a forward-mode tangent. A factor that is not *fresh*
(made by an operation that allocates: a view or alias of an input is not) is read through a
copy too, so that no in-place change of the caller's tensors between forward and backward can
reach what autograd saved. Then the only recorded path runs from the seed to the output,
whatever the backward reads: no detection is needed to keep gradients from leaking.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import libcst as cst

from fgirewrite.extract import rules
from fgirewrite.extract.values import BOOL_METHODS, BUILTINS, dotted, names_in, walk
from fgirewrite.surrogate import GRAD

# Builtins that compute from their arguments and keep nothing of their own.
SAFE_BUILTINS = frozenset(
    {"abs", "float", "int", "bool", "min", "max", "pow", "round", "sum", "len", "range"}
)
# Attributes and methods that read a tensor's metadata: never tensors themselves.
METADATA = rules.SHAPE_ATTRIBUTES | {"requires_grad", "itemsize", "is_leaf"}
METADATA_METHODS = frozenset({"size", "dim", "numel", "element_size", "is_floating_point"})
# Tensor methods and attributes: on an input that may be a tensor, they compute from it.
TENSOR_METHODS = (
    rules.NONLINEAR
    | rules.NOT_ELEMENTWISE
    | rules.GRAD_IDENTITY
    | rules.GRAD_CAST
    | rules.GRAD_SCALE
    | rules.GRAD_NEGATE
    | rules.GRAD_REDUCE
    | rules.MAY_ALIAS_METHODS
    | rules.INTEGRAL_METHODS
    | BOOL_METHODS
    | METADATA_METHODS
    | {"add", "sub", "subtract", "cos", "sin", "erfc", "log1p", "expm1", "masked_fill", "where"}
)
ALIAS_ATTRIBUTES = rules.MAY_ALIAS_ATTRIBUTES
TENSOR_MEMBERS = TENSOR_METHODS | ALIAS_ATTRIBUTES | METADATA
# torch functions that may return their first argument itself or a view of it.
ALIASING_FUNCTIONS = frozenset(
    {
        *rules.MAY_ALIAS_METHODS,
        *("as_tensor", "asarray", "broadcast_to", "atleast_1d", "atleast_2d", "atleast_3d"),
        *("real", "imag", "view_as_real", "view_as_complex", "positive", "moveaxis"),
    }
)


@dataclass
class Scope:
    """What the generated function binds before the gradient code, and how."""

    tensors: set[str]  # inputs known to be tensors, detached on entry
    maybe_tensors: set[str]  # other inputs, detached on entry when they are tensors
    modules: set[str]  # module-level names imported from libraries that hold no tensors
    # Names the forward saved with save_for_backward: the original's backward fails when they
    # change in place after the forward, and so does the rewrite reading them as they are.
    saved: set[str] = field(default_factory=set)
    definitions: dict[str, list[cst.BaseExpression | None]] = field(default_factory=dict)
    copies: set[str] = field(default_factory=set)  # names rebound to a detached copy

    def __post_init__(self) -> None:
        self._trusted: dict[str, bool] = {}
        self._fresh: dict[str, bool] = {}

    @property
    def local(self) -> set[str]:
        return self.tensors | self.maybe_tensors | self.copies | set(self.definitions)

    def copied(self, name: str) -> None:
        self.copies.add(name)
        self._trusted.clear()
        self._fresh.clear()

    def _memo(self, memo: dict[str, bool], name: str, test) -> bool:
        if name not in memo:
            memo[name] = False  # a definition that reads itself is neither
            memo[name] = all(e is not None and test(e) for e in self.definitions[name])
        return memo[name]

    # ------------------------------------------------------------------ trusted

    def trusted(self, node: cst.BaseExpression) -> bool:
        """Every value ``node`` reads carries no gradient and no tangent."""
        if isinstance(node, cst.Name):
            return self._trusted_name(node.value)
        if _literal(node) or isinstance(node, cst.Comparison):
            return True  # a comparison's result never carries a gradient or a tangent
        if isinstance(node, cst.Attribute):
            return (
                node.attr.value in METADATA
                or self._library(node)
                or self._tensor(node.value, node.attr.value)
            )
        if isinstance(node, cst.Call):
            return self._trusted_callee(node.func) and all(self.trusted(a.value) for a in node.args)
        if isinstance(node, cst.Subscript):
            return self._tensor(node.value, None) and all(
                self._trusted_slice(e.slice) for e in node.slice
            )
        children = _operands(node)
        return children is not None and all(self.trusted(c) for c in children)

    def _trusted_name(self, name: str) -> bool:
        if name in self.copies or name in self.tensors or name in self.maybe_tensors:
            return True
        if name in self.definitions:
            return self._memo(self._trusted, name, self.trusted)
        return name in self.modules or (name in SAFE_BUILTINS and name in BUILTINS)

    def _tensor(self, receiver: cst.BaseExpression, member: str | None) -> bool:
        """``receiver`` is a trusted tensor (or, for an input that may be one, ``member`` is
        a tensor method): its attributes, methods and elements compute from it."""
        name = receiver.value if isinstance(receiver, cst.Name) else None
        if name in self.maybe_tensors or (name in self.copies and name not in self.tensors):
            return member is not None and (member in TENSOR_METHODS or member in ALIAS_ATTRIBUTES)
        if isinstance(receiver, cst.Name) and receiver.value in self.modules:
            return False  # a module's attribute: ``_library`` decides
        return self.trusted(receiver)

    def _library(self, node: cst.BaseExpression) -> bool:
        """A dotted name rooted at a library that holds no tensors (``torch.float32``)."""
        name = dotted(node)
        return name is not None and name.split(".")[0] in self.modules

    def _trusted_callee(self, func: cst.BaseExpression) -> bool:
        if self._library(func):
            return True
        if isinstance(func, cst.Attribute):
            return self._tensor(func.value, func.attr.value)
        return (
            isinstance(func, cst.Name)
            and func.value in SAFE_BUILTINS
            and func.value in BUILTINS
            and func.value not in self.local
        )

    def _trusted_slice(self, s: cst.BaseSlice) -> bool:
        if isinstance(s, cst.Index):
            return self.trusted(s.value)
        assert isinstance(s, cst.Slice)
        return all(p is None or self.trusted(p) for p in (s.lower, s.upper, s.step))

    # ------------------------------------------------------------------ fresh

    def fresh(self, node: cst.BaseExpression) -> bool:
        """``node``'s value is no tensor, or a tensor no caller holds: no one else can change
        it in place before the backward."""
        if isinstance(node, cst.Name):
            if node.value in self.copies or node.value in self.saved:
                return True
            if node.value in self.definitions:
                return self._memo(self._fresh, node.value, self.fresh)
            return node.value in self.modules
        if _literal(node) or isinstance(node, (cst.BinaryOperation, cst.Comparison)):
            return True
        if isinstance(node, cst.UnaryOperation):
            return not isinstance(node.operator, cst.Plus) or self.fresh(node.expression)
        if isinstance(node, cst.Attribute):
            if node.attr.value in METADATA or self._library(node):
                return True
            return node.attr.value in ALIAS_ATTRIBUTES and self.fresh(node.value)
        if isinstance(node, cst.Subscript):
            return self.fresh(node.value)
        if isinstance(node, cst.IfExp):
            return self.fresh(node.body) and self.fresh(node.orelse)
        if isinstance(node, cst.Call):
            return self._fresh_call(node)
        return False

    def _fresh_call(self, node: cst.Call) -> bool:
        func = node.func
        if isinstance(func, cst.Attribute) and not self._library(func):
            method = func.attr.value
            if method in METADATA_METHODS:
                return True
            if method in rules.MAY_ALIAS_METHODS or rules.is_inplace(method):
                return self.fresh(func.value)  # maybe the receiver itself
            return self._tensor(func.value, method)
        if not self._trusted_callee(func):
            return False
        name = (dotted(func) or "").split(".")[-1]
        if name in ALIASING_FUNCTIONS or name in ("min", "max"):
            return all(self.fresh(a.value) for a in node.args)
        return True


def _literal(node: cst.BaseExpression) -> bool:
    if isinstance(node, (cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString)):
        return True
    if isinstance(node, (cst.ConcatenatedString, cst.FormattedString, cst.Ellipsis)):
        return True
    if isinstance(node, cst.Name):
        return node.value in ("True", "False", "None")
    if isinstance(node, cst.UnaryOperation):
        return _literal(node.expression)
    if isinstance(node, (cst.Tuple, cst.List)):
        return all(_literal(e.value) for e in node.elements)
    return False


def _operands(node: cst.BaseExpression) -> list[cst.BaseExpression] | None:
    """The operand expressions of an operator expression; None for anything else."""
    if isinstance(node, (cst.BinaryOperation, cst.BooleanOperation)):
        return [node.left, node.right]
    if isinstance(node, cst.UnaryOperation):
        return [node.expression]
    if isinstance(node, cst.IfExp):
        return [node.test, node.body, node.orelse]
    if isinstance(node, (cst.Tuple, cst.List)):
        return [e.value for e in node.elements]
    return None


def definitions(statements: Iterable[cst.CSTNode]) -> dict[str, list[cst.BaseExpression | None]]:
    """Every binding of a name in statements: its value, or None where it is not one value
    (a loop target, an unpacked tuple, ``with ... as``)."""
    found: dict[str, list[cst.BaseExpression | None]] = {}

    def bind(target: cst.BaseExpression, value: cst.BaseExpression | None) -> None:
        if isinstance(target, cst.Name):
            found.setdefault(target.value, []).append(value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                bind(element.value, None)
        elif isinstance(target, cst.StarredElement):
            bind(target.value, None)

    for statement in statements:
        for n in walk(statement, lambda n: not isinstance(n, (cst.FunctionDef, cst.ClassDef))):
            if isinstance(n, cst.Assign):
                for t in n.targets:
                    bind(t.target, n.value if isinstance(t.target, cst.Name) else None)
            elif isinstance(n, cst.AnnAssign) and n.value is not None:
                bind(n.target, n.value)
            elif isinstance(n, (cst.For, cst.CompFor)):
                bind(n.target, None)
            elif isinstance(n, cst.NamedExpr):
                bind(n.target, None)
            elif isinstance(n, cst.AsName) and isinstance(n.name, (cst.Name, cst.Tuple)):
                bind(n.name, None)
            elif isinstance(n, (cst.FunctionDef, cst.ClassDef)):
                found.setdefault(n.name.value, []).append(None)
    # ``a += b`` keeps a tensor's identity, and makes a number a new number: not a binding
    return found


@dataclass
class Operands:
    """The statements that make a template's operands safe to read (run under
    ``torch.no_grad()``), and the names in use, which new names avoid."""

    statements: list[str]
    taken: set[str]
    leaves: dict[str, str] = field(default_factory=dict)  # an untrusted value -> its copy

    def fresh_name(self, base: str) -> str:
        base = base.strip("_") or "value"
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name


_TEXT = cst.Module([])


def _code(node: cst.BaseExpression) -> str:
    return _TEXT.code_for_node(node.with_changes(lpar=[], rpar=[]))


def read_safely(
    template: cst.BaseExpression, scope: Scope, operands: Operands
) -> cst.BaseExpression:
    """``template`` with every operand read safely: untrusted values through detached
    copies, and operands that are not fresh through copies."""
    if GRAD not in names_in(template):
        return _operand(template, scope, operands)
    if isinstance(template, cst.Name):
        return template
    if isinstance(template, cst.Call):
        func = template.func
        if isinstance(func, cst.Attribute) and GRAD in names_in(func.value):
            func = func.with_changes(value=read_safely(func.value, scope, operands))
        args = [a.with_changes(value=read_safely(a.value, scope, operands)) for a in template.args]
        return template.with_changes(func=func, args=args)
    if isinstance(template, (cst.Attribute, cst.Subscript)):
        return template.with_changes(value=read_safely(template.value, scope, operands))
    if isinstance(template, cst.IfExp):  # its test is read for its truth only
        return template.with_changes(
            body=read_safely(template.body, scope, operands),
            orelse=read_safely(template.orelse, scope, operands),
        )
    return _each_operand(template, lambda n: read_safely(n, scope, operands))


def _each_operand(node: cst.BaseExpression, change) -> cst.BaseExpression:
    """``node`` with ``change`` applied to each of its operands (an operator expression)."""
    if isinstance(node, (cst.BinaryOperation, cst.BooleanOperation)):
        return node.with_changes(left=change(node.left), right=change(node.right))
    if isinstance(node, cst.UnaryOperation):
        return node.with_changes(expression=change(node.expression))
    if isinstance(node, cst.IfExp):
        return node.with_changes(
            test=change(node.test), body=change(node.body), orelse=change(node.orelse)
        )
    if isinstance(node, (cst.Tuple, cst.List)):
        return node.with_changes(
            elements=[e.with_changes(value=change(e.value)) for e in node.elements]
        )
    if isinstance(node, cst.Comparison):
        return node.with_changes(
            left=change(node.left),
            comparisons=[c.with_changes(comparator=change(c.comparator)) for c in node.comparisons],
        )
    return node  # kept as extracted: verification compares it


def _operand(node: cst.BaseExpression, scope: Scope, operands: Operands) -> cst.BaseExpression:
    """A factor or mask of the template, read safely."""
    node = _trusted_leaves(node, scope, operands)
    if scope.fresh(node):
        return node
    if isinstance(node, cst.Name) and node.value in scope.local:
        name = node.value
        if name in scope.tensors:
            operands.statements.append(f"{name} = {name}.clone()")
        else:
            operands.statements.append(_copy(name, name))
        scope.copied(name)
        return node
    name = operands.fresh_name("value")
    operands.statements.append(f"{name} = {_code(node)}")
    operands.statements.append(_copy(name, name, detach=False))
    scope.copied(name)
    return cst.Name(name)


def _trusted_leaves(
    node: cst.BaseExpression, scope: Scope, operands: Operands
) -> cst.BaseExpression:
    """``node`` with each value it reads that is not trusted replaced by a detached copy: a
    name, an attribute or element of something untrusted, or what an untrusted callable
    returns, each read once (a tensor method of an untrusted tensor reads a copy of it)."""
    if scope.trusted(node):
        return node
    if isinstance(node, cst.Call) and scope._trusted_callee(node.func):
        args = [a.with_changes(value=_trusted_leaves(a.value, scope, operands)) for a in node.args]
        return node.with_changes(args=args)
    inner = node.func if isinstance(node, cst.Call) else node
    if isinstance(inner, cst.Attribute) and inner.attr.value in TENSOR_MEMBERS:
        candidate: cst.BaseExpression = inner.with_changes(
            value=_trusted_leaves(inner.value, scope, operands)
        )
        if isinstance(node, cst.Call):
            candidate = _trusted_leaves(node.with_changes(func=candidate), scope, operands)
        if scope.trusted(candidate):
            return candidate
    if isinstance(node, (cst.Name, cst.Attribute, cst.Subscript, cst.Call)):
        return _leaf(node, scope, operands)
    return _each_operand(node, lambda n: _trusted_leaves(n, scope, operands))


def _leaf(node: cst.BaseExpression, scope: Scope, operands: Operands) -> cst.Name:
    """An untrusted value read once, through a detached copy when it is a tensor."""
    if isinstance(node, cst.Name) and node.value in scope.local:
        operands.statements.append(_copy(node.value, node.value))
        scope.copied(node.value)
        return node
    text = _code(node)
    if text in operands.leaves:
        return cst.Name(operands.leaves[text])
    if isinstance(node, cst.Name):
        base = node.value.lower()
    elif isinstance(node, cst.Attribute):
        base = node.attr.value
    else:
        base = "value"
    name = operands.fresh_name(base)
    if isinstance(node, cst.Call):  # called once
        operands.statements.append(f"{name} = {text}")
        operands.statements.append(_copy(name, name))
    else:
        operands.statements.append(_copy(name, text))
        operands.leaves[text] = name
    scope.copied(name)
    return cst.Name(name)


def _copy(target: str, value: str, detach: bool = True) -> str:
    copy = f"{value}.detach().clone()" if detach else f"{value}.clone()"
    return f"{target} = {copy} if isinstance({value}, torch.Tensor) else {value}"
