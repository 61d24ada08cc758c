"""Reading and writing files: atomic, mode-preserving, refusing to overwrite a changed file."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from fgirewrite import files


def test_write_is_atomic_and_keeps_mode(tmp_path):
    path = tmp_path / "m.py"
    path.write_bytes(b"old\r\n")
    os.chmod(path, 0o751)
    snap = files.read(path)
    files.write(snap, b"new\r\n")
    assert path.read_bytes() == b"new\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o751
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py"]


def test_refuses_a_file_changed_after_reading(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("a = 1\n")
    snap = files.read(path)
    path.write_text("a = 2\n")
    with pytest.raises(files.FileError, match="changed since it was read; not overwritten"):
        files.write(snap, b"rewritten\n")
    assert path.read_text() == "a = 2\n"


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "m.py"
    path.write_text("original\n")
    snap = files.read(path)

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        files.write(snap, b"rewritten\n")
    assert path.read_text() == "original\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.py"]


def test_walk_skips_symlink_loops_and_duplicates(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("")
    (tmp_path / "pkg" / "loop").symlink_to(tmp_path / "pkg")
    (tmp_path / "pkg" / ".git").mkdir()
    (tmp_path / "pkg" / ".git" / "b.py").write_text("")
    errors: list = []
    found = list(
        files.python_files([tmp_path, tmp_path / "pkg" / "a.py", tmp_path / "x.py"], errors)
    )
    assert found == [tmp_path / "pkg" / "a.py"]
    assert errors == [(str(tmp_path / "x.py"), "no such file or directory")]


def test_not_a_regular_file(tmp_path):
    with pytest.raises(files.FileError, match="Is a directory"):
        files.read(tmp_path)


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    """Opening a FIFO named ``*.py`` blocked until a writer came: --check hung forever."""
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    errors: list = []
    assert list(files.python_files([tmp_path], errors)) == [fifo]
    outcome: list = []

    def read() -> None:
        try:
            files.read(fifo)
        except files.FileError as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(60)  # a guard against hanging the suite, not a timing assertion
    assert outcome == ["not a regular file"]


def test_writing_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path):
    """The atomic rename replaced the symlink itself with a regular file, leaving the target
    unchanged."""
    (tmp_path / "src").mkdir()
    target = tmp_path / "src" / "real.py"
    target.write_text("old\n")
    link = tmp_path / "link.py"
    link.symlink_to(target)
    files.write(files.read(link), b"new\n")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new\n"
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == ["real.py"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.py", "src"]


def test_a_link_to_itself_is_one_error_however_often_it_is_met(tmp_path):
    loop = tmp_path / "self.py"
    loop.symlink_to(loop)
    errors: list = []
    assert list(files.python_files([tmp_path, loop], errors)) == []
    assert errors == [(str(loop), f"cannot resolve: Symlink loop from '{loop}'")]


def test_a_read_only_file_is_not_replaced(tmp_path):
    """The atomic rename needs only a writable directory: a file its owner made read-only was
    replaced, and root (whom ``os.access`` lets write anything) replaced it after the fix."""
    path = tmp_path / "m.py"
    path.write_text("old\n")
    os.chmod(path, 0o444)
    snap = files.read(path)
    with pytest.raises(files.FileError, match="^cannot write: the file is read-only; not over"):
        files.write(snap, b"new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.py"]


def test_a_file_writable_by_its_group_only_may_be_written(tmp_path):
    """Any write bit will do when the OS lets this user write (root, or a member)."""
    path = tmp_path / "m.py"
    path.write_text("old\n")
    os.chmod(path, 0o464)
    if not os.access(path, os.W_OK):
        pytest.skip("this user may not write a group-writable file of its own")
    files.write(files.read(path), b"new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o464


def test_a_directory_with_no_python_file_is_an_error(tmp_path):
    """``--check emptydir/`` said "0 files checked" and exit 0: a mistyped path passed CI."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("")
    (tmp_path / "venv" / ".venv").mkdir(parents=True)
    (tmp_path / "venv" / ".venv" / "site.py").write_text("")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("")
    errors: list = []
    roots = ["empty", "docs", "venv", "src", "src"]  # src twice: found once, and no error
    found = list(files.python_files([tmp_path / r for r in roots], errors))
    assert found == [tmp_path / "src" / "m.py"]
    assert errors == [
        (str(tmp_path / name), files.NO_PYTHON_FILE) for name in ("empty", "docs", "venv")
    ]
    assert files.NO_PYTHON_FILE == (
        "no Python file here (*.py and *.ipynb files are searched for; .git, virtual "
        "environments, build folders and excluded paths are skipped)"
    )


