"""``[tool.fgirewrite]`` in pyproject.toml, exclusions, and ``--show-settings``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES
from typer.testing import CliRunner

from fgirewrite import config
from fgirewrite.cli import app

GOOD = FIXTURES / "rewrite" / "single_expression.py"


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def project(root: Path, table: str = "", extra: str = "") -> Path:
    """A project folder: a pyproject.toml and the same surrogate in four files."""
    text = extra + (f"[tool.fgirewrite]\n{table}\n" if table is not None else "")
    (root / "pyproject.toml").write_text(text)
    for name in ("src/pkg/model.py", "src/pkg/gen/auto.py", "legacy/old.py", "top.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(GOOD, root / name)
    return root


def checked(result) -> list[str]:
    """The files --check found something in, relative names."""
    return sorted({line.split(":")[0] for line in result.stdout.splitlines()})


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return project(tmp_path)


def test_no_config_checks_everything(repo):
    assert checked(run("--check", ".")) == [
        "legacy/old.py",
        "src/pkg/gen/auto.py",
        "src/pkg/model.py",
        "top.py",
    ]


def test_extend_exclude_in_the_config(repo):
    project(repo, 'extend-exclude = ["legacy", "src/pkg/gen/"]')
    assert checked(run("--check", ".")) == ["src/pkg/model.py", "top.py"]


def test_a_pattern_with_a_slash_is_relative_to_the_configs_folder(repo, monkeypatch):
    project(repo, 'extend-exclude = ["pkg/gen"]')  # not at the root: matches nothing
    monkeypatch.chdir(repo / "src")
    assert checked(run("--check", ".")) == ["pkg/gen/auto.py", "pkg/model.py"]
    project(repo, 'extend-exclude = ["src/pkg/gen"]')
    assert checked(run("--check", ".")) == ["pkg/model.py"]


@pytest.mark.parametrize(
    ("pattern", "left"),
    [
        ("*.py", []),
        ("auto.py", ["legacy/old.py", "src/pkg/model.py", "top.py"]),
        ("**/gen/*.py", ["legacy/old.py", "src/pkg/model.py", "top.py"]),
        ("src/**", ["legacy/old.py", "top.py"]),
        ("/top.py", ["legacy/old.py", "src/pkg/gen/auto.py", "src/pkg/model.py"]),
        ("top.py/", ["legacy/old.py", "src/pkg/gen/auto.py", "src/pkg/model.py", "top.py"]),
        ("[lt]*", ["src/pkg/gen/auto.py", "src/pkg/model.py"]),
        ("[!lt]*", ["top.py"]),
        ("?op.py", ["legacy/old.py", "src/pkg/gen/auto.py", "src/pkg/model.py"]),
    ],
)
def test_glob_semantics(repo, pattern, left):
    """As ruff (and .gitignore): no slash, a name at any depth; a slash, a path from the
    folder; ``**`` crosses folders; a trailing slash, folders only."""
    result = run("--check", "--extend-exclude", pattern, ".")
    assert checked(result) == left, result.output


def test_cli_exclude_replaces_the_defaults_and_extend_exclude_adds(repo):
    (repo / "build").mkdir()
    shutil.copy(GOOD, repo / "build" / "gen.py")
    assert "build/gen.py" not in checked(run("--check", "."))  # a default exclude
    assert "build/gen.py" in checked(run("--check", "--exclude", "legacy", "."))
    result = run("--check", "--extend-exclude", "legacy,top.py", ".")
    assert checked(result) == ["src/pkg/gen/auto.py", "src/pkg/model.py"]


def test_cli_exclude_overrides_the_configs(repo):
    project(repo, 'exclude = ["legacy"]')
    assert "legacy/old.py" not in checked(run("--check", "."))
    assert checked(run("--check", "--exclude", "top.py", ".")) == [
        "legacy/old.py",
        "src/pkg/gen/auto.py",
        "src/pkg/model.py",
    ]


def test_an_excluded_file_given_by_name_is_checked_unless_force_exclude(repo):
    """pre-commit passes file names: --force-exclude (or force-exclude = true) leaves the
    excluded ones out, silently, as ruff does."""
    project(repo, 'extend-exclude = ["legacy"]')
    given = run("--check", "legacy/old.py", "top.py")
    assert checked(given) == ["legacy/old.py", "top.py"]
    forced = run("--check", "--force-exclude", "legacy/old.py", "top.py")
    assert checked(forced) == ["top.py"]
    assert forced.stderr.endswith("0 errors; 1 file checked\n")
    project(repo, 'extend-exclude = ["legacy"]\nforce-exclude = true')
    only = run("--check", "legacy/old.py")
    assert only.exit_code == 0 and only.stderr.endswith("0 errors; 0 files checked\n")
    assert checked(run("--check", "--no-force-exclude", "legacy/old.py")) == ["legacy/old.py"]


def test_force_exclude_looks_at_the_folders_of_a_file_given(repo):
    project(repo, 'extend-exclude = ["gen"]\nforce-exclude = true')
    assert checked(run("--check", "src/pkg/gen/auto.py", "src/pkg/model.py")) == [
        "src/pkg/model.py"
    ]


def test_the_closest_config_applies_to_each_file(repo):
    """A nested project's own [tool.fgirewrite] applies below it (as ruff's hierarchy)."""
    project(repo, 'extend-exclude = ["old.py"]')
    (repo / "src" / "pyproject.toml").write_text(
        '[tool.fgirewrite]\nextend-exclude = ["auto.py"]\n'
    )
    assert checked(run("--check", ".")) == ["src/pkg/model.py", "top.py"]
    # a pyproject.toml without the table is passed over
    (repo / "src" / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert checked(run("--check", ".")) == ["src/pkg/gen/auto.py", "src/pkg/model.py", "top.py"]


def test_options_from_the_config_and_flags_over_them(repo):
    project(repo, 'output-format = "json"\nverify = false')
    result = run("--check", "top.py")
    assert json.loads(result.stdout)["findings"][0]["class"] == "GaussianSpike"
    assert run("--check", "--output-format", "text", "top.py").stdout.startswith("top.py:")
    written = run("--write", "--output-format", "text", "top.py")
    assert written.exit_code == 0, written.output
    assert "(unverified: --no-verify)" in written.stderr  # verify = false
    shutil.copy(GOOD, repo / "top.py")
    verified = run("--write", "--verify", "--output-format", "text", "top.py")
    assert "unverified" not in verified.stderr


SHOW = """\
# {path}: settings from {root}/pyproject.toml
exclude = [".eggs", ".git", ".hg", ".ipynb_checkpoints", ".mypy_cache", ".nox", ".pytest_cache", \
".ruff_cache", \
".svn", ".tox", ".venv", "__pycache__", "build", "dist", "node_modules", "venv", "*.egg-info"]  \
# default
extend-exclude = ["legacy", "gen/"]  # {root}/pyproject.toml, --extend-exclude
force-exclude = false  # default
pythonpath = ["{root}/src"]  # {root}/pyproject.toml
target-version = "py39"  # requires-python ">=3.9,<4" in {root}/pyproject.toml
verify = false  # --no-verify
jobs = 2  # {root}/pyproject.toml
output-format = "text"  # default
accept-first-order = false  # default
torchscript = false  # default"""


