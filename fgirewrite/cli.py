"""The ``fgirewrite`` command line.

``fgirewrite PATH...`` is ``fgirewrite rewrite PATH...``: the default command.
Exit codes: 0 nothing to do or all done; 1 changes pending or an unused skip comment
(``--check``), or a Function class left unrewritten; 2 an error (a path missing or without
Python files, a bad configuration, a file that cannot be read, parsed or written, a usage
error), each one line on stderr.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from difflib import get_close_matches
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import typer

# typer (0.29+) vendors click: its Context and exceptions live here; there is no click to import.
from typer._click.core import Context
from typer._click.exceptions import (
    BadParameter,
    ClickException,
    MissingParameter,
    NoArgsIsHelpError,
    NoSuchOption,
)
from typer.core import TyperCommand, TyperGroup

from fgirewrite import __version__, config, files, runner
from fgirewrite.project import closed_roots
from fgirewrite.reasons import EXAMPLES, REASONS
from fgirewrite.surrogate import Skip, Surrogate, key

if TYPE_CHECKING:
    from fgirewrite.project_check import ProjectReport

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    """A usage error (unknown option, bad value, missing argument) as one line, exit 2."""
    try:
        yield
    except NoArgsIsHelpError:
        raise  # ``fgirewrite`` alone: the help, as typer shows it
    except ClickException as exc:
        typer.echo(f"fgirewrite: error: {_usage_message(exc)}", err=True)
        raise typer.Exit(EXIT_ERROR) from None


def _usage_message(exc: ClickException) -> str:
    """click's message for a usage error, in one line and without a misleading suggestion."""
    if isinstance(exc, NoSuchOption):
        text = f"no such option: {exc.option_name}"
        near = get_close_matches(exc.option_name, exc.possibilities or (), n=1, cutoff=0.75)
        return text + (f" (did you mean {near[0]}?)" if near else "")
    if isinstance(exc, MissingParameter) and exc.param is not None:
        return f"missing {exc.param.param_type_name} {_argument_name(exc.param)}"
    if isinstance(exc, BadParameter) and exc.param is not None and exc.param_hint is None:
        detail = _sentence(exc.message.removeprefix("Value error, "))
        return f"invalid value for {_argument_name(exc.param)}: {detail}"
    return _sentence(exc.format_message())


def _sentence(text: str) -> str:
    """One line, lower-case first word (unless an acronym), no final full stop."""
    text = " ".join(text.split()).rstrip(".")
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _argument_name(param) -> str:
    """``PATH...``: the metavar (or the name in capitals), and ``...`` for several."""
    if param.param_type_name == "option":
        return "/".join(param.opts)
    name = param.metavar or (param.name or "").upper()
    return name + ("..." if param.nargs != 1 else "")


