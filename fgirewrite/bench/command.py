"""``fgirewrite bench``: settings from the command line, the run, and its outputs."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from fgirewrite.bench import config as cfg

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    """Options that cannot be run."""


def make_config(
    path: Path, *, paper: bool, smoke: bool, cuda: bool, **overrides
) -> cfg.BenchConfig:
    """The quick defaults, or a preset (``paper``, ``smoke``), then every option given
    explicitly (``None`` means not given)."""
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
    for key in ("batch", "hidden", "n_in", "rounds", "threads"):
        if key in given and given[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be at least 1")
    return replace(config, **given)


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
    """Whether any requested measurement failed (checks such as jit.save are findings)."""
    cc = doc.get("compile_cache")
    return any(r["status"] != "ok" for r in doc["results"]) or bool(cc and cc["status"] != "ok")


def _output(doc: dict, out: Path | None, as_json: bool) -> int:
    from fgirewrite.bench import report

    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if as_json else report.text(doc))
    if out is not None:
        for line in write(doc, out):
            sys.stderr.write(f"fgirewrite bench: wrote {line}\n")
    return EXIT_FAILED if failed(doc) else EXIT_OK


def render(path: Path, out: Path | None, as_json: bool) -> int:
    """Print (and with ``out`` write) the reports of a saved bench.json again."""
    from fgirewrite.bench import schema

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"fgirewrite bench: error: {path}: not a bench.json ({exc})\n")
        return EXIT_ERROR
    problems = schema.validate(doc) if isinstance(doc, dict) else ["not an object"]
    if problems:
        sys.stderr.write(f"fgirewrite bench: error: {path}: {problems[0]}\n")
        return EXIT_ERROR
    return _output(doc, out, as_json)


def main(
    path: Path,
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
    """Run the benchmark and print or write its results; the exit code."""
    if not path.is_file():
        sys.stderr.write(f"fgirewrite bench: error: {path}: no such file\n")
        return EXIT_ERROR
    if from_json:
        return render(path, out, as_json)

    import torch

    from fgirewrite.bench import models, runner, schema
    from fgirewrite.bench.progress import Progress

    cuda = (device or "auto") != "cpu" and torch.cuda.is_available()
    try:
        config = make_config(path, paper=paper, smoke=smoke, cuda=cuda, device=device, **overrides)
    except UsageError as exc:
        sys.stderr.write(f"fgirewrite bench: error: {exc}\n")
        return EXIT_ERROR
    progress = Progress(runner.units(config), enabled=not quiet)
    try:
        doc = runner.run(config, progress)
    except (models.ModelError, RuntimeError) as exc:
        progress.close()
        sys.stderr.write(f"fgirewrite bench: error: {exc}\n")
        return EXIT_ERROR
    progress.close()
    problems = schema.validate(doc)
    assert not problems, problems
    return _output(doc, out, as_json)
