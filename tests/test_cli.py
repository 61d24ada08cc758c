"""The command line: modes, exit codes, output formats and bad input."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
from conftest import FIXTURES, ROOT
from typer.testing import CliRunner

from fgirewrite.cli import app
from fgirewrite.reasons import EXAMPLES, REASONS

GOOD = FIXTURES / "rewrite" / "single_expression.py"
BAD = FIXTURES / "noop" / "random_backward.py"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "model.py"
    shutil.copy(GOOD, path)
    return path


def test_default_is_diff_and_writes_nothing(good):
    before = good.read_bytes()
    result = run(str(good))
    assert result.exit_code == 0
    assert result.stdout.startswith(f"--- {good}\n+++ {good}\n")
    assert "+def gaussian_spike(x):" in result.stdout
    assert "would rewrite: GaussianSpike as gaussian_spike()" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "fgirewrite: would rewrite 1 surrogate in 1 file (unverified: --write verifies before "
        "writing); 0 errors; 1 file checked"
    )
    assert good.read_bytes() == before


def test_check_exits_1_when_something_would_change(good):
    result = run("--check", str(good))
    assert result.exit_code == 1
    assert "would rewrite: GaussianSpike" in result.stdout
    assert result.stderr.splitlines()[-1] == (
        "fgirewrite: would rewrite 1 surrogate in 1 file (unverified: --write verifies before "
        "writing); 0 errors; 1 file checked"
    )


def test_only_verified_writes_are_called_verified(good):
    """--check and the diff are static: what they show may still be refused by --write."""
    result = run("--write", "--no-verify", str(good))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == (
        "fgirewrite: rewrote 1 surrogate in 1 file (unverified: --no-verify); 0 errors; "
        "1 file checked"
    )


def test_write_then_check_is_clean(good):
    mode = 0o640
    os.chmod(good, mode)
    result = run("--write", str(good))
    assert result.exit_code == 0, result.output
    assert "rewrote: GaussianSpike as gaussian_spike()" in result.stdout
    assert "def gaussian_spike(x):" in good.read_text()
    assert stat.S_IMODE(good.stat().st_mode) == mode
    assert run("--check", str(good)).exit_code == 0
    assert list(good.parent.iterdir()) == [good]  # no temporary file left behind


def test_unrewritable_finding_exits_1_even_in_diff_mode(tmp_path):
    path = tmp_path / "bad.py"
    shutil.copy(BAD, path)
    result = run(str(path))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert (
        "skipped: StochasticSpike [backward-random] draws random numbers with `torch.rand_like`"
    ) in result.stderr
    assert "1 left as they are: backward-random (1)" in result.stderr


def test_json_lists_every_finding(tmp_path):
    shutil.copy(GOOD, tmp_path / "a.py")
    shutil.copy(BAD, tmp_path / "b.py")
    result = run("--check", "--output-format", "json", str(tmp_path))
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["version"] == 4 and report["mode"] == "check"
    assert report["verified"] is False
    statuses = {(f["class"], f["status"], f["verified"]) for f in report["findings"]}
    assert statuses == {
        ("GaussianSpike", "would-rewrite", False),
        ("StochasticSpike", "skipped", False),
    }
    skipped = next(f for f in report["findings"] if f["status"] == "skipped")
    assert skipped["code"] == "backward-random" and skipped["line"] == 15
    assert report["files"] == {"checked": 2, "changed": 1}


@pytest.mark.parametrize(
    ("flags", "verified"), [(["--write"], True), (["--write", "--no-verify"], False)]
)
def test_json_says_which_rewrites_were_verified(good, flags, verified):
    result = run(*flags, "--output-format", "json", str(good))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verified"] is verified
    assert [(f["status"], f["verified"]) for f in report["findings"]] == [("rewritten", verified)]


NAN_BACKWARD = """

