"""`fgirewrite verify` on files: rewrite each in memory, verify its surrogates (and, with an
entry, the model it builds), and sum the results up for the terminal and the exit code.

Exit codes: 0 everything equivalent; 1 something not equivalent; 2 something could not be
verified (or an error: a file that cannot be read, a bad entry).
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from fgirewrite import files
from fgirewrite.execute.load import resolve, search_roots
from fgirewrite.notebook import python_source
from fgirewrite.project import Entry, EntryError
from fgirewrite.rewrite import rewrite_source
from fgirewrite.source import SourceError, internal_error
from fgirewrite.verify.model import COULD_NOT_VERIFY, EQUIVALENT, NOT_EQUIVALENT, ModelReport
from fgirewrite.verify.report import FileVerification, surrogate_verdict
from fgirewrite.verify.written import evaluate_surrogate, instability, verify_rewrite

EXIT = {EQUIVALENT: 0, NOT_EQUIVALENT: 1, COULD_NOT_VERIFY: 2}


def _defines(path: Path, name: str) -> bool:
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return False
    return any(
        isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == name for s in tree.body
    )


def resolve_entry(spec: str, paths: list[Path], found: list[Path]) -> tuple[Entry, list[Path]]:
    """The entry ``--entry`` names and the import roots its model is built with:
    ``FILE:FUNCTION``, ``MODULE:FUNCTION`` (dotted, looked up from the PATHs' and the working
    directory's import roots) or ``FUNCTION``, defined in one of the files verified."""
    default = None
    if ":" not in spec:
        defining = [p for p in found if _defines(p, spec)]
        if len(defining) != 1:
            where = ", ".join(map(str, defining)) or "none of the files verified"
            raise EntryError(
                f"entry `{spec}`: {'defined in ' if defining else ''}{where}; name it as "
                "FILE:FUNCTION or MODULE:FUNCTION"
            )
        default = defining[0]
    return resolve(spec, default, search_roots(paths))


def verify_file(path: Path, plots: Path | None, log: Callable[[str], None]) -> FileVerification:
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
    return result


def attach(results: list[FileVerification], model: ModelReport) -> None:
    """The model's report on its entry's file, listed with the files verified or after."""
    for result in results:
        if Path(result.path).resolve() == Path(model.path).resolve():
            result.model = model
            return
    results.append(FileVerification(model.path, model=model))


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
            elif surrogate_verdict(r) == COULD_NOT_VERIFY:
                lines.append(f"{s.location}: error: {s.name}: could not verify: {r.failures()[0]}")
        if f.model is not None and f.model.verdict == COULD_NOT_VERIFY:
            lines.append(
                f"{f.path}: error: --entry {f.model.entry}: could not verify: {f.model.cause}"
            )
    return lines


def model_lines(results: list[FileVerification]) -> list[str]:
    """One line per model that was compared, with its verdict, whatever ``--quiet`` says."""
    return [
        f"{f.path}: --entry {m.entry}: {m.verdict}"
        + (f": {m.cause}" if m.cause else "")
        + f" ({m.seconds:.1f} s)"
        for f in results
        if (m := f.model) is not None and m.verdict != COULD_NOT_VERIFY
    ]


def summary(results: list[FileVerification], unwritten: int = 0) -> tuple[str, int]:
    """The one-line summary and the exit code: 0 everything equivalent, 1 something not
    equivalent, 2 something could not be verified (or another error).

    ``unwritten``: reports that could not be written, counted as errors.
    """
    surrogates = Counter(surrogate_verdict(r) for f in results for _, r in f.surrogates)
    models = Counter(f.model.verdict for f in results if f.model is not None)
    broken = len(error_lines(results)) + unwritten
    total = sum(surrogates.values())
    line = (
        f"fgirewrite: {surrogates[EQUIVALENT]} of {total} surrogate{'s' * (total != 1)} "
        "verified equivalent"
    )
    if surrogates[NOT_EQUIVALENT]:
        line += f" ({surrogates[NOT_EQUIVALENT]} not equivalent)"
    if models:
        count = sum(models.values())
        line += f"; {count} model{'s' * (count != 1)}: " + ", ".join(
            f"{n} {verdict}" for verdict in EXIT if (n := models[verdict])
        )
    line += f"; {broken} error{'s' * (broken != 1)}"
    failed = surrogates[NOT_EQUIVALENT] + models[NOT_EQUIVALENT]
    return line, 2 if broken else 1 if failed else 0
