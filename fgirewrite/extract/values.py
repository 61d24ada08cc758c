"""The values a symbolic evaluation deals in, and small helpers on libcst nodes."""

from __future__ import annotations

import dataclasses
import functools
import keyword
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import libcst as cst

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
    is_bool: bool = False  # a boolean mask (or a Python bool)
    tensor: bool = False  # known to be a tensor (a saved one, or computed from one)
    integral: bool = False  # an integer tensor
    zero: bool = False
    external: bool = False  # may be a tensor the caller holds (input, saved, grad_output)
    aliased: bool = False  # may share memory with another live tensor
    # never widens the gradient's dtype in a selection: a number, a 0-d tensor, or made
    # from the gradient (``torch.zeros_like(grad_output)``)
    keeps_dtype: bool = False


@dataclass(eq=False)
class Lin:
    node: cst.BaseExpression  # template in GRAD
    reduction: cst.BaseExpression | None = None
    plain: bool = False  # exactly the incoming gradient (possibly cloned)
    external: bool = False
    aliased: bool = False
    dtype: cst.BaseExpression | None = None  # its dtype, in generated code, when known
    reduced_at: cst.CSTNode | None = None  # the backward's own reduction, for messages


@dataclass(eq=False)
class Seq:
    items: list[Sym]
    saved: bool = False  # ctx.saved_tensors itself


class Unbound:
    """A name one branch of a runtime condition binds and the other does not."""

    def __init__(self, name: str):
        self.name = name


class CtxRef:
    """The ctx object itself."""


CTX = CtxRef()
Sym = Const | Lin | Seq | CtxRef
# The statements of a suite: an indented block's, or a one-line suite's small statements.
Statements = Sequence[cst.BaseStatement] | Sequence[cst.BaseSmallStatement]


@dataclass
class Ctx:
    """What the forward or setup_context stored on ctx."""

    saved: list[Const] | None = None
    attrs: dict[str, Const] = field(default_factory=dict)
    tensor_inputs: set[int] = field(default_factory=set)  # indices known to be tensors
    n_inputs: int = 0
    unneeded: set[int] = field(default_factory=set)  # needs_input_grad False for these


class Names:
    """Fresh names that collide with nothing the generated function can see."""

    def __init__(self, taken: set[str]):
        self.taken = set(taken)

    def fresh(self, base: str) -> str:
        """``base`` without its outer underscores, numbered until free: never a keyword
        (``lambda_`` gives ``lambda_1``, not ``lambda``)."""
        base = base.strip("_") or "tmp"
        name, i = base, 1
        while name in self.taken or keyword.iskeyword(name):
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
    prelude: list[cst.BaseStatement] = field(default_factory=list)
    free: set[str] = field(default_factory=set)
    helpers: list[str] = field(default_factory=list)
    depth: int = 0
    zeros: set[str] = field(default_factory=set)  # code of the zero branches of a selection


def walk(
    node: cst.CSTNode, into: Callable[[cst.CSTNode], bool] | None = None
) -> Iterator[cst.CSTNode]:
    """Every node of a tree in source order, not below a node for which ``into`` is false.

    A walk over the dataclass fields: a CSTVisitor copies every node it visits, which made
    it the slow part of ``--check``. Whitespace and comments are not visited."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if into is not None and not into(current):
            continue
        children: list[cst.CSTNode] = []
        for name in _child_fields(type(current)):
            value = getattr(current, name)
            if isinstance(value, cst.CSTNode):
                children.append(value)
            elif isinstance(value, (tuple, list)):
                children.extend(v for v in value if isinstance(v, cst.CSTNode))
        stack.extend(reversed(children))


def names_in(node: cst.CSTNode) -> set[str]:
    """Every identifier in a tree."""
    return {n.value for n in walk(node) if isinstance(n, cst.Name)}


_SCOPES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)


def contains(node: cst.CSTNode, kinds: type | tuple[type, ...], nested_scopes: bool = True) -> bool:
    """A node of one of ``kinds`` in the tree; with ``nested_scopes=False``, not looking into
    nested functions, classes and lambdas."""
    into = None if nested_scopes else (lambda n: not isinstance(n, _SCOPES))
    return any(isinstance(n, kinds) for n in walk(node, into))


def is_docstring(stmt: cst.BaseStatement | cst.BaseSmallStatement) -> bool:
    """A statement line that starts with a string: a docstring where it comes first."""
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


@functools.cache
def _child_fields(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(kind) if not _whitespace(f.name))


def _whitespace(field_name: str) -> bool:
    return "whitespace" in field_name or field_name in ("lpar", "rpar", "header", "footer")


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
        type(getattr(new, "operator", None)) is type(getattr(original, "operator", None))
    )
    if same:
        return new
    return new.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def standalone(node: cst.BaseExpression) -> cst.BaseExpression:
    """A node that may stand alone: a multi-line one gets parentheses to hold its newlines."""
    if node.lpar or "\n" not in cst.Module([]).code_for_node(node):
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def literal_value(node: cst.BaseExpression) -> object:
    if isinstance(node, cst.Integer):
        return int(node.value.replace("_", ""), 0)
    if isinstance(node, cst.Float):
        return float(node.value.replace("_", ""))
    if isinstance(node, cst.Name) and node.value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[node.value]
    return UNKNOWN


BOOL_OPS = (cst.BitAnd, cst.BitOr, cst.BitXor)
BOOL_METHODS = frozenset(
    {
        "gt",
        "lt",
        "ge",
        "le",
        "eq",
        "ne",
        "greater",
        "less",
        "logical_and",
        "logical_or",
        "logical_not",
        "logical_xor",
        "isnan",
        "isinf",
        "isfinite",
        "bool",
        "signbit",
        "greater_equal",
        "less_equal",
        "not_equal",
        "isposinf",
        "isneginf",
    }
)


def same_slice(a: Sequence[cst.SubscriptElement], b: Sequence[cst.SubscriptElement]) -> bool:
    return len(a) == len(b) and all(x.deep_equals(y) for x, y in zip(a, b, strict=True))


def as_const(sym: Sym) -> Const | None:
    """A constant, or a tuple of constants as one; None for anything holding a gradient."""
    if isinstance(sym, Const):
        return sym
    if isinstance(sym, Seq):
        if sym.saved:
            raise Unsupported(
                "unsupported-ctx",
                "uses ctx.saved_tensors, a tuple, as a value "
                "(unpack it: `(x,) = ctx.saved_tensors`)",
            )
        items = [as_const(i) for i in sym.items]
        if all(i is not None for i in items):
            return Const(cst.Tuple([cst.Element(i.node) for i in items if i is not None]))
    return None


def node_of(sym: Sym) -> cst.BaseExpression:
    if isinstance(sym, Lin):
        return sym.node
    const = as_const(sym)
    if const is None:
        raise Unsupported("unsupported-syntax", "a tuple holding a gradient used as a value")
    return const.node


def where_call(cond: cst.BaseExpression, a: cst.BaseExpression, b: cst.BaseExpression) -> cst.Call:
    return cst.Call(
        cst.Attribute(cst.Name("torch"), cst.Name("where")),
        [cst.Arg(cond), cst.Arg(a), cst.Arg(b)],
    )


def op_text(op: cst.BaseBinaryOp) -> str:
    return cst.Module([]).code_for_node(op).strip()


AUG_TO_BIN: dict[type[cst.BaseAugOp], Callable[[], cst.BaseBinaryOp]] = {
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

BUILTINS = frozenset(dir(__import__("builtins")))
