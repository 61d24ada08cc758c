"""What executes a user's code, exactly.

A project whose every piece of top-level code leaves a marker file when it runs: static
rewriting (the diff), --check, --write --no-verify and explain run none of it; --write and
verify run only what the surrogate needs, once per surrogate: the imports it reads (with the
packages and modules they import), the top-level definitions and assignments it reads,
transitively (their right-hand sides included), and the class statement itself (its
decorators and body); never the rest of the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

MARKING = """
import os
import pathlib

def mark(name):
    (pathlib.Path(os.environ["FGIREWRITE_MARKS"]) / name).write_text(name)
    return 1.0
"""

PROJECT = {
    "proj/__init__.py": MARKING + 'mark("package __init__")\n',
    "proj/marking.py": MARKING,
    "proj/helpers.py": "from proj.marking import mark\n"
    'mark("module the surrogate imports")\n'
    "SCALE = 2.0\n",
    "proj/unrelated.py": 'from proj.marking import mark\nmark("module nobody needs")\n',
    "proj/model.py": """
import torch

import proj.unrelated
from proj.helpers import SCALE
from proj.marking import mark

ALPHA = mark("constant the backward reads") * SCALE
UNUSED = mark("constant nobody reads")


def decorate(cls):
    mark("class decorator")
    return cls


@decorate
class Spike(torch.autograd.Function):
    label = mark("class body")

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * ALPHA * torch.sigmoid(x)


def build():
    mark("entry function")
    return torch.nn.Identity(), (torch.randn(4),)


mark("top-level statement")
raise SystemExit("a tool that imports this file stops here")

if __name__ == "__main__":
    mark("main guard")
""",
}

NEEDED = {
    "package __init__",
    "module the surrogate imports",
    "constant the backward reads",
    "class decorator",
    "class body",
}


@pytest.fixture
def project(tmp_path):
    for name, text in PROJECT.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    (tmp_path / "marks").mkdir()
    return tmp_path


def fgirewrite(project: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the command line in a fresh interpreter; what it did, and which code ran."""
    done = subprocess.run(
        [sys.executable, "-m", "fgirewrite", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "FGIREWRITE_MARKS": str(project / "marks")},
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done, {p.name for p in (project / "marks").iterdir()}


def test_importing_the_file_would_run_everything(project):
    """The markers work: a naive tool importing the model runs all of its top level."""
    done = subprocess.run(
        [sys.executable, "-c", "import proj.model"],
        capture_output=True,
        text=True,
        cwd=project,
        env={**os.environ, "FGIREWRITE_MARKS": str(project / "marks")},
    )
    assert "a tool that imports this file stops here" in done.stderr
    marks = {p.name for p in (project / "marks").iterdir()}
    assert marks == NEEDED | {"module nobody needs", "constant nobody reads", "top-level statement"}


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--check"],
        ["--diff"],
        ["--check", "--output-format", "json"],
        ["--write", "--no-verify"],
    ],
    ids=["diff", "check", "--diff", "json", "write-no-verify"],
)
def test_static_modes_execute_nothing(project, args):
    model = project / "proj" / "model.py"
    done, marks = fgirewrite(project, *args, str(model))
    assert done.returncode in (0, 1), done.stderr
    verb, why = (
        ("rewrote", "--no-verify")
        if "--write" in args
        else ("would rewrite", "--write verifies before writing")
    )
    assert f"fgirewrite: {verb} 1 surrogate in 1 file (unverified: {why}); 0 errors" in done.stderr
    assert marks == set()


def test_explain_executes_nothing(project):
    done, marks = fgirewrite(project, "explain", "backward-random")
    assert done.returncode == 0 and marks == set()


@pytest.mark.parametrize("command", [["--write"], ["verify", "-q"]], ids=["write", "verify"])
def test_verification_executes_only_what_the_surrogate_needs(project, command):
    model = project / "proj" / "model.py"
    done, marks = fgirewrite(project, *command, str(model))
    assert done.returncode == 0, done.stdout + done.stderr
    assert marks == NEEDED
    if command == ["--write"]:
        assert "def spike(x):" in model.read_text()


def test_verify_entry_also_runs_the_entry_function_and_what_it_needs(project):
    model = project / "proj" / "model.py"
    done, marks = fgirewrite(project, "verify", "-q", str(model), "--entry", "build")
    assert "1 of 1 surrogate verified equivalent" in done.stderr, done.stderr
    assert marks == NEEDED | {"entry function"}
