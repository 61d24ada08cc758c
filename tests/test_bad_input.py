"""Bad input on the command line: one line per problem, exit code 2 for errors, never a
traceback, and nothing lost (tests/test_cli.py and tests/test_files.py cover the basics)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT
from typer.testing import CliRunner

from fgirewrite import files, runner
from fgirewrite.cli import app

GOOD = (FIXTURES / "rewrite" / "single_expression.py").read_text()
SUMMARY_ERROR = "fgirewrite: would rewrite 0 surrogates in 0 files; 1 error; 1 file checked"


def run(*args: str | Path):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if ": error: " in line]


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------- what cannot be parsed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            GOOD.replace("def forward(ctx, x):", "def forward(ctx, x:"),
            "syntax error at line 9: '(' was never closed",
        ),
        (GOOD.encode() + b"\x00\n", "syntax error: source code string cannot contain null bytes"),
        (GOOD.replace("import math", "x = 'été'").encode("latin-1"), "cannot decode: 'utf-8'"),
        ("# -*- coding: klingon -*-\n" + GOOD, "cannot decode: unknown encoding: klingon"),
        (GOOD + "y = " + "(" * 300 + "1" + ")" * 300 + "\n", "syntax error at line 21: too many"),
        (
            GOOD + "y = " + "+".join(["1"] * 100_000) + "\n",
            "cannot parse: maximum recursion depth exceeded during ast construction",
        ),
    ],
    ids=["syntax", "null-bytes", "not-utf8", "bad-cookie", "deep-parens", "deep-expression"],
)
@pytest.mark.parametrize("mode", ["--diff", "--check", "--write"])
def test_a_file_that_cannot_be_read_as_python_is_one_error_line(tmp_path, data, message, mode):
    path = write(tmp_path / "bad.py", data)
    before = path.read_bytes()
    result = run(mode, path)
    assert result.exit_code == 2
    [line] = errors(result)
    assert line.startswith(f"{path}: error: {message}"), line
    assert result.stderr.splitlines()[-1].endswith("1 error; 1 file checked")
    assert result.stdout == ""
    assert path.read_bytes() == before


def test_deep_nesting_inside_a_backward_is_a_skip(tmp_path):
    """Deep enough for the analysis to exceed Python's recursion limit, not ``ast``'s: the
    RecursionError failed the whole file."""
    deep = " * ".join(["x"] * 600)
    source = GOOD.replace("return grad_output *", f"return grad_output * {deep} *")
    path = write(tmp_path / "deep.py", source)
    result = run("--check", path)
    assert result.exit_code == 1
    assert result.stdout == (
        f"{path}:7:1: skipped: GaussianSpike [unsupported-syntax] nested too deeply to analyse\n"
    )


def test_a_file_that_cannot_define_a_function_is_not_parsed(tmp_path):
    """The prefilter reads only files that could define a Function subclass: a broken file
    without one is none of fgirewrite's business (ruff or the interpreter will say)."""
    path = write(tmp_path / "broken.py", "def f(:\n")
    result = run("--check", path)
    assert result.exit_code == 0
    assert result.stderr.splitlines()[-1].endswith("0 errors; 1 file checked")


@pytest.mark.parametrize("data", [b"", b"\n\n   \n", b"\xef\xbb\xbf", b"\r", b"# only a comment"])
def test_empty_and_trivial_files(tmp_path, data):
    path = write(tmp_path / "empty.py", data)
    for mode in ("--check", "--write", "--diff"):
        result = run(mode, path)
        assert result.exit_code == 0, result.output
        assert result.stderr.splitlines()[-1] == (
            f"fgirewrite: {'rewrote' if mode == '--write' else 'would rewrite'} 0 surrogates "
            "in 0 files; 0 errors; 1 file checked"
        )
    assert path.read_bytes() == data


def _filler(lines: int) -> str:
    return "".join(f"value_{i} = {i}  # filler\n" for i in range(lines))


