"""Python's scope rules over an ast tree: what a name means where it is read."""

from __future__ import annotations

import ast

from fgirewrite.scopes import Scopes

SOURCE = """\
import torch
import torch.nn.functional as F
try:
    import scipy as sp
except ImportError:
    sp = None
X = 1


class Net:
    class F:
        pass

    in_class = F
    in_comprehension = [F for _ in range(2)]

    def forward(self, x):
        return F.relu(x)


def make(F):
    def inner():
        return F

    def rebinds():
        nonlocal F
        F = 2

    return inner


def declares():
    global X
    X = 2
    return X


def local_torch():
    import numpy as torch

    return torch
"""


def _reads(name: str) -> list[tuple[int, str]]:
    """(line, what it resolves to) for every read of ``name``."""
    tree = ast.parse(SOURCE)
    scopes = Scopes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load):
            scope = scopes.resolve(name, scopes.read_in(node))
            owner = "builtin" if scope is None else getattr(scope.node, "name", "module")
            found.append((node.lineno, owner))
    return sorted(found)


def test_a_class_body_sees_its_own_names_and_its_methods_do_not():
    assert _reads("F") == [(14, "Net"), (15, "module"), (18, "module"), (23, "make")]


def test_global_and_builtins():
    assert _reads("X") == [(35, "module")]
    assert _reads("range") == [(15, "builtin")]


def test_imports_where_a_name_is_read():
    tree = ast.parse(SOURCE)
    scopes = Scopes(tree)
    assert scopes.imported("F", scopes.module) == "torch.nn.functional"
    assert scopes.imported("sp", scopes.module) == "scipy"  # the ImportError fallback aside
    local = next(n for n in ast.walk(tree) if getattr(n, "name", None) == "local_torch")
    own = scopes.own(local)
    assert own is not None
    assert scopes.imported("torch", own) == "numpy"
    assert scopes.imported("torch", scopes.module) == "torch"
    net = scopes.class_at(10, 1)
    assert net is not None and scopes.methods_scope(net) is scopes.module


def test_nonlocal_binds_the_enclosing_function():
    tree = ast.parse(SOURCE)
    scopes = Scopes(tree)
    rebinds = next(n for n in ast.walk(tree) if getattr(n, "name", None) == "rebinds")
    own = scopes.own(rebinds)
    assert own is not None
    found = scopes.resolve("F", own)
    assert found is not None and getattr(found.node, "name", None) == "make"
