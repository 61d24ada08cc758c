"""What a Function must not do for its rewrite to be exact, beyond its forward's value and its
backward's gradient: decorators that act at run time, a forward that reads its inputs'
autograd state, and a forward that keeps a value somewhere other than ctx and its return.

The rewrite runs the forward on detached inputs and drops the methods' decorators; each of
these would then change what the program sees, so the class is left alone with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable

import libcst as cst

from fgirewrite.discover import qualify
from fgirewrite.extract.values import Unsupported, dotted, names_in, walk
from fgirewrite.surrogate import Autocast

# Decorators on forward/backward/setup_context that change nothing the rewrite must keep.
HARMLESS_DECORATORS = frozenset(
    {
        "staticmethod",
        "classmethod",
        "torch.autograd.function.once_differentiable",
        "torch.no_grad",
        "torch.autograd.no_grad",
        "torch.autograd.grad_mode.no_grad",
        "torch.inference_mode",
        "torch.jit.unused",
        "torch.jit.ignore",
        "torch.compiler.disable",
        "torch._dynamo.disable",
    }
)
# torch's mixed-precision pair: what they do is kept by the generated code (``Autocast``).
CUSTOM_FWD = frozenset(
    {"torch.amp.custom_fwd", "torch.amp.autocast_mode.custom_fwd", "torch.cuda.amp.custom_fwd"}
)
CUSTOM_BWD = frozenset(
    {"torch.amp.custom_bwd", "torch.amp.autocast_mode.custom_bwd", "torch.cuda.amp.custom_bwd"}
)
# Autograd state of a tensor: a forward that reads it sees the caller's tensors in the
# original and detached ones in the rewrite.
AUTOGRAD_ATTRIBUTES = frozenset(
    {"requires_grad", "is_leaf", "grad_fn", "grad", "_version", "retains_grad", "_base"}
)
AUTOGRAD_METHODS = frozenset({"requires_grad_", "retain_grad", "register_hook"})
# Methods that keep their argument in the receiver (a list, a dict, a queue, a module).
STORING_METHODS = frozenset(
    {
        *("append", "extend", "insert", "add", "update", "setdefault", "put", "put_nowait"),
        *("push", "appendleft", "register_buffer", "register_parameter", "__setitem__"),
    }
)


def _qualified(decorator: cst.Decorator, imports: dict[str, str]) -> str:
    target = decorator.decorator
    name = dotted(target.func if isinstance(target, cst.Call) else target)
    return qualify(name, imports) if name is not None else cst.Module([]).code_for_node(target)


def check_decorators(
    methods: dict[str, cst.FunctionDef], imports: dict[str, str]
) -> Autocast | None:
    """Refuse a decorator on forward, backward or setup_context that is not known to be
    harmless (``unknown-decorator``); the forward's ``custom_fwd``, if any."""
    autocast = None
    for name in ("forward", "backward", "setup_context"):
        method = methods.get(name)
        for decorator in method.decorators if method is not None else ():
            qualified = _qualified(decorator, imports)
            if qualified in HARMLESS_DECORATORS:
                continue
            if name == "forward" and qualified in CUSTOM_FWD:
                autocast = _custom_fwd(decorator, qualified)
                continue
            if name == "backward" and qualified in CUSTOM_BWD:
                continue
            shown = cst.Module([]).code_for_node(decorator.decorator)
            raise Unsupported(
                "unknown-decorator",
                f"`@{shown}` on {name}: the rewrite drops the methods' decorators, and "
                "fgirewrite does not know what this one does at run time",
                decorator,
            )
    return autocast


def _custom_fwd(decorator: cst.Decorator, qualified: str) -> Autocast:
    legacy = qualified.startswith("torch.cuda.")
    keywords: dict[str, str] = {}
    target = decorator.decorator
    for arg in target.args if isinstance(target, cst.Call) else ():
        if arg.keyword is None or arg.star:
            raise Unsupported(
                "unknown-decorator",
                "`custom_fwd` with positional arguments: fgirewrite reads only its keywords",
                decorator,
            )
        keywords[arg.keyword.value] = cst.Module([]).code_for_node(arg.value)
    device = keywords.get("device_type", '"cuda"' if legacy else "")
    if not device:
        raise Unsupported(
            "unknown-decorator", "`custom_fwd` without device_type (torch requires it)", decorator
        )
    return Autocast(device, keywords.get("cast_inputs"), legacy)


def check_forward(
    statements: Iterable[cst.CSTNode],
    result: cst.BaseExpression,
    local: set[str],
    imports: dict[str, str],
    params: Iterable[str] = (),
) -> None:
    """Refuse a forward that reads its inputs' autograd state, or keeps a value anywhere but
    ctx and its return value (``local``: its parameters and the names it binds). Autograd
    state of a tensor the forward makes itself (``x.detach().requires_grad_()``) is its own."""
    nodes = [*statements, result]
    containers = _fresh_containers(nodes, imports)
    inputs = _input_aliases(nodes, set(params))
    for node in nodes:
        for n in walk(node):
            if (
                isinstance(n, cst.Attribute)
                and n.attr.value in AUTOGRAD_ATTRIBUTES
                and _of_input(n.value, inputs)
            ):
                shown = cst.Module([]).code_for_node(n)
                raise Unsupported(
                    "forward-reads-autograd",
                    f"reads `{shown}`: the rewrite runs the forward on detached inputs, "
                    "whose autograd state differs from the caller's",
                    n,
                )
            if isinstance(n, (cst.Global, cst.Nonlocal)):
                raise Unsupported(
                    "forward-side-effect", "declares a global: it may keep a value", n
                )
            if isinstance(n, cst.Call):
                _check_call(n, local, containers, inputs, imports)
            if isinstance(n, (cst.Assign, cst.AugAssign, cst.AnnAssign)):
                targets = [t.target for t in n.targets] if isinstance(n, cst.Assign) else [n.target]
                for target in targets:
                    _check_target(target, local)


