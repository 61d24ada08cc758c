"""``fgirewrite bench``: structure only. No test here asserts a speed or a memory figure."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from torch import device as torch_device
from typer.testing import CliRunner

from fgirewrite.bench import compile_cache, expected, models, report, runner, schema
from fgirewrite.bench import config as cfg
from fgirewrite.bench.command import UsageError, make_config
from fgirewrite.bench.progress import Progress
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


def _bench(tmp_path: Path, *args: str, modes: str = "eager,script") -> tuple[int, dict, Path]:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["bench", *args, "--smoke", "--modes", modes, "--quiet", "--out", str(out), "--json"],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads((out / "bench.json").read_text()), out


@pytest.fixture(scope="module")
def alif(tmp_path_factory):
    """The smoke run: every mode (torch.compile with the aot_eager backend)."""
    return _bench(tmp_path_factory.mktemp("alif"), str(ALIF), "--memory", modes=",".join(cfg.MODES))


def test_smoke_document_follows_the_schema(alif):
    code, doc, _ = alif
    assert code == 0
    assert schema.validate(doc) == []
    assert doc["schema_version"] == schema.VERSION
    assert doc["environment"]["device"] in ("cpu", "cuda")
    assert set(doc["environment"]["torchscript_fusion"]) == {"texpr_fuser", "cpu", "gpu", "llvm"}
    assert doc["model"]["rewrite"]["rewritten"] == {"SpikeFunction": "spike_function"}


def test_smoke_has_every_requested_mode_and_variant(alif):
    _, doc, _ = alif
    cells = {(r["length"], r["mode"], r["variant"]) for r in doc["results"]}
    assert cells == {(2, m, v) for m in cfg.MODES for v in cfg.VARIANTS}
    assert all(r["status"] == "ok" for r in doc["results"])
    for r in doc["results"]:
        assert set(r["timings"]) == set(cfg.MEASURES)
    baseline = next(r for r in doc["results"] if (r["mode"], r["variant"]) == ("eager", "original"))
    assert baseline["timings"]["train"]["speedup_vs_eager_original"] == 1.0
    for r in doc["results"]:
        assert r["memory"]["status"] == "ok" and isinstance(r["memory"]["peak_bytes"], int)


def test_smoke_compiles_with_the_cheap_backend(alif):
    _, doc, _ = alif
    assert doc["settings"]["compile_backend"] == "aot_eager"
    assert doc["environment"]["threads"] == 1
    for r in doc["results"]:
        if r["mode"] in cfg.COMPILE_MODES:
            assert r["compile"]["graphs"] >= 1 and r["warmup"]["first_train_s"] > 0
        else:
            assert r["compile"] is None


def test_smoke_shows_that_torchscript_cannot_save_the_original(alif):
    _, doc, _ = alif
    saves = {r["variant"]: r["checks"]["jit_save"] for r in doc["results"] if r["mode"] == "script"}
    assert saves["original"]["status"] == "failed"
    assert "Could not export Python function call" in saves["original"]["error"]
    assert saves["original"]["expected"] == expected.LIMITATIONS[0].reason
    assert saves["fgi"] == {"status": "ok"}


def test_the_expected_save_failure_is_reported_as_expected(alif):
    code, doc, out = alif
    assert code == 0
    notes = report.notes(doc)
    assert notes["failed"] == []
    assert notes["expected"] == [
        f"T=2 script original jit_save: {expected.LIMITATIONS[0].reason} "
        f"({report.short(_cell(doc, 'script', 'original')['checks']['jit_save']['error'], 160)})"
    ]
    assert report.NOTE_TITLES["expected"] in (out / "bench.md").read_text()
    assert "failed (unexpected" not in (out / "bench.md").read_text()


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


# The original fails in every mode: torch.func refuses an old-style autograd.Function.
VMAPPED = textwrap.dedent("""
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

        def forward(self, x):
            return self.out(torch.func.vmap(Step.apply)(self.fc(x)).mean(0))


    def build(steps, batch, n_in, n_hidden):
        torch.manual_seed(0)
        return Net(n_in, n_hidden), (torch.randn(steps, batch, n_in),)