class _Command(TyperCommand):
    """Usage lines without typer's braces, arguments without a type (the help says it)."""

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Context, formatter) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_name(param), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class _Commands(TyperGroup):
    """``fgirewrite PATH...`` is ``fgirewrite rewrite PATH...``; usage errors are one line."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["rewrite", *args]
        return super().parse_args(ctx, args)

    def make_context(self, *args, **kwargs) -> Context:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Context):
        with _one_line_usage_errors():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    rich_markup_mode=None,  # plain help: readable at 80 columns, in a pipe and in a CI log
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


VERIFICATION_CODES = ("verification-failed", "cannot-verify", "breaks-import")


def _status(finding: Surrogate | Skip, mode: Mode, outcome: runner.Outcome) -> str:
    if isinstance(finding, Skip):
        if finding.code == "excluded":
            return "excluded"
        return "failed" if finding.code in VERIFICATION_CODES else "skipped"
    if mode is Mode.write:
        return "rewritten" if outcome.written else "not-written"
    return "would-rewrite"


def _finding_line(row: Row) -> str:
    finding, where = row.finding, row.outcome.where(row.finding.location)
    if isinstance(finding, Skip):
        verb = {
            "verification-failed": "not rewritten (verification failed)",
            "cannot-verify": "not rewritten (verification could not run here)",
            "excluded": "excluded",
            "breaks-import": "not rewritten (a module would no longer import)",
        }.get(finding.code, "skipped")
        message = row.outcome.message(finding.message)
        return f"{where}: {verb}: {finding.name} [{finding.code}] {message}"
    verb = {"rewritten": "rewrote", "would-rewrite": "would rewrite", "not-written": "not written"}[
        row.status
    ]
    grads = ", ".join(f"d/d{g.param} = {g.derivative}" for g in finding.gradients)
    return f"{where}: {verb}: {finding.name} as {row.function} ({grads})"


def _progress(total: int):
    if total < 50 or not sys.stderr.isatty():
        return None

    def show(done: int, of: int) -> None:
        sys.stderr.write(f"\rfgirewrite: {done}/{of} files")
        if done == of:
            sys.stderr.write("\r" + " " * 40 + "\r")
        sys.stderr.flush()

    return show


@app.command(
    "rewrite", cls=_Command, short_help="Show, check or write the FGI rewrite (the default)."
)
def rewrite_command(
    paths: list[Path] = typer.Argument(
        ...,
        help="Python files, notebooks or directories (recursive).",
        show_default=False,
        metavar="PATH",
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
        None,
        "--verify/--no-verify",
        help="With --write: verify each rewrite numerically first "
        "(runs the imports and definitions the surrogate needs, never "
        "the rest of the file). --no-verify writes unverified. [default: --verify]",
        show_default=False,
    ),
    output_format: Format = typer.Option(
        None,
        "--output-format",
        help="How findings are listed on stdout. [default: text]",
        show_default=False,
    ),
    jobs: int = typer.Option(
        None,
        "--jobs",
        "-j",
        help="Worker processes when more than 8 files could define a Function; 0: one per CPU. "
        "[default: 0]",
        metavar="N",
        show_default=False,
    ),
    accept_first_order: bool = typer.Option(
        None,
        runner.SECOND_ORDER_FLAG,
        help="Rewrite even when the files differentiate through gradients (create_graph=True, "
        "a Hessian, jacrev of jacrev): FGI gradients are first-order, so those second "
        "derivatives change. Without it, every surrogate is then left as it is.",
        show_default=False,
    ),
    torchscript: bool = typer.Option(
        None,
        "--torchscript",
        help="Type the literal defaults of generated functions (alpha: float = 2.0), which "
        "TorchScript needs; on without it when a file given calls torch.jit.script.",
        show_default=False,
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and the summary."),
    exclude: list[str] = typer.Option(
        None,
        "--exclude",
        help="Globs of files and folders to leave out, replacing the default list "
        "(.git, virtual environments, build folders, ...) and `exclude` in pyproject.toml; "
        "repeat it or separate globs with commas. A glob without / matches a name at any "
        "depth; one with / a path from the current folder; ** crosses folders.",
        metavar="GLOB",
        show_default=False,
    ),
    extend_exclude: list[str] = typer.Option(
        None,
        "--extend-exclude",
        help="Globs to leave out in addition to the default list and the config's.",
        metavar="GLOB",
        show_default=False,
    ),
    force_exclude: bool = typer.Option(
        None,
        "--force-exclude/--no-force-exclude",
        help="Leave out excluded paths even when they are given by name (pre-commit passes "
        "file names). [default: off]",
        show_default=False,
    ),
    show_settings: bool = typer.Option(
        False,
        "--show-settings",
        help="Print the settings that apply to each PATH and where each value comes from "
        "([tool.fgirewrite] in the closest pyproject.toml, a flag, or the default); "
        "change nothing.",
    ),
    entry: str = typer.Option(
        None,
        "--entry",
        help="With --write: FILE:FUNCTION or MODULE:FUNCTION returning (model, "
        "example_inputs). Classes verification cannot run alone (made in a factory from a "
        "config object, or fed only by the model) are verified through that model, as "
        "fgirewrite.inject verifies them, and written when that passes.",
        metavar="ENTRY",
    ),
) -> None:
    """Find surrogate Functions in PATHs and rewrite them into inline FGI.

    The default mode is --diff: show what would change, write nothing. Static modes (--diff, --check) never import or execute the files they read, so what they show is unverified: --write verifies each rewrite before writing it, and may refuse one.

    PATHs are *.py files, Jupyter notebooks (*.ipynb: their code cells, read as one module; IPython lines are kept and never run) and folders, searched recursively.

    `# fgirewrite: skip` on a class line (or its first decorator line) leaves that class alone; it is counted as excluded.

    Defaults come from [tool.fgirewrite] in the closest pyproject.toml (exclude, extend-exclude, force-exclude, pythonpath, target-version, verify, jobs, output-format); flags override it. See --show-settings.
    """  # noqa: E501 (one line per paragraph, for the help screen)
    if sum((check, diff, write)) > 1:
        _err("fgirewrite: error: choose one of --check, --diff and --write")
        raise typer.Exit(EXIT_ERROR)
    mode = Mode.check if check else Mode.write if write else Mode.diff
    if entry is not None and not (mode is Mode.write and verify is not False):
        _err("fgirewrite: error: --entry verifies what --write writes: use it with --write")
        raise typer.Exit(EXIT_ERROR)
    overrides = config.Overrides(
        exclude=_globs(exclude) if exclude else None,
        extend_exclude=_globs(extend_exclude or []),
        force_exclude=force_exclude,
        verify=verify,
        jobs=jobs,
        output_format=output_format.value if output_format is not None else None,
        accept_first_order=accept_first_order,
        torchscript=torchscript,
    )
    try:
        resolver = config.Resolver(overrides)
        if show_settings:
            _show_settings(paths, resolver)
            raise typer.Exit(EXIT_OK)
        run = resolver.settings(_common_folder(paths))
        errors: list[tuple[str, str]] = []
        outcomes, modules, project = _process(paths, resolver, run, mode, errors, entry)
    except config.ConfigError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    verify = run.verify
    errors = [_hint(path, message) for path, message in errors]
    errors += [(o.path, o.error) for o in outcomes if o.error]
    rows = [
        Row(o, f, _status(f, mode, o), o.rewrite.written_as(f) if o.rewrite else None)
        for o in outcomes
        for f in o.findings
    ]
    if run.output_format == Format.json.value:
        verified = mode is Mode.write and verify
        typer.echo(json.dumps(_json(rows, outcomes, errors, mode, verified), indent=2))
    else:
        _print_findings(rows, outcomes, modules, mode, quiet)
    for path, message in errors:
        _err(f"{path}: error: {message}")
    if any(row.rewrites for row in rows):
        _warn_second_order(outcomes)
    if not quiet and project is not None and (line := project.summary()) is not None:
        _err(line)
    _err(_summary(rows, outcomes, errors, mode, verify))

    left = any(row.status in ("skipped", "failed") for row in rows)
    pending = mode is Mode.check and any(o.changed or _unused(o) for o in outcomes)
    if errors:
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_FINDINGS if left or pending else EXIT_OK)


class Row(NamedTuple):
    """One finding as reported: its file's outcome, the finding, its status and function."""

    outcome: runner.Outcome
    finding: Surrogate | Skip
    status: str
    function: str | None

    @property
    def rewrites(self) -> bool:
        return self.status in ("rewritten", "would-rewrite")


