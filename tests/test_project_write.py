"""A directory run is one project: ``fgirewrite --write .`` at the root of a repository shaped
like research code (tests/fixtures/project), in a clean environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT

PROJECT = FIXTURES / "project"

# fgirewrite as a user runs it: the console script, whose sys.path has neither the working
# folder nor anything of the project (``python -m`` would add the working folder).
RUN = (
    "import sys; del sys.path[0]; sys.argv[0] = 'fgirewrite'; "
    "from fgirewrite.cli import main; main()"
)


def fgirewrite(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run in ``root`` with no PYTHONPATH but what finds fgirewrite itself."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", RUN, *args], cwd=root, env=env, capture_output=True, text=True
    )


def lines(text: str) -> list[str]:
    """The findings and messages, without the one-line summary of each file's diff."""
    return [line for line in text.splitlines() if line and not _DIFF_SUMMARY.search(line)]


_DIFF_SUMMARY = re.compile(r"^\S+: \+\d+ -\d+ lines, ")


def copy(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(PROJECT, root)
    return root


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = copy(tmp_path_factory.mktemp("written"))
    return root, fgirewrite(root, "--write", ".")


FACTORY_CANNOT_VERIFY = (
    "models/factory.py:12:5: not rewritten (verification could not run here): "
    "create_net.<locals>.ActFun [cannot-verify] `config` is an argument of `create_net` without "
    "a literal default, so verification cannot give it a value: `--write --entry FILE:FUNCTION` "
    "verifies it through the model, where FUNCTION returns (model, example_inputs) and the "
    "model is built with `create_net`; or give `config` a default"
)
SPIKE_SUBCLASSED = (
    "snnlib/layers.py:6:1: skipped: Spike [relies-on-function] `Steeper` (steeper.py:6) "
    "subclasses it and overrides `backward`, so it must stay a torch.autograd.Function"
)
RECT_SCRIPTED = (
    "snnlib/layers.py:20:1: not rewritten (a module would no longer import): Rect "
    "[breaks-import] `fire` (snnlib/scripted.py:8) calls it and is compiled by TorchScript at "
    "import: its FGI function would read the module-level value `WIDTH`, which TorchScript "
    "cannot compile"
)


def test_write_at_the_root_rewrites_what_verifies_and_leaves_the_rest_with_reasons(written):
    root, done = written
    assert done.returncode == 1, done.stderr  # classes left with reasons
    assert lines(done.stdout) == [
        FACTORY_CANNOT_VERIFY,
        # a model folder importing its sibling folder (`from module.constants import ...`)
        "module/neurons.py:8:1: rewrote: ActFun as act_fun_fgi() "
        "(d/dinput = (abs(input - thresh) < lens).float())",
        SPIKE_SUBCLASSED,
        RECT_SCRIPTED,
        "snnlib/layers.py:34:1: rewrote: Sigmoid as sigmoid_fgi() "
        "(d/dx = 4.0 * torch.sigmoid(4.0 * x) * (1 - torch.sigmoid(4.0 * x)))",
    ]
    assert lines(done.stderr) == [
        "fgirewrite: 10 modules of the project import after the rewrite as before "
        "(1 script not imported)",
        "fgirewrite: rewrote 2 surrogates in 2 files; 3 left as they are: cannot-verify (1), "
        "relies-on-function (1), breaks-import (1); 0 errors; 11 files checked",
    ]
    new = {str(p.relative_to(root)) for p in root.rglob("*.py")} - {
        str(p.relative_to(PROJECT)) for p in PROJECT.rglob("*.py")
    }
    assert new == {"snnlib/_fgi_helpers.py"}  # the package's helpers, once
    changed = {
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if str(p.relative_to(root)) not in new
        and p.read_bytes() != (PROJECT / p.relative_to(root)).read_bytes()
    }
    assert changed == {"module/neurons.py", "snnlib/layers.py"}
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in PROJECT.iterdir())


IMPORT_ALL = """
import importlib, sys
sys.path.insert(0, ".")
for name in sys.argv[1:]:
    importlib.import_module(name)
import evaluate
evaluate.main()
"""
MODULES = [
    "evaluate",
    "steeper",
    "snnlib",
    "snnlib.layers",
    "snnlib.scripted",
    "models.snn",
    "models.factory",
    "module.neurons",
]


