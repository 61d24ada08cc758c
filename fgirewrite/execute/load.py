"""Build a model from an entry, as written or as rewritten: what ``verify --entry``, ``bench``
and ``load_pair`` share.

An entry (``fgirewrite.project.Entry``) names a function in a file or a dotted module of the
project. ``load_side`` runs that module's slice the function needs (a training loop at its
top level is not run), under a ``ProjectImporter`` that imports the rest of the project as
written or rewritten, file by file. ``load_pair`` loads both sides of one file in this
process (under private module names); ``fgirewrite verify`` loads each side in a process of
its own (``fgirewrite.verify.side``).
"""

from __future__ import annotations

import ast
import importlib.machinery
import itertools
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fgirewrite import discover
from fgirewrite.execute.importer import ProjectImporter, Rewriter, installed
from fgirewrite.execute.sandbox import slice_names
from fgirewrite.project import (
    Entry,
    EntryError,
    entry_file,
    import_roots,
    package_of,
    parse_entry,
)
from fgirewrite.rewrite import Rewrite, rewrite_source

SIDES = ("original", "rewritten")
_loads = itertools.count()


@dataclass
class Side:
    """One side of a model: the entry's module as run, and the importer that loaded it."""

    variant: str  # "original" or "rewritten"
    entry: Entry
    path: Path  # the entry's file
    module: types.ModuleType
    importer: ProjectImporter

    @property
    def function(self) -> Callable:
        """The entry function; an ``EntryError`` if the module does not define one."""
        found = getattr(self.module, self.entry.function, None)
        if found is None:
            raise EntryError(f"{self.path} defines no `{self.entry.function}` (see --entry)")
        if not callable(found):
            raise EntryError(
                f"{self.path}: `{self.entry.function}` is a {type(found).__name__}, not a function"
            )
        return found


def _slice(function: str) -> Callable[[str], str]:
    def cut(source: str) -> str:
        tree = ast.parse(source)
        return slice_names(tree, discover.module_info(source, tree), {function})

    return cut


def module_name(entry: Entry, path: Path) -> str:
    """The dotted name an entry's module is imported under."""
    return entry.module if entry.module is not None else package_of(path)[0]


def load_side(
    entry: Entry,
    roots: Iterable[Path],
    variant: str,
    prefix: str = "",
    rewriter: Rewriter | None = None,
    whole: bool = False,
) -> Side:
    """Run the entry's module (its slice for the function, or ``whole``) with the project
    imported as ``variant`` says. With an empty ``prefix`` the import roots are put on
    ``sys.path`` for good: for a process that builds this one side only."""
    roots = list(roots)
    path = entry_file(entry, roots).resolve()
    importer = ProjectImporter(roots, variant == "rewritten", prefix, rewriter)
    importer.__enter__()  # stays: a forward may import lazily
    if not prefix:
        sys.path[:0] = [str(r) for r in roots if str(r) not in sys.path]
    name = prefix + module_name(entry, path)
    module = types.ModuleType(name)
    package = path.name == "__init__.py"
    spec = importlib.machinery.ModuleSpec(name, importer, origin=str(path), is_package=package)
    spec.has_location = True
    if package:
        module.__path__ = [str(path.parent)]
        spec.submodule_search_locations = [str(path.parent)]
    module.__spec__ = spec
    module.__loader__ = importer
    module.__package__ = name if package else name.rpartition(".")[0]
    sys.modules[name] = module
    added = [str(r) for r in roots if str(r) not in sys.path] if prefix else []
    sys.path[:0] = added  # imports the project resolves by hand while it loads
    try:
        importer.run(module, path, None if whole else _slice(entry.function))
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        for root in added:
            sys.path.remove(root)
    return Side(variant, entry, path, module, importer)


def search_roots(paths: Iterable[Path]) -> list[Path]:
    """Where a dotted entry module is looked for: the import roots of each path given (a
    folder counts as a file in it), then those of the working directory."""
    roots: list[Path] = []
    for path in [*paths, Path.cwd()]:
        inside = path if path.is_file() else path / "_"
        roots += import_roots(inside.resolve())
    return list(dict.fromkeys(roots))


