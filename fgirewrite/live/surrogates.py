"""Extraction from live Function classes, for rewriting models already in memory.

The same extraction as for files, fed with the class's module source (``inspect``); the
generated function is compiled in the class's own globals (and closure), so it reads exactly
the helpers and constants the original backward reads.
"""

from __future__ import annotations

import functools
import inspect
import types

from fgirewrite import codegen, discover
from fgirewrite.extract import extract
from fgirewrite.live.namespaces import module_globals
from fgirewrite.surrogate import Location, Skip, Surrogate


@functools.cache
def extract_class(cls: type) -> Surrogate | Skip:
    """The description of a live Function subclass, or why it cannot be rewritten."""
    name = getattr(cls, "__qualname__", repr(cls))
    try:
        path = inspect.getsourcefile(cls)
        _, first = inspect.getsourcelines(cls)
        if path is None:
            raise OSError("no source file")
        with open(path, "rb") as handle:
            data = handle.read()
    except (OSError, TypeError) as exc:
        return Skip(
            name,
            Location(str(getattr(cls, "__module__", "?")), 0, 0),
            "no-source",
            f"the class's source is not available: {exc}",
        )
    module = discover.parse(data, path)
    for site in module.sites:
        if site.name == cls.__name__ and site.first_line <= first + 1 and first <= site.line:
            return extract(site, module.info, path)
    return Skip(
        name,
        Location(path, first, 1),
        "unresolved-base",
        "not found as a torch.autograd.Function subclass in its source file",
    )


def _namespace(cls: type) -> dict:
    namespace: dict = {}
    for method in ("forward", "backward", "setup_context"):
        function = inspect.getattr_static(cls, method, None)
        function = getattr(function, "__func__", function)
        if callable(function) and hasattr(function, "__globals__"):
            namespace.update(function.__globals__)
            namespace.update(inspect.getclosurevars(function).nonlocals)
    return namespace


@functools.cache
def fgi_function(cls: type) -> tuple[types.FunctionType | None, Surrogate | Skip]:
    """The FGI replacement of ``cls.apply`` (None if there is none) and its description."""
    found = extract_class(cls)
    if isinstance(found, Skip):
        return None, found
    name = "_fgi_" + cls.__name__
    # Compiled in a registered module (torch.compile reads a function's globals through
    # sys.modules[__name__]), holding a copy of the class's globals and closure.
    namespace = module_globals(_namespace(cls), cls.__qualname__)
    return codegen.compile_surrogate(found, namespace, name), found
