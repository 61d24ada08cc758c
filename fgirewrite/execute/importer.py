"""Import a project as written or as rewritten: the overlay every model side is built with.

A model module imports the layer module that defines the Function (``from layers import
Spike``), so rewriting the entry's own file is not enough: ``ProjectImporter`` is a
``sys.meta_path`` finder that loads every module of the project (a file under its import
roots, outside any installed package) itself, and on the rewritten side serves the source
``rewrite_source`` makes of it, file by file, as ``--write`` would write it.

With an empty ``prefix`` (a process of its own: ``fgirewrite verify``) modules keep their
names. With a prefix (both sides in one process: ``bench``, ``load_pair``) each side's
project modules live under ``PREFIX.name``; their ``import`` statements are redirected there,
so the two sides share no module object of the project.
"""

from __future__ import annotations

import builtins
import importlib.abc
import importlib.machinery
import linecache
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fgirewrite import discover
from fgirewrite.rewrite import Rewrite, rewrite_source
from fgirewrite.source import decode

Rewriter = Callable[[bytes, str], Rewrite]

# The file name rewritten code is compiled under, so that tracebacks, ``inspect`` and
# TorchScript read the rewritten lines, not the file's, and say so.
REWRITTEN = " (rewritten by fgirewrite)"
_OWN_PACKAGE = Path(__file__).resolve().parents[1]
_INSTALLED = ("site-packages", "dist-packages")


def source_path(filename: str) -> str:
    """The file a code object's (or a module's) file name stands for."""
    return filename.removesuffix(REWRITTEN)


def installed(path: Path) -> bool:
    """A file of an installed package (or of fgirewrite itself), not of the user's project."""
    return any(part in _INSTALLED for part in path.parts) or _OWN_PACKAGE in path.parents


class ProjectImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads the project's modules, rewritten or as written (see the module doc).

    ``served`` holds what the rewrite did to each project file loaded on the rewritten side
    that could define a Function (by path); ``loaded`` the project modules loaded, by name.
    """

    def __init__(
        self,
        roots: Iterable[Path],
        rewritten: bool,
        prefix: str = "",
        rewriter: Rewriter | None = None,
    ):
        self.roots = [Path(r).resolve() for r in roots]
        self.rewritten = rewritten
        self.prefix = prefix
        self.rewriter = rewriter or rewrite_source
        self.served: dict[str, Rewrite] = {}
        self.loaded: dict[str, str] = {}
        self._project: dict[str, bool] = {}
        self.builtins: dict[str, Any] = dict(vars(builtins), __import__=self._import)

    # -- which modules are the project's ------------------------------------------------

    def owns(self, path: str | Path) -> bool:
        """Whether a file is the project's: under an import root, not an installed one."""
        resolved = Path(path).resolve()
        return not installed(resolved) and any(
            root == resolved or root in resolved.parents for root in self.roots
        )

    def _find(self, name: str, search: list[str] | None) -> importlib.machinery.ModuleSpec | None:
        paths = search if search is not None else [str(r) for r in self.roots]
        if not self.prefix and search is None:
            paths = paths + [p for p in sys.path if p not in paths]
        spec = importlib.machinery.PathFinder.find_spec(name, paths)
        if spec is None:
            return None
        if spec.origin not in (None, "namespace") and spec.has_location:
            return spec if self.owns(spec.origin) else None
        locations = list(spec.submodule_search_locations or [])
        return spec if locations and all(self.owns(p) for p in locations) else None

    def is_project(self, top: str) -> bool:
        """Whether the top-level module ``top`` is one of the project's."""
        if top not in self._project:
            self._project[top] = self._find(top, None) is not None
        return self._project[top]

    # -- the finder ---------------------------------------------------------------------

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if self.prefix:
            if not fullname.startswith(self.prefix):
                return None
            fullname = fullname[len(self.prefix) :]
        search = list(path) if path is not None and "." in fullname else None
        found = self._find(fullname, search)
        if found is None:
            return None
        package = found.submodule_search_locations is not None
        origin = found.origin if found.has_location else None
        spec = importlib.machinery.ModuleSpec(
            self.prefix + fullname, self, origin=origin, is_package=package
        )
        if package:
            spec.submodule_search_locations = list(found.submodule_search_locations or [])
        spec.has_location = origin is not None
        return spec

    # -- the loader -----------------------------------------------------------------------

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        spec = module.__spec__
        assert spec is not None
        if spec.origin is None:  # a namespace package: nothing to run
            return
        self.loaded[spec.name] = spec.origin
        self.run(module, Path(spec.origin), None)

    def source(self, path: Path) -> tuple[str, str]:
        """The module's source as this side runs it, and the file name to compile it under."""
        data = path.read_bytes()
        text = decode(data, str(path))
        if not (self.rewritten and discover.may_define_function(data)):
            return text, str(path)
        result = self.rewriter(data, str(path))
        self.served[str(path)] = result
        if not result.changed or result.new_source is None:
            return text, str(path)
        new = decode(result.new_source, str(path))
        filename = str(path) + REWRITTEN
        # TorchScript and inspect read source through linecache; an entry without a
        # modification time is never checked against the file on disk.
        linecache.cache[filename] = (len(new), None, new.splitlines(keepends=True), filename)
        return new, filename

    def run(self, module: types.ModuleType, path: Path, only: Callable[[str], str] | None):
        """Execute the module's source (``only`` cuts it to a slice) in ``module``."""
        text, filename = self.source(path)
        if only is not None:
            text = only(text)
        module.__file__ = str(path)
        if self.prefix:
            module.__builtins__ = self.builtins  # type: ignore[attr-defined]
        code = compile(text, filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - the user asked to run this model

    # -- imports inside the project, when prefixed -----------------------------------------

    def _import(
        self,
        name: str,
        globals: dict | None = None,
        locals: dict | None = None,
        fromlist: tuple = (),
        level: int = 0,
    ) -> types.ModuleType:
        top = name.partition(".")[0]
        if level or not name or not self.is_project(top):
            return builtins.__import__(name, globals, locals, fromlist, level)
        module = builtins.__import__(self.prefix + name, globals, locals, fromlist, 0)
        return module if fromlist else sys.modules[self.prefix + top]

    # -- installing ----------------------------------------------------------------------

    def __enter__(self) -> ProjectImporter:
        if self.prefix and self.prefix[:-1] not in sys.modules:
            holder = types.ModuleType(self.prefix[:-1], "fgirewrite: one side's project")
            holder.__path__ = []
            sys.modules[self.prefix[:-1]] = holder
        sys.meta_path.insert(0, self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
