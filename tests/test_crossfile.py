"""References to a class about to be rewritten, from the project's other files (static)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fgirewrite.rewrite.crossfile import ClassRef, find_references, global_reads

SPIKE = """\
import torch


class Spike(torch.autograd.Function):
    alpha = 2.0

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (1 + x.abs()) ** 2
"""


def _project(root: Path, sources: dict[str, str]) -> list[Path]:
    (root / "pyproject.toml").write_text("")
    for name, text in sources.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return sorted(root.rglob("*.py"))


def _refusals(root: Path, sources: dict[str, str], where: str = "lib.py") -> list[str]:
    files = _project(root, sources)
    spike = ClassRef((root / where).resolve(), "Spike")
    found = find_references([spike], files, show=lambda p: str(p.relative_to(root.resolve())))
    return [why for _, why in found.refusals().values()]


# Each use below breaks once Spike is a plain class: the reason names the file and line.
BREAKING = [
    (
        {
            "user.py": "import lib\n\n\nclass Steeper(lib.Spike):\n"
            "    def backward(ctx, g):\n        return g\n"
        },
        "`Steeper` (user.py:4) subclasses it and overrides `backward`, so it must stay a "
        "torch.autograd.Function",
    ),
    (
        {"user.py": "from lib import Spike as S\n\n\nclass Slope(S):\n    alpha = 4.0\n"},
        "`Slope` (user.py:4) subclasses it and defines `alpha`: a class is rewritten only when "
        "its subclasses in other files add nothing",
    ),
    (
        {"user.py": "import lib as L\n\nf = L.Spike.forward\n"},
        "user.py:3 uses its `forward`",
    ),
    (
        {
            "user.py": "from lib import Spike\n\n\ndef f(fn):\n"
            "    return issubclass(fn, (Spike, int))\n"
        },
        "`issubclass` is called with it at user.py:5",
    ),
    (
        {
            "user.py": "import torch\nfrom lib import Spike\n\nTABLE = {'spike': Spike}\n\n\n"
            "def check(fn):\n    return issubclass(fn, torch.autograd.Function)\n"
        },
        "user.py:8: `issubclass` tests for torch.autograd.Function, in a module that uses it",
    ),
    (
        {"user.py": "from lib import Spike\n\nlegacy = Spike()\n"},
        "user.py:3 calls the class itself",
    ),
    (
        {"user.py": "from lib import *\n\nif flag:\n    Spike = make()\nSpike(1)\n"},
        "user.py:5 calls the class itself",
    ),
    (
        {"user.py": "from lib import *\n\n\ndef f():\n    Spike(1)\n\n\nSpike = make()\n"},
        "user.py:5 calls the class itself",
    ),
    (
        {"user.py": "from lib import Spike\n\ny = Spike(1).apply(x)\n"},
        "user.py:3 calls the class itself",
    ),
    # through a subclass that adds nothing, in a third file
    (
        {
            "same.py": "import lib\n\n\nclass Same(lib.Spike):\n    '''The same.'''\n",
            "user.py": "from same import Same\n\n\nclass Other(Same):\n    def forward(ctx, x):\n"
            "        return x\n",
        },
        "`Other` (user.py:4) subclasses it and overrides `forward`, so it must stay a "
        "torch.autograd.Function",
    ),
]


@pytest.mark.parametrize(("sources", "reason"), BREAKING)
def test_a_use_the_rewrite_would_break_names_its_file_and_line(tmp_path, sources, reason):
    assert _refusals(tmp_path, {"lib.py": SPIKE, **sources}) == [reason]


# Each reaches the class in a way the rewritten class keeps: nothing to refuse.
KEPT = {
    "apply from an import": "from lib import Spike\n\nspike = Spike.apply\n",
    "apply through the module": "import lib\n\n\ndef f(x):\n    return lib.Spike.apply(x)\n",
    "a name rebound before the call": "from lib import *\n\nif __name__ == '__main__':\n"
    "    Spike = make()\n    for i in range(3):\n        Spike(i)\n",
    "apply of an instance": "import lib\n\n\ndef f(x):\n    return lib.Spike().apply(x)\n",
    "its own class attribute": "import lib\n\nALPHA = lib.Spike.alpha\n",
    "a registry": "from lib import Spike\n\nREGISTRY = {'spike': Spike}\n",
    "a subclass that adds nothing": "import lib\n\n\nclass Same(lib.Spike):\n    pass\n",
    "another class of the same name": "class Spike:\n    def forward(self):\n        pass\n\n\n"
    "x = Spike.forward\n",
    "an attribute of another module's Spike": "import other\n\nf = other.Spike.forward\n",
}


@pytest.mark.parametrize("name", KEPT)
def test_uses_the_rewrite_keeps_are_not_refused(tmp_path, name):
    sources = {
        "lib.py": SPIKE,
        "other.py": "class Spike:\n    forward = 1\n",
        "user.py": KEPT[name],
    }
    assert _refusals(tmp_path, sources) == []


def test_imports_resolve_as_python_resolves_them(tmp_path):
    """Relative imports, a package's re-exports, star imports and aliases, from a script
    folder without __init__.py that imports a sibling folder."""
    sources = {
        "pkg/__init__.py": "from .layers import *\n",
        "pkg/layers.py": SPIKE,
        "pkg/sub/__init__.py": "",
        "pkg/sub/a.py": "from ..layers import Spike\n\nx = Spike.forward\n",
        "net/models/b.py": "from pkg import Spike\n\ny = Spike.backward\n",
        "net/c.py": "import pkg.layers as L\n\nS = L.Spike\nz = S.vjp\n",
        "d.py": "from pkg import *\n\nw = Spike.setup_context\n",
        "e.py": "from pkg import layers\n\nv = layers.Spike.jvp\n",
    }
    files = _project(tmp_path, sources)
    spike = ClassRef((tmp_path / "pkg/layers.py").resolve(), "Spike")
    found = find_references([spike], files, show=lambda p: p.name)
    assert sorted((u.path.name, u.line, u.breaks) for u in found.uses) == [
        ("a.py", 3, "a.py:3 uses its `forward`"),
        ("b.py", 3, "b.py:3 uses its `backward`"),
        ("c.py", 3, None),  # S = L.Spike: an alias, followed
        ("c.py", 4, "c.py:4 uses its `vjp`"),
        ("d.py", 3, "d.py:3 uses its `setup_context`"),
        ("e.py", 3, "e.py:3 uses its `jvp`"),
    ]


CALLER = """\
import torch
import lib