def _globs(values: list[str]) -> tuple[str, ...]:
    """``--exclude a,b --exclude c``: the globs a, b and c."""
    return tuple(g.strip() for value in values for g in value.split(",") if g.strip())


def _common_folder(paths: list[Path]) -> Path:
    """The folder that holds every PATH: run-wide settings (--verify, --jobs, --output-format,
    --force-exclude) come from its configuration."""
    import os

    folders = [p.resolve() if p.is_dir() else p.resolve().parent for p in paths if p.exists()]
    return Path(os.path.commonpath(folders)) if folders else Path.cwd()


def _found(
    paths: list[Path], resolver: config.Resolver, force: bool, errors: list[tuple[str, str]]
) -> list[Path]:
    """The files under PATHs that no exclusion names (a PATH given by name only with
    --force-exclude). Every PATH's configuration is read first: a bad one is an error even
    where nothing else would read it."""
    for path in paths:
        resolver.settings(path)
    explicitly = resolver.excluded_explicitly if force else None
    return list(files.python_files(paths, errors, resolver.excluded, explicitly))


def _show_settings(paths: list[Path], resolver: config.Resolver) -> None:
    for i, path in enumerate(paths):
        settings = resolver.settings(path)
        excluded = resolver.excluded_explicitly(path) if path.exists() else None
        typer.echo(("\n" if i else "") + config.show(path, settings, excluded))


