"""What the README tells a new user to run is true for this repository: the set-up installs
what the tests and examples use, nothing it writes shows up as untracked, and the CI and
pre-commit snippets name nothing that does not exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
SETUP = 'pip install torch==2.13.0 -e ".[test,examples]" && fgirewrite examples/alif.py'


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def _extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["optional-dependencies"]


def test_the_set_up_is_two_commands_and_installs_what_tests_and_examples_import():
    """The set-up left numpy out (torch warned "Failed to initialize NumPy" on every command)
    and scikit-learn, which examples/forward_gradient_training.py needs."""
    set_up = README.split("## Set-up", 1)[1].split("## ", 1)[0]
    assert re.findall(r"```bash\n(.*?)\n```", set_up, re.S) == [SETUP, "python -m pytest -q"]
    extras = _extras()
    installed = {
        re.split(r"[<>=\[ ]", requirement)[0]
        for name in ("test", "examples")
        for requirement in extras[name]
    }
    assert {"pytest", "hypothesis", "jsonschema", "numpy", "scikit-learn"} <= installed


def test_every_install_of_this_checkout_keeps_it_editable():
    """``pip install ".[plot]"`` silently replaced the set-up's editable install."""
    local = re.findall(r"pip install [^`\n]*?\"\.\[[^`\n]*", README)
    assert local, "the README installs the checkout somewhere"
    assert [command for command in local if " -e " not in f" {command}"] == []


def test_the_ci_snippet_installs_fgirewrite_from_where_it_is():
    """It installed ``fgirewrite[plot]`` from a package index that does not have it."""
    ci = README.split("### A CI step (GitHub Actions)", 1)[1].split("\n## ", 1)[0]
    installs = re.findall(r"pip install (.*)", ci)
    fgirewrite = [i for i in installs if "fgirewrite" in i]
    assert fgirewrite == ['"fgirewrite[plot] @ git+https://github.com/fgirewrite/fgirewrite"']


def test_the_pre_commit_snippet_is_the_shipped_hook_and_names_no_missing_tag():
    """It named ``rev: v0.1.0``, a tag that does not exist."""
    section = README.split("### Pre-commit", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert "repo: local" in snippet and "rev:" not in snippet
    hook = (ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    for key in ("id", "name", "entry", "types_or"):
        (value,) = re.findall(rf"^\s*-?\s*{key}: (.*)$", hook, re.M)
        assert re.search(rf"^\s*-?\s*{key}: {re.escape(value)}$", snippet, re.M), key
    assert "language: system" in snippet  # fgirewrite as installed, no environment to build


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def test_what_the_readme_commands_write_is_ignored_by_git():
    """``out/``, ``plots/`` and ``verify.*`` showed up as untracked files."""
    if shutil.which("git") is None or _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")
    commands = " ".join(_blocks("bash"))
    written = re.findall(r"--(?:json|junit|markdown|plots|out) (\S+)", commands)
    assert len(written) >= 5
    for path in written:
        assert _git("check-ignore", "-q", path).returncode == 0, path
    for path in ("out/", "plots/", "verify.json", "verify.xml", "verify.md", "reports/x.png"):
        assert _git("check-ignore", "-q", path).returncode == 0, path


def test_the_training_example_without_scikit_learn_says_so_in_one_line():
    """It died with a raw traceback from ``import sklearn``."""
    blocked = (
        "import runpy, sys; sys.modules['sklearn'] = None; "
        "sys.argv = ['forward_gradient_training', '--steps', '1']; "
        "runpy.run_module('examples.forward_gradient_training', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "examples/forward_gradient_training.py needs scikit-learn: pip install scikit-learn "
        '(or pip install -e ".[examples]")\n'
    )
