"""Finding, reading and writing source files safely.

Writes are atomic (a temporary file in the same directory, then ``os.replace``), keep the
file's mode, and are refused if the file changed after it was read. ``write_all`` writes
several files (new ones included) all or none.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
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
    write_all([Change(snapshot.path, data, snapshot)])


def create(path: Path, data: bytes) -> None:
    """Write a new file atomically (a temporary file, then a hard link that fails if the
    path exists meanwhile); FileError with a one-line reason, nothing left on failure."""
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
        os.chmod(temp, 0o644)
        os.link(temp, path)
    except FileExistsError:
        raise FileError("created by someone else meanwhile; not overwritten") from None
    except OSError as exc:
        raise FileError(f"cannot write: {exc.strerror or exc}") from None
    finally:
        try:
            os.unlink(temp)
        except OSError:
            pass


def _has_write_bit(path: Path) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@dataclass(frozen=True)
class Change:
    """New content for a file: one that was read (``snapshot``), or a new one (None)."""

    path: Path
    data: bytes
    snapshot: Snapshot | None = None


class WriteError(FileError):
    """``write_all`` wrote nothing: the file that stopped it, and why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(reason)
        self.path = path


def write_all(changes: Sequence[Change], committed: Callable[[], None] | None = None) -> None:
    """Write every change or none: ``WriteError`` (naming the file) if any cannot be.

    Each file is checked first (unchanged since read, writable; a new one not there yet),
    and its new content written to a temporary file beside it. Then each is moved into
    place, with the original kept as a hard link until all are; if one move fails, or the
    process is interrupted, those already moved are put back. Interrupts (SIGINT, SIGTERM)
    wait until the files are all written or all restored (and ``committed``, called once all
    are written, has returned).
    """
    staged: list[tuple[Change, Path, str]] = []  # change, real path, temporary file
    try:
        for change in changes:
            path = _writable(change)
            staged.append((change, path, _stage(change, path)))
        with _signals_deferred():
            _commit(staged)
            if committed is not None:
                committed()
    finally:
        for _, _, temp in staged:
            _unlink(temp)


def _writable(change: Change) -> Path:
    """The path to replace (a symlink's target), once checked; WriteError if it cannot be."""
    path = Path(os.path.realpath(change.path))
    try:
        if change.snapshot is None:
            if os.path.lexists(change.path):
                raise FileError("exists already; not overwritten")
            if not _has_write_bit(path.parent):
                raise FileError(f"cannot write in {path.parent}: the directory is read-only")
            return path
        try:
            current = path.read_bytes()
        except OSError as exc:
            raise FileError(f"cannot re-read before writing: {exc.strerror or exc}") from None
        if current != change.snapshot.data:
            raise FileError("changed since it was read; not overwritten")
        if not _has_write_bit(path) or not os.access(path, os.W_OK):
            raise FileError("cannot write: the file is read-only; not overwritten")
        if not _has_write_bit(path.parent):
            raise FileError(f"cannot write in {path.parent}: the directory is read-only")
    except FileError as exc:
        raise WriteError(change.path, str(exc)) from None
    return path


def _stage(change: Change, path: Path) -> str:
    """The new content in a temporary file beside ``path``, flushed to disk, with the mode
    the file has (a new file: what the umask allows)."""
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".fgirewrite", dir=path.parent)
    except OSError as exc:
        why = f"cannot write in {path.parent}: {exc.strerror or exc}"
        raise WriteError(change.path, why) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(change.data)
            handle.flush()
            os.fsync(handle.fileno())
        if change.snapshot is not None:
            os.chmod(temp, change.snapshot.mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temp, 0o666 & ~umask)
    except BaseException as exc:
        _unlink(temp)
        if isinstance(exc, OSError):
            raise WriteError(change.path, f"cannot write: {exc.strerror or exc}") from None
        raise
    return temp


def _commit(staged: list[tuple[Change, Path, str]]) -> None:
    """Move each staged file into place; on any failure put back those already moved."""
    done: list[tuple[Change, Path, str | None]] = []  # change, path, the original's copy
    current = staged[0][0] if staged else None
    try:
        for change, path, temp in staged:
            current = change
            backup = None if change.snapshot is None else _keep(path, temp, change.snapshot)
            done.append((change, path, backup))
            if backup is None:
                os.link(temp, path)  # a new file: fails if one appeared there meanwhile
            else:
                os.replace(temp, path)
    except BaseException as exc:
        problems = _restore(done)
        if isinstance(exc, OSError) and current is not None:
            after = "; ".join(problems) if problems else "no file was changed"
            raise WriteError(
                current.path, f"cannot write: {exc.strerror or exc}; {after}"
            ) from None
        raise
    for _, _, backup in done:
        if backup is not None:
            _unlink(backup)


def _keep(path: Path, temp: str, snapshot: Snapshot) -> str:
    """A copy of the original beside it until every file is written: a hard link, or where
    the file system has none, its content."""
    backup = f"{temp}.orig"
    try:
        os.link(path, backup)
    except OSError:
        with open(backup, "xb") as handle:
            handle.write(snapshot.data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(backup, snapshot.mode)
    return backup


def _restore(done: list[tuple[Change, Path, str | None]]) -> list[str]:
    """Put back the originals of the files already moved (a new file is removed); what could
    not be put back, with where its original is kept."""
    problems = []
    for change, path, backup in reversed(done):
        try:
            if backup is None:
                if path.exists() and path.read_bytes() == change.data:
                    os.unlink(path)
            elif os.path.exists(backup):
                assert change.snapshot is not None
                if _same(path, backup) or path.read_bytes() == change.snapshot.data:
                    os.unlink(backup)  # never replaced
                else:
                    os.replace(backup, path)
        except OSError as exc:
            problems.append(
                f"{change.path} could not be put back ({exc.strerror or exc})"
                + (f"; its original is kept as {backup}" if backup else "")
            )
    return problems


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held until the block ends, then delivered (in the main thread,
    where Python runs signal handlers; elsewhere none interrupts the block anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda number, _: caught.append(number)) for s in held}
    try:
        yield
    finally:
        for held_signal, handler in previous.items():
            signal.signal(held_signal, handler)
        for number in dict.fromkeys(caught):
            signal.raise_signal(number)


def _same(path: Path, other: str) -> bool:
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