class NaNs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * float("nan")
"""


def test_write_json_carries_each_surrogates_verification(good):
    """What --write verified, kept or refused: the report of each surrogate, as `fgirewrite
    verify` has it; the refused one's report survives the rewrite without it."""
    good.write_text(good.read_text() + NAN_BACKWARD)
    result = run("--write", "--output-format", "json", str(good))
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["version"] == 4 and report["verified"] is True
    found = {f["class"]: f for f in report["findings"]}
    assert found["GaussianSpike"]["status"] == "rewritten"
    assert found["NaNs"]["status"] == "failed"
    kept, refused = found["GaussianSpike"]["verification"], found["NaNs"]["verification"]
    assert kept["ok"] is True and kept["error"] is None and kept["reached"]
    assert {(c["dtype"], c["device"]) for c in kept["checks"]} >= {("float32", "cpu")}
    assert all(c["ok"] and c["compared"] and not c["failures"] for c in kept["checks"])
    assert refused["ok"] is False
    assert any(
        "not finite at any probe input" in f for c in refused["checks"] for f in c["failures"]
    )
    check = run("--check", "--output-format", "json", str(good))
    assert all("verification" not in f for f in json.loads(check.stdout)["findings"])


def test_errors_exit_2_and_do_not_stop_other_files(tmp_path, good):
    broken = tmp_path / "broken.py"
    broken.write_text("class F(torch.autograd.Function):\n    def forward(ctx, x:\n")
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"x = '\xe9'\nclass F(torch.autograd.Function): pass\n")
    result = run("--write", str(tmp_path / "missing.py"), str(broken), str(latin), str(good))
    assert result.exit_code == 2
    assert f"{tmp_path / 'missing.py'}: error: no such file or directory" in result.stderr
    assert f"{broken}: error: syntax error at line 2" in result.stderr
    assert f"{latin}: error: cannot decode" in result.stderr
    assert "def gaussian_spike" in good.read_text()  # the good file was still rewritten


def test_unwritable_directory_is_an_error_for_everyone(good):
    """A directory without write permission: its owner is refused by the OS, root was not."""
    before = good.read_bytes()
    os.chmod(good.parent, 0o500)
    try:
        result = run("--write", str(good))
    finally:
        os.chmod(good.parent, 0o700)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[:-1] == [
        f"{good}: error: cannot write in {good.parent}: the directory is read-only"
    ]
    assert good.read_bytes() == before


def test_mutually_exclusive_modes(good):
    result = run("--check", "--write", str(good))
    assert result.exit_code == 2
    assert "choose one of --check, --diff and --write" in result.stderr


def test_explain_and_help():
    assert "backward-random" in run("explain").stdout
    assert run("explain", "nope").exit_code == 2
    help_text = run("--help").stdout
    assert "rewrite" in help_text and "verify" in help_text
    assert "--check" in run("rewrite", "--help").stdout


def test_every_reason_code_has_an_example():
    assert list(EXAMPLES) == list(REASONS)
    assert all(e.fix and (e.module or e.shown) for e in EXAMPLES.values())


@pytest.mark.parametrize("code", [c for c, e in EXAMPLES.items() if e.module])
def test_explain_shows_an_example_refused_with_its_code(code, tmp_path):
    """`fgirewrite explain CODE` shows a module that `fgirewrite --check` refuses with CODE."""
    shown = run("explain", code).stdout
    example = EXAMPLES[code].module
    assert example is not None
    assert "    " + example.splitlines()[-1].strip() in shown
    assert f"rewritable when: {EXAMPLES[code].fix}" in shown
    path = tmp_path / "example.py"
    path.write_text(example)
    result = run("--check", str(path))
    assert result.exit_code == 1
    assert f" [{code}] " in result.stdout, result.stdout


def test_module_and_console_script(good):
    for command in ([sys.executable, "-m", "fgirewrite"], [shutil.which("fgirewrite")]):
        done = subprocess.run(
            [*command, "--check", str(good)], capture_output=True, text=True, cwd=ROOT
        )
        assert done.returncode == 1, done.stderr
        assert "would rewrite 1 surrogate" in done.stderr


def test_pre_commit_hook_runs_check_mode():
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "entry: fgirewrite --check --force-exclude" in hooks
    assert "types_or: [python, jupyter]" in hooks


