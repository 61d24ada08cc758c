"""Copy on reach: replace the references a live object graph holds to surrogate Functions.

From a value (a module attribute, a module's class) the walk follows what a call can reach: a
function's globals (the names its code reads, nested functions included), closure cells and
defaults; bound methods; ``functools.partial``; lists, tuples and dicts; module objects (the
attributes a function reads from them); user classes (their methods). A Function subclass, or
its bound ``apply``, is a target. Every value on a path to a replaceable target is copied with
the replacement in place; nothing the library shares (modules, classes, functions) is mutated,
and values that reach no target come back as they are.

Copied functions read a snapshot of their module's globals (``fgirewrite.live.namespaces``): a
global the library rebinds later is not seen by the copy.
"""

from __future__ import annotations

import copy
import functools
import sys
import types
from collections import deque
from collections.abc import Callable
from typing import Any

from fgirewrite.discover import PROTOCOL
from fgirewrite.live.namespaces import module_globals
from fgirewrite.live.replacement import function_class

# Packages whose code is never followed: no surrogate lives there, and copying it would be risky.
SKIPPED_PACKAGES = frozenset({"torch", "fgirewrite", "numpy", "typing", *sys.stdlib_module_names})
# Where copies of user classes claim to live. Not the library's module: code that dispatches on
# the exact class (spikingjelly picks a fused kernel with the surrogate built in by class name
# and module) must not take a copy for the original and bypass its rewritten methods.
INJECTED_MODULE = "fgirewrite.injected"
_PROTOCOL = PROTOCOL | {"apply"}


def _package(obj: object) -> str:
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", "")
    return (name or "").split(".")[0]