_NEW_LEAF = frozenset({"detach", "clone", "new_tensor", "new_zeros", "new_ones", "new_empty"})


def _input_aliases(nodes: list[cst.CSTNode], params: set[str]) -> set[str]:
    """The inputs, and local names bound to one of them or a view of it."""
    aliases = set(params)
    changed = True
    while changed:
        changed = False
        for node in nodes:
            for n in walk(node):
                if isinstance(n, cst.Assign) and _of_input(n.value, aliases):
                    for target in n.targets:
                        name = target.target
                        if isinstance(name, cst.Name) and name.value not in aliases:
                            aliases.add(name.value)
                            changed = True
    return aliases


def _of_input(node: cst.BaseExpression, inputs: set[str]) -> bool:
    """``node`` is an input or a view of one (not a new leaf made from it by ``detach``)."""
    while True:
        if isinstance(node, cst.Name):
            return node.value in inputs
        if isinstance(node, (cst.Attribute, cst.Subscript)):
            node = node.value
        elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
            if node.func.attr.value in _NEW_LEAF:
                return False
            node = node.func.value
        else:
            return False


def _fresh_containers(nodes: list[cst.CSTNode], imports: dict[str, str]) -> set[str]:
    """Names the forward binds only to values it makes itself (``spikes = []``,
    ``dims = torch.ones(n).tolist()``), never to one it reads (``spikes = MONITOR``):
    appending to one keeps nothing outside the forward."""
    bound: dict[str, bool] = {}
    for node in nodes:
        for n in walk(node):
            if isinstance(n, cst.Assign):
                for target in n.targets:
                    if isinstance(target.target, cst.Name):
                        name, fresh = target.target.value, _made_here(n.value, imports)
                        bound[name] = bound.get(name, True) and fresh
    return {name for name, fresh in bound.items() if fresh}


_CONSTRUCTORS = frozenset({"list", "dict", "set", "tuple", "sorted", "range", "zip", "len"})
_MAKING_METHODS = frozenset({"tolist", "copy", "clone", "keys", "values", "items", "split"})


def _made_here(value: cst.BaseExpression, imports: dict[str, str]) -> bool:
    """A container literal or comprehension, or what torch or a constructor returns."""
    if isinstance(value, (cst.List, cst.Dict, cst.Set, cst.Tuple)):
        return True
    if isinstance(value, (cst.ListComp, cst.DictComp, cst.SetComp, cst.GeneratorExp)):
        return True
    if not isinstance(value, cst.Call):
        return False
    func = value.func
    if isinstance(func, cst.Attribute) and func.attr.value in _MAKING_METHODS:
        return True
    name = qualify(dotted(func) or "", imports)
    return name.startswith("torch.") or name in _CONSTRUCTORS


def _check_call(
    call: cst.Call,
    local: set[str],
    containers: set[str],
    inputs: set[str],
    imports: dict[str, str],
) -> None:
    func = call.func
    method = func.attr.value if isinstance(func, cst.Attribute) else None
    if (
        method in AUTOGRAD_METHODS
        and isinstance(func, cst.Attribute)
        and _of_input(func.value, inputs)
    ):
        raise Unsupported(
            "forward-reads-autograd",
            f"calls `.{method}()`: the rewrite runs the forward on detached inputs",
            call,
        )
    receiver = func.value if isinstance(func, cst.Attribute) else None
    if isinstance(receiver, cst.Name) and receiver.value in containers:
        return  # a list or dict of the forward's own
    stores = method in STORING_METHODS or qualify(dotted(func) or "", imports) == "setattr"
    if stores and any(names_in(a.value) & local for a in call.args):
        shown = cst.Module([]).code_for_node(func)
        raise Unsupported(
            "forward-side-effect",
            f"keeps a value with `{shown}(...)`: the rewrite's forward computes it without "
            "the caller's graph, so code reading it later would lose its gradient",
            call,
        )


def _check_target(target: cst.BaseExpression, local: set[str]) -> None:
    """An assignment may bind local names, or write into a local tensor (``y[m] = 0``)."""
    if isinstance(target, (cst.Tuple, cst.List)):
        for element in target.elements:
            _check_target(element.value, local)
        return
    if isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name):
        if target.value.value in local:
            return
    if isinstance(target, (cst.Name, cst.StarredElement)):
        return
    shown = cst.Module([]).code_for_node(target)
    raise Unsupported(
        "forward-side-effect",
        f"assigns to `{shown}`: the rewrite's forward computes values without the caller's "
        "graph, so code reading it later would lose its gradient",
        target,
    )
