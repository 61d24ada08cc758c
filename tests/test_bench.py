"""``fgirewrite bench``: structure only. No test here asserts a speed or a memory figure."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fgirewrite.bench import config as cfg
from fgirewrite.bench import schema
from fgirewrite.bench.command import UsageError, make_config
from fgirewrite.cli import app

ROOT = Path(__file__).resolve().parent.parent
ALIF = ROOT / "examples" / "alif.py"

# Scripting fails for both variants: TorchScript cannot compile a forward taking *args.
UNSCRIPTABLE = textwrap.dedent("""
    import torch
    from torch import nn


    class Step(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return grad_output / (1 + x.abs()) ** 2


    class Net(nn.Module):
        def __init__(self, n_in, n_hidden):
            super().__init__()
            self.fc = nn.Linear(n_in, n_hidden)
            self.out = nn.Linear(n_hidden, 3)

        def forward(self, *xs):
            return self.out(Step.apply(self.fc(xs[0])).mean(0))


    def build(steps, batch, n_in, n_hidden):
        torch.manual_seed(0)
        return Net(n_in, n_hidden), (torch.randn(steps, batch, n_in),)
""")


def _bench(tmp_path: Path, *args: str) -> tuple[int, dict, Path]:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            *args,
            "--smoke",
            "--modes",
            "eager,script",
            "--quiet",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads((out / "bench.json").read_text()), out


@pytest.fixture(scope="module")
def alif(tmp_path_factory):
    return _bench(tmp_path_factory.mktemp("alif"), str(ALIF), "--memory")


def test_smoke_document_follows_the_schema(alif):
    code, doc, _ = alif
    assert code == 0
    assert schema.validate(doc) == []
    assert doc["schema_version"] == schema.VERSION
    assert doc["environment"]["device"] in ("cpu", "cuda")
    assert doc["model"]["rewrite"]["rewritten"] == {"SpikeFunction": "spike_function"}


def test_smoke_has_every_requested_mode_and_variant(alif):
    _, doc, _ = alif
    cells = {(r["length"], r["mode"], r["variant"]) for r in doc["results"]}
    assert cells == {(2, m, v) for m in ("eager", "script") for v in cfg.VARIANTS}
    for r in doc["results"]:
        assert set(r["timings"]) == set(cfg.MEASURES)
    baseline = next(r for r in doc["results"] if (r["mode"], r["variant"]) == ("eager", "original"))
    assert baseline["timings"]["train"]["speedup_vs_eager_original"] == 1.0
    for r in doc["results"]:
        assert r["memory"]["status"] == "ok" and isinstance(r["memory"]["peak_bytes"], int)


def test_smoke_shows_that_torchscript_cannot_save_the_original(alif):
    _, doc, _ = alif
    saves = {r["variant"]: r["checks"]["jit_save"] for r in doc["results"] if r["mode"] == "script"}
    assert saves["original"]["status"] == "failed"
    assert "Could not export Python function call" in saves["original"]["error"]
    assert saves["fgi"] == {"status": "ok"}


def test_smoke_writes_markdown_and_plot(alif):
    _, _, out = alif
    markdown = (out / "bench.md").read_text()
    assert "| mode | variant |" in markdown
    assert "jit_save" in markdown
    pytest.importorskip("matplotlib")
    assert (out / "bench.png").read_bytes().startswith(b"\x89PNG")


def test_a_saved_run_renders_again(alif, tmp_path):
    _, doc, out = alif
    result = CliRunner().invoke(
        app, ["bench", str(out / "bench.json"), "--from-json", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "FGI vs original in the same mode" in result.output
    assert json.loads((tmp_path / "bench.json").read_text()) == doc


def test_a_failing_mode_is_reported_not_hidden(tmp_path):
    model = tmp_path / "unscriptable.py"
    model.write_text(UNSCRIPTABLE)
    code, doc, out = _bench(tmp_path, str(model), "--no-memory")
    assert code == 1
    assert schema.validate(doc) == []
    scripted = [r for r in doc["results"] if r["mode"] == "script"]
    assert [r["status"] for r in scripted] == ["failed", "failed"]
    assert all(r["error"] and r["timings"]["train"]["status"] == "failed" for r in scripted)
    eager = [r for r in doc["results"] if r["mode"] == "eager"]
    assert [r["status"] for r in eager] == ["ok", "ok"]
    assert "script original" in (out / "bench.md").read_text()


def test_missing_entry_is_an_error(tmp_path):
    result = CliRunner().invoke(
        app, ["bench", str(ALIF), "--entry", "nope", "--smoke", "--modes", "eager", "--quiet"]
    )
    assert result.exit_code == 2


def test_validate_finds_missing_cells():
    doc = {
        "schema": schema.NAME,
        "schema_version": schema.VERSION,
        "environment": {"device": "cpu", "device_name": "x", "torch": "2", "threads": 1},
        "settings": {"lengths": [2], "modes": ["eager"]},
        "model": {},
        "lengths": [],
        "results": [],
        "compile_cache": None,
    }
    assert schema.validate(doc) == ["missing result 2/eager/fgi", "missing result 2/eager/original"]


def test_presets_and_overrides():
    quick = make_config(ALIF, paper=False, smoke=False, cuda=False)
    assert quick.lengths == (8,) and quick.modes == cfg.MODES
    paper = make_config(
        ALIF, paper=True, smoke=False, cuda=False, lengths="28,49", modes="eager,script", batch=None
    )
    assert (paper.lengths, paper.batch, paper.hidden) == ((28, 49), 128, 128)
    assert paper.modes == ("eager", "script") and paper.matmul_precision == "high"
    assert [paper.inputs_for(t) for t in cfg.PAPER_LENGTHS] == [28, 16, 8, 4, 2, 1]
    assert make_config(ALIF, paper=True, smoke=False, cuda=True).compile_mode == "max-autotune"
    with pytest.raises(UsageError):
        make_config(ALIF, paper=False, smoke=False, cuda=False, modes="eager,jit")
    with pytest.raises(UsageError):
        make_config(ALIF, paper=False, smoke=False, cuda=False, lengths="0")


def test_cli_imports_no_torch():
    code = "import sys, fgirewrite.cli; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
