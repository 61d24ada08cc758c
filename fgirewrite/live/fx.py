"""A torch.fx pass that replaces each surrogate ``Function.apply`` call by its FGI subgraph.

Plain ``torch.fx.symbolic_trace`` runs a custom Function's forward on proxies and records only
that forward: the traced module has no gradient there at all. ``trace`` (``SurrogateTracer``)
records each ``Function.apply`` call as one ``call_function`` node instead, and ``FGIPass``
replaces every such node whose Function has a verified FGI function with that function traced
into the graph: the forward's own ops, then ``_fgi_seed`` / ``_fgi_inject`` from
``fgirewrite._runtime`` as leaf calls. Calls it cannot replace stay (with their gradient) and
are reported with their reason codes.

The inlined subgraph always computes the injected term: grad mode is not known when the graph
is built. Forward values are bit for bit the original's either way.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn
from torch.fx.node import Argument, Node, map_aggregate
from torch.fx.passes.infra.pass_base import PassBase, PassResult
from torch.fx.proxy import GraphAppendingTracer, Proxy

from fgirewrite import _runtime
from fgirewrite.execute.census import function_classes
from fgirewrite.execute.state import preserved
from fgirewrite.live.replacement import (
    FUNCTION_CLASS,
    Replaced,
    Resolver,
    Unrewritten,
    function_class,
)
from fgirewrite.surrogate import Location, Skip, Surrogate


def _has_proxy(value: Argument) -> bool:
    found = False

    def visit(v: Argument) -> Argument:
        nonlocal found
        found = found or isinstance(v, Proxy)
        return v

    map_aggregate(value, visit)
    return found


@functools.cache
def function_call(cls: type[torch.autograd.Function]) -> Callable[..., Any]:
    """The node target for a call to ``cls.apply``: a plain function that calls it.

    fx prints, and looks up, a bound ``apply`` as ``torch.autograd.function.apply``; this one
    is named after the class, and fx keeps the object itself in the generated code's globals.
    """

    def apply(*args: Any, **kwargs: Any) -> Any:
        return cls.apply(*args, **kwargs)

    apply.__module__, apply.__qualname__ = cls.__module__, f"{cls.__qualname__}.apply"
    setattr(apply, FUNCTION_CLASS, cls)
    return apply


class SurrogateTracer(fx.Tracer):
    """An fx Tracer that keeps every custom ``Function.apply`` call as one node."""

    def trace(
        self, root: nn.Module | Callable[..., Any], concrete_args: dict[str, Any] | None = None
    ) -> fx.Graph:
        # Function.apply ends in ``super().apply(...)``: patching the class after Function in
        # the MRO, while tracing only, catches every call, also through ``apply`` methods bound
        # before tracing (``spike = Spike.apply`` at module level), which a patch of
        # Function.apply itself would miss.
        base: Any = torch.autograd.Function.__mro__[1]  # its ``apply`` is patched below
        saved = base.__dict__.get("apply")
        tracer = self

        def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
            if _has_proxy((args, kwargs)):
                return tracer.create_proxy(
                    "call_function", function_call(cls), args, kwargs, name=f"{cls.__name__}_apply"
                )
            return super(base, cls).apply(*args, **kwargs)  # type: ignore[misc]

        base.apply = classmethod(apply)
        try:
            return super().trace(root, concrete_args)
        finally:
            if saved is None:
                del base.apply
            else:
                base.apply = saved


def trace(
    root: nn.Module | Callable[..., Any], concrete_args: dict[str, Any] | None = None
) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` that keeps surrogate Function calls as nodes."""
    tracer = SurrogateTracer()
    graph = tracer.trace(root, concrete_args)
    name = root.__class__.__name__ if isinstance(root, nn.Module) else root.__name__
    return fx.GraphModule(tracer.root, graph, name)


def surrogate_calls(graph: fx.Graph) -> list[Node]:
    """The nodes of ``graph`` that call a custom ``Function.apply``."""
    return [n for n in graph.nodes if n.op == "call_function" and function_class(n.target)]