def test_every_module_imports_afterwards_and_computes_what_it_did(written, tmp_path):
    root, _ = written
    runs = [
        subprocess.run(
            [sys.executable, "-c", IMPORT_ALL, *MODULES], cwd=where, capture_output=True, text=True
        )
        for where in (PROJECT, root)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr
    assert runs[1].stdout == runs[0].stdout
    train = subprocess.run([sys.executable, "train.py"], cwd=root, capture_output=True)
    assert train.returncode == 0, train.stderr
    (root / "trained.pt").unlink()


def test_check_then_exits_1_only_for_the_classes_left_with_reasons(written):
    """The verdicts on the project's other files are static: --check gives them again (the
    rewrite moved the lines). The factory class waits for a model to verify it through."""
    root, _ = written
    done = fgirewrite(root, "--check", ".")
    assert done.returncode == 1
    assert lines(done.stdout) == [
        "models/factory.py:12:5: would rewrite: create_net.<locals>.ActFun as act_fun() "
        "(d/dx = ((x - config.thresh).abs() < config.width).float())",
        SPIKE_SUBCLASSED.replace("layers.py:6:", "layers.py:7:"),  # the helpers' import
        RECT_SCRIPTED.replace("layers.py:20:", "layers.py:21:"),
    ]


def test_a_factory_class_is_verified_through_the_entry_and_written(tmp_path):
    root = copy(tmp_path)
    done = fgirewrite(root, "--write", "--entry", "models.factory:build", ".")
    assert (
        "models/factory.py:12:5: rewrote: create_net.<locals>.ActFun as act_fun() "
        "(d/dx = ((x - config.thresh).abs() < config.width).float())"
    ) in lines(done.stdout), done.stdout + done.stderr
    assert lines(done.stderr)[-1] == (
        "fgirewrite: rewrote 3 surrogates in 3 files; 2 left as they are: relies-on-function (1), "
        "breaks-import (1); 0 errors; 11 files checked"
    )
    build = "from models.factory import build; m, x = build(); print(m(*x).sum().item())"
    outputs = [
        subprocess.run([sys.executable, "-c", build], cwd=r, capture_output=True, text=True).stdout
        for r in (PROJECT, root)
    ]
    assert outputs[0] == outputs[1] != ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--write", "--entry", "models.nothing:build", "models/factory.py"],
            "--entry: error: entry `models.nothing:build`: no module `models.nothing` in the "
            "import roots ({root}/models, {root}); add its folder to `pythonpath` under "
            "[tool.fgirewrite] in pyproject.toml",
        ),
        (
            ["--check", "--entry", "models.factory:build", "."],
            "fgirewrite: error: --entry verifies what --write writes: use it with --write",
        ),
    ],
)
def test_entry_errors_are_one_line(tmp_path, args, message):
    root = copy(tmp_path)
    done = fgirewrite(root, *args)
    assert done.returncode == 2
    assert message.format(root=root) in lines(done.stderr)
    assert all(
        p.read_bytes() == (PROJECT / p.relative_to(root)).read_bytes() for p in root.rglob("*.py")
    )


def _write_tree(root: Path, sources: dict[str, str]) -> None:
    for name, text in sources.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))


LIB = """\
    import torch

    SLOPE = 4.0


    class Fast(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g / (SLOPE * x.abs() + 1.0) ** 2


    class Plain(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * torch.sigmoid(x) * (1 - torch.sigmoid(x))
    """


def test_a_module_that_no_longer_imports_leaves_the_class_responsible_alone(tmp_path):
    """A TorchScript function compiled at import reaches the class through a helper of
    another module: nothing static shows it; the import check does, and names the line."""
    _write_tree(
        tmp_path,
        {
            "setup.cfg": "",
            "lib.py": LIB,
            "helpers.py": "import lib\n\n\ndef fast(x):\n    return lib.Fast.apply(x)\n",
            "jit.py": """\
                import torch

                from helpers import fast


                @torch.jit.script
                def fire(x: torch.Tensor) -> torch.Tensor:
                    return fast(x)
                """,
        },
    )
    done = fgirewrite(tmp_path, "--write", ".")
    assert lines(done.stdout) == [
        "lib.py:6:1: not rewritten (a module would no longer import): Fast [breaks-import] "
        "jit.py:6 no longer imports after the rewrite (RuntimeError: python value of type "
        "'float' cannot be used as a value. Perhaps it is a closed over global variable? If so, "
        "please consider passing it in as an argument or use a local variable instead.)",
        "lib.py:18:1: rewrote: Plain as plain() (d/dx = torch.sigmoid(x) * (1 - torch.sigmoid(x)))",
    ], done.stderr
    check = "import jit, torch; print(jit.fire(torch.ones(2)))"
    assert subprocess.run([sys.executable, "-c", check], cwd=tmp_path).returncode == 0