def test_double_backward_elsewhere_in_the_run_holds_rewrites_back(tmp_path, good):
    """A file that differentiates through gradients and imports the surrogate's module
    leaves its surrogates alone (FGI gradients are first-order); --accept-first-order
    rewrites anyway and warns where it differs. Text that only mentions it (a docstring, a
    comment) does not count, nor a file that cannot reach the surrogate."""
    (tmp_path / "other.py").write_text(
        "import torch\n\ndef penalty(l, p):\n"
        "    return torch.autograd.grad(l, p, create_graph=True)\n"
    )
    assert "would rewrite: GaussianSpike" in run("--check", str(tmp_path)).stdout
    (tmp_path / "other.py").unlink()
    (tmp_path / "train.py").write_text(
        'import torch\n"""create_graph=True, hessian(f)"""\nfrom model import run\n'
        "def step(loss, params):\n"
        "    return torch.autograd.grad(loss, params, create_graph=True)  # hessian(\n"
    )
    result = run("--check", str(tmp_path))
    assert result.exit_code == 1
    assert (
        f"skipped: GaussianSpike [second-order] {tmp_path / 'train.py'}:5 differentiates "
        "through gradients (create_graph=True), and imports this module: the rewrite's "
        "gradients are first-order, so second derivatives through it would change; pass "
        "--accept-first-order to rewrite anyway"
    ) in result.stdout
    assert "warning" not in result.stderr
    result = run("--check", "--accept-first-order", str(tmp_path))
    assert "would rewrite: GaussianSpike" in result.stdout
    assert result.stderr.count("warning:") == 1
    assert (
        f"{tmp_path / 'train.py'}:5: warning: differentiates through gradients "
        "(create_graph=True); FGI gradients are first-order"
    ) in result.stderr


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("g = grad(l, p, create_graph=True)\n", [(1, "create_graph=True")]),
        ("g = grad(l, p, create_graph=False)\n", []),
        ("g = grad(l, p, create_graph=not first_order)\n", [(1, "create_graph=not first_order")]),
        (
            "def f(l, p, create_graph=False):\n    return grad(l, p, create_graph=create_graph)\n",
            [],
        ),
        (
            "def f(l, p, create_graph=False):\n    def g():\n"
            "        return grad(l, p, create_graph=create_graph)\n    return g\n",
            [],
        ),
        (
            "def f(l, p):\n    create_graph = True\n"
            "    return grad(l, p, create_graph=create_graph)\n",
            [(3, "create_graph=create_graph")],
        ),
        ("h = hessian(f)(x)\n", [(1, "hessian()")]),
        ("h = jacrev(jacrev(f))(x)\n", [(1, "jacrev() of a transform")]),
        ("h = grad(\n    torch.func.grad(f))(x)\n", [(1, "grad() of a transform")]),
        ("g = grad(l, p, create_graph=False or flag)\n", [(1, "create_graph=False or flag")]),
        ('"""create_graph=True, hessian(f)"""\n# jacrev(jacrev(f))\n', []),
    ],
)
def test_second_order_uses_are_calls_that_set_it(source, found):
    """A function that only passes its own ``create_graph`` parameter on (torch's wrappers
    do) does not differentiate twice itself: its callers do, where they set it."""
    from fgirewrite.runner import second_order_lines

    assert second_order_lines(source.encode()) == found


def test_importing_a_submodule_runs_its_package_init(tmp_path):
    """``import pkg.util`` runs ``pkg/__init__.py`` first, so a second-order user reaches what
    that imports."""
    (tmp_path / "pkg").mkdir()
    shutil.copy(GOOD, tmp_path / "pkg" / "model.py")
    (tmp_path / "pkg" / "__init__.py").write_text("from .model import run\n")
    (tmp_path / "pkg" / "util.py").write_text("")
    (tmp_path / "train.py").write_text(
        "import torch\nimport pkg.util\ng = torch.autograd.grad(l, p, create_graph=True)\n"
    )
    result = run("--check", str(tmp_path))
    assert f"[second-order] {tmp_path / 'train.py'}:3 differentiates through" in result.stdout
    (tmp_path / "train.py").write_text(
        "import torch\ng = torch.autograd.grad(l, p, create_graph=True)\n"
    )
    assert "would rewrite: GaussianSpike" in run("--check", str(tmp_path)).stdout