@torch.jit.script
def fire(x: torch.Tensor) -> torch.Tensor:
    return lib.Spike.apply(x)


def later(x):
    return x


later = torch.jit.script(later)
"""


def test_a_torchscript_caller_is_recorded_for_the_import_check(tmp_path):
    """Whether the FGI function compiles is for the import check to find out, unless it
    reads a module-level value, which TorchScript cannot compile."""
    files = _project(tmp_path, {"lib.py": SPIKE, "user.py": CALLER})
    spike = ClassRef((tmp_path / "lib.py").resolve(), "Spike")
    found = find_references([spike], files, reads={spike: {"torch", "math"}})
    assert [(u.line, u.scripted, u.breaks) for u in found.uses] == [(7, "fire", None)]
    assert found.refusals() == {}


@pytest.mark.parametrize(
    ("binding", "kind"),
    [("from pkg.values import WIDTH", "value"), ("WIDTH = torch.ones(())", "value")],
)
def test_a_torchscript_caller_of_a_class_that_reads_a_module_value_breaks(tmp_path, binding, kind):
    lib = SPIKE.replace("import torch\n", f"import torch\n{binding}\n", 1)
    sources = {
        "lib.py": lib,
        "user.py": CALLER,
        "pkg/__init__.py": "",
        "pkg/values.py": "WIDTH = 0.5\n",
    }
    files = _project(tmp_path, sources)
    spike = ClassRef((tmp_path / "lib.py").resolve(), "Spike")
    found = find_references(
        [spike], files, show=lambda p: p.name, reads={spike: {"WIDTH", "torch"}}
    )
    assert found.refusals() == {
        spike: (
            "breaks-import",
            f"`fire` (user.py:7) calls it and is compiled by TorchScript at import: its FGI "
            f"function would read the module-level {kind} `WIDTH`, which TorchScript cannot "
            "compile",
        )
    }


def test_global_reads_are_the_module_names_the_fgi_function_reads():
    from fgirewrite.rewrite.edit import analyse

    source = SPIKE.replace("(1 + x.abs())", "(1 + WIDTH * x.abs() + math.pi)") + "\nWIDTH = 2.0\n"
    [surrogate] = analyse(source.encode(), "lib.py")[0].surrogates
    assert global_reads(surrogate) == {"WIDTH", "math"}
