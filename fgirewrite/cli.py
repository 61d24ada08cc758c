"""The ``fgirewrite`` command line.

``fgirewrite PATH...`` is ``fgirewrite rewrite PATH...``: the default command.
Exit codes: 0 nothing to do or all done; 1 changes pending (``--check``) or a Function class
left unrewritten; 2 an error (a path, a file that cannot be read, parsed or written).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from enum import Enum
from pathlib import Path

import typer
from typer.core import TyperGroup

from fgirewrite import __version__, files, runner
from fgirewrite.reasons import REASONS
from fgirewrite.surrogate import Skip, Surrogate

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class _DefaultToRewrite(TyperGroup):
    """Treat ``fgirewrite PATH...`` as ``fgirewrite rewrite PATH...``."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["rewrite", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultToRewrite,
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Rewrite torch.autograd.Function surrogate gradients into inline forward gradient "
    "injection (FGI), and prove each rewrite gradient-equivalent.\n\n"
    "`fgirewrite PATH...` is short for `fgirewrite rewrite PATH...`.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fgirewrite {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """fgirewrite: surrogate-gradient Functions to inline FGI."""


class Mode(str, Enum):
    diff = "diff"
    check = "check"
    write = "write"


class Format(str, Enum):
    text = "text"
    json = "json"


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _status(finding: Surrogate | Skip, mode: Mode, outcome: runner.Outcome) -> str:
    if isinstance(finding, Skip):
        return "failed" if finding.code in ("verification-failed", "cannot-verify") else "skipped"
    if mode is Mode.write:
        return "rewritten" if outcome.written else "not-written"
    return "would-rewrite"


def _finding_line(finding: Surrogate | Skip, status: str, function: str | None) -> str:
    if isinstance(finding, Skip):
        verb = {
            "verification-failed": "not rewritten (verification failed)",
            "cannot-verify": "not rewritten (verification could not run here)",
        }.get(finding.code, "skipped")
        return f"{finding.location}: {verb}: {finding.name} [{finding.code}] {finding.message}"
    verb = {"rewritten": "rewrote", "would-rewrite": "would rewrite", "not-written": "not written"}[
        status
    ]
    grads = ", ".join(f"d/d{g.param} = {g.derivative}" for g in finding.gradients)
    return f"{finding.location}: {verb}: {finding.name} as {function}() ({grads})"


def _progress(total: int):
    if total < 50 or not sys.stderr.isatty():
        return None

    def show(done: int, of: int) -> None:
        sys.stderr.write(f"\rfgirewrite: {done}/{of} files")
        if done == of:
            sys.stderr.write("\r" + " " * 40 + "\r")
        sys.stderr.flush()

    return show


@app.command("rewrite")
def rewrite_command(
    paths: list[Path] = typer.Argument(
        ..., help="Python files or directories (recursive).", show_default=False
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="Write nothing; exit 1 if anything would change or a "
        "Function class would be left unrewritten. For CI and "
        "pre-commit.",
    ),
    diff: bool = typer.Option(
        False, "--diff", help="Print a unified diff and write nothing (the default)."
    ),
    write: bool = typer.Option(
        False, "--write", help="Rewrite files in place, atomically, after verifying each rewrite."
    ),
    verify: bool = typer.Option(
        True,
        "--verify/--no-verify",
        help="With --write: verify each rewrite numerically first "
        "(runs the imports and definitions the surrogate needs, never "
        "the rest of the file). --no-verify writes unverified.",
    ),
    output_format: Format = typer.Option(
        Format.text, "--output-format", help="How findings are listed on stdout."
    ),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Worker processes; 0 chooses."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and the summary."),
) -> None:
    """Find surrogate Functions in PATHs and rewrite them into inline FGI.

    The default mode is --diff: show what would change, write nothing. Static modes
    (--diff, --check) never import or execute the files they read.
    """
    if sum((check, diff, write)) > 1:
        _err("fgirewrite: error: choose one of --check, --diff and --write")
        raise typer.Exit(EXIT_ERROR)
    mode = Mode.check if check else Mode.write if write else Mode.diff
    errors: list[tuple[str, str]] = []
    try:
        found = list(files.python_files(paths, errors))
        outcomes = runner.process_all(found, jobs, _progress(len(found)), analyse_only=check)
    except KeyboardInterrupt:
        _err("fgirewrite: interrupted; no file was written")
        raise typer.Exit(130) from None

    if mode is Mode.write:
        try:
            for outcome in outcomes:
                if outcome.changed:
                    runner.verify_and_refuse(outcome, verify)
                if outcome.changed and outcome.error is None:
                    runner.write(outcome)
        except KeyboardInterrupt:
            _err("fgirewrite: interrupted; files already written are complete, the rest untouched")
            raise typer.Exit(130) from None

    errors += [(o.path, o.error) for o in outcomes if o.error]
    rows = []
    for outcome in outcomes:
        for finding in outcome.findings:
            status = _status(finding, mode, outcome)
            function = outcome.rewrite.function(finding) if outcome.rewrite else None
            rows.append((outcome, finding, status, function))

    if output_format is Format.json:
        typer.echo(json.dumps(_json(rows, outcomes, errors, mode), indent=2))
    else:
        stream_err = mode is Mode.diff
        for _outcome, finding, status, function in rows:
            if quiet and status != "failed":
                continue
            typer.echo(_finding_line(finding, status, function), err=stream_err)
        if mode is Mode.diff:
            for outcome in outcomes:
                if outcome.changed:
                    sys.stdout.write(outcome.diff())
    for path, message in errors:
        _err(f"{path}: error: {message}")
    if any(row[2] in ("rewritten", "would-rewrite") for row in rows):
        for where in runner.second_order_uses(found):
            _err(
                f"{where}: warning: differentiates through gradients; FGI gradients are "
                "first-order, so second derivatives through a rewritten surrogate change"
            )
    _err(_summary(rows, outcomes, errors, mode))

    left = any(status in ("skipped", "failed") for _, _, status, _ in rows)
    pending = mode is Mode.check and any(o.changed for o in outcomes)
    if errors:
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_FINDINGS if left or pending else EXIT_OK)


def _summary(rows: list, outcomes: list[runner.Outcome], errors: list, mode: Mode) -> str:
    rewritten = [r for r in rows if r[2] in ("rewritten", "would-rewrite")]
    files_changed = {r[0].path for r in rewritten}
    verb = "rewrote" if mode is Mode.write else "would rewrite"
    text = (
        f"fgirewrite: {verb} {len(rewritten)} surrogate{'s' * (len(rewritten) != 1)} in "
        f"{len(files_changed)} file{'s' * (len(files_changed) != 1)}"
    )
    skipped = Counter(r[1].code for r in rows if r[2] in ("skipped", "failed"))
    if skipped:
        reasons = ", ".join(f"{code} ({n})" for code, n in skipped.most_common())
        text += f"; {sum(skipped.values())} left as they are: {reasons}"
    text += f"; {len(errors)} error{'s' * (len(errors) != 1)}"
    text += f"; {len(outcomes)} file{'s' * (len(outcomes) != 1)} checked"
    return text


def _json(rows: list, outcomes: list[runner.Outcome], errors: list, mode: Mode) -> dict:
    findings = []
    for outcome, finding, status, function in rows:
        item = {
            "path": outcome.path,
            "line": finding.location.line,
            "column": finding.location.column,
            "class": finding.name,
            "status": status,
        }
        if isinstance(finding, Skip):
            item.update(code=finding.code, message=finding.message)
        else:
            item["function"] = function
            item["gradients"] = {g.param: g.derivative for g in finding.gradients}
        findings.append(item)
    return {
        "version": 1,
        "mode": mode.value,
        "findings": findings,
        "errors": [{"path": p, "message": m} for p, m in errors],
        "files": {"checked": len(outcomes), "changed": sum(o.changed for o in outcomes)},
    }


@app.command("verify")
def verify_command(
    paths: list[Path] = typer.Argument(
        ..., help="Python files or directories.", show_default=False
    ),
    entry: str = typer.Option(
        None,
        "--entry",
        help="NAME or FILE:NAME of a function returning (model, example_inputs). Adds "
        "model-level checks (outputs, gradients over seeds, an optimizer trajectory) and the "
        "capability table. Runs that function and the imports and definitions it needs.",
    ),
    batch_dim: int = typer.Option(0, "--batch-dim", help="Batch dimension of the inputs."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds for the model-level gradient checks."),
    steps: int = typer.Option(3, "--steps", help="Optimizer steps for the trajectory check."),
    compile_backend: str = typer.Option(
        "aot_eager", "--compile-backend", help="torch.compile backend for the capability table."
    ),
    json_path: Path = typer.Option(None, "--json", help="Write the JSON report here."),
    junit_path: Path = typer.Option(None, "--junit", help="Write JUnit XML here."),
    markdown_path: Path = typer.Option(None, "--markdown", help="Write a Markdown summary here."),
    plots: Path = typer.Option(None, "--plots", help="Write a PNG per surrogate in this folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No tables, only the summary."),
) -> None:
    """Prove each rewrite gradient-equivalent to the Function it replaces.

    For every surrogate fgirewrite would rewrite: forward bit for bit and of the same dtype,
    gradients within each dtype's tolerance on a dense grid, random values and edge values
    (float32, float64, bfloat16, float16; CPU, and CUDA when available). Only the imports and
    definitions a surrogate needs are executed, never the rest of the file. Exit 0 only when
    everything verified; 1 on a mismatch; 2 on an error.
    """
    from fgirewrite.verify.command import summary, verify_file
    from fgirewrite.verify.report import (
        FileVerification,
        print_terminal,
        to_junit,
        to_markdown,
        write_json,
    )

    errors: list[tuple[str, str]] = []
    results: list[FileVerification] = []
    for path in files.python_files(paths, errors):
        _err(f"fgirewrite: verifying {path}")
        results.append(
            verify_file(path, entry, batch_dim, seeds, steps, compile_backend, plots, _err)
        )
    results += [FileVerification(p, error=m) for p, m in errors]
    if not quiet:
        print_terminal(results)
    if json_path:
        write_json(results, json_path)
    if junit_path:
        junit_path.write_text(to_junit(results), encoding="utf-8")
    if markdown_path:
        markdown_path.write_text(to_markdown(results), encoding="utf-8")
    line, code = summary(results)
    _err(line)
    raise typer.Exit(code)


@app.command("explain")
def explain_command(
    code: str = typer.Argument(None, help="A reason code; all of them if omitted."),
) -> None:
    """Explain the reason codes for Function classes left untouched."""
    if code is not None and code not in REASONS:
        _err(f"fgirewrite: error: unknown reason code {code!r}")
        raise typer.Exit(EXIT_ERROR)
    for name, text in REASONS.items():
        if code in (None, name):
            typer.echo(f"{name:28s}{text}")


def _preset(flag: str, help: str):
    """A bench option whose default comes from the preset (quick, or --paper), named in help."""
    return typer.Option(None, flag, help=help, show_default=False)


@app.command("bench")
def bench_command(
    path: Path = typer.Argument(
        ...,
        help="A model file. Imported (its top level runs) as "
        "written and as rewritten in memory; the file is not changed.",
        show_default=False,
    ),
    entry: str = typer.Option(
        "build",
        "--entry",
        help="Function in PATH called as ENTRY(steps=T, batch=B, "
        "n_in=N, n_hidden=H); returns (model, inputs).",
    ),
    paper: bool = typer.Option(
        False,
        "--paper",
        help="The FGI paper's protocol: T in 28,49,98,196,392,784; "
        "batch 128; 128 neurons; n_in = 784/T; matmul precision "
        "'high'; compile cost measured when a compile mode is selected. Hours on a CPU.",
    ),
    smoke: bool = typer.Option(
        False,
        "--smoke",
        help="Every code path in about 15 s: a tiny model, one short round, 1 thread, "
        "torch.compile with the aot_eager backend (the figures mean nothing). Add "
        "--compile-cache for the fresh-process compile runs (about a minute more).",
    ),
    lengths: str = _preset("--lengths", "Sequence lengths, e.g. 28,49 (or 'paper'). (default: 8)"),
    batch: int = _preset("--batch", "(default: 16)"),
    hidden: int = _preset("--hidden", "Neurons (n_hidden). (default: 32)"),
    n_in: int = _preset("--n-in", "Inputs per step. (default: 784 // T)"),
    modes: str = _preset(
        "--modes", "Comma list of eager, script, compile, compile-fullgraph. (default: all)"
    ),
    compile_mode: str = _preset(
        "--compile-mode",
        "torch.compile mode: default, reduce-overhead, max-autotune, ... (default: default)",
    ),
    compile_backend: str = _preset(
        "--compile-backend",
        "torch.compile backend: inductor, or a cheap check such as aot_eager or eager. "
        "(default: inductor; aot_eager with --smoke)",
    ),
    min_time: float = _preset(
        "--min-time", "Seconds of timing per cell and round (blocked_autorange). (default: 0.25)"
    ),
    rounds: int = _preset(
        "--rounds", "Rounds per cell, original and FGI alternating. (default: 4)"
    ),
    warmup: int = _preset("--warmup", "Untimed calls after the first ones. (default: 3)"),
    threads: int = _preset(
        "--threads", "torch.set_num_threads. (default: torch's; 1 with --smoke)"
    ),
    device: str = _preset("--device", "auto (CUDA if available), cpu or cuda. (default: auto)"),
    matmul_precision: str = _preset(
        "--matmul-precision", "torch.set_float32_matmul_precision (highest, high, medium)."
    ),
    memory: bool = _preset("--memory/--no-memory", "Peak memory of a training step. (default: on)"),
    compile_cache: bool = _preset(
        "--compile-cache/--no-compile-cache",
        "Cold and warm compile time in fresh processes. (default: on with --paper when a "
        "compile mode is selected)",
    ),
    out: Path = typer.Option(
        None, "--out", help="Write bench.json, bench.md and bench.png here.", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON document, not the table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    from_json: bool = typer.Option(
        False,
        "--from-json",
        help="PATH is a saved bench.json: print its report (and with --out write it) again.",
    ),
) -> None:
    """Time a model as written and as rewritten: eager, TorchScript and torch.compile.

    Training step (forward + backward; no optimizer step), the paper's inference (forward with grad on) and a torch.no_grad() forward, with speedups over eager + original.

    Options and the model file's entry function are checked first (one forward at a tiny size), before any warm-up or compile.

    Exit 0 when everything ran or failed only as expected (known limitations of the original's custom Function: TorchScript cannot save it, torch.func refuses it), 1 on an unexpected failure (shown with its error), 2 on a bad option or model file. See docs/bench.md.
    """  # noqa: E501 (one line per paragraph, for the help screen)
    from fgirewrite.bench import command

    raise typer.Exit(
        command.main(
            path,
            out=out,
            as_json=as_json,
            quiet=quiet,
            paper=paper,
            smoke=smoke,
            device=device,
            from_json=from_json,
            entry=entry,
            lengths=lengths,
            batch=batch,
            hidden=hidden,
            n_in=n_in,
            modes=modes,
            compile_mode=compile_mode,
            compile_backend=compile_backend,
            min_run_time=min_time,
            rounds=rounds,
            warmup=warmup,
            threads=threads,
            matmul_precision=matmul_precision,
            memory=memory,
            compile_cache=compile_cache,
        )
    )


def main() -> None:
    """Console-script entry point."""
    app()