def test_show_settings_says_where_each_value_comes_from(repo):
    project(
        repo,
        'extend-exclude = ["legacy"]\npythonpath = ["src"]\njobs = 2',
        extra='[project]\nname = "m"\nrequires-python = ">=3.9,<4"\n',
    )
    result = run("--show-settings", "--no-verify", "--extend-exclude", "gen/", "top.py", "legacy")
    assert result.exit_code == 0, result.output
    first, second = result.stdout.split("\n\n")
    assert first == SHOW.format(path="top.py", root=repo)
    assert second.splitlines()[0] == f"# legacy: settings from {repo}/pyproject.toml"
    assert second.splitlines()[-1] == (
        f'# legacy is excluded by "legacy" ({repo}/pyproject.toml); given by name, it is read '
        "(no force-exclude)"
    )


def test_show_settings_without_a_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text("")
    result = run("--show-settings", "m.py")
    assert result.stdout.splitlines()[0] == "# m.py: settings no [tool.fgirewrite] found"
    assert 'target-version = "py38"  # default' in result.stdout


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('excludes = ["x"]', 'unknown key "excludes" (did you mean "exclude"?)'),
        ("colour = 1", 'unknown key "colour"'),
        ('exclude = "legacy"', "exclude: expected a list of glob strings, got 'legacy'"),
        ("jobs = -1", "jobs: expected a whole number, 0 or more, got -1"),
        ("verify = 1", "verify: expected true or false, got 1"),
        ('output-format = "xml"', 'output-format: expected "text" or "json", got \'xml\''),
        ('target-version = "3.9"', 'target-version: expected "py38" to "py314", got \'3.9\''),
        ('target-version = "py37"', 'target-version: expected "py38" to "py314", got \'py37\''),
        ('pythonpath = ["lib"]', "pythonpath: no folder 'lib' in {root}"),
        (
            'extend-exclude = ["!keep.py"]',
            "extend-exclude: '!keep.py': negated patterns (!) are not supported",
        ),
    ],
)
def test_a_bad_config_is_one_line_naming_the_file_and_the_key(repo, table, message):
    project(repo, table)
    for args in (["--check", "top.py"], ["--show-settings", "top.py"], ["verify", "top.py"]):
        result = run(*args)
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr == (
            f"{repo}/pyproject.toml: error: [tool.fgirewrite] {message.format(root=repo)}\n"
        )


