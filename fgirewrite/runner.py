"""Running the rewriter over many files: reading, rewriting in parallel, verifying, writing."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import cast

from fgirewrite import discover, files, notebook, skips
from fgirewrite.rewrite.result import Rewrite
from fgirewrite.source import SourceError, decode, internal_error
from fgirewrite.surrogate import Location, Skip, Surrogate, key


@dataclass
class Outcome:
    """What happened to one file."""

    path: str
    rewrite: Rewrite | None = None
    snapshot: files.Snapshot | None = None  # kept only for files that change
    error: str | None = None
    written: bool = False
    analysed_only: bool = False  # --check: extraction only, no rewritten source
    # --write: key(surrogate) -> its SurrogateReport, for each surrogate verified (refused
    # ones too: a Skip has the key of the surrogate it was)
    verification: dict = field(default_factory=dict)
    second_order: list[int] = field(default_factory=list)  # lines: see second_order_lines
    notebook: notebook.Notebook | None = None  # a notebook's cells, read as one module

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

    def where(self, location: Location) -> str:
        """``path:line:col``, or in a notebook ``path:cell N:line:col``."""
        return str(location) if self.notebook is None else self.notebook.location(location)

    def line(self, line: int) -> str:
        """``path:line``, or in a notebook ``path:cell N:line``."""
        found = self.notebook.where(line) if self.notebook is not None else None
        return f"{self.path}:{line}" if found is None else f"{self.path}:cell {found[0]}:{found[1]}"

    def message(self, text: str) -> str:
        """A message whose ``line N`` is the module's, told in a notebook's cells."""
        return text if self.notebook is None else self.notebook.relocate(text)

    def output(self) -> bytes:
        """The bytes to write: the rewritten source, or the notebook with its cells."""
        assert self.new_source is not None
        if self.notebook is None:
            return self.new_source
        return self.notebook.render(self.new_source)

    def diff(self) -> str:
        assert self.snapshot is not None and self.new_source is not None
        if self.notebook is not None:
            return self.notebook.diff(self.new_source)
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
    path: Path,
    refused: dict[str, tuple[str, str]] | None = None,
    analyse_only: bool = False,
) -> Outcome:
    """Read and rewrite one file (or only analyse it); never raises for a bad file."""
    # Imported here: the main process of ``--check`` forks its workers before it needs libcst.
    from fgirewrite.rewrite.edit import analyse, rewrite_source

    outcome = Outcome(str(path))
    try:
        snapshot = files.read(path)
        data, outcome.notebook = _module(snapshot.data, str(path))
        if analyse_only:
            result: Rewrite = analyse(data, str(path))[0]
            result.source = b""
            outcome.rewrite, outcome.analysed_only = result, True
            return outcome
        result = rewrite_source(data, str(path), refused)
        if result.changed and outcome.notebook is not None:
            outcome.notebook.render(result.new_source or b"")  # its cells come back whole
    except (files.FileError, SourceError) as exc:
        outcome.error = outcome.message(str(exc))
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


def _module(data: bytes, path: str) -> tuple[bytes, notebook.Notebook | None]:
    """The module a file is read as, and the notebook it comes from, if it is one."""
    if not notebook.is_notebook(path):
        return data, None
    found = notebook.read(data, path)
    return found.module, found


PARALLEL_FROM = 8  # candidate files; fewer are rewritten in this process


def process_all(
    paths: Iterable[Path],
    jobs: int,
    progress: Callable[[int, int], None] | None = None,
    analyse_only: bool = False,
) -> list[Outcome]:
    """Process files, in parallel when many could define a Function; results in order.

    The cheap byte scan runs here, file after file; the files that pass it are handed to
    worker processes as they are found, so the workers parse while the scan goes on. Each
    outcome records the file's second-order uses (``second_order``), found by the same scan.
    """
    paths = list(paths)
    results: list[Outcome | None] = [None] * len(paths)
    work = partial(process, analyse_only=analyse_only)
    workers = jobs if jobs > 0 else available_cpus()
    pool: ProcessPoolExecutor | None = None
    pending: list[int] = []  # candidates not handed out yet
    futures: dict[int, Future] = {}
    second: dict[int, list[int]] = {}
    try:
        for index, path in enumerate(paths):
            try:
                data, book = _module(files.read(path).data, str(path))
            except (files.FileError, SourceError) as exc:
                results[index] = Outcome(str(path), error=str(exc))
                continue
            second[index] = second_order_lines(data)
            if not discover.may_define_function(data) and not skips.mentioned(data):
                rewrite = Rewrite(str(path), b"")
                results[index] = Outcome(str(path), rewrite=rewrite, notebook=book)
                continue
            pending.append(index)
            if pool is None and workers > 1 and len(pending) > PARALLEL_FROM:
                import fgirewrite.rewrite.edit  # noqa: F401 - once here, not in every worker

                pool = ProcessPoolExecutor(max_workers=workers)
            if pool is not None:
                futures.update((i, pool.submit(work, paths[i])) for i in pending)
                pending.clear()
        _collect(results, paths, pending, futures, work, progress)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    for index, lines in second.items():
        outcome = results[index]
        assert outcome is not None
        outcome.second_order = lines
    return cast(list[Outcome], results)  # every path has its outcome now


def _collect(
    results: list[Outcome | None],
    paths: list[Path],
    local: list[int],
    futures: dict[int, Future],
    work: Callable[[Path], Outcome],
    progress: Callable[[int, int], None] | None,
) -> None:
    total = len(local) + len(futures)
    done = 0
    for index in local:
        results[index] = work(paths[index])
        done += 1
        if progress:
            progress(done, total)
    slots = {future: index for index, future in futures.items()}
    for future in as_completed(slots):
        index = slots[future]
        try:
            results[index] = future.result()
        except BrokenProcessPool:  # a worker killed (out of memory, a signal): say so per file
            results[index] = Outcome(
                str(paths[index]), error="internal error, file left as it is: its worker died"
            )
        done += 1
        if progress:
            progress(done, total)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity, not the machine's count), at most 8."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(1, min(count, 8))


# Each pattern starts with a literal, which ``re`` scans for quickly; ``hessian`` must be a word.
_SECOND_ORDER = (re.compile(rb"create_graph\s*=\s*True"), re.compile(rb"hessian\s*\("))
_WORD_BYTE = re.compile(rb"\w")


def second_order_lines(data: bytes) -> list[int]:
    """Lines that differentiate through gradients (``create_graph=True``, a Hessian): there
    an FGI rewrite changes the result, since its gradients are first-order."""
    starts = []
    for pattern in _SECOND_ORDER:
        for match in pattern.finditer(data):
            at = match.start()
            if pattern is _SECOND_ORDER[0] or not (at and _WORD_BYTE.match(data, at - 1)):
                starts.append(at)
    return [data.count(b"\n", 0, at) + 1 for at in sorted(starts)]


def verify_and_refuse(outcome: Outcome, verify: bool = True) -> None:
    """Verify a changed file's rewrites through the module as it will be written; rewrite it
    again without any that fail, until what is left verifies. Then check that a second run
    would change nothing; if it would, the file is not written."""
    from fgirewrite.rewrite.edit import rewrite_source
    from fgirewrite.verify.written import instability, verify_rewrite

    assert outcome.rewrite is not None and outcome.snapshot is not None
    refused: dict[str, tuple[str, str]] = {}
    while verify and outcome.rewrite.changed:
        reports = verify_rewrite(outcome.rewrite, Path(outcome.path))
        outcome.verification.update(
            (key(s), r) for s, r in zip(outcome.rewrite.surrogates, reports, strict=True)
        )
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
        outcome.rewrite = rewrite_source(outcome.rewrite.source, outcome.path, refused)
    if outcome.rewrite.changed and (problem := instability(outcome.rewrite)) is not None:
        outcome.error = problem
    if outcome.rewrite.changed and outcome.error is None and outcome.notebook is not None:
        try:
            outcome.notebook.render(outcome.rewrite.new_source or b"")
        except SourceError as exc:
            outcome.error = str(exc)


def write(outcome: Outcome) -> None:
    assert outcome.snapshot is not None and outcome.rewrite is not None
    assert outcome.rewrite.new_source is not None
    try:
        files.write(outcome.snapshot, outcome.output())
        outcome.written = True
    except files.FileError as exc:
        outcome.error = str(exc)
