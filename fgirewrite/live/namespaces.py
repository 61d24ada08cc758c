"""Globals for code that fgirewrite generates or copies at run time, as importable modules.

``torch.compile`` reads the globals of a function it inlines as the module
``sys.modules[globals["__name__"]]``. A function whose globals are a private dict that still
carries the library's ``__name__`` would be guarded against the library's module, where its
names (``_fgi_seed``, a replaced global) are missing or different. So each such namespace is
the ``__dict__`` of its own module, registered as ``fgirewrite.injected.<name>``; the modules
live as long as the process.
"""

from __future__ import annotations

import itertools
import re
import sys
import types

PARENT = "fgirewrite.injected"
_counter = itertools.count()
_IDENTIFIER = re.compile(r"\W")


def module_globals(base: dict, hint: str) -> dict:
    """A copy of ``base`` that is the ``__dict__`` of a new registered module."""
    if PARENT not in sys.modules:
        sys.modules[PARENT] = types.ModuleType(PARENT, "Copies made by fgirewrite at run time.")
    name = f"{PARENT}.{_IDENTIFIER.sub('_', hint)}_{next(_counter)}"
    module = types.ModuleType(name)
    module.__dict__.update(base)
    module.__name__ = name  # __package__ and __spec__ stay: relative imports still resolve
    sys.modules[name] = module
    return module.__dict__


def rehome(function: types.FunctionType, hint: str) -> types.FunctionType:
    """``function`` with its globals copied into a registered module."""
    new = types.FunctionType(
        function.__code__,
        module_globals(function.__globals__, hint),
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    new.__kwdefaults__ = function.__kwdefaults__
    new.__dict__.update(function.__dict__)
    new.__qualname__, new.__doc__ = function.__qualname__, function.__doc__
    new.__module__ = new.__globals__["__name__"]
    return new