def resolve(spec: str, default: Path | None, search: Iterable[Path]) -> tuple[Entry, list[Path]]:
    """An entry (``FILE:FUNCTION``, ``MODULE:FUNCTION``, or ``FUNCTION`` in ``default``) and
    the import roots its model is built with: its file's, then ``search``. ``EntryError``."""
    search = list(search)
    entry = parse_entry(spec, default)
    path = entry_file(entry, search).resolve()
    return entry, list(dict.fromkeys([*import_roots(path), *search]))


def load_sides(
    entry: Entry, roots: Iterable[Path], rewriter: Rewriter | None = None, whole: bool = False
) -> tuple[Side, Side]:
    """Both sides of an entry in this process, each under private module names."""
    roots = list(roots)
    number = next(_loads)
    original, rewritten = (
        load_side(entry, roots, variant, f"_fgirewrite_{number}_{variant}.", rewriter, whole)
        for variant in SIDES
    )
    return original, rewritten


def load_pair(
    path: str | Path, only: str | None = None, rewriter: Rewriter | None = None
) -> tuple[types.ModuleType, types.ModuleType, Rewrite]:
    """A file as written and as rewritten (its project's imports rewritten too), each side
    under private module names, and what the rewrite did to the file. ``only=NAME`` runs
    just the imports and definitions ``NAME`` needs; otherwise the whole file runs."""
    path = Path(path)
    sides = load_sides(Entry(only or "_", path=path), import_roots(path), rewriter, not only)
    resolved = str(path.resolve())
    result = sides[1].importer.served.get(resolved) or (rewriter or rewrite_source)(
        path.read_bytes(), str(path)
    )
    return sides[0].module, sides[1].module, result


class UnreachedError(RuntimeError):
    """A model built from a rewritten side still runs a Function the rewrite replaces."""


def entry(module: types.ModuleType, name: str):
    """Call ``module.name()``; it returns a model and a tuple of example inputs. On a module
    ``load_pair`` rewrote, the model runs once (leaving no trace) and an ``UnreachedError``
    names any Function the rewrite replaces that it still runs."""
    if not hasattr(module, name):
        raise AttributeError(f"{module.__file__} defines no `{name}`")
    model, inputs = model_and_inputs(getattr(module, name)(), name)
    importer = getattr(module, "__loader__", None)
    if isinstance(importer, ProjectImporter) and importer.rewritten:
        check_reached(model, inputs, importer)
    return model, inputs


def check_reached(model: object, inputs: tuple, importer: ProjectImporter) -> None:
    """Raise ``UnreachedError`` if one forward of ``model`` runs a Function that the rewrite
    of its file replaces: its module was imported as written (outside the import roots)."""
    import torch

    from fgirewrite.execute.census import describe, function_classes
    from fgirewrite.execute.state import preserved

    if not isinstance(model, torch.nn.Module):
        return
    args = tuple(
        x.detach().clone().requires_grad_(x.is_floating_point()).clone()
        if isinstance(x, torch.Tensor)
        else x
        for x in inputs
    )
    with torch.enable_grad(), preserved(model):
        classes = function_classes(model(*args))
    for cls in classes:
        found = describe(cls)
        if found.file is None or installed(Path(found.file)):
            continue
        data = Path(found.file).read_bytes()
        if any(s.name == found.qualname for s in importer.rewriter(data, found.file).surrogates):
            roots = ", ".join(str(r) for r in importer.roots)
            raise UnreachedError(
                f"the rewritten model still runs `{found.qualname}` ({found.where}): its "
                f"module `{found.module}` was imported as written, from outside the import "
                f"roots ({roots}); load the entry with the project's roots "
                "(fgirewrite.execute.load.load_sides) or run `fgirewrite verify PROJECT "
                "--entry ...`"
            )


def model_and_inputs(built: object, name: str) -> tuple[object, tuple]:
    """``(model, inputs)`` from what an entry function returned, inputs as a tuple."""
    if not (isinstance(built, tuple) and len(built) == 2):
        got = type(built).__name__
        if isinstance(built, tuple):
            got = f"({', '.join(type(x).__name__ for x in built)})"
        raise TypeError(f"`{name}()` must return (model, example_inputs); it returned {got}")
    model, inputs = built
    return model, tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