def _process(
    paths: list[Path],
    resolver: config.Resolver,
    run: config.Settings,
    mode: Mode,
    errors: list[tuple[str, str]],
    entry: str | None = None,
) -> tuple[list[runner.Outcome], list[runner.HelperModule], ProjectReport | None]:
    """Rewrite every file in memory, leaving alone what other files of the project rely on
    (or, unless --accept-first-order, differentiate twice); with --write, verify the written
    project and write it, all files or none (the packages' helper modules included)."""
    outcomes: list[runner.Outcome] = []
    try:
        found = _found(paths, resolver, run.force_exclude, errors)
        outcomes = runner.process_all(
            found,
            run.jobs,
            _progress(len(found)),
            analyse_only=mode is Mode.check,
            annotate=run.torchscript or None,
            closed=closed_roots(paths),
        )
        if not run.accept_first_order:
            runner.hold_back_second_order(outcomes, run.jobs)
        references = runner.refuse_cross_file(outcomes, found, paths)
        if mode is not Mode.write:
            modules = [] if mode is Mode.check else runner.helper_modules(outcomes)
            return outcomes, modules, None
        from fgirewrite.project_check import write_project

        report = write_project(outcomes, found, references, run.verify, entry, workers=run.jobs)
    except KeyboardInterrupt:
        written = any(o.written for o in outcomes)
        _err(f"fgirewrite: interrupted; {'every' if written else 'no'} file was written")
        raise typer.Exit(130) from None
    errors += report.errors
    return outcomes, report.helper_modules, report


def _print_findings(
    rows: list[Row],
    outcomes: list[runner.Outcome],
    modules: list[runner.HelperModule],
    mode: Mode,
    quiet: bool,
) -> None:
    """One line per finding and one per changed file (on stderr with --diff, whose stdout is
    the diff), then the diff."""
    for row in rows:
        if not quiet or row.status == "failed":
            typer.echo(_finding_line(row), err=mode is Mode.diff)
    for outcome in outcomes:
        for location in _unused(outcome):
            typer.echo(
                f"{outcome.where(location)}: unused skip comment: no Function class is "
                "left alone by it (it goes on the class line or its first decorator line)",
                err=mode is Mode.diff,
            )
    if not quiet and mode is not Mode.check:
        for outcome in outcomes:
            if outcome.changed and outcome.error is None and outcome.new_source is not None:
                typer.echo(_file_line(outcome, mode), err=mode is Mode.diff)
    if mode is Mode.diff:
        for module in modules:
            if module.changed:
                sys.stdout.write(module.diff())
        for outcome in outcomes:
            if outcome.changed:
                sys.stdout.write(outcome.diff())


def _file_line(outcome: runner.Outcome, mode: Mode) -> str:
    """``path: +12 -11 lines, 1 class rewritten, helpers inline``: the diff in one line."""
    assert outcome.rewrite is not None
    added = removed = 0
    for line in outcome.diff().splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    classes = len(outcome.rewrite.surrogates)
    verb = "rewritten" if mode is Mode.write and outcome.written else "to rewrite"
    spec = outcome.rewrite.helper_module
    where = "helpers inline" if spec is None else f"helpers from {spec} ({outcome.helper_path})"
    return (
        f"{outcome.path}: +{added} -{removed} lines, {classes} class{'es' * (classes != 1)} "
        f"{verb}, {where}"
    )


def _warn_second_order(outcomes: list[runner.Outcome]) -> None:
    for outcome in outcomes:
        for line, what in outcome.second_order:
            _err(
                f"{outcome.line(line)}: warning: differentiates through gradients ({what}); "
                "FGI gradients are first-order, so second derivatives through a rewritten "
                f"surrogate change ({runner.SECOND_ORDER_FLAG})"
            )


_FLAG_VALUES = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


def _hint(path: str, message: str) -> tuple[str, str]:
    """``--check true src/``: ``true`` is a path like any other; say why it is there."""
    if message == "no such file or directory" and path.lower() in _FLAG_VALUES:
        message += " (flags such as --check and --write take no value)"
    return path, message


def _summary(
    rows: list[Row], outcomes: list[runner.Outcome], errors: list, mode: Mode, verify: bool
) -> str:
    rewritten = [r for r in rows if r.rewrites]
    files_changed = {r.outcome.path for r in rewritten}
    verb = "rewrote" if mode is Mode.write else "would rewrite"
    text = (
        f"fgirewrite: {verb} {len(rewritten)} surrogate{'s' * (len(rewritten) != 1)} in "
        f"{len(files_changed)} file{'s' * (len(files_changed) != 1)}"
    )
    if rewritten and mode is not Mode.write:
        text += " (unverified: --write verifies before writing)"
    elif rewritten and not verify:
        text += " (unverified: --no-verify)"
    skipped = Counter(
        r.finding.code for r in rows if isinstance(r.finding, Skip) and r.status != "excluded"
    )
    if skipped:
        reasons = ", ".join(f"{code} ({n})" for code, n in skipped.most_common())
        text += f"; {sum(skipped.values())} left as they are: {reasons}"
    excluded = sum(r.status == "excluded" for r in rows)
    if excluded:
        text += f"; {excluded} excluded by skip comments"
    unused = sum(len(_unused(o)) for o in outcomes)
    if unused:
        text += f"; {unused} unused skip comment{'s' * (unused != 1)}"
    text += f"; {len(errors)} error{'s' * (len(errors) != 1)}"
    text += f"; {len(outcomes)} file{'s' * (len(outcomes) != 1)} checked"
    return text


