"""``# fgirewrite: skip``: a class left alone on purpose, and unused skip comments."""

from __future__ import annotations

import json
import textwrap

import pytest
from typer.testing import CliRunner

from fgirewrite.cli import app
from fgirewrite.rewrite import rewrite_source

FUNCTION = """\
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(x)
"""


def module(*classes: str, tail: str = "") -> str:
    """``import torch`` and each class header with the Function body under it."""
    body = "\n\n".join(header + "\n" + FUNCTION for header in classes)
    return "import torch\n\n\n" + body + tail


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


REVERSIBLE = module(
    "class Reverse(torch.autograd.Function):  # fgirewrite: skip",
    "class Spike(torch.autograd.Function):",
)


def test_a_skipped_class_is_excluded_and_left_byte_for_byte(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(REVERSIBLE)
    result = run("--write", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"{path}:4:1: excluded: Reverse [excluded] a `# fgirewrite: skip` comment (line 4) "
        "leaves it alone"
    )
    assert result.stderr.splitlines()[-1] == (
        "fgirewrite: rewrote 1 surrogate in 1 file; 1 excluded by skip comments; 0 errors; "
        "1 file checked"
    )
    text = path.read_text()
    start = REVERSIBLE.index("class Reverse")
    assert REVERSIBLE[start : REVERSIBLE.index("class Spike")] in text
    assert "class Spike(_FGIRewritten):" in text


def test_an_excluded_class_never_fails_check(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(module("class Reverse(torch.autograd.Function):  # fgirewrite: skip"))
    result = run("--check", path)
    assert result.exit_code == 0, result.output
    assert "excluded: Reverse" in result.stdout
    report = json.loads(run("--check", "--output-format", "json", path).stdout)
    assert report["excluded"] == 1
    assert [(f["class"], f["status"], f["code"]) for f in report["findings"]] == [
        ("Reverse", "excluded", "excluded")
    ]
    assert report["unused_skip_comments"] == []


@pytest.mark.parametrize(
    "header",
    [
        "@some.decorator  # fgirewrite: skip\nclass Reverse(torch.autograd.Function):",
        "class Reverse(torch.autograd.Function):  # noqa: E501  # fgirewrite: skip",
        "class Reverse(torch.autograd.Function):  #fgirewrite:skip because it saves memory",
    ],
)
def test_where_a_skip_comment_may_stand(header):
    result = rewrite_source(module(header).encode(), "m.py")
    assert [(f.name, getattr(f, "code", None)) for f in result.findings] == [
        ("Reverse", "excluded")
    ]
    assert result.unused_skips == [] and not result.changed


@pytest.mark.parametrize(
    ("source", "line"),
    [
        # on a class that is no Function and holds none
        (
            module(
                "class Spike(torch.autograd.Function):",
                tail="\n\nclass A:  # fgirewrite: skip\n    pass\n",
            ),
            16,
        ),
        # on its own line above the class: not the class line
        (module("# fgirewrite: skip\nclass Spike(torch.autograd.Function):"), 4),
        # on a call: a skip comment leaves classes alone, not lines
        (
            module(
                "class Spike(torch.autograd.Function):",
                tail="\n\ny = Spike.apply(torch.ones(2))  # fgirewrite: skip\n",
            ),
            16,
        ),
        # in a file with no Function at all
        ("class A:  # fgirewrite: skip\n    pass\n", 1),
    ],
)
def test_an_unused_skip_comment_is_reported_and_fails_check(tmp_path, source, line):
    path = tmp_path / "m.py"
    path.write_text(source)
    result = run("--check", path)
    assert result.exit_code == 1
    [unused] = [row for row in result.stdout.splitlines() if "unused skip comment" in row]
    assert unused.startswith(f"{path}:{line}:")
    assert result.stderr.splitlines()[-1].endswith(
        "1 unused skip comment; 0 errors; 1 file checked"
    )
    report = json.loads(run("--check", "--output-format", "json", path).stdout)
    assert [c["line"] for c in report["unused_skip_comments"]] == [line]


def test_a_skip_comment_in_a_string_is_no_comment():
    source = module("class Spike(torch.autograd.Function):", tail='\nS = "# fgirewrite: skip"\n')
    result = rewrite_source(source.encode(), "m.py")
    assert result.unused_skips == [] and len(result.surrogates) == 1


def test_a_skipped_class_leaves_the_functions_and_calls_in_it_alone():
    """The comment on a module that holds a Function (snnTorch's tutorials nest the
    surrogate in the neuron): nothing in it changes, not even a call of another Function."""
    source = textwrap.dedent(
        """\
        import torch


        class Other(torch.autograd.Function):
        {body}

        class Neuron(torch.nn.Module):  # fgirewrite: skip
            def forward(self, x):
                return self.Inner.apply(x) + Other.apply(x)

            class Inner(torch.autograd.Function):
        {inner}
        """
    ).format(body=FUNCTION.rstrip("\n"), inner=textwrap.indent(FUNCTION, "    ").rstrip("\n"))
    result = rewrite_source(source.encode(), "m.py")
    assert [(f.name, getattr(f, "code", "rewritten")) for f in result.findings] == [
        ("Other", "rewritten"),
        ("Neuron.Inner", "excluded"),
    ]
    assert result.findings[1].message == (
        "it is inside Neuron, which a `# fgirewrite: skip` comment (line 15) leaves alone"
    )
    assert result.new_source is not None
    new = result.new_source.decode()
    neuron = source[source.index("class Neuron") :]
    assert new.endswith(neuron)  # Other.apply(x) inside it is not rewritten either
    assert result.unused_skips == []


def test_a_subclass_of_a_skipped_class_is_analysed_on_its_own(tmp_path):
    """The skipped base stays a Function; a subclass with its own forward and backward is
    rewritten like a subclass of any Function that stays one, unless something relies on it
    being a Reverse."""
    source = module(
        "class Reverse(torch.autograd.Function):  # fgirewrite: skip",
        "class Sub(Reverse):",
    )
    result = rewrite_source(source.encode(), "m.py")
    assert [getattr(f, "code", "rewritten") for f in result.findings] == [
        "excluded",
        "rewritten",
    ]
    relied = rewrite_source((source + "\n\nisinstance(x, Reverse)\n").encode(), "m.py")
    assert [getattr(f, "code", "rewritten") for f in relied.findings][0] == "excluded"
    path = tmp_path / "m.py"
    path.write_text(source)
    written = run("--write", path)
    assert written.exit_code == 0, written.output
    assert "class Reverse(torch.autograd.Function):  # fgirewrite: skip" in path.read_text()
    assert run("--check", path).exit_code == 0  # the excluded base does not fail it


def test_a_skip_comment_in_a_notebook_cell(tmp_path):
    from test_notebooks import book, cell, write

    path = tmp_path / "n.ipynb"
    header = "class Reverse(torch.autograd.Function):  # fgirewrite: skip"
    write(path, book(cell("import torch"), cell(header + "\n" + FUNCTION)))
    result = run("--check", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"{path}:cell 2:1:1: excluded: Reverse [excluded] a `# fgirewrite: skip` comment "
        "(cell 2, line 1) leaves it alone"
    )