class _Inliner(GraphAppendingTracer):
    """Traces an FGI function into a scratch graph; tensor constants become buffers of ``gm``."""

    def __init__(self, graph: fx.Graph, gm: fx.GraphModule):
        super().__init__(graph)
        self.gm = gm
        self.constants: list[str] = []

    def create_arg(self, a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            i = 0
            while hasattr(self.gm, f"_fgi_constant{i}"):
                i += 1
            name = f"_fgi_constant{i}"
            self.gm.register_buffer(name, a.detach().clone(), persistent=False)
            self.constants.append(name)
            return self.graph.get_attr(name)
        return super().create_arg(a)


def _leaf(tracer: _Inliner, target: Callable) -> Callable:
    def call(*args: Any) -> Proxy:
        return tracer.create_proxy("call_function", target, args, {})

    return call


def inline(gm: fx.GraphModule, node: Node, function: Callable) -> Node:
    """Replace ``node`` (a ``Function.apply`` call) by ``function`` traced into the graph."""
    scratch = fx.Graph()
    tracer = _Inliner(scratch, gm)
    placeholders: dict[Node, Node] = {}

    def lift(value: Any) -> Any:
        if isinstance(value, Node):
            placeholder = scratch.placeholder(value.name)
            placeholders[placeholder] = value
            return Proxy(placeholder, tracer)
        return value

    bound = inspect.signature(function).bind(*node.args, **node.kwargs)
    args = [map_aggregate(a, lift) for a in bound.args]
    kwargs = {k: map_aggregate(v, lift) for k, v in bound.kwargs.items()}
    namespace = dict(function.__globals__)
    namespace.update(
        _fgi_needs_grad=lambda: True,
        _fgi_seed=_leaf(tracer, _runtime._fgi_seed),
        _fgi_inject=_leaf(tracer, _runtime._fgi_inject),
    )
    traced = types.FunctionType(
        function.__code__, namespace, function.__name__, function.__defaults__, function.__closure__
    )
    traced.__kwdefaults__ = function.__kwdefaults__
    try:
        with torch.enable_grad():
            result = traced(*args, **kwargs)
        if not isinstance(result, Proxy):
            raise fx.proxy.TraceError(f"the FGI function returned {type(result).__name__}")
    except Exception:
        for name in tracer.constants:
            delattr(gm, name)
        raise
    scratch.output(result.node)
    with gm.graph.inserting_before(node):
        out = gm.graph.graph_copy(scratch, dict(placeholders))
    assert isinstance(out, Node)
    _replace(gm.graph, node, out)
    return out


def _replace(graph: fx.Graph, node: Node, new: Node) -> None:
    """Put ``new`` in place of ``node``; drop constants that only ``node`` read."""
    inputs = node.all_input_nodes
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    for argument in inputs:
        if argument.op == "get_attr" and not argument.users:
            graph.erase_node(argument)


class FGIPass(PassBase):
    """Replace each surrogate ``Function.apply`` node by its verified FGI subgraph.

    After a call, ``replaced`` and ``skipped`` say what this run did; a Function that
    cannot be rewritten keeps its node (and its gradient) and is listed in ``skipped``.
    With ``example_inputs`` the rewritten module runs once (leaving no trace) and every
    custom Function still in its autograd graph (called inside a leaf module, say, where
    the graph has no node for it) is listed in ``skipped`` too, as ``hidden-call``.
    """

    def __init__(
        self,
        verify: bool = True,
        resolver: Resolver | None = None,
        example_inputs: tuple | None = None,
    ):
        self.resolver = resolver or Resolver(verify)
        self.example_inputs = example_inputs
        self.replaced: list[Replaced] = []
        self.skipped: list[Unrewritten] = []
        self._static = 0  # skipped nodes still in the graph

    def requires(self, graph_module: fx.GraphModule) -> None:
        if not isinstance(graph_module, fx.GraphModule):
            raise TypeError(
                f"FGIPass runs on a torch.fx.GraphModule, not "
                f"{type(graph_module).__name__}; trace it with fgirewrite.fx_pass."
                "trace (torch.fx.symbolic_trace drops custom Function gradients)"
            )
        graph_module.graph.lint()

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        self.replaced, self.skipped = [], []
        for node in surrogate_calls(graph_module.graph):
            cls = function_class(node.target)
            assert cls is not None
            where = f"{graph_module.__class__.__name__}:{node.name}"
            resolution = self.resolver.resolve(cls, list(node.args))
            if resolution.function is None:
                assert isinstance(resolution.found, Skip)
                self.skipped.append(Unrewritten(where, resolution.found))
                continue
            assert isinstance(resolution.found, Surrogate)
            note = ""
            try:
                inline(graph_module, node, resolution.function)
            except Exception as exc:  # noqa: BLE001 - fx cannot trace it: call it as one node
                note = f"called as one node: fx cannot trace it ({type(exc).__name__}: {exc})"
                with graph_module.graph.inserting_before(node):
                    call = graph_module.graph.call_function(
                        resolution.function, node.args, node.kwargs
                    )
                _replace(graph_module.graph, node, call)
            self.replaced.append(Replaced(where, resolution.found, resolution.report, note))
        modified = bool(self.replaced)
        if modified:
            graph_module.graph.lint()
            graph_module.recompile()
        self._static = len(self.skipped)
        if self.example_inputs is not None:
            self.skipped += self._still_called(graph_module)
        return PassResult(graph_module, modified)

    def _still_called(self, graph_module: fx.GraphModule) -> list[Unrewritten]:
        """Functions in the autograd graph of one forward that no node of the graph calls."""
        assert self.example_inputs is not None
        inputs = tuple(
            t.detach().clone().requires_grad_(t.is_floating_point())
            if isinstance(t, torch.Tensor)
            else t
            for t in self.example_inputs
        )
        with torch.enable_grad(), preserved(graph_module):
            outputs = graph_module(*inputs)
        kept = {function_class(n.target) for n in surrogate_calls(graph_module.graph)}
        where = f"{graph_module.__class__.__name__}(*example_inputs)"
        found = []
        for cls in function_classes(outputs):
            if cls in kept:
                continue
            name = cls.__qualname__
            location = Location(getattr(cls, "__module__", "?"), 0, 0)
            reason = "called where the graph has no node for it (inside a leaf module)"
            found.append(Unrewritten(where, Skip(name, location, "hidden-call", reason)))
        return found

    def ensures(self, graph_module: fx.GraphModule) -> None:
        graph_module.graph.lint()
        left = len(surrogate_calls(graph_module.graph))
        if left != self._static:
            raise AssertionError(
                f"{left} Function calls remain but {self._static} were reported as skipped"
            )