# 2 added "verified", at the top level and on every finding; 3 "verification"; 4 the status
# "excluded" and its count, "unused_skip_comments", and "cell" on a notebook's findings
JSON_VERSION = 4


def _unused(outcome: runner.Outcome) -> list:
    return outcome.rewrite.unused_skips if outcome.rewrite is not None else []


def _position(outcome: runner.Outcome, line: int, column: int) -> dict:
    """``line`` and ``column``, in a notebook's cell (and ``cell``: 1-based, all cells)."""
    found = outcome.notebook.where(line) if outcome.notebook is not None else None
    if found is None:
        return {"line": line, "column": column}
    return {"cell": found[0], "line": found[1], "column": column}


def _json(
    rows: list[Row], outcomes: list[runner.Outcome], errors: list, mode: Mode, verified: bool
) -> dict:
    findings = []
    for outcome, finding, status, function in rows:
        item = {
            "path": outcome.path,
            **_position(outcome, finding.location.line, finding.location.column),
            "class": finding.name,
            "status": status,
        }
        if isinstance(finding, Skip):
            message = outcome.message(finding.message)
            item.update(code=finding.code, message=message, verified=False)
        else:
            item["function"] = function and function.removesuffix("()")
            item["gradients"] = {g.param: g.derivative for g in finding.gradients}
            item["verified"] = verified
        report = outcome.verification.get(key(finding))
        if report is not None and status != "skipped":  # --write verified it (kept or refused)
            from fgirewrite.verify.report import verification_json

            item["verification"] = verification_json(report)
        findings.append(item)
    return {
        "version": JSON_VERSION,
        "mode": mode.value,
        "verified": verified,
        "findings": findings,
        "errors": [{"path": p, "message": m} for p, m in errors],
        "files": {"checked": len(outcomes), "changed": sum(o.changed for o in outcomes)},
        "excluded": sum(status == "excluded" for _, _, status, _ in rows),
        "unused_skip_comments": [
            {"path": o.path, **_position(o, at.line, at.column)}
            for o in outcomes
            for at in _unused(o)
        ],
    }


