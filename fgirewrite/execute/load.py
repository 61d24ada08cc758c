"""Import a model file twice: as written, and rewritten in memory, without touching the file.

With ``only=NAME`` just the imports and definitions that ``NAME`` needs are executed (a
training loop at the top level of the file is not run); otherwise the whole file runs, as
``import`` would. Either way this is for commands that ask to run a model (``verify
--entry``, ``bench``), never for static rewriting.
"""

from __future__ import annotations

import ast
import importlib.util
import linecache
import sys
from pathlib import Path
from types import ModuleType

from fgirewrite import discover
from fgirewrite.execute.sandbox import slice_names
from fgirewrite.project import package_of
from fgirewrite.rewrite import Rewrite, rewrite_source
from fgirewrite.source import decode


def _import(name: str, path: Path, source: str) -> ModuleType:
    filename = f"{path}" if name.endswith("_original") else f"{path} (fgirewrite)"
    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)  # TorchScript reads source
    spec = importlib.util.spec_from_loader(name, loader=None, origin=filename)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = filename
    _, root = package_of(path)
    sys.modules[name] = module
    added = str(root) not in sys.path
    if added:
        sys.path.insert(0, str(root))
    try:
        exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)  # noqa: S102
    finally:
        if added:
            sys.path.remove(str(root))
    return module


def _only(source: str, name: str | None) -> str:
    if name is None:
        return source
    tree = ast.parse(source)
    return slice_names(tree, discover.module_info(source, tree), {name})


def load_pair(path: str | Path, only: str | None = None) -> tuple[ModuleType, ModuleType, Rewrite]:
    """The module as written, the module rewritten, and what the rewrite did."""
    path = Path(path)
    data = path.read_bytes()
    result = rewrite_source(data, str(path))
    stem = path.stem.replace("-", "_")
    text = decode(data, str(path))
    original = _import(f"_fgirewrite_{stem}_original", path, _only(text, only))
    new = decode(result.new_source, str(path)) if result.new_source is not None else text
    rewritten = _import(f"_fgirewrite_{stem}_rewritten", path, _only(new, only))
    return original, rewritten, result


def entry(module: ModuleType, name: str):
    """Call ``module.name()``; it returns a model and a tuple of example inputs."""
    if not hasattr(module, name):
        raise AttributeError(f"{module.__file__} defines no `{name}`")
    built = getattr(module, name)()
    if not (isinstance(built, tuple) and len(built) == 2):
        raise TypeError(f"`{name}()` must return (model, example_inputs)")
    model, inputs = built
    return model, tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
