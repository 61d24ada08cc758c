"""Reading and writing files: atomic, mode-preserving, refusing to overwrite a changed file."""

from __future__ import annotations

import os
import stat
import threading

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


def test_a_read_only_file_is_not_replaced(tmp_path, monkeypatch):
    """The atomic rename needs only a writable directory: a file its owner made read-only was
    replaced. Root may write anything, so that is simulated there."""
    path = tmp_path / "m.py"
    path.write_text("old\n")
    os.chmod(path, 0o444)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(files.os, "access", lambda p, mode: mode != os.W_OK and real(p, mode))
    snap = files.read(path)
    with pytest.raises(files.FileError, match="^cannot write: the file is read-only; not over"):
        files.write(snap, b"new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.py"]