def test_cli_needs_no_click_of_its_own():
    """typer (0.29) no longer installs click: a fresh machine has none, and the CLI must start."""
    blocked = "import sys; sys.modules['click'] = None; import fgirewrite.cli"
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- usage errors and help


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chek", "x.py"], "no such option: --chek (did you mean --check?)"),
        (["--wirte", "x.py"], "no such option: --wirte (did you mean --write?)"),
        (["-x", "x.py"], "no such option: -x"),
        (["rewrite"], "missing argument PATH..."),
        (["--check"], "missing argument PATH..."),
        (["verify"], "missing argument PATH..."),
        (["bench"], "give a model file, or --entry FILE:FUNCTION or MODULE:FUNCTION"),
        (["-j"], "option '-j' requires an argument"),
        (
            ["-j", "two", "x.py"],
            "invalid value for --jobs/-j: input should be a valid integer, unable to parse "
            "string as an integer",
        ),
        (
            ["--output-format", "xml", "x.py"],
            "invalid value for --output-format: 'xml' is not one of 'text', 'json'",
        ),
        (["explain", "a", "b"], "got unexpected extra argument(s) (b)"),
    ],
)
def test_a_usage_error_is_one_line(args, message):
    """click's boxed, multi-line error with "Possible options: --check, --help" for --chek."""
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"fgirewrite: error: {message}\n"


def test_a_usage_error_from_the_console_script_is_one_line():
    done = subprocess.run(
        [shutil.which("fgirewrite"), "--chek", "src/"], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "fgirewrite: error: no such option: --chek (did you mean --check?)\n"


@pytest.mark.parametrize("command", [[], ["rewrite"], ["verify"], ["explain"], ["bench"]])
def test_help_reads_well_at_80_columns_without_a_terminal(command):
    """Rich's help boxed every option, wrapped `bench`'s names into a column of fragments and
    wrote `--check <bool>`: plain help, flags without a value, nothing wider than 80."""
    done = subprocess.run(
        [sys.executable, "-m", "fgirewrite", *command, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80", "TERM": "dumb"},
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    assert not any(ch in done.stdout for ch in "╭│╰─━")
    assert "<bool>" not in done.stdout and "{" not in lines[0]
    if command == ["rewrite"]:
        assert lines[0] == "Usage: python -m fgirewrite rewrite [OPTIONS] PATH..."
        assert "  --check  " in done.stdout and "  -q, --quiet  " in done.stdout
        assert "  PATH...  Python files, notebooks or directories (recursive).  [required]" in lines
    if command == ["bench"]:
        assert "  --compile-cache / --no-compile-cache" in lines
        assert any(line.startswith("  --matmul-precision <str>  ") for line in lines)
    if command == []:
        assert "  verify   Prove each rewrite gradient-equivalent (--entry: a model)." in lines


def test_parallel_and_serial_runs_report_the_same(tmp_path):
    """Past 8 candidate files, workers parse while the scan goes on: same findings, in the
    same order, as one process, and the same second-order warning from the same scan."""
    source = GOOD.read_text()
    for i in range(12):
        (tmp_path / f"m{i:02}.py").write_text(source.replace("GaussianSpike", f"Spike{i}"))
    (tmp_path / "plain.py").write_text("import torch\nx = torch.autograd.Function\n")
    (tmp_path / "train.py").write_text("g = torch.autograd.grad(l, p, create_graph=True)\n")
    reports = []
    for jobs in ("1", "2"):
        result = run(
            "--check", "--accept-first-order", "--output-format", "json", "-j", jobs, str(tmp_path)
        )
        assert result.exit_code == 1, result.output
        reports.append((json.loads(result.stdout), result.stderr))
    assert reports[0] == reports[1]
    report, stderr = reports[0]
    assert [f["class"] for f in report["findings"]] == [f"Spike{i}" for i in range(12)]
    assert report["files"] == {"checked": 14, "changed": 12}
    assert f"{tmp_path / 'train.py'}:1: warning: differentiates through gradients" in stderr