def test_a_directory_that_cannot_be_read_is_an_error(tmp_path, monkeypatch):
    """os.walk skipped an unreadable directory silently: its files were never checked. (Root
    reads anything, so the refusal is simulated.)"""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.py").write_text("")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "n.py").write_text("")
    real = os.scandir

    def scandir(path):
        if Path(path) == tmp_path / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(files.os, "scandir", scandir)
    errors: list = []
    assert list(files.python_files([tmp_path], errors)) == [tmp_path / "a" / "m.py"]
    assert errors == [(str(tmp_path / "locked"), "cannot read directory: Permission denied")]
    errors = []
    assert list(files.python_files([tmp_path / "locked"], errors)) == []
    assert errors == [(str(tmp_path / "locked"), "cannot read directory: Permission denied")]


def test_the_walk_is_sorted_top_down_and_names_each_file_once(tmp_path):
    """Files are keyed by their resolved path without resolving each one (one resolve per
    tree): a file reached again through a symlinked file, or through a symlinked root, is
    still the same file (``b/z.py`` is ``c.py``)."""
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.py").write_text("")
    (tmp_path / "b" / "a.py").write_text("")
    (tmp_path / "a.py").write_text("")
    (tmp_path / "c.py").symlink_to(tmp_path / "b" / "z.py")
    (tmp_path / "b" / "notes.txt").write_text("")
    (tmp_path / "pkg.egg-info").mkdir()
    (tmp_path / "pkg.egg-info" / "x.py").write_text("")
    link = tmp_path.parent / f"{tmp_path.name}-link"
    link.symlink_to(tmp_path)
    try:
        errors: list = []
        found = list(files.python_files([tmp_path, link, tmp_path / "b" / "a.py"], errors))
    finally:
        link.unlink()
    assert found == [tmp_path / "a.py", tmp_path / "c.py", tmp_path / "b" / "a.py"]
    assert errors == []  # the linked root has Python files: all of them seen already


def _three(tmp_path: Path) -> list[files.Change]:
    """Two files read, and a new one."""
    changes = []
    for name in ("a.py", "b.py"):
        path = tmp_path / name
        path.write_text(f"{name} original\n")
        changes.append(files.Change(path, f"{name} rewritten\n".encode(), files.read(path)))
    return [*changes, files.Change(tmp_path / "_helpers.py", b"new\n")]


def _contents(tmp_path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(tmp_path.iterdir())}


ORIGINAL = {"a.py": "a.py original\n", "b.py": "b.py original\n"}


def test_write_all_writes_every_file_new_ones_included(tmp_path):
    files.write_all(_three(tmp_path))
    assert _contents(tmp_path) == {
        "_helpers.py": "new\n",
        "a.py": "a.py rewritten\n",
        "b.py": "b.py rewritten\n",
    }
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "_helpers.py").stat().st_mode) == 0o666 & ~umask


def test_write_all_writes_nothing_when_one_file_is_read_only(tmp_path):
    changes = _three(tmp_path)
    os.chmod(tmp_path / "b.py", 0o444)
    with pytest.raises(files.WriteError) as info:
        files.write_all(changes)
    assert info.value.path == tmp_path / "b.py"
    assert str(info.value) == "cannot write: the file is read-only; not overwritten"
    assert _contents(tmp_path) == ORIGINAL


def test_write_all_refuses_to_overwrite_a_new_file_that_exists(tmp_path):
    changes = _three(tmp_path)
    (tmp_path / "_helpers.py").write_text("mine\n")
    with pytest.raises(files.WriteError, match="exists already; not overwritten"):
        files.write_all(changes)
    assert _contents(tmp_path) == {**ORIGINAL, "_helpers.py": "mine\n"}


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_write_all_puts_back_what_it_wrote_when_a_replace_fails_midway(
    tmp_path, monkeypatch, failure
):
    """The first file is replaced, the second fails (a full disk, an interrupt): the first
    is put back, and nothing of fgirewrite's is left behind."""
    changes = _three(tmp_path)
    replace = os.replace
    calls = []

    def fail_second(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise failure
        replace(source, target)

    monkeypatch.setattr(os, "replace", fail_second)
    expected = files.WriteError if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as info:
        files.write_all(changes)
    assert _contents(tmp_path) == ORIGINAL
    if isinstance(info.value, files.WriteError):
        assert str(info.value) == "cannot write: No space left on device; no file was changed"
        assert info.value.path == tmp_path / "b.py"


def test_write_all_calls_back_once_everything_is_written(tmp_path):
    seen = []
    files.write_all(_three(tmp_path), lambda: seen.append(_contents(tmp_path)["b.py"]))
    assert seen == ["b.py rewritten\n"]
