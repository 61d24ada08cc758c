"""Calls in a backward: which functions and methods keep the gradient linear and elementwise,
in-place ops turned out-of-place, and module-level helpers evaluated inline."""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import libcst as cst

from fgirewrite.extract import rules
from fgirewrite.extract.values import (
    BOOL_METHODS,
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
    node_of,
    operand,
    where_call,
)


class CallRules:
    """Mixed into the Evaluator (``symbolic.py``): the rules for calls. What they use of the
    Evaluator is declared first (for the type checker; ``tests/test_layers.py`` checks that
    the Evaluator defines it)."""

    if TYPE_CHECKING:
        # What the Evaluator (fgirewrite.extract.symbolic) provides.
        state: State
        env: dict[str, Sym | Unbound]
        ctx: Ctx
        mode: str

        def __init__(
            self,
            state: State,
            env: dict[str, Sym | Unbound],
            ctx_name: str | None,
            ctx: Ctx,
            mode: str,
        ) -> None: ...
        def block(self, body: Statements) -> Sym | None: ...
        def expr(self, node: cst.BaseExpression) -> Sym: ...
        def e_Name(self, node: cst.Name) -> Sym: ...
        def const(self, node: cst.BaseExpression) -> Const: ...
        def qualified(self, node: cst.BaseExpression) -> str | None: ...
        def is_ctx(self, node: cst.BaseExpression) -> bool: ...
        def held(self, value: Sym) -> bool: ...
        def materialize(self, value: Const, name: str) -> Const: ...
        def rebind(self, old: Sym, new: Sym, name: str) -> None: ...
        def check_inplace(self, target: Sym, label: str, node: cst.CSTNode) -> None: ...

    # ---------------------------------------------------------------- calls

    def e_Call(self, node: cst.Call) -> Sym:
        for arg in node.args:
            if arg.star:
                raise Unsupported("unsupported-syntax", "a call with *args or **kwargs", node)
            if arg.keyword is not None and arg.keyword.value == "out":
                return self.written_out(node, arg)
        func = node.func
        qualified = self.qualified(func)
        if qualified is not None:
            return self.function_call(node, qualified)
        if isinstance(func, cst.Attribute) and self.is_ctx(func.value):
            if self.mode == "backward" and func.attr.value in self.ctx.attrs:
                return self.value_call(
                    node, self.ctx.attrs[func.attr.value], f"ctx.{func.attr.value}"
                )
            raise Unsupported("unsupported-ctx", f"calls ctx.{func.attr.value}()", node)
        if isinstance(func, cst.Name) and isinstance(callee := self.env.get(func.value), Const):
            return self.value_call(node, callee, func.value)
        if isinstance(func, cst.Attribute):
            return self.method_call(node, func.attr.value)
        raise Unsupported("unknown-call", "calls a computed callable", node)

    def value_call(self, node: cst.Call, callee: Const, label: str) -> Sym:
        """A callable the caller passed in (``ctx.surrogate_grad_fn(v, thr)``): called with
        constants it is a constant, assumed pure like any other function of them."""
        values = self.args(node)
        if any(isinstance(v, Lin) for _, v in values):
            raise Unsupported(
                "unknown-call",
                f"the gradient goes through `{label}`, a callable known only at run time",
                node,
            )
        self.all_const(values, node)
        return Const(node.with_changes(func=callee.node, args=self.rebuild_args(node, values)))

    def args(self, node: cst.Call) -> list[tuple[str | None, Sym]]:
        return [(a.keyword.value if a.keyword else None, self.expr(a.value)) for a in node.args]

    def rebuild_args(self, node: cst.Call, values: list[tuple[str | None, Sym]]) -> list[cst.Arg]:
        return [
            a.with_changes(value=node_of(v)) for a, (_, v) in zip(node.args, values, strict=True)
        ]

    def function_call(self, node: cst.Call, qualified: str) -> Sym:
        """``torch.f(...)`` or a module-level helper ``f(...)``."""
        if rules.is_random_call(qualified, None):
            raise Unsupported("backward-random", f"draws random numbers with `{qualified}`", node)
        if rules.is_inplace(qualified.rsplit(".", 1)[-1]):
            # ``torch.exp_(x)``, ``SCALE.mul_(2)``: mutates a tensor fgirewrite does not track.
            raise Unsupported(
                "in-place-alias",
                f"`{qualified}` works in place on a module-level or caller's tensor",
                node,
            )
        self.e_Name(cst.Name(qualified.split(".")[0]))  # record the free name; check shadowing
        values = self.args(node)
        lins = [v for _, v in values if isinstance(v, Lin)]
        helper = self.state.function(qualified) if "." not in qualified else None
        if helper is not None and lins:
            return self.inline(node, qualified, values)
        if helper is not None:
            # Called with constants only: the call stays as it is, unless it draws random
            # numbers, which would then happen in the forward.
            self.check_not_random(helper, qualified, node)
        if not lins:
            self.all_const(values, node)
            is_bool = qualified.rsplit(".", 1)[-1] in BOOL_METHODS
            scalar = qualified in rules.SCALAR_TENSOR and len(_positional(values)) == 1
            return Const(
                node.with_changes(args=self.rebuild_args(node, values)),
                is_bool=is_bool,
                tensor=qualified.startswith("torch.")
                and qualified not in rules.NOT_TENSOR_FUNCTIONS
                and (is_bool or any(isinstance(v, Const) and v.tensor for _, v in values)),
                zero=rules.makes_zeros(qualified, _positional(values)),
                keeps_dtype=scalar,
            )
        call = _GradCall(node, qualified, values, lins, self.rebuild_args(node, values))
        for family in _FUNCTION_FAMILIES:
            result = family(self, call)
            if result is not None:
                return result
        last = qualified.rsplit(".", 1)[-1]
        if last in rules.NONLINEAR:
            raise self.not_linear(node, f"`{qualified}` of the gradient")
        if last in rules.NOT_ELEMENTWISE:
            raise _mixes(node, f"`{qualified}`")
        raise Unsupported(
            "unknown-call",
            f"the gradient flows through `{qualified}`, not known to be linear in it",
            node,
        )

    # One rule per family of torch functions the gradient may flow through: each returns the
    # call's value, or None when the call is not of its family (or not in a form it proves).

    def shape_call(self, call: _GradCall) -> Sym | None:
        """``torch.zeros_like(grad)``: reads only the gradient's shape, the output's."""
        if call.qualified not in rules.SHAPE_FUNCTIONS or len(call.lins) != 1:
            return None
        first = call.first
        if not (isinstance(first, Lin) and first.plain):
            return None
        args = [call.node.args[0].with_changes(value=cst.Name(self.state.out)), *call.args[1:]]
        zero = rules.makes_zeros(call.qualified, _positional(call.values))
        keeps = _keyword(call.node, "dtype") is None
        return Const(call.node.with_changes(args=args), zero=zero, tensor=True, keeps_dtype=keeps)

    def where_function(self, call: _GradCall) -> Sym | None:
        if call.qualified not in rules.TORCH_WHERE or len(call.values) != 3:
            return None
        cond, a, b = (v for _, v in call.values)
        return self.where(cond, a, b, call.node) if isinstance(cond, Const) else None

    def identity_call(self, call: _GradCall) -> Sym | None:
        """``torch.clone(grad)``, ``torch.neg(grad)``."""
        if call.qualified not in rules.TORCH_IDENTITY | rules.TORCH_NEGATE:
            return None
        if len(call.values) != 1:
            return None
        return self.lin_op(call.values[0][1], call.rebuilt, keep_reduction=True, keeps=True)

    def reduce_call(self, call: _GradCall) -> Sym | None:
        first = call.first
        if call.qualified not in rules.TORCH_REDUCE or not isinstance(first, Lin):
            return None
        return self.reduce(first, call.rebuilt, call.node) if len(call.lins) == 1 else None

    def scale_call(self, call: _GradCall) -> Sym | None:
        """``torch.mul(grad, k)``, ``torch.div(grad, k)``; rounding division is not linear."""
        if call.qualified not in rules.TORCH_SCALE:
            return None
        rounding = _keyword(call.node, "rounding_mode")
        if rounding is not None:
            raise self.not_linear(
                call.node,
                f"`{call.qualified}` of the gradient with rounding_mode={_code(rounding)}",
            )
        if len(call.values) != 2 or len(call.lins) != 1:
            return None
        if call.qualified in ("torch.mul", "torch.multiply") or isinstance(call.first, Lin):
            keeps = all(keeps_dtype(v) for _, v in call.values if not isinstance(v, Lin))
            return self.lin_op(call.lins[0], call.rebuilt, keep_reduction=True, keeps=keeps)
        return None

    def masked_fill_call(self, call: _GradCall) -> Sym | None:
        """``torch.masked_fill(grad, mask, 0)``: zeroes some elements, linear."""
        first = call.first
        if call.qualified not in rules.TORCH_MASKED_FILL or not isinstance(first, Lin):
            return None
        if len(call.values) != 3:
            return None
        fill = call.values[2][1]
        if isinstance(fill, Const) and fill.zero:
            return self.lin_op(first, call.rebuilt, keeps=True)
        return None

    def method_call(self, node: cst.Call, method: str, receiver: Sym | None = None) -> Sym:
        """``receiver.method(...)``; ``receiver`` is the receiver's value when known already."""
        func = node.func
        assert isinstance(func, cst.Attribute)
        if rules.is_random_call(None, method):
            raise Unsupported("backward-random", f"draws random numbers with `.{method}()`", node)
        if receiver is None:
            receiver = self.expr(func.value)
        if rules.is_inplace(method):
            return self.inplace(node, receiver, method)
        values = self.args(node)
        rebuilt = node.with_changes(
            func=func.with_changes(value=operand(func.value, node_of(receiver))),
            args=self.rebuild_args(node, values),
        )
        lins = [v for _, v in values if isinstance(v, Lin)]
        if isinstance(receiver, Lin):
            return self.lin_method(node, receiver, method, values, rebuilt)
        if not isinstance(receiver, Const):
            raise Unsupported("unsupported-syntax", f"calls `.{method}()` on a tuple", node)
        if lins:
            return self.gradient_argument(node, receiver, method, values, lins, rebuilt)
        self.all_const(values, node)
        aliasing = method in rules.MAY_ALIAS_METHODS
        if aliasing:  # the result may be the receiver or a view of it: both now share memory
            receiver.aliased = True
        return Const(
            rebuilt,
            is_bool=method in BOOL_METHODS,
            tensor=receiver.tensor and method not in rules.NOT_TENSOR_METHODS,
            integral=method in rules.INTEGRAL_METHODS and method != "bool",
            zero=rules.makes_zeros(method, _positional(values)),
            external=receiver.external and aliasing,
            aliased=aliasing,
        )

    def gradient_argument(
        self,
        node: cst.Call,
        receiver: Const,
        method: str,
        values: list[tuple[str | None, Sym]],
        lins: list[Lin],
        rebuilt: cst.Call,
    ) -> Sym:
        """``const.method(grad)``: the gradient is an argument of a constant's method."""
        if method in ("mul", "multiply") and len(values) == 1:
            return self.lin_op(lins[0], rebuilt, keeps=keeps_dtype(receiver))
        if method == "where" and len(values) == 2:
            return self.where(values[0][1], receiver, values[1][1], node)
        if method in ("to", "type_as") and all(lin.plain for lin in lins):
            # ``mask.to(grad_output)`` reads only its dtype and device: the output's.
            out = cst.Name(self.state.out)
            args = [
                a.with_changes(value=out if isinstance(v, Lin) else node_of(v))
                for a, (_, v) in zip(node.args, values, strict=True)
            ]
            return Const(rebuilt.with_changes(args=args))
        if method in rules.TENSOR_METHODS or method in BOOL_METHODS:
            raise self.not_linear(node, f"the gradient passed to `.{method}()`")
        raise Unsupported(
            "unknown-call",
            f"the gradient is passed to `.{method}()`, not known to be linear in it",
            node,
        )

    def lin_method(
        self, node: cst.Call, lin: Lin, method: str, values: list, rebuilt: cst.Call
    ) -> Sym:
        """``grad.method(...)``: the gradient is the receiver."""
        if method in rules.GRAD_DROPPED and not values:
            return lin
        if method == "type" and not values:  # its type's name, a string: the output's
            if not lin.plain:
                raise self.not_linear(node, "`.type()` of a gradient other than grad_output")
            func = rebuilt.func
            assert isinstance(func, cst.Attribute)
            return Const(
                rebuilt.with_changes(func=func.with_changes(value=cst.Name(self.state.out)))
            )
        if method in rules.GRAD_CAST:
            self.check_cast(node, values)
        rounding = _keyword(node, "rounding_mode")
        if method in rules.GRAD_SCALE and rounding is not None:
            raise self.not_linear(
                node, f"`.{method}()` of the gradient with rounding_mode={_code(rounding)}"
            )
        # constants, tuples of them included: ``grad.sum((0, 2, 3))``
        consts = all(not isinstance(v, Lin) and _constant(v) for _, v in values)
        if method in rules.AFTER_REDUCTION and lin.reduction is not None and consts:
            return Lin(lin.node, reduction=rebuilt, dtype=lin.dtype, reduced_at=node)
        result = self.scaling_method(lin, method, values, rebuilt, consts)
        if result is None:
            result = self.selecting_method(node, lin, method, values, rebuilt, consts)
        if result is not None:
            return result
        if method in rules.NOT_ELEMENTWISE:
            raise _mixes(node, f"`.{method}()`")
        if method in ("index_put", "masked_scatter"):
            raise self.not_linear(
                node,
                f"`.{method}()` puts into the gradient values that are not known to be zero "
                "(only zero keeps it linear in grad_output)",
            )
        raise self.not_linear(node, f"`.{method}()` of the gradient")

    def scaling_method(
        self, lin: Lin, method: str, values: list, rebuilt: cst.Call, consts: bool
    ) -> Sym | None:
        """``grad.clone()``, ``grad.float()``, ``grad.mul(k)``, ``grad.neg()``: elementwise."""
        aliasing = method in rules.MAY_ALIAS_METHODS  # ``.contiguous()``, ``.float()``: maybe self
        if method in rules.GRAD_IDENTITY and not values:
            result = self.lin_op(
                lin, rebuilt, keep_plain=True, aliasing=aliasing, keep_reduction=True, keeps=True
            )
        elif (method in rules.GRAD_CAST | rules.GRAD_SCALE | rules.GRAD_NEGATE) and consts:
            result = self.lin_op(
                lin,
                rebuilt,
                aliasing=aliasing,
                keep_reduction=True,
                keeps=all(keeps_dtype(v) for _, v in values),
                dtype=self.cast_target(method, values) if method in rules.GRAD_CAST else None,
            )
        else:
            return None
        if aliasing and self.held(lin):  # the result may be lin itself: both share memory
            lin.aliased = result.aliased = True
        return result

    def selecting_method(
        self, node: cst.Call, lin: Lin, method: str, values: list, rebuilt: cst.Call, consts: bool
    ) -> Sym | None:
        """Reductions, zeroing some elements, and reading only the gradient's shape."""
        if method in rules.GRAD_REDUCE and consts:
            return self.reduce(lin, rebuilt, node)
        if method == "masked_fill" and len(values) == 2:
            mask, fill = values[0][1], values[1][1]
            if isinstance(mask, Const) and isinstance(fill, Const) and fill.zero:
                return self.lin_op(lin, rebuilt, keeps=True)
        if method == "where" and len(values) == 2:
            return self.where(values[0][1], lin, values[1][1], node)
        if method in ("index_put", "masked_scatter") and (mask := _zeroed_mask(method, values)):
            # ``g.index_put((mask,), 0)``, ``g.masked_scatter(mask, zeros)``: ``g[mask] = 0``
            return self.where(mask, _ZERO, lin, node)
        if method in rules.SHAPE_METHODS and lin.plain and consts:
            func = rebuilt.func
            assert isinstance(func, cst.Attribute)
            out = cst.Name(self.state.out)
            return Const(
                rebuilt.with_changes(func=func.with_changes(value=out)),
                zero=rules.makes_zeros(method, _positional(values)),
                tensor=method.startswith("new_"),
                keeps_dtype=_keyword(node, "dtype") is None,
            )
        return None

    def cast_target(
        self, method: str, values: list[tuple[str | None, Sym]]
    ) -> cst.BaseExpression | None:
        """The dtype a cast of the gradient gives, as code, when fgirewrite can tell."""
        if method in rules.CAST_DTYPES:
            return cst.parse_expression(rules.CAST_DTYPES[method])
        positional = [v for k, v in values if k is None]
        keyword = {k: v for k, v in values if k is not None}
        target = keyword.get("dtype", positional[0] if positional else None)
        if method == "to" and isinstance(target, Const):
            if self.qualified(target.node) in rules.FLOAT_DTYPES:
                return target.node
            if isinstance(target.node, cst.Attribute) and target.node.attr.value == "dtype":
                return target.node
        return None

    def check_cast(self, node: cst.Call, values: list[tuple[str | None, Sym]]) -> None:
        """A cast of the gradient is linear only to a floating dtype: refuse an integer or
        boolean one, and one to a dtype fgirewrite cannot tell."""
        for arg, (keyword, value) in zip(node.args, values, strict=True):
            if keyword in ("non_blocking", "copy", "memory_format", "device"):
                continue
            target = arg.value
            qualified = self.qualified(target)
            if qualified in rules.NON_FLOAT_DTYPES:
                raise self.not_linear(node, f"a cast of the gradient to `{qualified}`")
            if isinstance(value, Const) and (value.is_bool or value.integral):
                kind = "a boolean mask" if value.is_bool else "an integer tensor"
                raise self.not_linear(node, f"a cast of the gradient to the dtype of {kind}")
            if isinstance(target, cst.Attribute) and target.attr.value in ("dtype", "device"):
                base = self.expr(target.value)
                if isinstance(base, Const) and (base.is_bool or base.integral):
                    raise self.not_linear(
                        node, f"a cast of the gradient to `{_code(target)}`, not floating"
                    )
                continue
            if isinstance(target, cst.SimpleString) or qualified in rules.FLOAT_DTYPES:
                continue
            if isinstance(target, cst.Name) and target.value not in self.env:
                raise self.not_linear(
                    node,
                    f"a cast of the gradient to `{target.value}`, not known to be a floating dtype",
                )

    def inplace(self, node: cst.Call, receiver: Sym, method: str) -> Sym:
        func = node.func
        assert isinstance(func, cst.Attribute)
        label = dotted(func.value) or cst.Module([]).code_for_node(func.value)
        target = func.value
        # The mutated object is the receiver's value, however it is spelled: in
        # ``a.mul_(k).exp_()`` the receiver of ``exp_`` is ``a`` itself. A fresh computation
        # (``(2 * x).cosh_()``) is held by nothing else; a value that may share memory with
        # the caller's tensors (a view, a cast that may return its input) is refused.
        self.check_inplace(receiver, label, node)
        outplace = method[:-1]
        if method == "zero_":
            new: Sym = self.zeros_of(receiver, node)
        else:
            rebuilt = node.with_changes(func=func.with_changes(attr=cst.Name(outplace)))
            try:
                # the receiver evaluated once: evaluating it again would repeat its in-place ops
                new = self.method_call(rebuilt, outplace, self.kept_dtype(receiver))
            except Unsupported as exc:
                if exc.node is rebuilt:  # report it where the source has it
                    exc.node = node
                raise
            if isinstance(new, Lin) and isinstance(receiver, Lin):
                new.dtype = receiver.dtype  # an in-place result keeps the receiver's dtype
        if isinstance(new, (Const, Lin)):
            new.aliased = False
            new.external = False
        holders = [name for name, value in self.env.items() if value is receiver]
        if holders:
            self.rebind(receiver, new, holders[0])
            return cast(Sym, self.env[holders[0]])  # rebind bound it to a value
        if isinstance(target, (cst.Name, cst.Attribute, cst.Subscript)):
            raise Unsupported("in-place-alias", f"an in-place op on `{label}`", node)
        return new

    def kept_dtype(self, receiver: Sym) -> Sym:
        """The receiver of an in-place op on a gradient, cast to its own dtype: ``g.mul_(t)``
        rounds ``g * t`` to ``g``'s dtype, and the cast's backward rounds the rewrite's
        gradient there too (the rewrite's seed may be wider than grad_output)."""
        if not isinstance(receiver, Lin) or receiver.dtype is None:
            return receiver
        cast_node = cst.Call(
            cst.Attribute(operand_of_call(receiver.node), cst.Name("to")),
            [cst.Arg(receiver.dtype)],
        )
        # still "plain" for grad_output itself: cast to the output's dtype, it has its shape
        return Lin(
            cast_node,
            reduction=receiver.reduction,
            reduced_at=receiver.reduced_at,
            dtype=receiver.dtype,
            plain=receiver.plain,
        )

    def zeros_of(self, receiver: Sym, node: cst.Call) -> Const:
        """``t.zero_()``: zeros like ``t`` (like the output, for the gradient)."""
        self.state.free.add("torch")
        like = node_of(receiver)
        keywords = []
        if isinstance(receiver, Lin):
            if receiver.dtype is None:
                raise self.not_linear(node, "`.zero_()` of a gradient whose dtype is unknown")
            like = cst.Name(self.state.out)
            keywords = [cst.Arg(receiver.dtype, keyword=cst.Name("dtype"))]
        call = cst.Call(
            cst.Attribute(cst.Name("torch"), cst.Name("zeros_like")), [cst.Arg(like), *keywords]
        )
        return Const(call, zero=True, tensor=True, keeps_dtype=isinstance(receiver, Lin))

    def written_out(self, node: cst.Call, out: cst.Arg) -> Sym:
        """``torch.f(..., out=t)``: ``f``'s value written into ``t``, an in-place write."""
        if not isinstance(out.value, cst.Name) or out.value.value not in self.env:
            raise Unsupported(
                "in-place-alias",
                "writes a result into a tensor fgirewrite does not track (out=)",
                node,
            )
        label = out.value.value
        old = self.expr(out.value)
        self.check_inplace(old, label, node)
        args = [a for a in node.args if a is not out]
        args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        self.env[label] = self.kept_dtype(old)  # written in its own dtype, as in place
        try:
            new = self.expr(node.with_changes(args=args))
        finally:
            self.env[label] = old
        if isinstance(new, Lin) and isinstance(old, Lin):
            new.dtype = old.dtype
        self.rebind(old, new, label)
        return cast(Sym, self.env[label])

    # ---------------------------------------------------------------- linear building blocks

    def lin_op(
        self,
        lin: Sym,
        rebuilt: cst.BaseExpression,
        *others: Sym,
        keep_plain: bool = False,
        aliasing: bool = False,
        keep_reduction: bool = False,
        keeps: bool = False,
        dtype: cst.BaseExpression | None = None,
    ) -> Lin:
        """A linear operation on gradients. ``keep_reduction``: one gradient scaled, negated
        or cast, which commutes with a reduction already applied to it. ``keeps``: the result
        has the gradients' dtype (when they share one); ``dtype``: a cast's target."""
        for part in (lin, *others):
            if not isinstance(part, Lin):
                raise self.not_linear(rebuilt, "a gradient mixed with a non-gradient term")
            if part.reduction is not None and (others or not keep_reduction):
                raise self.not_linear(rebuilt, "an operation after the gradient's reduction")
        assert isinstance(lin, Lin)
        if dtype is None and keeps:
            dtype = same_dtype(lin, *others)
        return Lin(
            rebuilt,
            reduction=lin.reduction,
            reduced_at=lin.reduced_at,
            plain=keep_plain and lin.plain,
            aliased=aliasing and (lin.aliased or lin.external),
            dtype=dtype,
        )

    def reduce(self, lin: Lin, rebuilt: cst.BaseExpression, node: cst.CSTNode) -> Lin:
        """A sum of the gradient (over a learnable input's broadcast dimensions): autograd's
        own reduction to the input's shape performs it, so the template leaves it out."""
        return Lin(lin.node, reduction=rebuilt, dtype=lin.dtype, reduced_at=node)

    def where(self, cond: Sym, a: Sym, b: Sym, node: cst.CSTNode) -> Sym:
        """``torch.where(cond, a, b)``: linear if both branches are gradients or zero."""
        if not isinstance(cond, Const):
            raise self.not_linear(node, "a condition that depends on the gradient")
        if not isinstance(a, Lin) and not isinstance(b, Lin):
            self.state.free.add("torch")
            return Const(where_call(cond.node, node_of(a), node_of(b)))
        for branch in (a, b):
            if isinstance(branch, Const) and not branch.zero:
                raise self.not_linear(
                    node,
                    f"elements of the gradient replaced by `{_short(branch.node)}`, which does "
                    "not depend on grad_output (only zero keeps it linear)",
                )
            if isinstance(branch, Const) and branch.keeps_dtype:
                # a zero branch, however spelled, that cannot widen the gradient's dtype:
                # the template may apply it last (see ``templates.backward_order``)
                self.state.zeros.add(_code(branch.node))
            if isinstance(branch, Lin) and branch.reduction is not None:
                raise self.not_linear(node, "an operation after the gradient's reduction")
            if not isinstance(branch, (Const, Lin)):
                raise Unsupported("unsupported-syntax", "a tuple in torch.where", node)
        self.state.free.add("torch")
        lins = [branch for branch in (a, b) if isinstance(branch, Lin)]
        keeps = all(isinstance(branch, Lin) or keeps_dtype(branch) for branch in (a, b))
        return Lin(
            where_call(cond.node, node_of(a), node_of(b)),
            dtype=same_dtype(*lins) if keeps else None,
        )

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
                    "unknown-call",
                    f"`{name}` has decorator `{qualified}`, unknown to fgirewrite",
                    node,
                )
        env = bind_parameters(function.params, values, node, self)
        self.state.depth += 1
        self.state.helpers.append(name)
        try:
            result = type(self)(self.state, env, None, Ctx(), "backward").block(function.body.body)
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

    def check_not_random(self, function: cst.FunctionDef, name: str, node: cst.CSTNode) -> None:
        evaluator = self

        class Scan(cst.CSTVisitor):
            def visit_Call(self, call: cst.Call) -> None:
                func = call.func
                method = func.attr.value if isinstance(func, cst.Attribute) else None
                if rules.is_random_call(evaluator.qualified(func), method):
                    raise Unsupported(
                        "backward-random", f"`{name}` draws random numbers in the backward", node
                    )

        function.visit(Scan())

    def all_const(self, values: list[tuple[str | None, Sym]], node: cst.CSTNode) -> None:
        for _, v in values:
            if as_const(v) is None:
                raise Unsupported("unsupported-syntax", "a gradient inside a tuple argument", node)

    def no_seq(self, left: Sym, right: Sym, node: cst.CSTNode) -> None:
        if not isinstance(left, (Const, Lin)) or not isinstance(right, (Const, Lin)):
            raise Unsupported("unsupported-syntax", "arithmetic on a tuple or ctx", node)

    def not_linear(self, node: cst.CSTNode, what: str) -> Unsupported:
        return Unsupported("backward-not-linear", f"{what}", node)


