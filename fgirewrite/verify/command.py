"""`fgirewrite verify` on files: rewrite each in memory, verify its surrogates (and, with an
entry, its model), and sum the results up for the terminal and the exit code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fgirewrite import files
from fgirewrite.notebook import python_source
from fgirewrite.rewrite import rewrite_source
from fgirewrite.source import SourceError, internal_error
from fgirewrite.verify.model import verify_model
from fgirewrite.verify.report import FileVerification
from fgirewrite.verify.written import evaluate_surrogate, instability, verify_rewrite


def verify_file(
    path: Path,
    entry: str | None,
    batch_dim: int,
    seeds: int,
    steps: int,
    backend: str,
    plots: Path | None,
    log: Callable[[str], None],
) -> FileVerification:
    """Everything verified about one file; errors are recorded in the result, never raised."""
    result = FileVerification(str(path))
    try:
        rewrite = rewrite_source(python_source(files.read(path).data, str(path)), str(path))
    except (files.FileError, SourceError) as exc:
        result.error = str(exc)
        return result
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
        result.error = internal_error(exc)
        return result
    result.skipped = rewrite.skipped
    result.surrogates = list(zip(rewrite.surrogates, verify_rewrite(rewrite, path), strict=True))
    if rewrite.changed and (problem := instability(rewrite)) is not None:
        result.error = problem
    if plots is not None:
        from fgirewrite.verify.plot import plot_surrogate

        for surrogate, report in result.surrogates:
            if report.error is None:
                name = f"{path.stem}.{surrogate.name.replace('<locals>', 'locals')}.png"
                try:
                    original, fgi, call_args, _ = evaluate_surrogate(rewrite, surrogate, path)
                    plot_surrogate(original, fgi, surrogate, plots / name, call_args)
                except Exception as exc:  # noqa: BLE001 - a plot never fails verification
                    log(f"{path}: warning: no plot for {surrogate.name}: {exc}")
    if entry:
        file_part, _, name = entry.rpartition(":")
        if not file_part or Path(file_part).resolve() == path.resolve():
            result.model = verify_model(
                path,
                name,
                seeds,
                steps,
                batch_dim,
                backend,
                progress=lambda what: log(f"fgirewrite:   {path}: {what}"),
            )
    return result


def error_lines(results: list[FileVerification]) -> list[str]:
    """One ``where: error: ...`` line per error (a file, a surrogate, a model that could not
    be verified): what the summary counts, printed whatever ``--quiet`` says."""
    lines = []
    for f in results:
        if f.error:
            lines.append(f"{f.path}: error: {f.error}")
        for s, r in f.surrogates:
            if r.error:
                lines.append(f"{s.location}: error: {s.name}: {r.error}")
        if f.model is not None and f.model.error:
            lines.append(f"{f.path}: error: --entry {f.model.entry}: {f.model.error}")
    return lines


def summary(results: list[FileVerification], unwritten: int = 0) -> tuple[str, int]:
    """The one-line summary and the exit code: 0 all verified, 1 a mismatch, 2 an error.

    ``unwritten``: reports that could not be written, counted as errors.
    """
    surrogates = [r for f in results for _, r in f.surrogates]
    models = [f.model for f in results if f.model is not None]
    failed = sum(not r.ok for r in surrogates) + sum(not m.ok for m in models)
    broken = len(error_lines(results)) + unwritten
    line = (
        f"fgirewrite: {len(surrogates) - sum(not r.ok for r in surrogates)} of {len(surrogates)}"
        f" surrogate{'s' * (len(surrogates) != 1)} verified equivalent"
        + (
            f"; {len(models)} model{'s' * (len(models) != 1)}: "
            f"{sum(m.ok for m in models)} equivalent"
            if models
            else ""
        )
        + f"; {broken} error{'s' * (broken != 1)}"
    )
    return line, 2 if broken else 1 if failed else 0
