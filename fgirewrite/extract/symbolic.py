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

from collections.abc import Callable
from dataclasses import dataclass, field

import libcst as cst

from fgirewrite.extract import rules
from fgirewrite.surrogate import GRAD

UNKNOWN = object()


class Unsupported(Exception):
    """The code cannot be rewritten exactly: a reason code, a message and the node at fault."""

    def __init__(self, code: str, message: str, node: cst.CSTNode | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.node = node


@dataclass(eq=False)
class Const:
    node: cst.BaseExpression
    simple: bool = False  # a name, literal or attribute chain: cheap to repeat
    value: object = UNKNOWN  # a Python value known statically (True, None, 0, ...)
    is_bool: bool = False  # a boolean mask
    zero: bool = False
    external: bool = False  # may be a tensor the caller holds (input, saved, grad_output)
    aliased: bool = False  # may share memory with another live tensor


@dataclass(eq=False)
class Lin:
    node: cst.BaseExpression  # template in GRAD
    reduction: cst.BaseExpression | None = None
    plain: bool = False  # exactly the incoming gradient (possibly cloned)
    external: bool = False
    aliased: bool = False


@dataclass(eq=False)
class Seq:
    items: list[object]


class CtxRef:
    """The ctx object itself."""


CTX = CtxRef()
Sym = Const | Lin | Seq | CtxRef


@dataclass
class Ctx:
    """What the forward or setup_context stored on ctx."""

    saved: list[Const] | None = None
    attrs: dict[str, Const] = field(default_factory=dict)
    tensor_inputs: set[int] = field(default_factory=set)  # indices known to be tensors
    n_inputs: int = 0


class Names:
    """Fresh names that collide with nothing the generated function can see."""

    def __init__(self, taken: set[str]):
        self.taken = set(taken)

    def fresh(self, base: str) -> str:
        base = base.strip("_") or "tmp"
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name


@dataclass
class State:
    """Shared across one class's extraction (and the helpers it inlines)."""

    names: Names
    imports: dict[str, str]
    function: Callable[[str], cst.FunctionDef | None]  # module-level helper lookup
    out: str  # the generated function's output variable
    shadowed: set[str]  # names the generated function binds before the gradient code
    prelude: list[cst.BaseSmallStatement] = field(default_factory=list)
    free: set[str] = field(default_factory=set)
    helpers: list[str] = field(default_factory=list)
    depth: int = 0


def names_in(node: cst.CSTNode) -> set[str]:
    """Every identifier in a tree."""
    found: set[str] = set()

    class V(cst.CSTVisitor):
        def visit_Name(self, n: cst.Name) -> None:
            found.add(n.value)

    node.visit(V())
    return found


def dotted(node: cst.BaseExpression) -> str | None:
    parts = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if not isinstance(node, cst.Name):
        return None
    parts.append(node.value)
    return ".".join(reversed(parts))


_ATOMIC = (
    cst.Name,
    cst.Attribute,
    cst.Call,
    cst.Subscript,
    cst.Integer,
    cst.Float,
    cst.Imaginary,
    cst.SimpleString,
    cst.ConcatenatedString,
    cst.Tuple,
    cst.List,
)


def operand(original: cst.BaseExpression, new: cst.BaseExpression) -> cst.BaseExpression:
    """``new`` standing where ``original`` stood, parenthesized if precedence could change."""
    if isinstance(new, _ATOMIC) or new.lpar:
        return new
    same = type(new) is type(original) and (
        not hasattr(new, "operator") or type(new.operator) is type(original.operator)
    )
    if same:
        return new
    return new.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def standalone(node: cst.BaseExpression) -> cst.BaseExpression:
    """A node that may stand alone: a multi-line one gets parentheses to hold its newlines."""
    if node.lpar or "\n" not in cst.Module([]).code_for_node(node):
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def _literal_value(node: cst.BaseExpression) -> object:
    if isinstance(node, cst.Integer):
        return int(node.value.replace("_", ""), 0)
    if isinstance(node, cst.Float):
        return float(node.value.replace("_", ""))
    if isinstance(node, cst.Name) and node.value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[node.value]
    return UNKNOWN


def grad_name() -> cst.Name:
    return cst.Name(GRAD)


_BOOL_OPS = (cst.BitAnd, cst.BitOr, cst.BitXor)
_BOOL_METHODS = frozenset(
    {"gt", "lt", "ge", "le", "eq", "ne", "greater", "less", "logical_and", "logical_or",
     "logical_not", "logical_xor", "isnan", "isinf", "isfinite", "bool", "signbit",
     "greater_equal", "less_equal", "not_equal", "isposinf", "isneginf"}
)


class Evaluator:
    """Evaluates statements and expressions of one function body."""

    def __init__(
        self,
        state: State,
        env: dict[str, Sym],
        ctx_name: str | None,
        ctx: Ctx,
        mode: str,
    ):
        self.state = state
        self.env = env
        self.ctx_name = ctx_name
        self.ctx = ctx
        self.mode = mode  # "backward" reads ctx; "setup" writes it
        self.mask: cst.BaseSlice | None = None  # the index of a masked assignment in progress

    # ---------------------------------------------------------------- statements

    def block(self, body: list[cst.BaseStatement] | tuple) -> Sym | None:
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
            return self.expression_statement(stmt)
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
            return self.aug_assign(stmt)
        if isinstance(stmt, cst.Del):
            return None
        if isinstance(stmt, cst.Raise):
            raise Unsupported("backward-control-flow", "the body raises unconditionally", stmt)
        raise Unsupported(
            "unsupported-syntax", f"`{type(stmt).__name__}` statement in the body", stmt
        )

    def compound(self, stmt: cst.BaseCompoundStatement) -> Sym | None:
        if isinstance(stmt, cst.If):
            test = self.expr(stmt.test)
            if not isinstance(test, Const) or test.value is UNKNOWN:
                raise Unsupported(
                    "backward-control-flow",
                    "branches on a value only known at run time",
                    stmt.test,
                )
            if test.value:
                return self.block(stmt.body.body)
            if stmt.orelse is None:
                return None
            if isinstance(stmt.orelse, cst.If):
                return self.compound(stmt.orelse)
            return self.block(stmt.orelse.body.body)
        if isinstance(stmt, (cst.For, cst.While)):
            raise Unsupported("backward-loop", "loops over its values", stmt)
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
        if isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute):
            receiver = value.func.value
            method = value.func.attr.value
            if self.is_ctx(receiver):
                self.ctx_call(value, method)
                return None
            if rules.is_inplace(method):
                self.expr(value)
                return None
        raise Unsupported(
            "backward-side-effect", "a statement whose result is not used", stmt
        )

    def aug_assign(self, stmt: cst.AugAssign) -> None:
        op = cst.BinaryOperation(
            left=stmt.target,
            operator=_AUG_TO_BIN[type(stmt.operator)](),
            right=stmt.value,
        )
        if isinstance(stmt.target, cst.Subscript):
            self.masked_assign(stmt.target, op)
            return None
        if not isinstance(stmt.target, cst.Name):
            raise Unsupported("unsupported-syntax", "augmented assignment to an attribute", stmt)
        old = self.expr(stmt.target)
        self.check_inplace(old, stmt.target.value, stmt)
        self.rebind(old, self.expr(op), stmt.target.value)
        return None

    def bind(self, target: cst.BaseAssignTargetExpression, value: Sym, source: cst.CSTNode) -> None:
        if isinstance(target, cst.Name):
            self.env[target.value] = self.materialize(value, target.value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            elements = [e.value for e in target.elements]
            if any(isinstance(e, cst.StarredElement) for e in target.elements):
                raise Unsupported("unsupported-syntax", "starred assignment", target)
            if isinstance(value, Const) and not value.simple:
                # ``a, b = f(x)``: one statement, fresh names for its parts
                fresh = [self.state.names.fresh(e.value) if isinstance(e, cst.Name) else None
                         for e in elements]
                if None in fresh:
                    raise Unsupported("unsupported-syntax", "nested unpacking", target)
                tup = cst.Tuple([cst.Element(cst.Name(n)) for n in fresh])
                self.emit(cst.Assign([cst.AssignTarget(tup)], value.node))
                for e, n in zip(elements, fresh, strict=True):
                    self.env[e.value] = Const(cst.Name(n), simple=True)
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

    def materialize(self, value: Sym, name: str) -> Sym:
        """Give a compound constant a statement of its own so repeated uses compute it once."""
        if isinstance(value, Const) and not value.simple:
            fresh = self.state.names.fresh(name)
            self.emit(cst.Assign([cst.AssignTarget(cst.Name(fresh))], value.node))
            return Const(cst.Name(fresh), simple=True, value=value.value, is_bool=value.is_bool,
                         zero=value.zero, external=value.external, aliased=value.aliased)
        return value

    def emit(self, stmt: cst.BaseSmallStatement) -> None:
        if isinstance(stmt, cst.Assign):
            stmt = stmt.with_changes(value=standalone(stmt.value))
        self.state.prelude.append(stmt)

    def rebind(self, old: Sym, new: Sym, name: str) -> None:
        """An in-place op: every name bound to the mutated object now sees the new value."""
        new = self.materialize(new, name)
        for key, val in list(self.env.items()):
            if val is old:
                self.env[key] = new

    def check_inplace(self, target: Sym, label: str, node: cst.CSTNode) -> None:
        if isinstance(target, (Const, Lin)) and (target.external or target.aliased):
            raise Unsupported(
                "in-place-alias",
                f"an in-place op on `{label}`, which may share memory with the caller's tensors",
                node,
            )

    def masked_assign(self, target: cst.Subscript, value_node: cst.BaseExpression) -> None:
        """``g[mask] = v`` becomes ``g = torch.where(mask, v, g)``."""
        if len(target.slice) != 1 or not isinstance(target.slice[0].slice, cst.Index):
            raise Unsupported("unsupported-syntax", "indexed assignment other than by a mask", target)
        if not isinstance(target.value, cst.Name):
            raise Unsupported("unsupported-syntax", "indexed assignment to an expression", target)
        label = target.value.value
        base = self.expr(target.value)
        self.check_inplace(base, label, target)
        mask = self.expr(target.slice[0].slice.value)
        if not isinstance(mask, Const) or not mask.is_bool:
            raise Unsupported(
                "unsupported-syntax",
                f"indexed assignment to `{label}` by an index not known to be a boolean mask",
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
            raise Unsupported(
                "unsupported-syntax", f"`{type(node).__name__}` expression", node
            )
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
        if node.value in self.env:
            return self.env[node.value]
        if self.is_ctx(node):
            return CTX
        value = _literal_value(node)
        if value is UNKNOWN and node.value not in _BUILTINS:
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
        value = _literal_value(node)
        return Const(node, simple=True, value=value, zero=(value == 0))

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
            if attr == "data":
                return base
            raise self.not_linear(node, f"`.{attr}` of the gradient")
        if not isinstance(base, Const):
            raise Unsupported("unsupported-syntax", f"`.{attr}` of a tuple", node)
        aliasing = attr in rules.MAY_ALIAS_ATTRIBUTES
        return Const(
            node.with_changes(value=operand(node.value, base.node)),
            simple=base.simple,
            external=base.external and aliasing,
            aliased=aliasing or base.aliased,
        )

    def ctx_read(self, node: cst.Attribute, attr: str) -> Sym:
        if self.mode != "backward":
            raise Unsupported("unsupported-ctx", f"reads ctx.{attr} before backward", node)
        if attr in ("saved_tensors", "saved_variables"):
            if self.ctx.saved is None:
                raise Unsupported("unsupported-ctx", "reads ctx.saved_tensors but saves none", node)
            return Seq(list(self.ctx.saved))
        if attr == "needs_input_grad":
            items: list[object] = []
            for i in range(self.ctx.n_inputs):
                known = i in self.ctx.tensor_inputs
                items.append(Const(cst.Name("True"), simple=True, value=True if known else UNKNOWN))
            return Seq(items)
        if attr in self.ctx.attrs:
            return self.ctx.attrs[attr]
        raise Unsupported("unsupported-ctx", f"reads ctx.{attr}, which the forward never sets", node)

    def e_Subscript(self, node: cst.Subscript) -> Sym:
        if self.mask is not None and _same_slice(node.slice, self.mask):
            return self.expr(node.value)  # ``g[mask]`` inside ``g[mask] = ...`` is g there
        base = self.expr(node.value)
        if isinstance(base, Seq):
            if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
                index = self.expr(node.slice[0].slice.value)
                if isinstance(index.value if isinstance(index, Const) else None, int):
                    try:
                        return base.items[index.value]  # type: ignore[union-attr,index]
                    except IndexError:
                        raise Unsupported("unsupported-ctx", "indexes past the saved values", node)
            raise Unsupported("unsupported-syntax", "indexes a tuple by a computed value", node)
        if isinstance(base, Lin):
            raise self.not_linear(node, "indexing of the gradient")
        if not isinstance(base, Const):
            raise Unsupported("unsupported-syntax", "indexes ctx", node)
        elements = []
        for element in node.slice:
            elements.append(element.with_changes(slice=self.const_slice(element.slice)))
        return Const(node.with_changes(value=operand(node.value, base.node), slice=elements),
                     external=base.external, aliased=True)

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
                return self.lin_op(value, node.with_changes(
                    expression=operand(node.expression, value.node)))
            raise self.not_linear(node, "a non-linear unary operator on the gradient")
        c = self.const(node.expression)
        value = UNKNOWN
        if isinstance(node.operator, cst.Not) and c.value is not UNKNOWN:
            value = not c.value
        if isinstance(node.operator, cst.Minus) and isinstance(c.value, (int, float)):
            value = -c.value
        return Const(
            node.with_changes(expression=operand(node.expression, c.node)),
            simple=c.simple,
            value=value,
            is_bool=isinstance(node.operator, cst.BitInvert) and c.is_bool,
            zero=c.zero,
        )

    def e_BinaryOperation(self, node: cst.BinaryOperation) -> Sym:
        left, right = self.expr(node.left), self.expr(node.right)
        op = node.operator
        rebuilt = node.with_changes(left=operand(node.left, _node(left)),
                                    right=operand(node.right, _node(right)))
        if isinstance(left, Lin) or isinstance(right, Lin):
            self.no_seq(left, right, node)
            if isinstance(left, Lin) and isinstance(right, Lin):
                if isinstance(op, (cst.Add, cst.Subtract)):
                    return self.lin_op(left, rebuilt, right)
                raise self.not_linear(node, "a product of two gradients")
            lin, other = (left, right) if isinstance(left, Lin) else (right, left)
            assert isinstance(other, Const)
            if isinstance(op, cst.Multiply):
                return self.lin_op(lin, rebuilt)
            if isinstance(op, cst.Divide) and lin is left:
                return self.lin_op(lin, rebuilt)
            if isinstance(op, (cst.Add, cst.Subtract)) and other.zero:
                return self.lin_op(lin, rebuilt)
            raise self.not_linear(node, "a gradient combined with a constant by "
                                  f"`{_op_text(op)}`, which is not linear")
        self.no_seq(left, right, node)
        assert isinstance(left, Const) and isinstance(right, Const)
        return Const(
            rebuilt,
            is_bool=isinstance(op, _BOOL_OPS) and left.is_bool and right.is_bool,
            zero=isinstance(op, cst.Multiply) and (left.zero or right.zero),
        )

    def e_Comparison(self, node: cst.Comparison) -> Sym:
        left = self.const(node.left)
        targets = [t.with_changes(comparator=operand(t.comparator, self.const(t.comparator).node))
                   for t in node.comparisons]
        return Const(node.with_changes(left=operand(node.left, left.node), comparisons=targets),
                     is_bool=True)

    def e_BooleanOperation(self, node: cst.BooleanOperation) -> Sym:
        left, right = self.const(node.left), self.const(node.right)
        value = UNKNOWN
        if left.value is not UNKNOWN and right.value is not UNKNOWN:
            value = (left.value and right.value) if isinstance(node.operator, cst.And) else (
                left.value or right.value)
        elif isinstance(node.operator, cst.And) and left.value is False:
            value = False
        elif isinstance(node.operator, cst.Or) and left.value is True:
            value = True
        return Const(node.with_changes(left=operand(node.left, left.node),
                                       right=operand(node.right, right.node)), value=value)

    def e_IfExp(self, node: cst.IfExp) -> Sym:
        test = self.const(node.test)
        if test.value is not UNKNOWN:
            return self.expr(node.body if test.value else node.orelse)
        body, orelse = self.expr(node.body), self.expr(node.orelse)
        rebuilt = node.with_changes(test=operand(node.test, test.node),
                                    body=operand(node.body, _node(body)),
                                    orelse=operand(node.orelse, _node(orelse)))
        if isinstance(body, Lin) and isinstance(orelse, Lin):
            return self.lin_op(body, rebuilt, orelse)
        if isinstance(body, Lin) or isinstance(orelse, Lin):
            raise self.not_linear(node, "a gradient in one branch of a conditional only")
        return Const(rebuilt)

    def e_Tuple(self, node: cst.Tuple) -> Sym:
        items = []
        for element in node.elements:
            if isinstance(element, cst.StarredElement):
                raise Unsupported("unsupported-syntax", "starred element", element)
            items.append(self.expr(element.value))
        return Seq(items)

    def e_List(self, node: cst.List) -> Sym:
        return self.e_Tuple(node)  # type: ignore[arg-type]

    def e_Call(self, node: cst.Call) -> Sym:
        for arg in node.args:
            if arg.star:
                raise Unsupported("unsupported-syntax", "a call with *args or **kwargs", node)
        func = node.func
        qualified = self.qualified(func)
        if qualified is not None:
            return self.function_call(node, qualified)
        if isinstance(func, cst.Attribute):
            if self.is_ctx(func.value):
                raise Unsupported("unsupported-ctx", f"calls ctx.{func.attr.value}()", node)
            return self.method_call(node, func.attr.value)
        raise Unsupported("unknown-call", "calls a computed callable", node)

    def args(self, node: cst.Call) -> list[tuple[str | None, Sym]]:
        return [(a.keyword.value if a.keyword else None, self.expr(a.value)) for a in node.args]

    def rebuild_args(self, node: cst.Call, values: list[tuple[str | None, Sym]]) -> list[cst.Arg]:
        return [a.with_changes(value=_node(v)) for a, (_, v) in zip(node.args, values, strict=True)]

    def function_call(self, node: cst.Call, qualified: str) -> Sym:
        if rules.is_random_call(qualified, None):
            raise Unsupported("backward-random", f"draws random numbers with `{qualified}`", node)
        self.e_Name(cst.Name(qualified.split(".")[0]))  # record the free name; check shadowing
        values = self.args(node)
        lins = [v for _, v in values if isinstance(v, Lin)]
        if "." not in qualified and self.state.function(qualified) is not None:
            return self.inline(node, qualified, values)
        if not lins:
            self.all_const(values, node)
            is_bool = qualified.rsplit(".", 1)[-1] in _BOOL_METHODS
            return Const(node.with_changes(args=self.rebuild_args(node, values)), is_bool=is_bool,
                         zero=qualified in rules.ZERO_FUNCTIONS)
        if qualified in rules.SHAPE_FUNCTIONS and isinstance(values[0][1], Lin) and len(lins) == 1:
            if values[0][1].plain:
                args = [node.args[0].with_changes(value=cst.Name(self.state.out))]
                args += self.rebuild_args(node, values)[1:]
                return Const(node.with_changes(args=args), zero=qualified in rules.ZERO_FUNCTIONS)
        rebuilt = node.with_changes(args=self.rebuild_args(node, values))
        first = values[0][1] if values else None
        if qualified in rules.TORCH_WHERE and len(values) == 3:
            cond, a, b = (v for _, v in values)
            if isinstance(cond, Const):
                return self.where(cond, a, b, node)
        if qualified in (rules.TORCH_IDENTITY | rules.TORCH_NEGATE) and len(values) == 1:
            return self.lin_op(first, rebuilt)  # type: ignore[arg-type]
        if qualified in rules.TORCH_REDUCE and isinstance(first, Lin) and len(lins) == 1:
            return self.reduce(first, rebuilt, node)
        if qualified in rules.TORCH_SCALE and len(values) == 2 and len(lins) == 1:
            if qualified in ("torch.mul", "torch.multiply") or isinstance(first, Lin):
                return self.lin_op(lins[0], rebuilt)
        if qualified in rules.TORCH_MASKED_FILL and isinstance(first, Lin) and len(values) == 3:
            fill = values[2][1]
            if isinstance(fill, Const) and fill.zero:
                return self.lin_op(first, rebuilt)
        raise Unsupported(
            "unknown-call",
            f"the gradient flows through `{qualified}`, not known to be linear in it",
            node,
        )

    def method_call(self, node: cst.Call, method: str) -> Sym:
        func = node.func
        assert isinstance(func, cst.Attribute)
        if rules.is_random_call(None, method):
            raise Unsupported("backward-random", f"draws random numbers with `.{method}()`", node)
        receiver = self.expr(func.value)
        if rules.is_inplace(method):
            return self.inplace(node, receiver, method)
        values = self.args(node)
        rebuilt = node.with_changes(
            func=func.with_changes(value=operand(func.value, _node(receiver))),
            args=self.rebuild_args(node, values),
        )
        lins = [v for _, v in values if isinstance(v, Lin)]
        if isinstance(receiver, Lin):
            return self.lin_method(node, receiver, method, values, rebuilt)
        if not isinstance(receiver, Const):
            raise Unsupported("unsupported-syntax", f"calls `.{method}()` on a tuple", node)
        if lins:
            if method in ("mul", "multiply") and len(values) == 1:
                return self.lin_op(lins[0], rebuilt)
            if method == "where" and len(values) == 2:
                return self.where(values[0][1], receiver, values[1][1], node)  # type: ignore[arg-type]
            raise self.not_linear(node, f"the gradient passed to `.{method}()`")
        self.all_const(values, node)
        aliasing = method in rules.MAY_ALIAS_METHODS
        return Const(
            rebuilt,
            is_bool=method in _BOOL_METHODS,
            zero=method in rules.ZERO_METHODS,
            external=receiver.external and aliasing,
            aliased=aliasing,
        )

    def lin_method(self, node: cst.Call, lin: Lin, method: str, values: list, rebuilt: cst.Call) -> Sym:
        consts = all(isinstance(v, Const) for _, v in values)
        if method in rules.GRAD_DROPPED and not values:
            return lin
        if method in rules.GRAD_IDENTITY and not values:
            return self.lin_op(lin, rebuilt, keep_plain=True)
        if (method in rules.GRAD_CAST | rules.GRAD_SCALE | rules.GRAD_NEGATE) and consts:
            return self.lin_op(lin, rebuilt, aliasing=method in rules.MAY_ALIAS_METHODS)
        if method in rules.GRAD_REDUCE and consts:
            return self.reduce(lin, rebuilt, node)
        if method == "masked_fill" and len(values) == 2:
            mask, fill = values[0][1], values[1][1]
            if isinstance(mask, Const) and isinstance(fill, Const) and fill.zero:
                return self.lin_op(lin, rebuilt)
        if method == "where" and len(values) == 2:
            return self.where(values[0][1], lin, values[1][1], node)
        if method in rules.SHAPE_METHODS and lin.plain and consts:
            return Const(rebuilt.with_changes(func=rebuilt.func.with_changes(  # type: ignore[union-attr]
                value=cst.Name(self.state.out))))
        raise self.not_linear(node, f"`.{method}()` of the gradient")

    def inplace(self, node: cst.Call, receiver: Sym, method: str) -> Sym:
        func = node.func
        assert isinstance(func, cst.Attribute)
        label = dotted(func.value) or "an expression"
        target = func.value
        # The result of a fresh computation can be mutated freely: nothing else holds it.
        fresh = not isinstance(target, (cst.Name, cst.Attribute, cst.Subscript))
        if not fresh:
            self.check_inplace(receiver, label, node)
        outplace = method[:-1]
        if method == "zero_":
            self.state.free.add("torch")
            new: Sym = Const(cst.Call(cst.Attribute(cst.Name("torch"), cst.Name("zeros_like")),
                                 [cst.Arg(_node(receiver))]), zero=True)
        else:
            new = self.method_call(node.with_changes(func=func.with_changes(attr=cst.Name(outplace))),
                                   outplace)
        if isinstance(new, (Const, Lin)):
            new.aliased = False
            new.external = False
        if isinstance(target, cst.Name):
            self.rebind(receiver, new, target.value)
            return self.env[target.value]
        if not fresh:
            raise Unsupported("in-place-alias", f"an in-place op on `{label}`", node)
        return new

    # ---------------------------------------------------------------- linear building blocks

    def lin_op(self, lin: Sym, rebuilt: cst.BaseExpression, *others: Sym,
               keep_plain: bool = False, aliasing: bool = False) -> Lin:
        for part in (lin, *others):
            if not isinstance(part, Lin):
                raise self.not_linear(rebuilt, "a gradient mixed with a non-gradient term")
            if part.reduction is not None:
                raise self.not_linear(rebuilt, "an operation after the gradient's reduction")
        assert isinstance(lin, Lin)
        return Lin(rebuilt, plain=keep_plain and lin.plain,
                   aliased=aliasing and (lin.aliased or lin.external))

    def reduce(self, lin: Lin, rebuilt: cst.BaseExpression, node: cst.CSTNode) -> Lin:
        if lin.reduction is not None:
            raise self.not_linear(node, "a gradient reduced twice")
        return Lin(lin.node, reduction=rebuilt)

    def where(self, cond: Sym, a: Sym, b: Sym, node: cst.CSTNode) -> Sym:
        """``torch.where(cond, a, b)``: linear if both branches are gradients or zero."""
        if not isinstance(cond, Const):
            raise self.not_linear(node, "a condition that depends on the gradient")
        if not isinstance(a, Lin) and not isinstance(b, Lin):
            self.state.free.add("torch")
            return Const(_where(cond.node, _node(a), _node(b)))
        for branch in (a, b):
            if isinstance(branch, Const) and not branch.zero:
                raise self.not_linear(node, "a gradient replaced by a non-zero constant")
            if isinstance(branch, Lin) and branch.reduction is not None:
                raise self.not_linear(node, "an operation after the gradient's reduction")
            if not isinstance(branch, (Const, Lin)):
                raise Unsupported("unsupported-syntax", "a tuple in torch.where", node)
        self.state.free.add("torch")
        return Lin(_where(cond.node, _node(a), _node(b)))

    def inline(self, node: cst.Call, name: str, values: list[tuple[str | None, Sym]]) -> Sym:
        """Evaluate a module-level helper's body with its arguments bound."""
        function = self.state.function(name)
        assert function is not None
        if self.state.depth >= 8:
            raise Unsupported("unsupported-syntax", f"helpers nested too deeply at `{name}`", node)
        for decorator in function.decorators:
            target = decorator.decorator
            target = target.func if isinstance(target, cst.Call) else target
            qualified = self.qualified(target)
            if qualified not in rules.TRANSPARENT_DECORATORS:
                raise Unsupported(
                    "unknown-call", f"`{name}` has decorator `{qualified}`, unknown to fgirewrite",
                    node)
        env = bind_parameters(function.params, values, node, self)
        self.state.depth += 1
        self.state.helpers.append(name)
        try:
            result = Evaluator(self.state, env, None, Ctx(), "backward").block(function.body.body)
        finally:
            self.state.depth -= 1
        if result is None:
            return Const(cst.Name("None"), simple=True, value=None)
        return result

    def ctx_call(self, call: cst.Call, method: str) -> None:
        if method in rules.CTX_HARMLESS:
            return
        if method in rules.CTX_REFUSED:
            raise Unsupported("non-differentiable-output", f"calls ctx.{method}()", call)
        if method == "save_for_backward" and self.mode == "setup":
            self.ctx.saved = [self.materialize(self.const(a.value), "saved") for a in call.args]
            return
        raise Unsupported("unsupported-ctx", f"calls ctx.{method}() here", call)

    def all_const(self, values: list[tuple[str | None, Sym]], node: cst.CSTNode) -> None:
        for _, v in values:
            if as_const(v) is None:
                raise Unsupported("unsupported-syntax", "a gradient inside a tuple argument", node)

    def no_seq(self, left: Sym, right: Sym, node: cst.CSTNode) -> None:
        if not isinstance(left, (Const, Lin)) or not isinstance(right, (Const, Lin)):
            raise Unsupported("unsupported-syntax", "arithmetic on a tuple or ctx", node)

    def not_linear(self, node: cst.CSTNode, what: str) -> Unsupported:
        return Unsupported("backward-not-linear", f"{what}", node)


def bind_parameters(
    params: cst.Parameters,
    values: list[tuple[str | None, Sym]],
    node: cst.CSTNode,
    caller: Evaluator,
) -> dict[str, Sym]:
    """Bind call arguments to a helper's parameters, defaults included."""
    if params.star_arg not in (cst.MaybeSentinel.DEFAULT, None) or params.star_kwarg:
        raise Unsupported("unsupported-syntax", "a helper with *args or **kwargs", node)
    ordered = list(params.posonly_params) + list(params.params) + list(params.kwonly_params)
    env: dict[str, Sym] = {}
    positional = [v for k, v in values if k is None]
    keywords = {k: v for k, v in values if k is not None}
    for i, param in enumerate(ordered):
        name = param.name.value
        if i < len(positional) and param not in params.kwonly_params:
            env[name] = positional[i]
        elif name in keywords:
            env[name] = keywords.pop(name)
        elif param.default is not None:
            env[name] = caller.const(param.default)
        else:
            raise Unsupported("unsupported-syntax", f"no argument for helper parameter `{name}`", node)
    if keywords or len(positional) > len(ordered):
        raise Unsupported("unsupported-syntax", "a helper called with arguments it does not take", node)
    return env


def _same_slice(a: tuple | list, b: tuple | list) -> bool:
    return len(a) == len(b) and all(x.deep_equals(y) for x, y in zip(a, b, strict=True))


def as_const(sym: Sym) -> Const | None:
    """A constant, or a tuple of constants as one; None for anything holding a gradient."""
    if isinstance(sym, Const):
        return sym
    if isinstance(sym, Seq):
        items = [as_const(i) for i in sym.items]  # type: ignore[arg-type]
        if all(i is not None for i in items):
            return Const(cst.Tuple([cst.Element(i.node) for i in items]))  # type: ignore[union-attr]
    return None


def _node(sym: Sym) -> cst.BaseExpression:
    if isinstance(sym, Lin):
        return sym.node
    const = as_const(sym)
    if const is None:
        raise Unsupported("unsupported-syntax", "a tuple holding a gradient used as a value")
    return const.node


def _where(cond: cst.BaseExpression, a: cst.BaseExpression, b: cst.BaseExpression) -> cst.Call:
    return cst.Call(
        cst.Attribute(cst.Name("torch"), cst.Name("where")),
        [cst.Arg(cond), cst.Arg(a), cst.Arg(b)],
    )


def _op_text(op: cst.BaseBinaryOp) -> str:
    return cst.Module([]).code_for_node(op).strip()


_AUG_TO_BIN = {
    cst.AddAssign: cst.Add,
    cst.SubtractAssign: cst.Subtract,
    cst.MultiplyAssign: cst.Multiply,
    cst.DivideAssign: cst.Divide,
    cst.PowerAssign: cst.Power,
    cst.FloorDivideAssign: cst.FloorDivide,
    cst.ModuloAssign: cst.Modulo,
    cst.BitAndAssign: cst.BitAnd,
    cst.BitOrAssign: cst.BitOr,
    cst.BitXorAssign: cst.BitXor,
    cst.MatrixMultiplyAssign: cst.MatrixMultiply,
    cst.LeftShiftAssign: cst.LeftShift,
    cst.RightShiftAssign: cst.RightShift,
}

_BUILTINS = frozenset(dir(__import__("builtins")))