@dataclass
class _GradCall:
    """A call of a torch function with the gradient among its arguments."""

    node: cst.Call
    qualified: str
    values: list[tuple[str | None, Sym]]
    lins: list[Lin]
    args: list[cst.Arg]  # the arguments rebuilt from their values

    @property
    def first(self) -> Sym | None:
        return self.values[0][1] if self.values else None

    @property
    def rebuilt(self) -> cst.Call:
        return self.node.with_changes(args=self.args)


_FUNCTION_FAMILIES: tuple[Callable[[CallRules, _GradCall], Sym | None], ...] = (
    CallRules.shape_call,
    CallRules.where_function,
    CallRules.identity_call,
    CallRules.reduce_call,
    CallRules.scale_call,
    CallRules.masked_fill_call,
)


def misaligned(reduction: cst.BaseExpression) -> str | None:
    """The summed dimensions of a reduction whose result no longer lines up, right-aligned,
    with the gradient it sums (``g.sum((0, 2, 3))`` of an image gradient: (C,)), as text;
    None when it does or cannot be told: kept dimensions, leading ones only, a view after
    it, ``sum_to_size``, dimensions known only at run time."""
    if not isinstance(reduction, cst.Call) or not isinstance(reduction.func, cst.Attribute):
        return None
    method = reduction.func.attr.value
    positional = [a.value for a in reduction.args if a.keyword is None]
    keywords = {a.keyword.value: a.value for a in reduction.args if a.keyword is not None}
    if method != "sum" or literal(keywords.get("keepdim")) is True:
        return None
    function = dotted(reduction.func) in ("torch.sum",)  # the gradient is the first argument
    dims = keywords.get(
        "dim", positional[1 if function else 0] if len(positional) > int(function) else None
    )
    if function and len(positional) > 2 and literal(positional[2]) is True:
        return None
    value = literal(dims)
    summed = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if dims is None or not all(isinstance(d, int) and d >= 0 for d in summed):
        return None
    if sorted(summed) == list(range(len(summed))):
        return None
    return f"dimension {_code(dims)}" if isinstance(value, int) else f"dimensions {_code(dims)}"