def test_a_training_script_is_never_imported(tmp_path):
    marker = tmp_path / "trained"
    _write_tree(
        tmp_path,
        {
            "setup.cfg": "",
            "lib.py": LIB,
            "train.py": f"""\
                import lib

                for epoch in range(2):
                    open({str(marker)!r}, "a").write("trained")
                """,
            "main.py": f"""\
                import lib

                def main():
                    open({str(marker)!r}, "a").write("ran main")

                main()
                """,
        },
    )
    done = fgirewrite(tmp_path, "--write", ".")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "fgirewrite: 1 module of the project imports after the rewrite as before "
        "(2 scripts not imported)"
    ) in done.stderr
    assert not marker.exists()


def test_nothing_is_written_when_one_file_cannot_be(tmp_path):
    _write_tree(tmp_path, {"setup.cfg": "", "a.py": LIB, "b.py": LIB})
    os.chmod(tmp_path / "b.py", 0o444)
    done = fgirewrite(tmp_path, "--write", "--no-verify", ".")
    assert done.returncode == 2
    assert lines(done.stderr)[0] == (
        "b.py: error: cannot write: the file is read-only; not overwritten; no file was written"
    )
    assert (tmp_path / "a.py").read_text() == textwrap.dedent(LIB)


def test_the_rewritten_class_guard_does_not_send_the_user_back_to_fgirewrite():
    from fgirewrite._runtime import _FGIRewritten

    class Spike(_FGIRewritten):
        apply = staticmethod(lambda x: x)

    with pytest.raises(TypeError) as info:

        class Steeper(Spike):
            @staticmethod
            def backward(ctx, g):
                return g

    assert str(info.value) == (
        "Steeper subclasses a class that fgirewrite rewrote into FGI, which is no longer a "
        "torch.autograd.Function: restore that module from version control, or give Steeper "
        "a torch.autograd.Function base and methods of its own"
    )


def test_the_import_check_runs_in_a_scratch_copy_not_in_the_project(tmp_path):
    """A module that writes a file at import (a log folder, a cache) writes it in the copy."""
    _write_tree(
        tmp_path,
        {
            "setup.cfg": "",
            "lib.py": LIB,
            "logs.py": "import lib\n\nLOG = open('imported.txt', 'w')\n",
        },
    )
    done = fgirewrite(tmp_path, "--write", ".")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fgirewrite: 2 modules of the project import after the rewrite as before" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.py", "logs.py", "setup.cfg"]


def test_a_file_entry_verifies_the_factory_class_too(tmp_path):
    root = copy(tmp_path)
    done = fgirewrite(root, "--write", "--entry", "models/factory.py:build", "models/factory.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done.stdout) == [
        "models/factory.py:12:5: rewrote: create_net.<locals>.ActFun as act_fun() "
        "(d/dx = ((x - config.thresh).abs() < config.width).float())"
    ]


ARGS = """\
    import argparse

    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--slope", type=float, default=4.0)
    parser.add_argument("--data", required=False)
    args = parser.parse_args()


    class Fast(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g / (args.slope * x.abs() + 1.0) ** 2
    """


def test_a_surrogate_that_reads_parsed_arguments_verifies_with_their_defaults(tmp_path):
    """The slice ran ``parse_args()`` on fgirewrite's own arguments: argparse ended the run."""
    _write_tree(tmp_path, {"setup.cfg": "", "model.py": ARGS})
    done = fgirewrite(tmp_path, "--write", ".")
    assert done.returncode == 0, done.stdout + done.stderr
    assert lines(done.stdout) == [
        "model.py:11:1: rewrote: Fast as fast() (d/dx = 1 / (args.slope * x.abs() + 1.0) ** 2)"
    ]
