"""A file's project: where its repository starts, its package, and where its imports resolve.

Research code is run from the repository root or from a folder in it (``cd Net && python
main.py``), with model folders that have no ``__init__.py``; libraries use packages and a
``src/`` layout. A file's import roots cover all of these, nearest first, so that code run
for verification imports what the user's own runs import, with no environment variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fgirewrite import files

MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


def project_root(path: Path) -> Path | None:
    """The nearest folder at or above ``path`` that holds a project marker, or None."""
    path = path.resolve()
    for folder in [path, *path.parents] if path.is_dir() else path.parents:
        if any((folder / marker).exists() for marker in MARKERS):
            return folder
    return None


def distributable(root: Path) -> bool:
    """The project can be installed (``setup.py``, ``setup.cfg``, or a ``pyproject.toml``
    that declares a project or a build): modules fgirewrite never sees may import it."""
    if (root / "setup.py").exists() or (root / "setup.cfg").exists():
        return True
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return re.search(r"^\[(project|build-system|tool\.poetry)\]", text, re.M) is not None


def closed_roots(given: Iterable[Path]) -> frozenset[Path]:
    """The project roots of folders given whole (the root itself, or a folder above it) that
    cannot be installed: a run over one sees every module that could subclass its classes."""
    closed = set()
    for given_path in given:
        try:
            path = Path(given_path).resolve()
        except (OSError, RuntimeError):  # a link to itself: reported where files are found
            continue
        if not path.is_dir():
            continue
        root = project_root(path)
        if root is not None and root == path and not distributable(root):
            closed.add(root)
    return frozenset(closed)


def package_of(path: Path) -> tuple[str, Path]:
    """The dotted module name of a file, and the folder its top package lives in."""
    path = path.resolve()
    parts = [path.stem]
    parent = path.parent
    while (parent / "__init__.py").exists():
        parts.append(parent.name)
        parent = parent.parent
    return ".".join(reversed(parts)), parent


def configured_pythonpath(path: Path) -> tuple[Path, ...]:
    """The ``pythonpath`` of the ``[tool.fgirewrite]`` that applies to a file (none where its
    configuration cannot be read: the run reports that itself)."""
    from fgirewrite.config import ConfigError, settings_for

    try:
        return settings_for(path).pythonpath
    except ConfigError:
        return ()


def import_roots(path: Path, extra: Iterable[Path] | None = None) -> list[Path]:
    """Folders a file's imports resolve from, nearest first: the folder its top package lives
    in, each folder above it up to the project root, the root's ``src/``, then ``extra``
    (by default the file's ``[tool.fgirewrite] pythonpath``). Without a project root, only the
    first and ``extra``."""
    _, base = package_of(path)
    roots = [base]
    top = project_root(base)
    if top is not None and (top == base or top in base.parents):
        folder = base
        while folder != top:
            folder = folder.parent
            roots.append(folder)
        if (top / "src").is_dir():
            roots.append(top / "src")
    extra = configured_pythonpath(path) if extra is None else extra
    roots.extend(Path(p).resolve() for p in extra)
    return list(dict.fromkeys(roots))


def relative_module(path: Path, module: str | None, level: int) -> str | None:
    """The absolute name of ``from <level dots><module> import ...`` in the file at ``path``;
    None when it climbs above the file's top package."""
    name, _ = package_of(path)
    package = name.split(".")[:-1]  # a package's ``__init__`` imports relative to itself
    if level > len(package):
        return None
    base = package[: len(package) - level + 1]
    return ".".join(base + ([module] if module else [])) or None


def package_files(path: Path) -> list[Path]:
    """The ``*.py`` files of the top package a file belongs to (none outside a package), as
    ``files.python_files`` finds them."""
    name, base = package_of(path)
    if "." not in name:
        return []
    return list(files.python_files([base / name.split(".")[0]], []))


def not_found(module: str, roots: Iterable[Path]) -> str:
    """What to do when ``import module`` fails for a module neither the import roots nor the
    installed packages have: the folders searched and the setting that adds one."""
    searched = ", ".join(str(r) for r in roots) or "none"
    top = module.split(".")[0]
    return (
        f"no module `{module}` in the import roots ({searched}) nor among the installed "
        f"packages: if `{top}` is part of this project, add the folder that holds it to "
        "`pythonpath` under [tool.fgirewrite] in pyproject.toml; if it is a package, install it"
    )


def find_module(name: str, roots: Iterable[Path]) -> Path | None:
    """The file that ``import name`` loads from ``roots`` (a module or a package's
    ``__init__.py``), without importing anything; None if no root has it."""
    relative = Path(*name.split("."))
    for root in roots:
        for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


@dataclass(frozen=True)
class Entry:
    """A function that builds a model: ``FILE:FUNCTION`` or ``MODULE:FUNCTION``."""

    function: str
    path: Path | None = None  # the file, when given as one
    module: str | None = None  # the dotted module, when given as one

    def __str__(self) -> str:
        return f"{self.path if self.path is not None else self.module}:{self.function}"


class EntryError(ValueError):
    """An entry that does not name a function in a file or module: a one-line reason."""


def parse_entry(spec: str, default: Path | None = None) -> Entry:
    """``FILE:FUNCTION``, ``MODULE:FUNCTION`` (dotted), or ``FUNCTION`` in ``default``."""
    where, colon, function = spec.rpartition(":")
    if not colon:
        if default is None:
            raise EntryError(f"entry `{spec}`: expected FILE:FUNCTION or MODULE:FUNCTION")
        where, function = str(default), spec
    if not function.isidentifier():
        raise EntryError(f"entry `{spec}`: `{function}` is not a function name")
    looks_like_file = where.endswith((".py", ".ipynb")) or "/" in where or "\\" in where
    if looks_like_file or Path(where).is_file():
        return Entry(function, path=Path(where))
    if not all(part.isidentifier() for part in where.split(".")):
        raise EntryError(f"entry `{spec}`: `{where}` is neither a file nor a dotted module name")
    return Entry(function, module=where)


def entry_file(entry: Entry, roots: Iterable[Path]) -> Path:
    """The file that defines an entry's function; an ``EntryError`` that names the folders
    searched when a module is in none of them."""
    if entry.path is not None:
        if not entry.path.is_file():
            raise EntryError(f"entry `{entry}`: no such file")
        return entry.path
    assert entry.module is not None
    roots = list(roots)
    found = find_module(entry.module, roots)
    if found is None:
        searched = ", ".join(str(r) for r in roots) or "none"
        raise EntryError(
            f"entry `{entry}`: no module `{entry.module}` in the import roots ({searched}); "
            "add its folder to `pythonpath` under [tool.fgirewrite] in pyproject.toml"
        )
    return found
