"""Jupyter notebooks: code cells read as one module, IPython lines masked and never run,
findings at ``path:cell N:line:col``, and only the changed cells' sources written back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fgirewrite import notebook
from fgirewrite.cli import app

SPIKE = """class Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(x) * (1 - torch.sigmoid(x))"""

OUTPUT = {
    "name": "stdout",
    "output_type": "stream",
    "text": ["tensor([0., 1.])\n"],
}


def cell(source: str, kind: str = "code", **extra) -> dict:
    """A cell as Jupyter stores it: the source as lines, each but the last ending in \\n."""
    lines = source.splitlines(keepends=True)
    found = {"cell_type": kind, "id": f"c{abs(hash(source)) % 10**6}", "metadata": {}}
    if kind == "code":
        found |= {"execution_count": None, "outputs": []}
    return found | {"source": lines} | extra


def book(*cells: dict, language: str = "python") -> dict:
    return {
        "cells": list(cells),
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": language, "name": "python3"},
            "language_info": {"name": language},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write(path: Path, document: dict, indent: int = 1, newline: str = "\n") -> bytes:
    text = json.dumps(document, indent=indent, ensure_ascii=False) + "\n"
    data = text.replace("\n", newline).encode("utf-8")
    path.write_bytes(data)
    return data


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def sources(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_bytes())["cells"]]


MAGICS = book(
    cell("# A tutorial\n", "markdown"),
    cell("!pip install torch\n%matplotlib inline\nimport torch"),
    cell(SPIKE, outputs=[OUTPUT], execution_count=3),
    cell("x = torch.randn(3, requires_grad=True)\nfiles = !ls\nSpike?\n%time y = Spike.apply(x)"),
    cell("%%bash\necho Spike.apply\n"),
)


@pytest.fixture
def magics(tmp_path) -> Path:
    path = tmp_path / "tutorial.ipynb"
    write(path, MAGICS)
    return path


def test_a_notebook_is_found_in_a_folder_and_its_findings_name_the_cell(magics):
    result = run("--check", magics.parent)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{magics}:cell 3:1:1: would rewrite: Spike as spike() (d/dx = torch.sigmoid(x) * "
        "(1 - torch.sigmoid(x)))"
    ]
    assert result.stderr.endswith("0 errors; 1 file checked\n")


def test_magics_and_shell_lines_are_masked_as_placeholders(magics):
    found = notebook.read(magics.read_bytes(), str(magics))
    assert [c.number for c in found.cells] == [2, 3, 4]  # the %%bash cell is left out
    assert [line for c in found.cells for _, line in c.masked] == [
        "!pip install torch",
        "%matplotlib inline",
        "files = !ls",
        "Spike?",
        "%time y = Spike.apply(x)",
    ]
    text = found.module.decode()
    assert "!pip" not in text and "%time" not in text and "Spike?" not in text
    compile(text, "module", "exec")  # the masked module is Python


def test_write_edits_only_the_changed_cells_and_keeps_every_other_byte(magics):
    before = magics.read_bytes()
    result = run("--write", magics)
    assert result.exit_code == 0, result.output
    assert f"{magics}:cell 3:1:1: rewrote: Spike as spike()" in result.stdout
    after = magics.read_bytes()
    old, new = json.loads(before), json.loads(after)
    # Everything but the sources of cells 2 (the helpers, after its imports) and 3:
    for document in (old, new):
        for i in (1, 2):
            document["cells"][i].pop("source")
    assert old == new  # outputs, ids, metadata and execution counts as they were
    assert after.endswith(b"}\n")
    # outside the two source values, byte for byte
    start = before.rindex(b'"source"', 0, before.index(b"!pip"))
    assert after[:start] == before[:start]
    tail = before.index(b'"cell_type": "code"', before.index(b"sigmoid(x))"))
    assert after.endswith(before[tail:])
    cells = sources(magics)
    assert cells[1].startswith("!pip install torch\n%matplotlib inline\nimport torch\n")
    assert "def _fgi_inject(" in cells[1]
    assert cells[2].startswith("def spike(x):") and "class Spike(_FGIRewritten):" in cells[2]
    assert cells[3] == (  # IPython lines untouched; Spike.apply inside %time kept as written
        "x = torch.randn(3, requires_grad=True)\nfiles = !ls\nSpike?\n%time y = Spike.apply(x)"
    )
    assert cells[4] == "%%bash\necho Spike.apply\n"


def test_a_second_run_changes_nothing(magics):
    assert run("--write", magics).exit_code == 0
    once = magics.read_bytes()
    result = run("--check", magics)
    assert result.exit_code == 0, result.output
    assert run("--write", magics).exit_code == 0
    assert magics.read_bytes() == once


def test_the_diff_shows_cells(magics):
    result = run(magics)
    assert result.exit_code == 0
    headers = [line for line in result.stdout.splitlines() if line.startswith(("---", "+++"))]
    assert headers == [
        f"--- {magics}:cell 2",
        f"+++ {magics}:cell 2",
        f"--- {magics}:cell 3",
        f"+++ {magics}:cell 3",
    ]
    assert "-class Spike(torch.autograd.Function):" in result.stdout
    assert "\\ No newline" not in result.stdout


def test_static_modes_and_verification_never_run_a_cell(tmp_path):
    """The shell line would create a file, the cell would raise: neither ever runs."""
    marker = tmp_path / "ran"
    path = tmp_path / "n.ipynb"
    write(
        path,
        book(
            cell(f"!touch {marker}\nimport torch"),
            cell(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)"),
            cell(SPIKE),
        ),
    )
    for flags in (["--check"], ["--diff"], ["--write"]):
        result = run(*flags, path)
        assert result.exit_code in (0, 1), result.output
    assert "rewrote: Spike" in result.stdout  # verified by running the class's slice only
    assert not marker.exists()


def test_crlf_notebook_keeps_its_line_endings(tmp_path):
    path = tmp_path / "windows.ipynb"
    before = write(tmp_path / "windows.ipynb", MAGICS, indent=2, newline="\r\n")
    assert run("--write", path).exit_code == 0
    after = path.read_bytes()
    assert after.count(b"\n") == after.count(b"\r\n") > before.count(b"\r\n")
    assert after.endswith(b"}\r\n")
    assert b'"source": [\r\n        "def spike(x):\\n",\r\n' in after  # the lists' own style
    assert run("--check", path).exit_code == 0


def test_crlf_inside_cell_sources_round_trips(tmp_path):
    path = tmp_path / "n.ipynb"
    document = book(cell("import torch\r\n"), cell(SPIKE.replace("\n", "\r\n")))
    write(path, document)
    assert run("--write", path).exit_code == 0
    cells = sources(path)
    assert cells[0].startswith("import torch\r\n")
    assert "class Spike(_FGIRewritten):" in cells[1]
    assert run("--check", path).exit_code == 0


def test_a_source_given_as_one_string_stays_one_string(tmp_path):
    path = tmp_path / "n.ipynb"
    document = book(cell("import torch"), cell(SPIKE))
    for c in document["cells"]:
        c["source"] = "".join(c["source"])
    write(path, document)
    assert run("--write", path).exit_code == 0
    written = json.loads(path.read_bytes())["cells"]
    assert all(isinstance(c["source"], str) for c in written)
    assert written[1]["source"].startswith("def spike(x):")


def test_a_broken_notebook_is_an_error_not_a_pass(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text('{"cells": [\n  {"cell_type": "code", "source": ["import torch"]\n')
    for flags in (["--check"], ["--diff"], ["--write"]):
        result = run(*flags, path)
        assert result.exit_code == 2
        assert f"{path}: error: not a notebook: invalid JSON at line 3, column 1: " in (
            result.stderr
        )
        assert result.stderr.endswith("1 error; 1 file checked\n")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"cells": []}, "unsupported notebook format None (nbformat 4 is read)"),
        ({"nbformat": 3, "worksheets": []}, "not a notebook: no list of cells"),
        (
            {"nbformat": 4, "cells": [{"cell_type": "code"}]},
            "not a notebook: cell 1 has no source text",
        ),
    ],
)
def test_json_that_is_not_a_notebook_is_an_error(tmp_path, document, message):
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(document))
    result = run("--check", path)
    assert result.exit_code == 2
    assert f"{path}: error: {message}" in result.stderr


def test_a_notebook_with_no_function_passes(tmp_path):
    path = tmp_path / "plain.ipynb"
    before = write(path, book(cell("%matplotlib inline\nimport torch\nprint(torch.ones(2))")))
    for flags in (["--check"], ["--write"]):
        result = run(*flags, path)
        assert result.exit_code == 0, result.output
        assert result.stderr.endswith("0 errors; 1 file checked\n")
    assert path.read_bytes() == before


def test_a_notebook_of_another_language_is_not_read_as_python(tmp_path):
    path = tmp_path / "r.ipynb"
    write(path, book(cell("class Spike(torch.autograd.Function): pass"), language="R"))
    result = run("--check", path)
    assert result.exit_code == 0, result.output
    assert notebook.read(path.read_bytes(), str(path)).cells == ()


def test_a_syntax_error_in_a_cell_is_reported_in_cell_lines(tmp_path):
    path = tmp_path / "n.ipynb"
    write(path, book(cell("import torch"), cell(SPIKE), cell("x = (\n")))
    result = run("--check", path)
    assert result.exit_code == 2
    assert f"{path}: error: syntax error at cell 3, line 1: " in result.stderr


def test_json_output_gives_the_cell(magics):
    result = run("--check", "--output-format", "json", magics)
    [finding] = json.loads(result.stdout)["findings"]
    assert (finding["cell"], finding["line"], finding["column"]) == (3, 1, 1)


def test_a_notebook_changed_after_it_was_read_is_not_overwritten(magics, monkeypatch):
    from fgirewrite import files

    real = files.write_all

    def edit_then_write(changes, *args, **kwargs):
        magics.write_bytes(magics.read_bytes().replace(b"inline", b"notebook"))
        return real(changes, *args, **kwargs)

    monkeypatch.setattr(files, "write_all", edit_then_write)
    result = run("--write", magics)
    assert result.exit_code == 2
    assert f"{magics}: error: changed since it was read; not overwritten" in result.stderr
    assert b"%matplotlib notebook" in magics.read_bytes()
    assert b"def spike" not in magics.read_bytes()


@pytest.mark.parametrize(
    ("source", "masked"),
    [
        ("x = (1 +\n%2)\n", []),  # inside brackets: Python (here a syntax error), not IPython
        ('s = """\n!not a shell line\n"""\n', []),
        ("for f in files:\n    !echo {f}\n", ["    !echo {f}"]),
        ("!pip install \\\n    torch\nimport torch\n", ["!pip install \\", "    torch"]),
        ("%%time\nimport torch\n", ["%%time"]),
        ("x = 1  # why?\n", []),
        ("torch.nn.Module??\n", ["torch.nn.Module??"]),
        ("a, b = %sx ls\n", ["a, b = %sx ls"]),
    ],
)
def test_what_is_masked(source, masked):
    document = json.dumps(book(cell(source)))
    found = notebook.read(document.encode(), "n.ipynb")
    [only] = found.cells
    assert [line for _, line in only.masked] == masked
    assert found.sources(found.module) == [source]


def test_a_cell_magic_of_another_language_is_left_out():
    document = json.dumps(book(cell("%%writefile spike.py\nclass Spike(Function): ...\n")))
    assert notebook.read(document.encode(), "n.ipynb").cells == ()


def test_markers_and_placeholders_avoid_the_notebooks_own_text():
    text = "# fgirewrite: cell 1\n__fgi_ipython_0 = 1\n!ls\n"
    found = notebook.read(json.dumps(book(cell(text))).encode(), "n.ipynb")
    assert found.sources(found.module) == [text]
    assert found.marker != "# fgirewrite: cell "


TUTORIAL = Path(__file__).parent / "fixtures" / "notebooks" / "snntorch_tutorial_5_FCN.ipynb"
# Cells left out of the run, by number, and a word each must hold (so that a renumbered copy
# cannot skip the wrong cell silently): MNIST needs torchvision and a download.
NOT_RUN = {21: "MNIST", 24: "DataLoader", 50: "train_loader", 53: "loss_hist", 56: "test_loader"}
# The first MNIST batch, replaced by a random one of its shape.
RANDOM_BATCH = {
    37: "data = torch.rand(batch_size, 1, 28, 28)\ntargets = torch.randint(0, 10, (batch_size,))"
}


def _run_cells(data: bytes, monkeypatch, last: int | None = None) -> dict:
    """Run a notebook's code cells in order in one namespace (up to cell ``last``), as
    Jupyter would; IPython lines are never run (a cell with one is left out: here only
    ``!pip install snntorch``)."""
    import sys
    import types

    import torch

    stub = types.ModuleType("torchvision")  # the tutorial imports it for MNIST only
    stub.datasets = stub.transforms = types.SimpleNamespace()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", stub)
    # imported, never called; it needs pandas, which is not installed here
    monkeypatch.setitem(sys.modules, "snntorch.spikeplot", types.ModuleType("spikeplot"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    masked = {c.number for c in notebook.read(data, "t.ipynb").cells if c.masked}
    namespace: dict = {"__name__": "__main__"}
    torch.manual_seed(0)
    for number, entry in enumerate(json.loads(data)["cells"], 1):
        if entry["cell_type"] != "code" or number in masked or number > (last or number):
            continue
        source = "".join(entry["source"])
        if number in NOT_RUN:
            assert NOT_RUN[number] in source
            continue
        exec(compile(RANDOM_BATCH.get(number, source), f"cell {number}", "exec"), namespace)  # noqa: S102
    return namespace


def _surrogate_run(namespace: dict):
    """Ten steps of the tutorial's own LeakySurrogate neuron, and the input's gradient."""
    import torch

    torch.manual_seed(1)
    neuron = namespace["LeakySurrogate"](beta=0.9)
    inputs = torch.randn(10, 4, 5, requires_grad=True)
    mem, spikes = torch.zeros(4, 5), []
    for step in range(10):
        spike, mem = neuron(inputs[step] + 1.0, mem)
        spikes.append(spike)
    out = torch.stack(spikes)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), inputs.grad


def test_the_snntorch_tutorial(tmp_path, monkeypatch):
    """snnTorch's Tutorial 5 rewritten and verified, its rewritten cells run top to bottom,
    and its surrogate neuron the same as the original's."""
    import torch

    path = tmp_path / TUTORIAL.name
    path.write_bytes(TUTORIAL.read_bytes())
    result = run("--write", "--output-format", "json", path)
    assert result.exit_code == 0, result.output
    [finding] = json.loads(result.stdout)["findings"]
    assert (finding["class"], finding["status"], finding["cell"], finding["line"]) == (
        "LeakySurrogate.ATan",
        "rewritten",
        11,
        21,
    )
    assert finding["verification"]["ok"] is True
    assert run("--check", path).exit_code == 0

    rewritten = _run_cells(path.read_bytes(), monkeypatch)
    assert rewritten["loss_val"].item() > 0  # cells 39-47: a training step on a random batch
    original = _run_cells(TUTORIAL.read_bytes(), monkeypatch, last=11)  # the neuron's cell
    assert not issubclass(rewritten["LeakySurrogate"].ATan, torch.autograd.Function)
    assert issubclass(original["LeakySurrogate"].ATan, torch.autograd.Function)
    (out, grad), (new_out, new_grad) = _surrogate_run(original), _surrogate_run(rewritten)
    assert out.sum() > 0 and grad.abs().sum() > 0  # spikes, and a gradient through them
    assert torch.equal(out, new_out)
    torch.testing.assert_close(grad, new_grad)