@functools.cache
def _code_names(code: types.CodeType) -> frozenset[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return frozenset(names)


def _members(cls: type) -> dict[str, tuple[str, Any]]:
    """A user class's methods as (wrapper kind, raw function), most derived first."""
    found: dict[str, tuple[str, Any]] = {}
    for klass in cls.__mro__:
        if klass is object or _package(klass) in SKIPPED_PACKAGES:
            continue
        for name, attr in vars(klass).items():
            if name in found or (name.startswith("__") and name != "__call__"):
                continue
            if isinstance(attr, staticmethod):
                found[name] = ("staticmethod", attr.__func__)
            elif isinstance(attr, classmethod):
                found[name] = ("classmethod", attr.__func__)
            elif isinstance(attr, property):
                found[name] = ("property", attr)
            else:
                found[name] = ("plain", attr)
    return found


def _rewrap(kind: str, value: Callable[..., Any]) -> object:
    if kind == "staticmethod":
        return staticmethod(value)
    if kind == "classmethod":
        return classmethod(value)
    return value


class Rewriter:
    """Finds targets reachable from values and copies the values that reach them.

    ``resolve(cls)`` gives the replacement of ``cls.apply`` (None: the Function stays). One
    Rewriter serves a whole model, so values shared between its modules are copied once.
    """

    def __init__(self, resolve: Callable[[type], Callable | None]):
        self._resolve = resolve
        self._objects: dict[int, object] = {}  # keeps every visited value alive: ids stay valid
        self._edges: dict[int, list[tuple[str, int]]] = {}
        self._module_names: dict[int, set[str]] = {}  # module -> attribute names read from it
        self._module_explored: dict[int, int] = {}  # module -> names seen when last explored
        self._replacements: dict[type | None, Callable | None] = {}
        self._reaching: set[int] = set()
        self._copies: dict[int, object] = {}
        self._globals: dict[int, dict] = {}
        self._stand_ins: dict[type, type] = {}
        self._in_progress: set[int] = set()

    # -- exploring -------------------------------------------------------------------------

    def _kind(self, obj: object) -> str | None:
        if function_class(obj) is not None:
            return "target"
        if isinstance(obj, types.FunctionType):
            return None if _package(obj) in SKIPPED_PACKAGES else "function"
        if isinstance(obj, types.MethodType):
            return "method"
        if isinstance(obj, functools.partial):
            return "partial"
        if isinstance(obj, (list, dict)):
            return "list" if isinstance(obj, list) else "dict"
        if isinstance(obj, tuple):
            return "tuple"
        if isinstance(obj, types.ModuleType):
            return None if _package(obj) in SKIPPED_PACKAGES else "module"
        if isinstance(obj, type) and _package(obj) not in SKIPPED_PACKAGES:
            return "class"
        return None

    def _children(self, obj: Any, kind: str) -> list[tuple[str, object]]:
        """What a value of this kind reaches, labelled; dispatched like ``_copy``."""
        return getattr(self, f"_children_{kind}")(obj)

    def _children_function(self, f: types.FunctionType) -> list[tuple[str, object]]:
        names = _code_names(f.__code__)
        found: list[tuple[str, object]] = []
        for name in sorted(names):
            if name in f.__globals__:
                value = f.__globals__[name]
                if isinstance(value, types.ModuleType):
                    self._module_names.setdefault(id(value), set()).update(names)
                found.append((name, value))
        for var, cell in zip(f.__code__.co_freevars, f.__closure__ or (), strict=True):
            if var != "__class__":  # zero-argument super() must keep the defining class
                try:
                    found.append((var, cell.cell_contents))
                except ValueError:  # an empty cell
                    continue
        found += [(f"{f.__name__} default", d) for d in f.__defaults__ or ()]
        found += [(f"{f.__name__} default {k}", v) for k, v in (f.__kwdefaults__ or {}).items()]
        return found

    def _children_method(self, m: types.MethodType) -> list[tuple[str, object]]:
        return [(m.__func__.__name__, m.__func__)]

    def _children_partial(self, p: functools.partial) -> list[tuple[str, object]]:
        return [
            ("partial", p.func),
            *(("partial", a) for a in p.args),
            *(("partial", v) for v in p.keywords.values()),
        ]

    def _children_list(self, items: list | tuple) -> list[tuple[str, object]]:
        return [(f"[{i}]", v) for i, v in enumerate(items)]

    _children_tuple = _children_list

    def _children_dict(self, d: dict) -> list[tuple[str, object]]:
        return [(f"[{k!r}]", v) for k, v in d.items()]

    def _children_module(self, module: types.ModuleType) -> list[tuple[str, object]]:
        names = self._module_names.get(id(module), set())
        found = [(name, vars(module)[name]) for name in sorted(names) if name in vars(module)]
        for _, value in found:  # `a.b.gauss`: the same code reads names from `a.b`
            if isinstance(value, types.ModuleType):
                self._module_names.setdefault(id(value), set()).update(names)
        return found

    def _children_class(self, cls: type) -> list[tuple[str, object]]:
        found: list[tuple[str, object]] = []
        for name, (how, raw) in _members(cls).items():
            label = f"{cls.__name__}.{name}"
            if how == "property":
                found += [(label, f) for f in (raw.fget, raw.fset, raw.fdel) if f is not None]
            else:
                found.append((label, raw))
        return found

    def _pending(self, obj: object) -> bool:
        """Not explored yet, or a module from which more names are read since."""
        if id(obj) not in self._objects:
            return True
        names = self._module_names.get(id(obj))
        return names is not None and len(names) > self._module_explored.get(id(obj), 0)

    def _explore(self, root: object) -> None:
        if not self._pending(root):
            return  # explored with an earlier root: the marks are current
        queue = deque([root])
        grown = False
        while queue:
            obj = queue.popleft()
            key = id(obj)
            kind = self._kind(obj)
            if not self._pending(obj):
                continue
            self._objects[key] = obj
            if kind == "module":
                self._module_explored[key] = len(self._module_names.get(key, ()))
            if kind == "target":
                cls = function_class(obj)
                assert cls is not None
                if cls not in self._replacements:
                    self._replacements[cls] = self._resolve(cls)
                grown = True
            children = self._children(obj, kind) if kind not in (None, "target") else []
            edges = self._edges.setdefault(key, [])
            known = {c for _, c in edges}
            for label, child in children:
                if self._kind(child) is None:
                    continue
                if id(child) not in known:
                    edges.append((label, id(child)))
                    known.add(id(child))
                    grown = True
                if id(child) != key and self._pending(child):
                    queue.append(child)
        if grown:
            self._mark()

    def _mark(self) -> None:
        """The values that reach a replaceable target."""
        incoming: dict[int, list[int]] = {}
        for source, edges in self._edges.items():
            for _, target in edges:
                incoming.setdefault(target, []).append(source)
        queue = deque(
            key
            for key, obj in self._objects.items()
            if self._kind(obj) == "target"
            and self._replacements.get(function_class(obj)) is not None
        )
        reaching = set(queue)
        while queue:
            for source in incoming.get(queue.popleft(), []):
                if source not in reaching:
                    reaching.add(source)
                    queue.append(source)
        self._reaching = reaching

    def targets(self, root: object) -> list[tuple[list[str], type]]:
        """Every Function ``root`` reaches, with the first path (labels) to it."""
        self._explore(root)
        paths: dict[int, list[str]] = {id(root): []}
        queue = deque([id(root)])
        found = []
        while queue:
            key = queue.popleft()
            cls = function_class(self._objects.get(key))
            if cls is not None:
                found.append((paths[key], cls))
            for label, child in self._edges.get(key, []):
                if child not in paths:
                    paths[child] = paths[key] + [label]
                    queue.append(child)
        return found

    # -- copying ---------------------------------------------------------------------------

    def rewrite(self, value: object) -> object:
        """``value``, or a copy of it in which every replaceable target is replaced."""
        self._explore(value)
        return self._copy(value)

    def _copy(self, obj: object) -> Any:  # a copy of the same kind, or a replacement
        key = id(obj)
        if key not in self._reaching:
            return obj
        if key in self._copies:
            return self._copies[key]
        kind = self._kind(obj)
        if kind == "target":
            cls = function_class(obj)
            assert cls is not None
            replacement = self._replacements[cls]
            assert replacement is not None
            new = self._stand_in(cls, replacement) if isinstance(obj, type) else replacement
            self._copies[key] = new
            return new
        return getattr(self, f"_copy_{kind}")(obj)

    def _copy_function(self, f: types.FunctionType) -> types.FunctionType:
        cells = None
        pending = []
        if f.__closure__ is not None:
            fresh = []
            for var, cell in zip(f.__code__.co_freevars, f.__closure__, strict=True):
                try:
                    contents = cell.cell_contents
                except ValueError:
                    contents = None
                if var != "__class__" and id(contents) in self._reaching:
                    cell = types.CellType()
                    pending.append((cell, contents))
                fresh.append(cell)
            cells = tuple(fresh)
        namespace = self._globals.get(id(f.__globals__))
        if namespace is None:
            namespace = module_globals(f.__globals__, str(f.__globals__.get("__name__")))
            self._globals[id(f.__globals__)] = namespace
        new = types.FunctionType(f.__code__, namespace, f.__name__, None, cells)
        self._copies[id(f)] = new
        new.__dict__.update(f.__dict__)
        new.__qualname__, new.__module__, new.__doc__ = f.__qualname__, f.__module__, f.__doc__
        new.__annotations__ = dict(f.__annotations__)
        if f.__defaults__ is not None:
            new.__defaults__ = tuple(self._copy(d) for d in f.__defaults__)
        if f.__kwdefaults__ is not None:
            new.__kwdefaults__ = {k: self._copy(v) for k, v in f.__kwdefaults__.items()}
        for name in _code_names(f.__code__):
            if name in f.__globals__:
                namespace[name] = self._copy(f.__globals__[name])
        for cell, contents in pending:
            cell.cell_contents = self._copy(contents)
        return new

    def _copy_method(self, m: types.MethodType) -> types.MethodType:
        new = types.MethodType(self._copy(m.__func__), m.__self__)
        self._copies[id(m)] = new
        return new

    def _copy_partial(self, p: functools.partial) -> functools.partial:
        new = functools.partial(
            self._copy(p.func),
            *(self._copy(a) for a in p.args),
            **{k: self._copy(v) for k, v in p.keywords.items()},
        )
        self._copies[id(p)] = new
        return new

    def _copy_list(self, items: list) -> list:
        new: list = []
        self._copies[id(items)] = new
        new.extend(self._copy(v) for v in items)
        return new

    def _copy_dict(self, d: dict) -> dict:
        new = copy.copy(d)
        self._copies[id(d)] = new
        for k, v in d.items():
            new[k] = self._copy(v)
        return new

    def _copy_tuple(self, t: tuple) -> tuple:
        if id(t) in self._in_progress:  # a cycle through a tuple: keep this occurrence
            return t
        self._in_progress.add(id(t))
        items = [self._copy(v) for v in t]
        self._in_progress.discard(id(t))
        new = type(t)(*items) if hasattr(t, "_fields") else type(t)(items)
        self._copies[id(t)] = new
        return new

    def _copy_module(self, m: types.ModuleType) -> types.ModuleType:
        new = types.ModuleType(m.__name__, m.__doc__)
        new.__dict__.update(vars(m))
        self._copies[id(m)] = new
        for name in self._module_names.get(id(m), set()):
            if name in vars(m):
                new.__dict__[name] = self._copy(vars(m)[name])
        return new

    def _copy_class(self, cls: type) -> type:
        namespace = {
            "__module__": INJECTED_MODULE,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "__fgi_original__": cls,
        }
        new = type(cls)(cls.__name__, (cls,), namespace)
        self._copies[id(cls)] = new
        for name, (how, raw) in _members(cls).items():
            if how == "property":
                parts = [raw.fget, raw.fset, raw.fdel]
                if any(id(p) in self._reaching for p in parts if p is not None):
                    fget, fset, fdel = (self._copy(p) for p in parts)
                    setattr(new, name, property(fget, fset, fdel, raw.__doc__))
            elif id(raw) in self._reaching:
                setattr(new, name, _rewrap(how, self._copy(raw)))
        return new

    def _stand_in(self, cls: type, function: Callable) -> type:
        """A plain class in place of a Function class passed as a value: ``apply`` is FGI,
        and the class attributes callers read (``required_states`` and the like) stay."""
        if cls not in self._stand_ins:
            namespace: dict[str, object] = {}
            for klass in reversed(cls.__mro__):
                if _package(klass) in SKIPPED_PACKAGES:
                    continue
                namespace.update(
                    {
                        k: v
                        for k, v in vars(klass).items()
                        if k not in _PROTOCOL and not k.startswith("__")
                    }
                )
            namespace.update(
                __module__=INJECTED_MODULE,
                __qualname__=cls.__qualname__,
                __doc__=cls.__doc__,
                __fgi_original__=cls,
                apply=staticmethod(function),
            )
            self._stand_ins[cls] = type(cls.__name__, (), namespace)
        return self._stand_ins[cls]