def test_a_huge_file(tmp_path):
    """25 MB without a Function is skipped unparsed; 2 MB with one is checked (ast only); a
    rewrite keeps everything around the class byte for byte. (A libcst rewrite visits the
    whole module, about a millisecond a line: a 2 MB rewrite takes a minute or more.)"""
    plain = write(tmp_path / "plain.py", _filler(800_000))
    assert plain.stat().st_size > 25_000_000
    result = run("--check", plain)
    assert result.exit_code == 0 and result.stderr.endswith("0 errors; 1 file checked\n")

    surrounded = _filler(40_000) + GOOD.replace('"""A one', "# a one") + _filler(40_000)
    big = write(tmp_path / "big.py", surrounded)
    assert big.stat().st_size > 2_000_000
    result = run("--check", big)
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{big}:40007:1: would rewrite: GaussianSpike")

    filler = _filler(2_000)
    path = write(tmp_path / "model.py", filler + GOOD.replace('"""A one', "# a one") + filler)
    result = run("--write", "--no-verify", path)
    assert result.exit_code == 0, result.output
    new = path.read_text()
    assert new.startswith(filler) and new.endswith(filler)
    assert "def gaussian_spike(x):" in new


# ---------------------------------------------------------------- encodings and layout


def _rewrite_then_check(path: Path) -> bytes:
    result = run("--write", path)
    assert result.exit_code == 0, result.output
    again = run("--check", path)
    assert again.exit_code == 0, again.output  # a second run changes nothing
    return path.read_bytes()


def test_a_bom_is_kept(tmp_path):
    path = write(tmp_path / "bom.py", b"\xef\xbb\xbf" + GOOD.encode())
    new = _rewrite_then_check(path)
    assert new.startswith(b"\xef\xbb\xbf") and new.count(b"\xef\xbb\xbf") == 1
    compile(new, str(path), "exec")


@pytest.mark.parametrize("newline", ["\r\n", "mixed"])
def test_line_endings_are_kept(tmp_path, newline):
    lines = GOOD.splitlines(keepends=True)
    if newline == "mixed":
        lines = [line.replace("\n", "\r\n") if i % 2 else line for i, line in enumerate(lines)]
    else:
        lines = [line.replace("\n", newline) for line in lines]
    path = write(tmp_path / "endings.py", "".join(lines))
    new = _rewrite_then_check(path).decode()
    compile(new, str(path), "exec")
    kept = new.splitlines(keepends=True)
    for line in lines[:5] + lines[-2:-1]:  # around the rewritten class
        assert line in kept
    if newline != "mixed":  # generated code follows the file's own line ending
        assert new.count(newline) == len(new.splitlines())


def test_a_file_libcst_would_not_reproduce_is_refused(tmp_path):
    """Bare \r line endings (old Mac): libcst 1.0 drops the final \r, so the rewrite would
    change the file outside the rewritten code. It is refused, the file left as it is."""
    path = write(tmp_path / "mac.py", GOOD.replace("\n", "\r"))
    before = path.read_bytes()
    for mode in ("--write", "--diff"):
        result = run(mode, path)
        assert result.exit_code == 2
        assert errors(result) == [
            f"{path}: error: libcst does not reproduce this file byte for byte; left as it is"
        ]
    assert path.read_bytes() == before


def test_tab_indentation(tmp_path):
    source = textwrap.dedent(
        """\
        import torch


        class Outer:
        \tclass Spike(torch.autograd.Function):
        \t\t@staticmethod
        \t\tdef forward(ctx, x):
        \t\t\tctx.save_for_backward(x)
        \t\t\treturn (x > 0).float()

        \t\t@staticmethod
        \t\tdef backward(ctx, grad_output):
        \t\t\t(x,) = ctx.saved_tensors
        \t\t\treturn grad_output * torch.sigmoid(x)
        """
    )
    tabbed = write(tmp_path / "nested.py", source)
    module = write(tmp_path / "module.py", GOOD.replace("    ", "\t"))
    for path in (tabbed, module):
        new = _rewrite_then_check(path).decode()
        compile(new, str(path), "exec")  # no TabError from mixing the file's tabs with spaces
        assert "_fgi_inject(" in new


# ---------------------------------------------------------------- paths


