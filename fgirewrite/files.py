"""Finding, reading and writing source files safely.

Writes are atomic (a temporary file in the same directory, then ``os.replace``), keep the
file's mode, and are refused if the file changed after it was read.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".tox",
        ".nox",
        ".venv",
        "venv",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "build",
        "dist",
        "node_modules",
        ".eggs",
        ".ipynb_checkpoints",  # Jupyter's copies of the notebooks beside it
    }
)


class FileError(Exception):
    """A file that cannot be read or written: a one-line reason."""


@dataclass(frozen=True)
class Snapshot:
    """A file's content and mode when it was read."""

    path: Path
    data: bytes
    mode: int


NO_PYTHON_FILE = (
    "no Python file here (*.py and *.ipynb files are searched for; .git, virtual environments, "
    "build folders and excluded paths are skipped)"
)
SUFFIXES = (".py", ".ipynb")

# Whether a path met while walking is excluded: (absolute resolved path, is a directory).
Excluded = Callable[[Path, bool], object]


def _default_excluded(path: Path, is_dir: bool) -> bool:
    return is_dir and (path.name in SKIP_DIRS or path.name.endswith(".egg-info"))


def python_files(
    paths: Iterable[Path],
    errors: list[tuple[str, str]],
    excluded: Excluded = _default_excluded,
    explicitly: Callable[[Path], object] | None = None,
) -> Iterator[Path]:
    """Python files and notebooks under ``paths``, each once; problems go to ``errors``, one
    line each. What ``excluded`` names is not entered or listed; a path given is checked
    only by ``explicitly`` (``--force-exclude``), and is skipped silently when excluded.

    A missing path, a directory that cannot be read, and a directory with no Python file
    in it are errors: a mistyped path must not pass as "nothing to do".
    """
    seen: set[Path] = set()
    for path in paths:
        if not path.exists() and not path.is_symlink():
            errors.append((str(path), "no such file or directory"))
            continue
        if explicitly is not None and explicitly(path):
            continue
        known_errors = len(errors)
        found = 0
        walked = _walk(path, errors, excluded) if path.is_dir() else iter([(path, None)])
        for candidate, key in walked:
            found += 1
            if key is None:
                try:
                    key = candidate.resolve()
                except (OSError, RuntimeError) as exc:  # a link to itself, given or found
                    if candidate.absolute() not in seen:
                        seen.add(candidate.absolute())
                        errors.append((str(candidate), f"cannot resolve: {exc}"))
                    continue
            if key not in seen:
                seen.add(key)
                yield candidate
        if not found and len(errors) == known_errors:
            errors.append((str(path), NO_PYTHON_FILE))


def _walk(
    root: Path, errors: list[tuple[str, str]], excluded: Excluded
) -> Iterator[tuple[Path, Path | None]]:
    """``(path, resolved path)`` of each ``*.py`` and ``*.ipynb`` under ``root``, sorted,
    top-down, leaving out what ``excluded`` names.

    A symlinked directory is not entered, so link loops cannot recurse; the resolved path is
    None where it must be asked for (a symlinked file). Everything else is resolved by
    joining names onto the resolved root: one ``resolve`` per tree, not per file.
    """
    stack: list[tuple[Path, Path]] = [(root, root.resolve())]
    while stack:
        directory, resolved = stack.pop()
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            errors.append((str(directory), f"cannot read directory: {exc.strerror or exc}"))
            continue
        subdirs = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # as os.walk does: a link to a directory is one
            except OSError:
                is_dir = False
            link = entry.is_symlink()
            name = entry.name
            if is_dir:
                if not link and not excluded(resolved / name, True):
                    subdirs.append((directory / name, resolved / name))
            elif name.endswith(SUFFIXES) and not excluded(resolved / name, False):
                yield directory / name, None if link else resolved / name
        stack.extend(reversed(subdirs))


def read(path: Path) -> Snapshot:
    """The file's content and mode; FileError with a one-line reason if it cannot be read.

    Opened without blocking, so a FIFO (or a device) named ``*.py`` is refused rather than
    waited on forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISDIR(info.st_mode):
                raise FileError(os.strerror(errno.EISDIR))
            if not stat.S_ISREG(info.st_mode):
                raise FileError("not a regular file")
            data = handle.read()
    except OSError as exc:
        raise FileError(exc.strerror or str(exc)) from None
    return Snapshot(path, data, stat.S_IMODE(info.st_mode))


def write(snapshot: Snapshot, data: bytes) -> None:
    """Replace the file atomically with ``data`` unless it changed since ``snapshot``.

    A symlink is followed: its target is replaced, and the link stays a link.
    """
    path = Path(os.path.realpath(snapshot.path))
    try:
        current = path.read_bytes()
    except OSError as exc:
        raise FileError(f"cannot re-read before writing: {exc.strerror or exc}") from None
    if current != snapshot.data:
        raise FileError("changed since it was read; not overwritten")
    # The rename below asks only the directory, and root may write anything: a file (or a
    # directory) with no write bit is refused for everyone, as its owner would be refused.
    if not _has_write_bit(path) or not os.access(path, os.W_OK):
        raise FileError("cannot write: the file is read-only; not overwritten")
    directory = path.parent
    if not _has_write_bit(directory):
        raise FileError(f"cannot write in {directory}: the directory is read-only")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".fgirewrite", dir=directory)
    except OSError as exc:
        raise FileError(f"cannot write in {directory}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, snapshot.mode)
        os.replace(temp, path)
    except BaseException as exc:  # KeyboardInterrupt included: never leave a partial file
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise FileError(f"cannot write: {exc.strerror or exc}") from None
        raise


def _has_write_bit(path: Path) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
