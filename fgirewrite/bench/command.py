"""``fgirewrite bench``: settings from the command line, checked before anything runs; the run,
and its outputs."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from fgirewrite.bench import config as cfg

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
PRECISIONS = ("highest", "high", "medium")


class UsageError(Exception):
    """Options that cannot be run."""


def _check_values(given: dict) -> None:
    for key in ("batch", "hidden", "n_in", "rounds", "threads"):
        if key in given and given[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be at least 1")
    if "warmup" in given and given["warmup"] < 0:
        raise UsageError("--warmup must be at least 0")
    if "min_run_time" in given and not given["min_run_time"] > 0:
        raise UsageError("--min-time must be more than 0 seconds")
    if given.get("matmul_precision", "high") not in PRECISIONS:
        raise UsageError(f"--matmul-precision: choose from {', '.join(PRECISIONS)}")
    device = given.get("device", "auto")
    if device not in ("auto", "cpu", "cuda") and not (
        device.startswith("cuda:") and device[5:].isdigit()
    ):
        raise UsageError(f"--device {device}: choose auto, cpu, cuda or cuda:N")


def make_config(
    path: Path | None, *, paper: bool, smoke: bool, cuda: bool, **overrides
) -> cfg.BenchConfig:
    """The quick defaults, or a preset (``paper``, ``smoke``), then every option given
    explicitly (``None`` means not given). A preset's compile-cost experiment runs only when a
    compile mode is selected; ``--compile-cache`` asks for it regardless."""
    if paper and smoke:
        raise UsageError("choose one of --paper and --smoke")
    config = cfg.BenchConfig(path=path)
    if paper:
        config = cfg.paper(config, cuda)
    if smoke:
        config = cfg.smoke(config)
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        if "lengths" in given:
            given["lengths"] = cfg.parse_lengths(given["lengths"])
        if "modes" in given:
            given["modes"] = cfg.parse_list(given["modes"], cfg.MODES)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _check_values(given)
    config = replace(config, **given)
    if "compile_cache" not in given and not config.compiling:
        config = replace(config, compile_cache=False)
    if config.compile_backend != "inductor" and config.compile_mode != "default":
        if "compile_mode" in given:
            raise UsageError(
                f"--compile-mode {config.compile_mode} is inductor's; --compile-backend "
                f"{config.compile_backend} takes none"
            )
        config = replace(config, compile_mode="default")
    return config


def check_device(config: cfg.BenchConfig):
    """The device the run asks for, if this machine has it."""
    from fgirewrite.bench import device as dev

    try:
        return dev.choose(config.device)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None


def check_compiler(config: cfg.BenchConfig) -> None:
    """The compile backend and mode, checked against this torch (imports dynamo: 2 s)."""
    if config.compiling or config.compile_cache:
        import torch._dynamo
        import torch._inductor

        backends = torch._dynamo.list_backends(exclude_tags=())
        if config.compile_backend not in backends:
            raise UsageError(
                f"--compile-backend {config.compile_backend}: unknown; choose from "
                f"{', '.join(sorted(backends))}"
            )
        modes = list(torch._inductor.list_mode_options())
        if config.compile_mode not in modes:
            choices = ", ".join(modes)
            raise UsageError(f"--compile-mode {config.compile_mode}: choose from {choices}")


def write(doc: dict, out: Path) -> list[str]:
    """bench.json, bench.md and bench.png in ``out``; the paths written, and why the plot
    was not (as a message) when matplotlib is missing."""
    from fgirewrite.bench import plot, report

    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (out / "bench.md").write_text(report.markdown(doc), encoding="utf-8")
    written = [str(out / "bench.json"), str(out / "bench.md")]
    try:
        written.append(str(plot.save(doc, out / "bench.png")))
    except plot.PlotUnavailable as exc:
        written.append(f"(no plot: {exc})")
    return written


def failed(doc: dict) -> bool:
    """Whether anything failed that is not a known limitation of the original's custom
    ``autograd.Function`` (those are reported as expected)."""
    from fgirewrite.bench import expected

    return bool(expected.unexpected(doc))


def _output(doc: dict, out: Path | None, as_json: bool) -> int:
    from fgirewrite.bench import report

    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if as_json else report.text(doc))
    if out is not None:
        for line in write(doc, out):
            sys.stderr.write(f"fgirewrite bench: wrote {line}\n")
    return EXIT_FAILED if failed(doc) else EXIT_OK


def _error(message: str) -> int:
    sys.stderr.write(f"fgirewrite: error: {message}\n")
    return EXIT_ERROR


def render(path: Path, out: Path | None, as_json: bool) -> int:
    """Print (and with ``out`` write) the reports of a saved bench.json again."""
    from fgirewrite.bench import expected, schema

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return _error(f"{path}: not a bench.json ({exc})")
    problems = schema.validate(doc) if isinstance(doc, dict) else ["not an object"]
    if problems:
        return _error(f"{path}: {problems[0]}")
    expected.annotate(doc)  # documents written before expected failures were marked
    return _output(doc, out, as_json)


def main(
    path: Path | None,
    *,
    out: Path | None,
    as_json: bool,
    quiet: bool,
    paper: bool,
    smoke: bool,
    device: str | None,
    from_json: bool = False,
    **overrides,
) -> int:
    """Check every option and the model file's entry function, then run the benchmark and
    print or write its results; the exit code."""
    if path is not None and not path.is_file():
        return _error(f"{path}: no such file")
    entry = overrides.get("entry") or "build"
    if path is None and (from_json or ":" not in entry):
        return _error("give a model file, or --entry FILE:FUNCTION or MODULE:FUNCTION")
    if out is not None and out.exists() and not out.is_dir():
        return _error(f"--out {out}: exists and is not a directory")
    if from_json:
        assert path is not None
        return render(path, out, as_json)

    import torch

    from fgirewrite.bench import models, runner, schema
    from fgirewrite.bench.progress import Progress

    cuda = (device or "auto") != "cpu" and torch.cuda.is_available()
    try:
        config = make_config(path, paper=paper, smoke=smoke, cuda=cuda, device=device, **overrides)
        target = check_device(config)
        pair = models.load(path, config.entry)
        models.check(pair, config.check_kwargs(), target)
        check_compiler(config)
    except (UsageError, models.ModelError) as exc:
        return _error(str(exc))
    progress = Progress(runner.units(config), enabled=not quiet)
    try:
        doc = runner.run(config, progress, pair)
    except models.ModelError as exc:
        progress.close()
        return _error(str(exc))
    progress.close()
    problems = schema.validate(doc)
    assert not problems, problems
    return _output(doc, out, as_json)
