"""Running the rewriter over many files: reading, rewriting in parallel, verifying, writing."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

from fgirewrite import discover, files
from fgirewrite.rewrite.result import Rewrite
from fgirewrite.source import SourceError, decode, internal_error
from fgirewrite.surrogate import Skip, Surrogate, key

if TYPE_CHECKING:
    from fgirewrite.rewrite.crossfile import References
    from fgirewrite.verify.pair import SurrogateReport


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
    # key(surrogate) -> (code, why): left alone for what other files do with it (a subclass
    # elsewhere, a module that no longer imports), whatever its own file's rewrite says
    imposed: dict[str, tuple[str, str]] = field(default_factory=dict)

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
                data = files.read(path).data
            except files.FileError as exc:
                results[index] = Outcome(str(path), error=str(exc))
                continue
            second[index] = second_order_lines(data)
            if not discover.may_define_function(data):
                results[index] = Outcome(str(path), rewrite=Rewrite(str(path), b""))
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


def impose(outcome: Outcome, refusals: dict[str, tuple[str, str]]) -> None:
    """Leave classes of a file alone for what other files do with them (``refusals``: key ->
    code and why), and rewrite the file again without them."""
    outcome.imposed |= refusals
    fresh = process(Path(outcome.path), outcome.imposed)
    outcome.rewrite, outcome.snapshot, outcome.error = fresh.rewrite, fresh.snapshot, fresh.error
    outcome.analysed_only = False


ENTRY_HINT = (
    "; `--write --entry FILE:FUNCTION` verifies it through a model that uses it, where "
    "FUNCTION returns (model, example_inputs)"
)


def verify_and_refuse(
    outcome: Outcome,
    verify: bool = True,
    pythonpath: Sequence[Path] = (),
    vouched: Callable[[Surrogate], SurrogateReport | str] | None = None,
) -> None:
    """Verify a changed file's rewrites through the module as it will be written (with the
    import roots ``pythonpath`` adds); rewrite it again without any that fail, until what is
    left verifies. A surrogate verification cannot run alone passes when ``vouched`` gives
    it a passing report (its model's, with ``--entry``), or else says why it does not. Then
    check that a second run would change nothing; if it would, the file is not written."""
    from fgirewrite.rewrite.edit import rewrite_source
    from fgirewrite.verify.written import instability, verify_rewrite

    assert outcome.rewrite is not None and outcome.snapshot is not None
    refused: dict[str, tuple[str, str]] = dict(outcome.imposed)
    while verify and outcome.rewrite.changed:
        surrogates = outcome.rewrite.surrogates
        reports = verify_rewrite(outcome.rewrite, Path(outcome.path), pythonpath)
        outcome.verification.update((key(s), r) for s, r in zip(surrogates, reports, strict=True))
        failed = {}
        for surrogate, report in zip(surrogates, reports, strict=True):
            if report.ok:
                continue
            if report.cannot_run and vouched is not None:
                live = vouched(surrogate)
                if not isinstance(live, str):
                    outcome.verification[key(surrogate)] = live
                    continue
                failed[key(surrogate)] = ("cannot-verify", "; ".join(report.failures()) + live)
            else:
                failed[key(surrogate)] = _refusal(report)
        if not failed:
            break
        refused |= failed
        outcome.rewrite = rewrite_source(outcome.snapshot.data, outcome.path, refused)
    imposed = {name.rpartition("@")[0] for name in outcome.imposed}
    if outcome.rewrite.changed and (problem := instability(outcome.rewrite, imposed)) is not None:
        outcome.error = problem


def _refusal(report: SurrogateReport) -> tuple[str, str]:
    why = "; ".join(report.failures())
    if not report.cannot_run:
        return "verification-failed", why
    if not report.unverifiable:  # the probes could not run it: a model can
        why += ENTRY_HINT
    return "cannot-verify", why


def refuse_cross_file(
    outcomes: list[Outcome],
    found: Sequence[Path],
    given: Sequence[Path] = (),
    pythonpath: Sequence[Path] = (),
) -> References:
    """Leave alone each class that a use in another file of the project would break, with the
    reason naming that file and line; every use found, for the project's import check. The
    project: the files ``found`` (under the paths ``given``), and those of the packages of
    the classes about to be rewritten."""
    from fgirewrite.project import package_of
    from fgirewrite.rewrite.crossfile import ClassRef, References, find_references, global_reads

    candidates: dict[ClassRef, list[tuple[Outcome, Surrogate]]] = {}
    for outcome in outcomes:
        for surrogate in outcome.rewrite.surrogates if outcome.rewrite else ():
            if "<locals>" not in surrogate.name:
                where = ClassRef(Path(outcome.path).resolve(), surrogate.name)
                candidates.setdefault(where, []).append((outcome, surrogate))
    if not candidates:
        return References()
    scope = list(found)
    folders = [Path(g).resolve() for g in given if Path(g).is_dir()]
    for path in {c.path for c in candidates}:
        name, base = package_of(path)
        top = base / name.split(".")[0]
        if "." in name and not any(f == top or f in top.parents for f in folders):
            scope += files.python_files([top], [])
    reads = {c: {n for _, s in candidates[c] for n in global_reads(s)} for c in candidates}
    references = find_references(candidates, scope, pythonpath, shown(outcomes), reads)
    refused: dict[int, tuple[Outcome, dict[str, tuple[str, str]]]] = {}
    for cls, reason in references.refusals().items():
        for outcome, surrogate in candidates[cls]:
            entry = refused.setdefault(id(outcome), (outcome, {}))
            entry[1][key(surrogate)] = reason
    for outcome, refusals in refused.values():
        impose(outcome, refusals)
    return references


def shown(outcomes: list[Outcome]) -> Callable[[Path], str]:
    """How to print a resolved path: as given on the command line, or relative to the
    working folder when under it."""
    given: dict[Path, str] = {}

    def show(path: Path) -> str:
        if not given:  # once, when first needed: most runs never print one
            given.update((Path(o.path).resolve(), o.path) for o in outcomes)
        if path in given:
            return given[path]
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    return show
