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
    assert "would rewrite 1 surrogate in 1 file" in result.stderr
    assert good.read_bytes() == before


def test_check_exits_1_when_something_would_change(good):
    result = run("--check", str(good))
    assert result.exit_code == 1
    assert "would rewrite: GaussianSpike" in result.stdout
    assert result.stderr.strip().endswith("0 errors; 1 file checked")


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
    assert report["version"] == 1 and report["mode"] == "check"
    statuses = {(f["class"], f["status"]) for f in report["findings"]}
    assert statuses == {("GaussianSpike", "would-rewrite"), ("StochasticSpike", "skipped")}
    skipped = next(f for f in report["findings"] if f["status"] == "skipped")
    assert skipped["code"] == "backward-random" and skipped["line"] == 15
    assert report["files"] == {"checked": 2, "changed": 1}


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


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_file_is_an_error(good):
    os.chmod(good.parent, 0o500)
    try:
        result = run("--write", str(good))
    finally:
        os.chmod(good.parent, 0o700)
    assert result.exit_code == 2 and "error: cannot write" in result.stderr


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


def test_module_and_console_script(good):
    for command in ([sys.executable, "-m", "fgirewrite"], [shutil.which("fgirewrite")]):
        done = subprocess.run(
            [*command, "--check", str(good)], capture_output=True, text=True, cwd=ROOT
        )
        assert done.returncode == 1, done.stderr
        assert "would rewrite 1 surrogate" in done.stderr


def test_pre_commit_hook_runs_check_mode():
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "entry: fgirewrite --check" in hooks and "types: [python]" in hooks


def test_double_backward_elsewhere_in_the_run_is_warned(tmp_path, good):
    (tmp_path / "train.py").write_text(
        "import torch\n\ndef step(loss, params):\n"
        "    return torch.autograd.grad(loss, params, create_graph=True)\n"
    )
    result = run("--check", str(tmp_path))
    assert (
        f"{tmp_path / 'train.py'}:4: warning: differentiates through gradients; FGI "
        "gradients are first-order"
    ) in result.stderr


def test_cli_needs_no_click_of_its_own():
    """typer (0.29) no longer installs click: a fresh machine has none, and the CLI must start."""
    blocked = "import sys; sys.modules['click'] = None; import fgirewrite.cli"
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