def test_symlink_loops_dangling_links_and_directories_named_py(tmp_path):
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    write(tree / "pkg" / "model.py", GOOD)
    (tree / "pkg" / "loop").symlink_to(tree)  # a directory loop: never entered
    (tree / "self.py").symlink_to(tree / "self.py")  # a link to itself
    (tree / "dangling.py").symlink_to(tree / "missing.py")
    (tree / "package.py").mkdir()  # a directory whose name ends in .py
    result = run("--check", tree, tree / "self.py")
    assert result.exit_code == 2
    assert sorted(errors(result)) == [
        f"{tree / 'dangling.py'}: error: No such file or directory",
        f"{tree / 'self.py'}: error: cannot resolve: Symlink loop from '{tree / 'self.py'}'",
    ]
    assert "would rewrite: GaussianSpike" in result.stdout
    assert result.stderr.splitlines()[-1].endswith("2 errors; 2 files checked")


def test_the_same_file_given_several_times_is_rewritten_once(tmp_path, monkeypatch):
    path = write(tmp_path / "model.py", GOOD)
    (tmp_path / "link.py").symlink_to(path)
    monkeypatch.chdir(tmp_path)
    result = run("--write", "model.py", "./model.py", path, "link.py", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("rewrote: GaussianSpike") == 1
    assert result.stderr.splitlines()[-1].endswith("0 errors; 1 file checked")
    assert path.read_text().count("def gaussian_spike(x):") == 1
    assert (tmp_path / "link.py").is_symlink()


def test_missing_paths(tmp_path):
    result = run("--check", tmp_path / "nope.py", tmp_path / "nope")
    assert result.exit_code == 2
    assert errors(result) == [
        f"{tmp_path / 'nope.py'}: error: no such file or directory",
        f"{tmp_path / 'nope'}: error: no such file or directory",
    ]


NO_PYTHON = (
    "no Python file here (*.py and *.ipynb files are searched for; .git, virtual environments, "
    "build folders and excluded paths are skipped)"
)


@pytest.mark.parametrize("command", [["--check"], ["--diff"], ["--write"], ["verify", "-q"]])
def test_a_path_with_no_python_file_is_an_error(tmp_path, command):
    """``fgirewrite --check emptydir/`` exited 0 with "0 files checked": a mistyped path in CI
    passed."""
    (tmp_path / "empty").mkdir()
    result = run(*command, tmp_path / "empty")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == f"{tmp_path / 'empty'}: error: {NO_PYTHON}"
    assert result.stderr.splitlines()[-1] == (
        "fgirewrite: 0 of 0 surrogates verified equivalent; 1 error"
        if command[0] == "verify"
        else f"fgirewrite: {'rewrote' if command == ['--write'] else 'would rewrite'} 0 "
        "surrogates in 0 files; 1 error; 0 files checked"
    )


@pytest.mark.parametrize("word", ["true", "False", "1"])
def test_a_value_after_a_flag_is_a_path_and_the_error_says_so(tmp_path, word, monkeypatch):
    """``--check true DIR``: help showed ``--check <bool>``, so ``true`` looked like its value;
    it is a path, which does not exist."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "model.py", GOOD)
    result = run("--check", word, "model.py")
    assert result.exit_code == 2
    assert errors(result) == [
        f"{word}: error: no such file or directory (flags such as --check and --write take no "
        "value)"
    ]
    assert "would rewrite: GaussianSpike" in result.stdout  # the other path is still checked


# ---------------------------------------------------------------- permissions (root reads and
# writes anything: the refusals are simulated where the suite runs as root)


def _refuse(monkeypatch, module, name: str, path: Path, error: int) -> None:
    """``module.name`` fails with ``error`` on ``path`` (as a file, or as ``dir=``)."""
    real = getattr(module, name)

    def refused(*args, **kwargs):
        if (args and Path(args[0]) == path) or Path(kwargs.get("dir", "")) == path:
            raise OSError(error, os.strerror(error), str(path))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, refused)


def test_an_unreadable_file_does_not_stop_the_others(tmp_path, monkeypatch):
    locked = write(tmp_path / "locked.py", GOOD)
    other = write(tmp_path / "other.py", GOOD)
    _refuse(monkeypatch, files.os, "open", locked, 13)
    result = run("--write", locked, other)
    assert result.exit_code == 2
    assert errors(result) == [f"{locked}: error: Permission denied"]
    assert "def gaussian_spike" in other.read_text()
    assert locked.read_text() == GOOD


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_an_unreadable_file_really(tmp_path):
    locked = write(tmp_path / "locked.py", GOOD)
    os.chmod(locked, 0)
    result = run("--check", locked)
    assert result.exit_code == 2
    assert errors(result) == [f"{locked}: error: Permission denied"]


def test_an_unwritable_directory(tmp_path, monkeypatch):
    path = write(tmp_path / "model.py", GOOD)
    _refuse(monkeypatch, files.tempfile, "mkstemp", tmp_path, 13)
    result = run("--write", path)
    assert result.exit_code == 2
    assert errors(result) == [f"{path}: error: cannot write in {tmp_path}: Permission denied"]
    assert path.read_text() == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["model.py"]


def test_a_read_only_file_is_not_replaced(tmp_path):
    """The atomic rename needs only the directory to be writable: a read-only file was
    replaced, by anyone, and after the first fix still by root (``os.access`` lets root
    write anything): no write bit means refused, whoever runs fgirewrite."""
    path = write(tmp_path / "model.py", GOOD)
    os.chmod(path, 0o444)
    result = run("--write", path)
    assert result.exit_code == 2
    assert errors(result) == [
        f"{path}: error: cannot write: the file is read-only; not overwritten"
    ]
    assert path.read_text() == GOOD


def test_a_file_changed_between_reading_and_writing_is_not_overwritten(tmp_path, monkeypatch):
    path = write(tmp_path / "model.py", GOOD)
    other = write(tmp_path / "other.py", GOOD)
    real = runner.process

    def process(target, *args, **kwargs):
        outcome = real(target, *args, **kwargs)
        if target == path:  # an editor saves while fgirewrite works
            path.write_text(GOOD + "# edited meanwhile\n")
        return outcome

    monkeypatch.setattr(runner, "process", process)
    result = run("--write", "--no-verify", path, other)
    assert result.exit_code == 2
    assert errors(result) == [
        f"{path}: error: changed since it was read; not overwritten; no file was written"
    ]
    assert path.read_text() == GOOD + "# edited meanwhile\n"
    assert other.read_text() == GOOD  # all files or none


# ---------------------------------------------------------------- Ctrl-C

INTERRUPT = """
import os, signal, sys
from fgirewrite import cli, files, runner
phase, at = sys.argv[1], int(sys.argv[2])
calls = []
def interrupting(real):
    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            os.kill(os.getpid(), signal.SIGINT)  # as a Ctrl-C in the terminal would
        return real(*args, **kwargs)
    return wrapper
if phase == "write":
    files.tempfile.mkstemp = interrupting(files.tempfile.mkstemp)  # mid-write of file `at`
elif phase == "commit":
    files.os.replace = interrupting(files.os.replace)  # as file `at` replaces the original
else:
    runner.process = interrupting(runner.process)
sys.argv = ["fgirewrite", "--write", "--no-verify", *sys.argv[3:]]
cli.main()
"""


@pytest.mark.parametrize(
    ("phase", "message"),
    [
        ("read", "fgirewrite: interrupted; no file was written"),
        ("write", "fgirewrite: interrupted; no file was written"),
        ("commit", "fgirewrite: interrupted; every file was written"),
    ],
)
def test_ctrl_c_in_a_multi_file_run_writes_every_file_or_none(tmp_path, phase, message):
    paths = [write(tmp_path / f"m{i}.py", GOOD) for i in range(4)]
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPT, phase, "2", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [message]
    rewritten = ["def gaussian_spike" in p.read_text() for p in paths]
    assert rewritten == [phase == "commit"] * 4
    for path in paths:
        compile(path.read_text(), str(path), "exec")
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths]


def test_an_internal_error_is_one_line_and_does_not_stop_the_others(tmp_path, monkeypatch):
    """A bug in fgirewrite on one file: that file is left as it is, with one line saying so."""
    import fgirewrite.rewrite.edit

    broken = write(tmp_path / "a.py", GOOD)
    other = write(tmp_path / "b.py", GOOD.replace("GaussianSpike", "Other"))
    real = fgirewrite.rewrite.edit.extract

    def extract(site, info, path):
        if path == str(broken):
            raise ValueError("first line\nsecond line")
        return real(site, info, path)

    monkeypatch.setattr(fgirewrite.rewrite.edit, "extract", extract)
    message = f"{broken}: error: internal error, file left as it is: ValueError: first line"
    result = run("--write", broken, other)
    assert result.exit_code == 2
    assert errors(result) == [message]
    assert broken.read_text() == GOOD and "def other(x):" in other.read_text()
    other = write(tmp_path / "c.py", GOOD.replace("GaussianSpike", "Other"))
    result = run("verify", "-q", broken, other)  # was a traceback: only parse errors were caught
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "fgirewrite: 1 of 1 surrogate verified equivalent; 1 error"
    )
    for quiet in ([], ["--quiet"]):  # ``--quiet`` (as .ci/run has it) hid every error
        result = run("verify", *quiet, broken)
        assert result.exit_code == 2
        assert errors(result) == [message]
        assert ": error: " not in result.stdout


def test_verify_on_bad_input_is_one_line_per_problem(tmp_path):
    write(tmp_path / "syntax.py", "class F(torch.autograd.Function):\n    def forward(ctx, x:\n")
    os.mkfifo(tmp_path / "pipe.py")
    result = run("verify", "-q", tmp_path, tmp_path / "missing.py")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "fgirewrite: 0 of 0 surrogates verified equivalent; 3 errors"
    )
    expected = [
        f"{tmp_path / 'pipe.py'}: error: not a regular file",
        f"{tmp_path / 'syntax.py'}: error: syntax error at line 2: '(' was never closed",
        f"{tmp_path / 'missing.py'}: error: no such file or directory",
    ]
    assert errors(result) == expected  # on stderr, as with --quiet: the same stream as rewrite
    result = run("verify", tmp_path, tmp_path / "missing.py")
    assert errors(result) == expected and ": error: " not in result.stdout


def test_verify_refuses_an_entry_whose_file_does_not_exist(tmp_path):
    """An entry may be anywhere in the project; a missing one is a one-line error."""
    path = write(tmp_path / "model.py", GOOD)
    result = run("verify", path, "--entry", "other.py:build")
    assert result.exit_code == 2
    assert result.stderr == "fgirewrite: error: --entry `other.py:build`: no such file\n"
    result = run("verify", path, "--entry", "nets.missing:build")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "fgirewrite: error: --entry `nets.missing:build`: no module `nets.missing` in the "
        "import roots ("
    )
    result = run("verify", path, "--entry", "build")
    assert result.stderr == (
        "fgirewrite: error: --entry `build`: none of the files verified; name it as "
        "FILE:FUNCTION or MODULE:FUNCTION\n"
    )


def test_verify_creates_report_folders_and_says_when_a_report_cannot_be_written(tmp_path):
    path = write(tmp_path / "plain.py", "x = 1\n")
    report = tmp_path / "reports" / "ci" / "verify.json"
    result = run("verify", "-q", path, "--json", report, "--markdown", tmp_path / "r.md")
    assert result.exit_code == 0, result.output
    assert report.is_file() and (tmp_path / "r.md").is_file()
    (tmp_path / "taken").write_text("")  # a file where the report's folder should be
    result = run("verify", "-q", path, "--junit", tmp_path / "taken" / "verify.xml")
    assert result.exit_code == 2
    assert errors(result) == [
        f"{tmp_path / 'taken' / 'verify.xml'}: error: cannot write the report: File exists"
    ]
    assert result.stderr.splitlines()[-1] == (
        "fgirewrite: 0 of 0 surrogates verified equivalent; 1 error"
    )
