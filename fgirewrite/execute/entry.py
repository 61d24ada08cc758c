"""Build the model an entry names (``FILE:FUNCTION`` or ``MODULE:FUNCTION``), from the files
as written, for ``--write --entry``.

The entry's module runs as the slice its function needs (its imports and the definitions the
function reads; nothing else of its top level), registered under its module name with its
import roots on ``sys.path`` for as long as the model is used, so that classes it makes
(a factory's ``create_net.<locals>.ActFun``) have their source where ``inspect`` looks.
The function returns ``(model, example_inputs)``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from fgirewrite import discover
from fgirewrite.execute.sandbox import forget, slice_names
from fgirewrite.project import Entry, EntryError, entry_file, import_roots, package_of
from fgirewrite.source import decode

if TYPE_CHECKING:
    from torch import nn


@contextmanager
def built(
    entry: Entry, search: Sequence[Path], pythonpath: Sequence[Path] | None = None
) -> Iterator[tuple[nn.Module, tuple]]:
    """``(model, example_inputs)`` from the entry, while its modules stay loaded; an
    ``EntryError`` (one line) if it cannot be found or does not return that."""
    path = entry_file(entry, search).resolve()
    try:
        text = decode(path.read_bytes(), str(path))
        tree = ast.parse(text, filename=str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        raise EntryError(f"entry `{entry}`: cannot read {path}: {exc}") from None
    if not any(
        isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == entry.function
        for s in tree.body
    ):
        raise EntryError(f"entry `{entry}`: {path} defines no function `{entry.function}`")
    code = slice_names(tree, discover.module_info(text, tree), {entry.function})
    name, _ = package_of(path)
    module = ModuleType(name)
    module.__file__ = str(path)
    module.__package__ = name.rpartition(".")[0] or None
    added = [str(r) for r in import_roots(path, pythonpath) if str(r) not in sys.path]
    sys.path[:0] = added
    loaded, previous, argv = set(sys.modules), sys.modules.get(name), sys.argv
    sys.modules[name] = module
    sys.argv = [str(path)]  # as a script run without arguments
    try:
        exec(compile(code, str(path), "exec", dont_inherit=True), module.__dict__)  # noqa: S102 - the entry's slice
        built = getattr(module, entry.function)()
        from torch import nn

        if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], nn.Module)):
            raise EntryError(
                f"entry `{entry}`: `{entry.function}()` must return (model, example_inputs), "
                "the model a torch.nn.Module"
            )
        model, inputs = built
        yield model, tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    finally:
        sys.argv = argv
        for root in added:
            sys.path.remove(root)
        forget(loaded, added)
        if previous is not None:
            sys.modules[name] = previous
        elif sys.modules.get(name) is module:
            del sys.modules[name]
