"""Finding Function subclasses cheaply and resolving their bases by qualified name."""

from __future__ import annotations

import ast

import pytest

from fgirewrite import discover


def sites(source: str):
    tree = ast.parse(source)
    return [
        (s.qualname, s.scope)
        for s in discover.find_classes(tree, discover.module_info(source, tree).imports)
    ]


@pytest.mark.parametrize(
    "source",
    [
        "import torch\nclass F(torch.autograd.Function): pass",
        "import torch as th\nclass F(th.autograd.Function): pass",
        "from torch.autograd import Function\nclass F(Function): pass",
        "from torch.autograd import Function as Fn\nclass F(Fn): pass",
        "import torch.autograd as ag\nclass F(ag.Function): pass",
        "from torch import autograd\nclass F(autograd.Function): pass",
        "from torch.autograd.function import Function\nclass F(Function): pass",
        "from torch.autograd.function import InplaceFunction\nclass F(InplaceFunction): pass",
    ],
)
def test_every_spelling_is_found(source):
    assert discover.may_define_function(source.encode())
    assert sites(source) == [("F", "module")]


def test_nesting_and_local_inheritance():
    source = (
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    class A(torch.autograd.Function): pass\n"
        "def make():\n"
        "    class B(torch.autograd.Function): pass\n"
        "class Base(torch.autograd.Function): pass\n"
        "class Sub(Base): pass\n"
    )
    assert sites(source) == [
        ("M.A", "class"),
        ("make.<locals>.B", "function"),
        ("Base", "module"),
        ("Sub", "module"),
    ]


@pytest.mark.parametrize(
    "source",
    [
        "class LossFunction(Base): pass",  # not torch's
        "from mylib import Function\nclass F(Function): pass",  # another library's Function
        "x = 'class F(torch.autograd.Function)'",
    ],
)
def test_lookalikes_are_not_functions(source):
    assert sites(source) == []


def test_prefilter_rejects_files_without_candidate_classes():
    assert not discover.may_define_function(b"import torch\nx = torch.autograd.Function\n")
    assert not discover.may_define_function(b"class A(B): pass\n")


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_ending_is_scanned(newline):
    """Python accepts a bare \\r as a line ending; the prefilter's ``^`` only followed \\n, so a
    file with old Mac endings was reported clean although it defines a Function."""
    for source in (
        "import torch\nclass F(torch.autograd.Function): pass\n",
        "from torch.autograd import Function as Fn\nclass F(Fn): pass\n",
    ):
        data = source.replace("\n", newline).encode()
        assert discover.may_define_function(data)
        assert sites(data.decode()) == [("F", "module")]


@pytest.mark.parametrize(
    "source",
    [
        "import torch\nclass ΣSpike(torch.autograd.Function): pass\n",
        "from torch.autograd import Function as Φ\nclass Spike(Φ): pass\n",
        "from torch.autograd import Function\tas F\nclass Spike(F): pass\n",
        "import torch\nclass Spike(mixin(), torch.autograd.Function): pass\n",
    ],
    ids=["unicode-class", "unicode-alias", "tab-alias", "call-in-bases"],
)
def test_the_prefilter_misses_no_spelling_python_allows(source):
    """The prefilter's ``\\w`` matched ASCII only and its base list stopped at the first
    ``)``: these files were reported clean by --check without being parsed."""
    assert discover.may_define_function(source.encode())
    assert [name for name, _ in sites(source)] == [source.split("class ")[1].split("(")[0]]


@pytest.mark.parametrize(
    "source",
    [
        "from torch.autograd.function import InplaceFunction as IF\nclass F(IF): pass\n",
        "from torch.autograd import (\n    Function\n    as Fn,\n)\nclass F(Fn): pass\n",
        "import torch\nclass F(  # note: a surrogate\n    torch.autograd.Function,\n):\n    pass\n",
        '"""The class Spike (below)."""\nimport torch\n'
        "class Spike(torch.autograd.Function): pass\n",
        "import torch\nclass F \\\n    (torch.autograd.Function): pass\n",
        "class F(Function): pass\n",  # nothing imports it: reported as an unresolved base
    ],
    ids=[
        "inplace-alias",
        "multiline-alias",
        "comment-colon",
        "class-in-docstring",
        "backslash",
        "unresolved",
    ],
)
def test_the_prefilter_misses_no_header_python_allows(source):
    """The alias pattern wanted a word boundary before ``Function`` (``InplaceFunction as``
    failed it), and the bases stopped at the first colon (a comment's) or could not span an
    import's lines: these were reported clean without being parsed."""
    assert discover.may_define_function(source.encode())
    assert [name for name, _ in sites(source)] == [
        source.split("class ")[-1].split("(")[0].split()[0]
    ]


def test_the_prefilter_also_reads_pep_695_headers():
    """``class F[T](Function)`` (Python 3.12): ``ast`` of 3.11 cannot parse it, the scan must
    still let the parser say so."""
    assert discover.may_define_function(
        b"import torch\nclass F[T: int](torch.autograd.Function): pass\n"
    )


@pytest.mark.parametrize(
    "source",
    [
        "import sympy\nclass FloorDiv(sympy.Function): pass\n",  # no "autograd" anywhere
        "from sympy import Function as F\nclass G(F): pass\n",
        "class TorchFunctionMode(BaseTorchFunctionMode): pass\n",  # not the word Function
        "import torch\nsubclass = 'class F(torch.autograd.Function): pass'\n",
    ],
)
def test_the_prefilter_rejects_what_cannot_resolve_to_torch(source):
    """A dotted base, InplaceFunction or an alias reaches torch's class only through an import
    that spells ``autograd``; a base must be the word ``Function``."""
    assert not discover.may_define_function(source.encode())
    assert sites(source) == []


def test_occurrences_count_every_class_of_a_name_in_source_order():
    """Which of several same-named classes one is: every class statement counts, a Function
    or not (the rewrite keeps them all, so the count is the same in the rewritten module), in
    source order (``except`` blocks before ``else`` and ``finally``)."""
    source = (
        "import torch\n"
        "class F: pass\n"
        "try:\n"
        "    pass\n"
        "except ImportError:\n"
        "    class F(torch.autograd.Function): pass\n"
        "finally:\n"
        "    class F(torch.autograd.Function): pass\n"
        "def make():\n"
        "    if True:\n"
        "        class G(torch.autograd.Function): pass\n"
        "    class G(torch.autograd.Function): pass\n"
    )
    tree = ast.parse(source)
    found = [(c.qualname, c.occurrence, c.node.lineno) for c in discover.class_statements(tree)]
    assert found == [
        ("F", 0, 2),
        ("F", 1, 6),
        ("F", 2, 8),
        ("make.<locals>.G", 0, 11),
        ("make.<locals>.G", 1, 12),
    ]
    sites = discover.find_classes(tree, discover.module_info(source, tree).imports)
    assert [(s.qualname, s.occurrence, s.line) for s in sites] == found[1:]
