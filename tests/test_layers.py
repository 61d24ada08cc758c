"""The package's layers only import downwards, and no import cycle exists.

Every import counts, including those inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fgirewrite"

# Lowest first. A module may import from its own layer and the layers below it.
LAYERS: list[set[str]] = [
    {"fgirewrite", "_runtime", "source", "surrogate", "reasons", "files", "project", "config"},
    {"scopes", "notebook"},
    {"discover", "skips"},
    {"extract"},
    {"codegen"},
    {"rewrite"},
    {"execute"},
    {"verify"},
    {"live", "grads"},
    {"runner", "project_check", "testing", "bench"},
    {"cli", "__main__"},
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["fgirewrite", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The fgirewrite modules ``name`` imports (a name from a package: its ``__init__``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in MODULES else base)
    return {m for m in out if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def layer(module: str) -> int:
    key = module.split(".")[1] if "." in module else module
    for index, names in enumerate(LAYERS):
        if key in names:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_every_module_has_a_layer():
    for module in MODULES:
        layer(module)


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
        for m, targets in sorted(GRAPH.items())
        for t in sorted(targets)
        if layer(t) > layer(m)
    ]
    assert upward == []


def test_no_import_cycle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert cycles == []


def test_the_root_package_imports_nothing_of_its_own():
    assert GRAPH["fgirewrite"] == set()


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("fgirewrite", ("torch", "libcst")),
        ("fgirewrite.cli", ("torch", "libcst")),
        ("fgirewrite.testing", ("libcst", "fgirewrite.rewrite", "fgirewrite.execute")),
    ],
)
def test_importing_stays_cheap(module, absent):
    code = f"import sys, {module}; print([m for m in {absent!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_detector_sees_a_lazy_upward_import(tmp_path):
    path = tmp_path / "discover.py"
    path.write_text("def f():\n    from fgirewrite.verify import pair\n")
    assert _imports("fgirewrite.discover", path) == {"fgirewrite.verify.pair"}
    assert layer("fgirewrite.verify.pair") > layer("fgirewrite.discover")


def test_the_evaluator_provides_what_the_call_rules_declare():
    from fgirewrite.extract.calls import CallRules
    from fgirewrite.extract.symbolic import Evaluator

    [rules] = ast.parse(inspect.getsource(CallRules)).body
    assert isinstance(rules, ast.ClassDef)
    [declared] = [s for s in rules.body if isinstance(s, ast.If)]  # ``if TYPE_CHECKING:``
    methods = [f.name for f in declared.body if isinstance(f, ast.FunctionDef)]
    attributes = [a.target.id for a in declared.body if isinstance(a, ast.AnnAssign)]
    assert "expr" in methods and "state" in attributes
    assert [m for m in methods if m not in vars(Evaluator)] == []
    init = inspect.getsource(Evaluator.__init__)
    assert [a for a in attributes if f"self.{a} = " not in init] == []


def test_the_readme_lists_the_public_api():
    import re

    import fgirewrite

    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Public API", 1)[1].split("\n\n", 2)[2].split("\n\n", 1)[0]
    listed = set(re.findall(r"`(\w+)`", table)) - {"fgirewrite"}
    assert listed == set(fgirewrite.__all__) - {"__version__"}
    for name in fgirewrite.__all__:
        assert getattr(fgirewrite, name) is not None


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("fgirewrite.live", "fgi_function", "fgirewrite.live.surrogates"),
        ("fgirewrite.verify", "verify_pair", "fgirewrite.verify.pair"),
    ],
)
def test_subpackages_export_their_documented_names(old, name, new):
    import importlib

    assert getattr(importlib.import_module(old), name) is getattr(
        importlib.import_module(new), name
    )