def literal(node: cst.BaseExpression | None) -> object:
    """A literal's Python value (ints, bools, tuples of them); None otherwise."""
    if node is None:
        return None
    try:
        return ast.literal_eval(_code(node))
    except (ValueError, SyntaxError):
        return None


_ZERO = Const(cst.Integer("0"), simple=True, value=0, zero=True, keeps_dtype=True)


def _zeroed_mask(method: str, values: list[tuple[str | None, Sym]]) -> Const | None:
    """The boolean mask of ``index_put((mask,), zero)`` or ``masked_scatter(mask, zeros)``
    (elements set to zero where the mask holds), else None."""
    names = ("indices", "values", "accumulate") if method == "index_put" else ("mask", "source")
    bound = dict(zip(names, (v for k, v in values if k is None), strict=False))
    bound |= {k: v for k, v in values if k is not None}
    if set(bound) - set(names):
        return None
    first, value = bound.get(names[0]), bound.get(names[1])
    accumulate = bound.get("accumulate")
    if accumulate is not None and not (isinstance(accumulate, Const) and accumulate.value is False):
        return None
    mask = first.items[0] if isinstance(first, Seq) and len(first.items) == 1 else first
    if method == "index_put" and not isinstance(first, Seq):
        return None
    if isinstance(mask, Const) and mask.is_bool and isinstance(value, Const) and value.zero:
        return mask
    return None


