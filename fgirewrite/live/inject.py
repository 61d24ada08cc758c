"""``inject``: rewrite a live ``nn.Module`` so its forward calls no surrogate Function.

For models whose forward cannot be traced as a whole (state on the module, Python control
flow, surrogates passed as closures, module attributes or Function classes passed as values)
and whose surrogates live in a library the user cannot edit. Each module's attributes and the
methods of its class are walked (``fgirewrite.live.references``); every value that reaches a
surrogate Function is copied with the Function's verified FGI function in place, and the copy
is set on the model (a module whose methods reach one gets a private subclass). The library's
own classes, functions and modules are never mutated.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import torch
from torch import nn
from torch.utils._pytree import tree_map

from fgirewrite.execute.census import function_classes
from fgirewrite.execute.state import copy_model, preserved
from fgirewrite.live.references import Rewriter
from fgirewrite.live.replacement import Replaced, Resolver, Unrewritten
from fgirewrite.surrogate import Skip, Surrogate

# nn.Module bookkeeping that never holds a surrogate (submodules are visited on their own).
_INTERNALS = frozenset(
    {
        "_parameters",
        "_buffers",
        "_modules",
        "_non_persistent_buffers_set",
        "_state_dict_hooks",
        "_load_state_dict_pre_hooks",
        "training",
    }
)


@dataclass
class InjectResult:
    """The injected model, what was replaced (and where), and what was left alone (and why)."""

    model: nn.Module
    replaced: list[Replaced] = field(default_factory=list)
    skipped: list[Unrewritten] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no surrogate Function the model reaches was left in place."""
        return not self.skipped

    def summary(self) -> str:
        names = {r.surrogate.name for r in self.replaced}
        return (
            f"fgirewrite: injected {len(names)} surrogate{'s' * (len(names) != 1)} at "
            f"{len(self.replaced)} site{'s' * (len(self.replaced) != 1)}; "
            f"{len(self.skipped)} left unrewritten"
        )

    def __str__(self) -> str:
        return "\n".join([*map(str, self.replaced), *map(str, self.skipped), self.summary()])


def autograd_functions(outputs: object) -> list[type]:
    """The custom ``autograd.Function`` classes in the autograd graph of ``outputs``."""
    return list(function_classes(outputs))


@overload
def inject(
    model: nn.Module,
    *,
    inplace: bool = ...,
    verify: bool = ...,
    report: Literal[False] = ...,
    example_inputs: Sequence[object] | None = ...,
) -> nn.Module: ...


@overload
def inject(
    model: nn.Module,
    *,
    inplace: bool = ...,
    verify: bool = ...,
    report: Literal[True],
    example_inputs: Sequence[object] | None = ...,
) -> InjectResult: ...


def inject(
    model: nn.Module,
    *,
    inplace: bool = False,
    verify: bool = True,
    report: bool = False,
    example_inputs: Sequence[object] | None = None,
) -> nn.Module | InjectResult:
    """Replace every surrogate Function the model reaches by its verified FGI function.

    Returns the model (a deep copy unless ``inplace``); a Function left in place warns with
    its reason code. ``inject_report`` returns the full ``InjectResult`` instead (``report=True``
    is its older spelling). Skipping verification (``verify=False``) is the caller's risk.
    """
    result = inject_report(model, inplace=inplace, verify=verify, example_inputs=example_inputs)
    if report:
        return result
    if result.skipped:
        warnings.warn(
            "fgirewrite.inject left surrogate Functions in place:\n"
            + "\n".join(map(str, result.skipped)),
            stacklevel=2,
        )
    return result.model


def inject_report(
    model: nn.Module,
    *,
    inplace: bool = False,
    verify: bool = True,
    example_inputs: Sequence[object] | None = None,
) -> InjectResult:
    """``inject``, returning an ``InjectResult``: the model, each replacement and each
    Function left in place with its reason code. With ``example_inputs`` the injected model is
    run once (on a copy) and any custom Function still in its autograd graph is reported too.
    """
    if not inplace:
        model = copy_model(model)  # also a model that has run (state left on its modules)
    resolver = Resolver(verify)
    rewriter = Rewriter(lambda cls: resolver.resolve(cls).function)
    result = InjectResult(model)
    seen: set[tuple[str, str]] = set()

    def record(where: str, value: object) -> None:
        for labels, cls in rewriter.targets(value):
            resolution = resolver.resolve(cls)
            site = " -> ".join([where, *labels])
            if (site, cls.__qualname__) in seen:
                continue
            seen.add((site, cls.__qualname__))
            if resolution.function is None:
                assert isinstance(resolution.found, Skip)
                result.skipped.append(Unrewritten(site, resolution.found))
            else:
                assert isinstance(resolution.found, Surrogate)
                result.replaced.append(Replaced(site, resolution.found, resolution.report))

    for path, module in model.named_modules():
        prefix = path or type(model).__name__
        for name, value in list(vars(module).items()):
            if name in _INTERNALS:
                continue
            record(f"{prefix}.{name}{_named(value)}", value)
            new = rewriter.rewrite(value)
            if new is not value:
                vars(module)[name] = new
        cls = type(module)
        record(f"{prefix} ({cls.__name__})", cls)
        new_cls = rewriter.rewrite(cls)
        if new_cls is not cls:
            module.__class__ = new_cls

    if example_inputs is not None:
        result.skipped += _still_called(model, example_inputs, resolver)
    return result


def _named(value: Any) -> str:
    """`` (qualname)`` of a function-like attribute value, for reports."""
    if isinstance(value, type):
        return ""
    owner = getattr(value, "__self__", None)
    if isinstance(owner, type):  # a bound classmethod: Function.apply
        return f" ({owner.__qualname__}.{value.__name__})"
    function = getattr(value, "__func__", getattr(value, "func", value))
    name = getattr(function, "__qualname__", None)
    return f" ({name})" if isinstance(name, str) else ""


def _still_called(
    model: nn.Module, example_inputs: Sequence[object], resolver: Resolver
) -> list[Unrewritten]:
    """Functions still in the autograd graph of one forward of the model, run so that it
    leaves no trace (its state, buffers and random generators restored)."""
    inputs = tree_map(
        lambda t: (
            t.detach().clone().requires_grad_(t.is_floating_point())
            if isinstance(t, torch.Tensor)
            else t
        ),
        tuple(example_inputs),
    )
    with torch.enable_grad(), preserved(model):
        outputs = model(*inputs)
    found = []
    for cls in autograd_functions(outputs):
        resolution = resolver.resolve(cls)
        skip = resolution.found
        if isinstance(skip, Surrogate):
            skip = Skip(
                skip.name,
                skip.location,
                "hidden-call",
                "called at run time through a reference inject cannot replace "
                "(a dynamic lookup, a local import or an object it does not copy)",
            )
        found.append(Unrewritten(f"{type(model).__name__}(*example_inputs)", skip))
    return found