def test_a_surrogate_in_the_first_cell_and_empty_cells_around_it(tmp_path):
    path = tmp_path / "n.ipynb"
    write(path, book(cell("import torch\n" + SPIKE), cell(""), cell("y = Spike.apply(x)\n")))
    assert run("--write", "--no-verify", path).exit_code == 0
    cells = sources(path)
    assert cells[0].startswith("import torch\n\n\ndef _fgi_needs_grad()")
    assert cells[1:] == ["", "y = spike(x)\n"]  # the call in another cell is rewritten too
    assert run("--check", path).exit_code == 0


def test_a_second_order_warning_names_the_cell(tmp_path):
    path = tmp_path / "n.ipynb"
    grad = "g = torch.autograd.grad(y.sum(), x, create_graph=True)"
    write(path, book(cell("import torch"), cell(SPIKE), cell("x = 1\n" + grad)))
    result = run("--check", path)
    assert f"{path}:cell 3:2 differentiates through gradients (create_graph=True)" in result.stdout
    result = run("--check", "--accept-first-order", path)
    assert f"{path}:cell 3:2: warning: differentiates through gradients" in result.stderr


def test_jupyters_checkpoint_copies_are_not_read(magics):
    (magics.parent / ".ipynb_checkpoints").mkdir()
    write(magics.parent / ".ipynb_checkpoints" / "tutorial-checkpoint.ipynb", MAGICS)
    result = run("--check", magics.parent)
    assert result.stderr.endswith("0 errors; 1 file checked\n")
