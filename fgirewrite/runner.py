"""Running the rewriter over many files: reading, rewriting in parallel, verifying, writing."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from fgirewrite import discover, files
from fgirewrite.rewrite import Rewrite, SourceError, analyse, decode, rewrite_source
from fgirewrite.surrogate import Skip, Surrogate, key


@dataclass
class Outcome:
    """What happened to one file."""

    path: str
    rewrite: Rewrite | None = None
    snapshot: files.Snapshot | None = None  # kept only for files that change
    error: str | None = None
    written: bool = False
    analysed_only: bool = False  # --check: extraction only, no rewritten source
    verification: list = field(default_factory=list)  # SurrogateReport per rewritten surrogate

    @property
    def findings(self) -> list[Surrogate | Skip]:
        return [] if self.rewrite is None else self.rewrite.findings

    @property
    def new_source(self) -> bytes | None:
        return None if self.rewrite is None else self.rewrite.new_source

    @property
    def changed(self) -> bool:
        """The rewrite changes the file (when only analysed: it would)."""
        if self.rewrite is None:
            return False
        return bool(self.rewrite.surrogates) if self.analysed_only else self.rewrite.changed

    def diff(self) -> str:
        assert self.snapshot is not None and self.new_source is not None
        before = decode(self.snapshot.data, self.path).splitlines(keepends=True)
        after = decode(self.new_source, self.path).splitlines(keepends=True)
        a, b = ("", "") if Path(self.path).is_absolute() else ("a/", "b/")
        lines = difflib.unified_diff(
            before, after, fromfile=f"{a}{self.path}", tofile=f"{b}{self.path}"
        )
        return "".join(
            line if line.endswith(("\n", "\r")) else line + "\n\\ No newline at end of file\n"
            for line in lines
        )


def process(
    path: Path, refused: dict[str, str] | None = None, analyse_only: bool = False
) -> Outcome:
    """Read and rewrite one file (or only analyse it); never raises for a bad file."""
    outcome = Outcome(str(path))
    try:
        snapshot = files.read(path)
        if analyse_only:
            result: Rewrite = analyse(snapshot.data, str(path))[0]
            result.source = b""
            outcome.rewrite, outcome.analysed_only = result, True
            return outcome
        result = rewrite_source(snapshot.data, str(path), refused)
    except (files.FileError, SourceError) as exc:
        outcome.error = str(exc)
        return outcome
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
        outcome.error = internal_error(exc)
        return outcome
    if result.changed:
        outcome.snapshot = snapshot
    else:
        result.source = b""  # not needed again; keeps parallel results small
    outcome.rewrite = result
    return outcome


def internal_error(exc: Exception) -> str:
    """One line for an exception fgirewrite did not expect on a file (a bug, or a source
    nested too deeply to analyse)."""
    if isinstance(exc, RecursionError):
        return "too deeply nested to parse"
    first = (str(exc).splitlines() or [""])[0]
    return f"internal error, file left as it is: {type(exc).__name__}: {first}"


def process_all(
    paths: Iterable[Path],
    jobs: int,
    progress: Callable[[int, int], None] | None = None,
    analyse_only: bool = False,
) -> list[Outcome]:
    """Process files, in parallel when many could define a Function; results in order.

    The cheap byte scan runs here; only files that pass it go to worker processes.
    """
    paths = list(paths)
    results: list[Outcome | None] = []
    candidates: list[int] = []
    for path in paths:
        try:
            data = files.read(path).data
        except files.FileError as exc:
            results.append(Outcome(str(path), error=str(exc)))
            continue
        if discover.may_define_function(data):
            candidates.append(len(results))
            results.append(None)
        else:
            results.append(Outcome(str(path), rewrite=Rewrite(str(path), b"")))
    if jobs <= 0:
        jobs = min(os.cpu_count() or 1, 8) if len(candidates) > 8 else 1
    work = partial(process, analyse_only=analyse_only)
    todo = [paths[i] for i in candidates]
    if jobs == 1 or len(todo) < 2:
        done: Iterable[Outcome] = map(work, todo)
        return _collect(results, candidates, done, progress)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return _collect(results, candidates, pool.map(work, todo), progress)


def _collect(
    results: list,
    slots: list[int],
    done: Iterable[Outcome],
    progress: Callable[[int, int], None] | None,
) -> list[Outcome]:
    for count, (slot, outcome) in enumerate(zip(slots, done, strict=False), start=1):
        results[slot] = outcome
        if progress:
            progress(count, len(slots))
    return results


_SECOND_ORDER = re.compile(rb"create_graph\s*=\s*True|\bhessian\s*\(")


def second_order_uses(paths: Iterable[Path]) -> list[str]:
    """``path:line`` of each place that differentiates through gradients (``create_graph=True``,
    a Hessian): there an FGI rewrite changes the result, since its gradients are first-order."""
    found = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for match in _SECOND_ORDER.finditer(data):
            line = data.count(b"\n", 0, match.start()) + 1
            found.append(f"{path}:{line}")
    return found


def verify_and_refuse(outcome: Outcome, verify: bool = True) -> None:
    """Verify a changed file's rewrites through the module as it will be written; rewrite it
    again without any that fail, until what is left verifies. Then check that a second run
    would change nothing; if it would, the file is not written."""
    from fgirewrite.verify import instability, verify_rewrite

    assert outcome.rewrite is not None and outcome.snapshot is not None
    refused: dict[str, tuple[str, str]] = {}
    while verify and outcome.rewrite.changed:
        reports = verify_rewrite(outcome.rewrite, Path(outcome.path))
        outcome.verification = reports
        failed = {
            key(s): (
                "cannot-verify" if r.cannot_run else "verification-failed",
                "; ".join(r.failures()),
            )
            for s, r in zip(outcome.rewrite.surrogates, reports, strict=True)
            if not r.ok
        }
        if not failed:
            break
        refused |= failed
        outcome.rewrite = rewrite_source(outcome.snapshot.data, outcome.path, refused)
    if outcome.rewrite.changed and (problem := instability(outcome.rewrite)) is not None:
        outcome.error = problem


def write(outcome: Outcome) -> None:
    assert outcome.snapshot is not None and outcome.rewrite is not None
    assert outcome.rewrite.new_source is not None
    try:
        files.write(outcome.snapshot, outcome.rewrite.new_source)
        outcome.written = True
    except files.FileError as exc:
        outcome.error = str(exc)