@app.command(
    "verify", cls=_Command, short_help="Prove each rewrite gradient-equivalent (--entry: a model)."
)
def verify_command(
    paths: list[Path] = typer.Argument(
        ..., help="Python files or directories.", show_default=False, metavar="PATH"
    ),
    entry: str = typer.Option(
        None,
        "--entry",
        help="A function returning (model, example_inputs): FILE:FUNCTION or "
        "MODULE:FUNCTION anywhere in the project (MODULE dotted, as the project imports it), "
        "or FUNCTION in one of the PATHs. The original model is built from the project as "
        "written and the rewritten one from the project rewritten file by file, each in its "
        "own process; adds model-level checks (outputs, gradients over seeds, an optimizer "
        "trajectory) and the capability table.",
        metavar="ENTRY",
    ),
    batch_dim: int = typer.Option(
        0, "--batch-dim", help="Batch dimension of the inputs.", metavar="DIM"
    ),
    seeds: int = typer.Option(
        3, "--seeds", help="Seeds for the model-level gradient checks.", metavar="N"
    ),
    steps: int = typer.Option(
        3, "--steps", help="Optimizer steps for the trajectory check.", metavar="N"
    ),
    compile_backend: str = typer.Option(
        "aot_eager",
        "--compile-backend",
        help="torch.compile backend for the capability table.",
        metavar="NAME",
    ),
    json_path: Path = typer.Option(
        None, "--json", help="Write the JSON report here.", metavar="FILE"
    ),
    junit_path: Path = typer.Option(None, "--junit", help="Write JUnit XML here.", metavar="FILE"),
    markdown_path: Path = typer.Option(
        None, "--markdown", help="Write a Markdown summary here.", metavar="FILE"
    ),
    plots: Path = typer.Option(
        None, "--plots", help="Write a PNG per surrogate in this folder.", metavar="DIR"
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No tables: only errors, warnings and the summary."
    ),
) -> None:
    """Prove each rewrite gradient-equivalent to the Function it replaces.

        For every surrogate fgirewrite would rewrite: forward bit for bit and of the same dtype, gradients within each dtype's tolerance on a dense grid, random values and edge values (float32, float64, bfloat16, float16; CPU, and CUDA when available). Only the imports and definitions a surrogate needs are executed, never the rest of the file.

    Three verdicts, never mixed: equivalent, not equivalent (with the first mismatch), could not verify (with the cause and what to do). Exit 0: everything equivalent; 1: something not equivalent; 2: something could not be verified, or an error (a file that cannot be read, a bad --entry).
    """  # noqa: E501 (one line per paragraph, for the help screen)
    from fgirewrite.project import EntryError
    from fgirewrite.verify.command import (
        attach,
        error_lines,
        model_lines,
        resolve_entry,
        summary,
        verify_file,
    )
    from fgirewrite.verify.model import verify_model
    from fgirewrite.verify.report import (
        FileVerification,
        print_terminal,
        to_junit,
        to_markdown,
        write_json,
    )

    errors: list[tuple[str, str]] = []
    resolver = config.Resolver()
    try:
        run = resolver.settings(_common_folder(paths))
        found = _found(paths, resolver, run.force_exclude, errors)
    except config.ConfigError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    model = None
    if entry:
        try:
            model = resolve_entry(entry, paths, found)
        except EntryError as exc:
            _err(f"fgirewrite: error: --{exc}")
            raise typer.Exit(EXIT_ERROR) from None
    results: list[FileVerification] = []
    for path in found:
        _err(f"fgirewrite: verifying {path}")
        results.append(verify_file(path, plots, _err))
    if model is not None:
        _err(f"fgirewrite: verifying the model of --entry {entry}")
        attach(
            results,
            verify_model(
                *model,
                seeds=seeds,
                steps=steps,
                batch_dim=batch_dim,
                backend=compile_backend,
                progress=lambda what: _err(f"fgirewrite:   {entry}: {what}"),
            ),
        )
    results += [FileVerification(p, error=m) for p, m in errors]
    if not quiet:
        print_terminal(results)
    for line in model_lines(results) + error_lines(results):  # whatever --quiet says
        _err(line)
    reports = [
        (json_path, lambda path: write_json(results, path)),
        (junit_path, lambda path: path.write_text(to_junit(results), encoding="utf-8")),
        (markdown_path, lambda path: path.write_text(to_markdown(results), encoding="utf-8")),
    ]
    unwritten = 0
    for path, write_report in reports:
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_report(path)
        except OSError as exc:
            _err(f"{path}: error: cannot write the report: {exc.strerror or exc}")
            unwritten += 1
    line, code = summary(results, unwritten)
    _err(line)
    raise typer.Exit(code)


@app.command("explain", cls=_Command)
def explain_command(
    code: str = typer.Argument(None, help="A reason code; all of them if omitted.", metavar="CODE"),
) -> None:
    """Explain the reason codes for Function classes left untouched (one code: with a
    minimal example and what would make it rewritable)."""
    if code is not None and code not in REASONS:
        _err(f"fgirewrite: error: unknown reason code {code!r}")
        raise typer.Exit(EXIT_ERROR)
    for name, text in REASONS.items():
        if code in (None, name):
            typer.echo(f"{name:28s}{text}")
    if code is None:
        typer.echo(
            "\n`fgirewrite explain CODE` shows an example of one, and what makes it rewritable."
        )
        return
    example = EXAMPLES[code]
    shown = example.module or example.shown
    typer.echo("\nexample, left as it is:\n" + textwrap.indent(shown.rstrip("\n"), "    "))
    typer.echo(f"\nrewritable when: {example.fix}")


def _preset(flag: str, help: str):
    """A bench option whose default comes from the preset (quick, or --paper), named in help."""
    return typer.Option(None, flag, help=help, show_default=False)


@app.command("bench", cls=_Command, short_help="Time a model as written and as rewritten.")
def bench_command(
    path: Path = typer.Argument(
        None,
        help="A model file (optional with --entry FILE:FUNCTION or MODULE:FUNCTION). Its "
        "entry is built from the project as written and as rewritten in memory, as "
        "`fgirewrite verify --entry` builds it; no file is changed.",
        show_default=False,
    ),
    entry: str = typer.Option(
        "build",
        "--entry",
        help="FUNCTION in PATH, FILE:FUNCTION or MODULE:FUNCTION (as for verify), called as "
        "ENTRY(steps=T, batch=B, n_in=N, n_hidden=H); returns (model, inputs).",
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