def _constant(value: Sym) -> bool:
    """A constant, or a tuple of constants (not ``ctx.saved_tensors`` itself)."""
    if isinstance(value, Seq):
        return not value.saved and all(_constant(item) for item in value.items)
    return isinstance(value, Const)


def keeps_dtype(value: Sym) -> bool:
    """A factor or selection that never widens the gradient's dtype: a number, a boolean mask,
    a 0-d tensor, a tensor made from the gradient."""
    return isinstance(value, Const) and (value.keeps_dtype or value.is_bool)


def same_dtype(*lins: Sym) -> cst.BaseExpression | None:
    """The dtype the gradients share, when known for all and the same."""
    dtypes = [lin.dtype if isinstance(lin, Lin) else None for lin in lins]
    first = dtypes[0]
    if first is None or any(d is None or not d.deep_equals(first) for d in dtypes):
        return None
    return first


def _positional(values: list[tuple[str | None, Sym]]) -> list[object]:
    """The statically known values of a call's positional arguments."""
    return [v.value if isinstance(v, Const) else None for k, v in values if k is None]


def operand_of_call(node: cst.BaseExpression) -> cst.BaseExpression:
    """``node`` as the receiver of a method call: parenthesized unless atomic."""
    if isinstance(node, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) or node.lpar:
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def _short(node: cst.CSTNode, limit: int = 40) -> str:
    """A node's code on one line, cut to ``limit`` characters."""
    text = " ".join(_code(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _keyword(node: cst.Call, name: str) -> cst.BaseExpression | None:
    """The value of a keyword argument, unless absent or None."""
    for arg in node.args:
        if arg.keyword is not None and arg.keyword.value == name:
            value = arg.value
            return None if isinstance(value, cst.Name) and value.value == "None" else value
    return None


def _mixes(node: cst.CSTNode, what: str) -> Unsupported:
    return Unsupported(
        "backward-not-elementwise",
        f"{what} mixes elements of the gradient; FGI injects an elementwise derivative",
        node,
    )


def bind_parameters(
    params: cst.Parameters,
    values: list[tuple[str | None, Sym]],
    node: cst.CSTNode,
    caller: CallRules,
) -> dict[str, Sym | Unbound]:
    """Bind call arguments to a helper's parameters, defaults included."""
    if params.star_arg not in (cst.MaybeSentinel.DEFAULT, None) or params.star_kwarg:
        raise Unsupported("unsupported-syntax", "a helper with *args or **kwargs", node)
    ordered = list(params.posonly_params) + list(params.params) + list(params.kwonly_params)
    env: dict[str, Sym | Unbound] = {}
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
            raise Unsupported(
                "unsupported-syntax", f"no argument for helper parameter `{name}`", node
            )
    if keywords or len(positional) > len(ordered):
        raise Unsupported(
            "unsupported-syntax", "a helper called with arguments it does not take", node
        )
    return env
