"""Finding, reading and writing source files safely.

Writes are atomic (a temporary file in the same directory, then ``os.replace``), keep the
file's mode, and are refused if the file changed after it was read.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
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
    }
)


class FileError(Exception):
    """A file that cannot be read or written: a one-line reason."""


@dataclass(frozen=True)
class Snapshot:
    """A file's content and identity when it was read."""

    path: Path
    data: bytes
    mtime_ns: int
    size: int
    mode: int


def python_files(paths: Iterable[Path], errors: list[tuple[str, str]]) -> Iterator[Path]:
    """Python files under ``paths``, each once; missing paths go to ``errors``."""
    seen: set[Path] = set()
    for path in paths:
        if not path.exists() and not path.is_symlink():
            errors.append((str(path), "no such file or directory"))
            continue
        if path.is_dir():
            candidates: Iterator[Path] = _walk(path)
        else:
            candidates = iter([path])
        for candidate in candidates:
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


def _walk(root: Path) -> Iterator[Path]:
    # followlinks=False: a symlinked directory is not entered, so link loops cannot recurse.
    for directory, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(directory) / name


def read(path: Path) -> Snapshot:
    """The file's content and identity; FileError with a one-line reason if it cannot be read.

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
    return Snapshot(path, data, info.st_mtime_ns, info.st_size, stat.S_IMODE(info.st_mode))


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
    if not os.access(path, os.W_OK):  # the rename below would not ask
        raise FileError("cannot write: the file is read-only; not overwritten")
    directory = path.parent
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