""")


def test_a_known_limitation_of_the_original_is_an_expected_failure(tmp_path):
    model = tmp_path / "vmapped.py"
    model.write_text(VMAPPED)
    code, doc, out = _bench(tmp_path, str(model), "--no-memory", modes="eager")
    assert code == 0
    original, fgi = doc["results"]
    assert original["status"] == "failed" and "setup_context" in original["error"]
    assert original["expected"] == expected.LIMITATIONS[1].reason
    assert fgi["status"] == "ok"
    assert "eager check not possible: original: RuntimeError" in report.text(doc)
    table = report.render_text(report.timing_tables(doc)[0])
    assert table.splitlines()[2].split()[:3] == ["eager", "original", "unsupported"]
    assert report.notes(doc)["failed"] == []


def _rendered(doc: dict, tmp_path: Path):
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(doc))
    return CliRunner().invoke(app, ["bench", str(saved), "--from-json"])


def _cell(doc: dict, mode: str, variant: str) -> dict:
    return next(r for r in doc["results"] if (r["mode"], r["variant"]) == (mode, variant))


def test_the_same_failure_of_the_rewrite_is_unexpected(alif, tmp_path):
    _, doc, _ = alif
    doc = json.loads(json.dumps(doc))
    original_save = _cell(doc, "script", "original")["checks"]["jit_save"]
    _cell(doc, "script", "fgi")["checks"]["jit_save"] = {
        "status": "failed",
        "error": original_save["error"],
    }
    result = _rendered(doc, tmp_path)
    assert result.exit_code == 1
    assert (
        f"{report.NOTE_TITLES['failed']}:\n  T=2 script FGI jit_save: RuntimeError" in result.output
    )


def test_another_failure_of_the_original_is_unexpected(alif, tmp_path):
    _, doc, _ = alif
    doc = json.loads(json.dumps(doc))
    _cell(doc, "eager", "original")["memory"] = {"status": "failed", "error": "RuntimeError: boom"}
    result = _rendered(doc, tmp_path)
    assert result.exit_code == 1
    assert "  T=2 eager original peak memory: RuntimeError: boom" in result.output
    assert [f.where for f in expected.unexpected(doc)] == ["T=2 eager original peak memory"]


SAVE_ERROR = (
    "RuntimeError: Could not export Python function call '{}'. Remove calls to Python functions "
    "before export. Did you forget to add @script or @script_method annotation?"
)
FUNC_ERROR = (
    "RuntimeError: In order to use an autograd.Function with functorch transforms (vmap, grad, "
    "jvp, jacrev, ...), it must override the setup_context staticmethod."
)


def test_only_the_files_custom_functions_make_a_failure_expected():
    one = expected.Functions(frozenset({"SpikeFunction"}), frozenset())
    left = expected.Functions(frozenset({"SpikeFunction"}), frozenset({"Legacy"}))
    none = expected.Functions(frozenset(), frozenset())
    save, func = expected.LIMITATIONS[0].reason, expected.LIMITATIONS[1].reason
    suffix = " (left as a custom Function by the rewrite)"
    assert expected.reason("original", SAVE_ERROR.format("SpikeFunction"), one) == save
    assert expected.reason("original", SAVE_ERROR.format("helper"), one) is None  # not a Function
    assert expected.reason("fgi", SAVE_ERROR.format("SpikeFunction"), one) is None  # rewritten
    assert expected.reason("fgi", SAVE_ERROR.format("Legacy"), left) == save + suffix
    assert expected.reason("original", FUNC_ERROR, one) == func
    assert expected.reason("original", FUNC_ERROR, none) is None
    assert expected.reason("fgi", FUNC_ERROR, one) is None
    assert expected.reason("fgi", FUNC_ERROR, left) == func + suffix
    assert expected.reason("original", "RuntimeError: boom", one) is None


def test_a_bad_entry_is_refused_before_any_warm_up(tmp_path, monkeypatch):
    calls = []
    real_check = models.check

    def check(*args):
        calls.append("check")
        real_check(*args)

    def run(*args, **kwargs):
        calls.append("run")
        raise models.ModelError("stopped before the run")

    monkeypatch.setattr(models, "check", check)
    monkeypatch.setattr(runner, "run", run)
    out = tmp_path / "out"
    bad = CliRunner().invoke(app, ["bench", str(ALIF), "--entry", "nope", "--out", str(out)])
    assert (bad.exit_code, bad.stderr) == (
        2,
        f"fgirewrite: error: {ALIF} defines no `nope` (see --entry)\n",
    )
    assert calls == ["check"] and not out.exists()
    good = CliRunner().invoke(app, ["bench", str(ALIF), "--quiet"])
    assert (good.exit_code, good.stderr) == (2, "fgirewrite: error: stopped before the run\n")
    assert calls == ["check", "check", "run"]


BAD_RETURN = "def build(steps, batch, n_in, n_hidden):\n    return 3\n"
RAISES = "def build(steps, batch, n_in, n_hidden):\n    raise ValueError('no data here')\n"


@pytest.mark.parametrize(
    ("source", "args", "message"),
    [
        (None, ["--entry", "math"], "{path}: `math` is a module, not a function"),
        (
            None,
            ["--entry", "ALIFNetwork"],
            "{path}: `ALIFNetwork` must accept steps, batch, n_in and n_hidden as keywords "
            "(got an unexpected keyword argument 'steps')",
        ),
        (
            BAD_RETURN,
            [],
            "{path}: `build` must return (model, inputs) with model an nn.Module; it returned int",
        ),
        (
            RAISES,
            ["--paper"],
            "{path}: build(steps=28, batch=2, n_in=28, n_hidden=128) failed: "
            "ValueError: no data here",
        ),
        (None, ["--min-time", "0"], "--min-time must be more than 0 seconds"),
        (None, ["--warmup", "-1"], "--warmup must be at least 0"),
        (None, ["--device", "tpu"], "--device tpu: choose auto, cpu, cuda or cuda:N"),
        (
            None,
            ["--matmul-precision", "low"],
            "--matmul-precision: choose from highest, high, medium",
        ),
        (None, ["--modes", "eager,jit"], "unknown jit; choose from " + ", ".join(cfg.MODES)),
        (
            None,
            ["--compile-backend", "aot_eager", "--compile-mode", "max-autotune"],
            "--compile-mode max-autotune is inductor's; --compile-backend aot_eager takes none",
        ),
        (None, ["--compile-mode", "fastest"], "--compile-mode fastest: choose from "),
        (None, ["--compile-backend", "nope"], "--compile-backend nope: unknown; choose from "),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, monkeypatch, source, args, message):
    path = ALIF
    if source is not None:
        path = tmp_path / "model.py"
        path.write_text(source)
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("ran despite a bad option"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", str(path), *args, "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"fgirewrite: error: {message.format(path=path)}")
    assert result.stderr.count("\n") == 1 and not out.exists()


def test_out_must_be_a_directory(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("")
    result = CliRunner().invoke(app, ["bench", str(ALIF), "--out", str(taken)])
    assert (result.exit_code, result.stderr) == (
        2,
        f"fgirewrite: error: --out {taken}: exists and is not a directory\n",
    )


def test_compile_cache_runs_cold_then_warm_on_one_cache_directory(monkeypatch, tmp_path):
    spawned = []

    def spawn(spec, root, timeout):
        spawned.append((spec["variant"], spec["backend"], root))
        total = 3.0 if len(spawned) % 2 else 1.0  # cold, then warm
        return {"status": "ok", "train_s": total, "no_grad_s": 0.0, "total_s": total,
                "counters": {}, "bypass_reasons": []}  # fmt: skip

    monkeypatch.setattr(compile_cache, "_spawn", spawn)
    config = make_config(ALIF, paper=False, smoke=True, cuda=False, modes="compile")
    result = compile_cache.run(config, torch_device("cpu"), Progress(4, enabled=False))
    assert [(v, b) for v, b, _ in spawned] == [
        ("original", "aot_eager"),
        ("original", "aot_eager"),
        ("fgi", "aot_eager"),
        ("fgi", "aot_eager"),
    ]
    roots = [root for _, _, root in spawned]
    assert roots[0] == roots[1] != roots[2] == roots[3]
    assert result["status"] == "ok" and result["variants"]["fgi"]["saved_s"] == 2.0


def test_compile_cache_worker_runs_in_a_fresh_process(tmp_path):
    config = make_config(ALIF, paper=False, smoke=True, cuda=False, modes="compile")
    spec = {
        "path": str(ALIF),
        "entry": "build",
        "kwargs": config.entry_kwargs(2),
        "variant": "fgi",
        "compile_mode": "default",
        "backend": "aot_eager",
        "device": "cpu",
        "threads": 1,
        "matmul_precision": None,
    }
    result = compile_cache._spawn(spec, str(tmp_path), timeout=300)
    assert result["status"] == "ok", result
    assert result["total_s"] == result["train_s"] + result["no_grad_s"] > 0
    assert set(result["counters"]) >= {"autograd_cache_hit", "fxgraph_cache_miss"}


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


def test_paper_measures_compile_cost_only_when_a_compile_mode_is_selected():
    def paper(**options):
        return make_config(ALIF, paper=True, smoke=False, cuda=False, **options)

    assert paper().compile_cache is True
    assert paper(modes="eager,script").compile_cache is False
    assert paper(modes="eager,compile").compile_cache is True
    assert paper(modes="eager", compile_cache=True).compile_cache is True  # asked for
    assert paper(modes="compile", compile_cache=False).compile_cache is False
    without, with_ = paper(modes="eager,script"), paper(modes="eager,script,compile")
    assert runner.units(with_) - runner.units(without) > compile_cache.UNITS


def test_smoke_preset_is_cheap_and_overridable():
    smoke = make_config(ALIF, paper=False, smoke=True, cuda=False)
    assert (smoke.rounds, smoke.threads, smoke.compile_backend) == (1, 1, "aot_eager")
    assert smoke.compile_cache is False and smoke.min_run_time <= 0.01
    inductor = make_config(ALIF, paper=False, smoke=True, cuda=False, compile_backend="inductor")
    assert inductor.compile_backend == "inductor"
    # a preset's max-autotune is inductor's: dropped for another backend, refused when asked
    assert make_config(ALIF, paper=True, smoke=False, cuda=True).compile_mode == "max-autotune"
    cheap = make_config(ALIF, paper=True, smoke=False, cuda=True, compile_backend="eager")
    assert cheap.compile_mode == "default"


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


_spec = importlib.util.spec_from_file_location("gpu_paper", ROOT / "benchmarks" / "gpu_paper.py")
gpu_paper = importlib.util.module_from_spec(_spec)
sys.modules["gpu_paper"] = gpu_paper  # dataclasses look their module up
_spec.loader.exec_module(gpu_paper)


def _plan(*argv: str):
    return gpu_paper.make_plan(gpu_paper._arguments(list(argv)))


def test_gpu_paper_plans_the_papers_protocol(capsys):
    assert gpu_paper.main(["--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "budget 500 s (20 s kept for the reports)"
    steps = [line.split(": ")[1] for line in lines[1:]]
    assert steps == [
        "eager + script, T=28,49,98,196",
        "eager + script, T=392,784",
        *(f"compile, T={n}" for n in cfg.PAPER_LENGTHS),
        "compile-cache, T=28",
    ]
    for line in lines[1:-1]:
        assert " --paper --rounds 3 --min-time 0.1 --warmup 5 --compile-mode default " in line
        assert " --device cuda " in line and " --no-compile-cache " in line
    plan = _plan("--no-compile-cache", "--lengths", "28,49")
    assert [s.kind for s in plan.steps] == ["eager-script", "compile", "compile"]


def _fake_record(plan, step, timeout, walls):
    wall = walls[step.name]
    if wall > timeout:
        return gpu_paper.Record(step, "timed-out", wall_s=timeout, error="killed")
    return gpu_paper.Record(step, "ok", wall_s=wall)


def test_gpu_paper_stops_compiling_when_the_budget_would_be_exceeded():
    plan = _plan("--budget", "300")  # 280 s after the reserve
    walls = {s.name: 10.0 for s in plan.steps}
    walls.update({f"compile, T={n}": 60.0 * n / 28 for n in cfg.PAPER_LENGTHS})
    now = [0.0]

    def step(plan, s, timeout):
        record = _fake_record(plan, s, timeout, walls)
        now[0] += record.wall_s
        return record

    records = gpu_paper.execute(plan, lambda line: None, step, step, lambda: now[0])
    status = {r.step.name: (r.status, r.error) for r in records}
    assert status["compile, T=49"] == ("ok", None)  # 20 s + 60 s spent, 105 s estimated
    assert status["compile, T=98"] == ("skipped", "estimated 210 s, 95 s left in the time budget")
    assert status["compile, T=196"] == (
        "skipped",
        "a shorter length's compile did not finish within the time budget",
    )
    assert status["compile-cache, T=28"] == (
        "skipped",
        "estimated 120 s, 95 s left in the time budget",
    )
    assert now[0] == 185.0


def test_gpu_paper_merges_the_steps_into_one_document(alif):
    _, doc, _ = alif
    plan = _plan("--cpu-smoke", "--lengths", "2,8")
    eager = json.loads(json.dumps(doc))
    eager["results"] = [r for r in eager["results"] if r["mode"] in ("eager", "script")]
    compiled = json.loads(json.dumps(doc))
    compiled["results"] = [r for r in compiled["results"] if r["mode"] == "compile"]
    for r in compiled["results"]:
        for t in r["timings"].values():
            t["speedup_vs_eager_original"] = None  # no baseline in that step
    steps = {s.name: s for s in plan.steps}
    records = [
        gpu_paper.Record(steps["eager + script, T=2"], "ok", doc=eager),
        gpu_paper.Record(steps["eager + script, T=8"], "failed", error="boom"),
        gpu_paper.Record(steps["compile, T=2"], "ok", doc=compiled),
        gpu_paper.Record(steps["compile, T=8"], "timed-out", error="killed after 9 s"),
        gpu_paper.Record(steps["compile-cache, T=2"], "skipped", error="no time"),
    ]
    merged = gpu_paper.merge(plan, records, "python benchmarks/gpu_paper.py --cpu-smoke")
    assert schema.validate(merged) == []
    assert merged["settings"]["modes"] == ["eager", "script", "compile"]
    assert [e["length"] for e in merged["lengths"]] == [2, 8]
    by = {(r["length"], r["mode"], r["variant"]): r for r in merged["results"]}
    assert by[(8, "eager", "fgi")]["error"] == "failed: boom"
    assert by[(8, "compile", "original")]["status"] == "skipped"
    assert by[(8, "compile", "original")]["error"] == "timed-out: killed after 9 s"
    speedup = by[(2, "compile", "fgi")]["timings"]["train"]["speedup_vs_eager_original"]
    assert speedup == pytest.approx(
        by[(2, "eager", "original")]["timings"]["train"]["median_s"]
        / by[(2, "compile", "fgi")]["timings"]["train"]["median_s"]
    )
    assert [s["status"] for s in merged["protocol"]["steps"]] == [
        "ok",
        "failed",
        "ok",
        "timed-out",
        "skipped",
    ]
    assert merged["compile_cache"] is None
    assert "T=8 compile original: timed-out: killed after 9 s" in report.text(merged)
    name = gpu_paper.slug(merged["environment"]["device_name"])
    assert gpu_paper.out_dir(plan, merged, Path("r")) == Path("r") / f"cpu-smoke-{name}"
    assert gpu_paper.slug("NVIDIA H200") == "nvidia-h200"


def test_gpu_paper_runs_a_step_as_a_fresh_bench_process():
    plan = _plan("--cpu-smoke")
    step = gpu_paper.Step("eager-script", (2,))
    record = gpu_paper.run_bench(plan, step, timeout=300)
    assert record.status == "ok", record.error
    assert record.command.startswith("python -m fgirewrite bench ")
    assert schema.validate(record.doc) == []
    assert {(r["mode"], r["variant"]) for r in record.doc["results"]} == {
        (m, v) for m in ("eager", "script") for v in cfg.VARIANTS
    }
    killed = gpu_paper.run_bench(plan, step, timeout=0.5)
    assert (killed.status, killed.error, killed.doc) == ("timed-out", "killed after 0 s", None)