def test_invalid_toml_is_an_error(repo):
    (repo / "pyproject.toml").write_text("[tool.fgirewrite\n")
    result = run("--check", "top.py")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{repo}/pyproject.toml: error: not valid TOML: ")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("requires", "target"),
    [(">=3.9", (3, 9)), ("~=3.10", (3, 10)), (">=3.6", (3, 8)), ("<4", (3, 8)), (None, (3, 8))],
)
def test_target_version_defaults_to_requires_python(tmp_path, requires, target):
    extra = f'[project]\nrequires-python = "{requires}"\n' if requires else ""
    (tmp_path / "pyproject.toml").write_text(extra)  # no [tool.fgirewrite]: still read
    assert config.settings_for(tmp_path / "m.py").target_version == target


def test_target_version_in_the_config_wins(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nrequires-python = ">=3.9"\n[tool.fgirewrite]\ntarget-version = "py311"\n'
    )
    settings = config.settings_for(tmp_path / "m.py")
    assert settings.target_version == (3, 11)
    assert settings.sources["target-version"] == str(tmp_path / "pyproject.toml")


def test_pythonpath_is_on_sys_path_while_verification_runs(tmp_path, monkeypatch):
    """A surrogate that imports a helper from a folder that is no package of its file:
    verification finds it only through ``pythonpath``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "fgi27_slopes.py").write_text("SLOPE = 4.0\n")
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "net.py"
    model.write_text(
        GOOD.read_text()
        .replace("import math\n", "import math\n\nfrom fgi27_slopes import SLOPE\n")
        .replace("torch.exp(-0.5 * x * x)", "torch.exp(-0.5 * SLOPE * x * x)")
    )
    (tmp_path / "pyproject.toml").write_text("[tool.fgirewrite]\n")
    refused = run("--write", model)
    assert refused.exit_code == 1
    assert "No module named 'fgi27_slopes'" in refused.stdout
    assert "add the folder that holds it to `pythonpath` under [tool.fgirewrite]" in refused.stdout
    (tmp_path / "pyproject.toml").write_text('[tool.fgirewrite]\npythonpath = ["lib"]\n')
    written = run("--write", model)
    assert written.exit_code == 0, written.output
    assert "rewrote: GaussianSpike" in written.stdout
    import sys

    assert str(tmp_path / "lib") not in sys.path  # taken off again


def test_settings_api(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        '[tool.fgirewrite]\npythonpath = ["lib"]\ntarget-version = "py310"\n'
    )
    settings = config.settings_for(tmp_path / "a" / "b.py")
    assert settings.pythonpath == (tmp_path.resolve() / "lib",)
    assert settings.target_version == (3, 10)
    assert settings.config == tmp_path.resolve() / "pyproject.toml"


def test_help_explains_the_new_options():
    text = " ".join(run("rewrite", "--help").stdout.split())
    for words in (
        "--exclude GLOB Globs of files and folders to leave out, replacing the default list",
        "--extend-exclude GLOB Globs to leave out in addition",
        "--force-exclude / --no-force-exclude Leave out excluded paths even when they are given",
        "--show-settings Print the settings that apply to each PATH",
        "Jupyter notebooks (*.ipynb",
        "`# fgirewrite: skip` on a class line",
        "Defaults come from [tool.fgirewrite] in the closest pyproject.toml",
    ):
        assert words in text


def test_a_bad_config_below_is_an_error_for_a_file_given_by_name(repo):
    project(repo, "")
    (repo / "src" / "pyproject.toml").write_text("[tool.fgirewrite]\njobs = true\n")
    result = run("--check", "top.py", "src/pkg/model.py")
    assert result.exit_code == 2
    assert result.stderr == (
        f"{repo}/src/pyproject.toml: error: [tool.fgirewrite] jobs: expected a whole number, "
        "0 or more, got True\n"
    )


def test_a_negated_glob_on_the_command_line_is_a_usage_error(repo):
    result = run("--check", "--extend-exclude", "!top.py", ".")
    assert result.exit_code == 2
    assert result.stderr == (
        "fgirewrite: error: --extend-exclude '!top.py': negated patterns (!) are not supported\n"
    )
