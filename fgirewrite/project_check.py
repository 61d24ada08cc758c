"""``--write`` over a project: verify the written project, then write it all or none.

After each file's rewrites are verified (``runner.verify_and_refuse``), with ``--entry``
the classes verification cannot run alone are verified through the model the entry builds,
as ``fgirewrite.inject`` verifies them live. Then every module of the project that imported
before the change must import after it, from the rewritten sources, in a scratch copy of
the project (``execute.imports``: a fresh process per module, a time limit, several at a
time; a module whose top level trains is not imported). A class whose rewrite stops a module
from importing (a TorchScript function that calls it compiles its FGI function at import)
is left alone with the reason, and the rest is checked again. Only then are the files
replaced, all or none (``files.write_all``).
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fgirewrite import files, runner
from fgirewrite.execute.imports import ImportCheckError, Importer, Job, Result, script_line
from fgirewrite.project import (
    Entry,
    EntryError,
    import_roots,
    package_files,
    package_of,
    parse_entry,
    project_root,
)
from fgirewrite.rewrite.crossfile import Project, References
from fgirewrite.surrogate import Surrogate, key

if TYPE_CHECKING:
    from fgirewrite.verify.pair import SurrogateReport

TIMEOUT = 120.0  # seconds for one module's import
ROUNDS = 4  # import checks at most: each round after the first leaves more classes alone


@dataclass
class ProjectReport:
    """What the project-level steps of ``--write`` did."""

    imported: int = 0  # modules that imported before and after the rewrite
    scripts: list[tuple[str, int, str]] = field(default_factory=list)  # not imported: where, why
    not_importing: list[tuple[str, str]] = field(default_factory=list)  # before the change
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path or option, message)
    written: bool = False
    files: int = 0  # the project's Python files
    helper_modules: list[runner.HelperModule] = field(default_factory=list)  # as written
    notes: list[str] = field(default_factory=list)  # what was not checked, and why

    def summary(self) -> str | None:
        """One line on the import check, for a project of more than one file."""
        if self.files < 2:
            return None
        if self.notes:
            return f"fgirewrite: {'; '.join(self.notes)}"
        n = self.imported
        text = (
            f"fgirewrite: {n} module{'s' * (n != 1)} of the project import{'s' * (n == 1)} "
            "after the rewrite as before"
        )
        notes = []
        if self.scripts:
            notes.append(f"{len(self.scripts)} script{'s' * (len(self.scripts) != 1)} not imported")
        if self.not_importing:
            n = len(self.not_importing)
            notes.append(
                f"{n} that did not import before {'were' if n != 1 else 'was'} not checked"
            )
        return text + (f" ({'; '.join(notes)})" if notes else "")


@dataclass(frozen=True)
class _Module:
    """A project module the import check imports."""

    path: Path  # resolved, in the project
    name: str
    roots: tuple[Path, ...]


def write_project(
    outcomes: list[runner.Outcome],
    found: Sequence[Path],
    references: References,
    verify: bool,
    entry: str | None = None,
    pythonpath: Sequence[Path] | None = None,
    workers: int = 0,
) -> ProjectReport:
    """Verify (unless ``verify`` is False) and write every changed file, all or none."""
    report = ProjectReport()
    changing = [o for o in outcomes if o.changed]
    if not changing:
        return report
    show = runner.shown(outcomes)
    checker: _ImportCheck | None = None
    if verify and not hasattr(os, "fork"):
        report.notes.append("the project's import check needs os.fork (POSIX): not run")
    try:
        if verify and hasattr(os, "fork"):  # started first: it imports in the background
            workers = workers or runner.available_cpus()
            checker = _ImportCheck(_scope(found, changing), pythonpath, workers, report, show)
        vouch = _EntryVouch(entry, found, pythonpath, report) if verify and entry else None
        for outcome in changing:
            runner.verify_and_refuse(outcome, verify, pythonpath, vouch)
        if checker is not None:
            checker.until_it_imports(changing, references, pythonpath, vouch)
        _write(changing, report)
    except ImportCheckError as exc:
        report.errors.append(("fgirewrite", f"{exc}; no file was written"))
    finally:
        if checker is not None:
            checker.close()
    return report


def _scope(found: Sequence[Path], changing: list[runner.Outcome]) -> list[Path]:
    """The project's files: those found, and the files of the packages being changed."""
    scope = {Path(p).resolve(): None for p in found}
    for outcome in changing:
        scope |= dict.fromkeys(p.resolve() for p in package_files(Path(outcome.path)))
    return list(scope)


def _changes(outcomes: list[runner.Outcome]) -> list[files.Change]:
    """Every file to write: the rewritten ones, and the packages' helper modules they import
    (a module a user edited leaves its package's files as they are, with an error)."""
    modules = [m for m in runner.helper_modules(outcomes) if m.changed]
    changes = [
        files.Change(Path(o.path), o.output(), o.snapshot)
        for o in outcomes
        if o.changed and o.error is None and o.new_source is not None
    ]
    needed = {o.helper_path for o in outcomes if o.changed and o.error is None}
    return changes + [
        files.Change(m.path, m.text.encode(), m.snapshot) for m in modules if m.path in needed
    ]


def _write(outcomes: list[runner.Outcome], report: ProjectReport) -> None:
    """Replace every file that changes and verified, or none."""
    changes = _changes(outcomes)
    report.helper_modules = [m for m in runner.helper_modules(outcomes) if m.changed]
    if not changes:
        return

    def committed() -> None:
        for outcome in outcomes:
            if outcome.changed and outcome.error is None:
                outcome.written = True
        report.written = True

    try:
        files.write_all(changes, committed)
    except files.WriteError as exc:
        failed = os.path.realpath(exc.path)
        for outcome in outcomes:
            if os.path.realpath(outcome.path) == failed:
                outcome.error = str(exc) + ("; no file was written" if len(changes) > 1 else "")


# --- --entry ------------------------------------------------------------------------------


class _EntryVouch:
    """The model an entry builds, built when first needed: a passing live report (as
    ``inject`` verifies) for each Function class it reaches, or why there is none."""

    def __init__(
        self,
        spec: str,
        found: Sequence[Path],
        pythonpath: Sequence[Path] | None,
        report: ProjectReport,
    ):
        self.spec, self.found, self.pythonpath, self.report = spec, found, pythonpath, report
        self.reports: dict[tuple[str, int], SurrogateReport] | None = None
        self.error: str | None = None

    def __call__(self, surrogate: Surrogate) -> SurrogateReport | str:
        if self.reports is None:
            self.reports = {}
            try:
                self.reports = _live_reports(parse_entry(self.spec), self.found, self.pythonpath)
            except EntryError as exc:
                self.error = str(exc)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's model failed
                self.error = f"entry `{self.spec}` failed: {type(exc).__name__}: {exc}"
            if self.error is not None:
                self.report.errors.append(("--entry", self.error))
        where = (os.path.realpath(surrogate.location.path), surrogate.location.line)
        found = self.reports.get(where)
        if found is not None:
            return found
        if self.error is not None:
            return f"; --entry could not build its model ({self.error})"
        return f"; the model that --entry {self.spec} builds does not reach it"


def _live_reports(
    entry: Entry, found: Sequence[Path], pythonpath: Sequence[Path] | None
) -> dict[tuple[str, int], SurrogateReport]:
    """(file, line) -> the passing report of each Function class the entry's model reaches."""
    from fgirewrite.execute.entry import built
    from fgirewrite.live.inject import inject_report

    search = list(
        dict.fromkeys(root for path in found for root in import_roots(Path(path), pythonpath))
    )
    with built(entry, search or [Path.cwd()], pythonpath) as (model, inputs):
        result = inject_report(model, example_inputs=inputs)
    return {
        (os.path.realpath(r.surrogate.location.path), r.surrogate.location.line): r.report
        for r in result.replaced
        if r.report is not None and r.report.ok
    }


# --- the import check -----------------------------------------------------------------------


class _ImportCheck:
    """The project's modules imported from the rewritten sources, in a scratch copy of the
    project, and those that fail from the original sources too: a module that did not
    import before the change is not the rewrite's to fix. The server starts at once, so
    that its imports of torch and the installed packages overlap per-class verification."""

    def __init__(
        self,
        scope: list[Path],
        pythonpath: Sequence[Path] | None,
        workers: int,
        report: ProjectReport,
        show: Callable[[Path], str],
    ):
        self.report = report
        self.report.files = len(scope)
        self.show = show
        trees = _parsed(scope)
        self.modules = self._modules(trees, pythonpath)
        self.scratch = Scratch(scope)
        preload = _installed_imports(trees, pythonpath)
        self.importer = Importer(preload, workers, cwd=self.scratch.home)

    def close(self) -> None:
        self.importer.close()
        self.scratch.remove()

    def _modules(
        self, trees: dict[Path, ast.Module], pythonpath: Sequence[Path] | None
    ) -> list[_Module]:
        modules = []
        for path, tree in trees.items():
            where = script_line(tree)
            if where is not None:
                self.report.scripts.append((self.show(path), *where))
                continue
            name, _ = package_of(path)
            name = name.removesuffix(".__init__")
            if all(part.isidentifier() for part in name.split(".")):
                modules.append(_Module(path, name, tuple(import_roots(path, pythonpath))))
        return modules

    def _import(self, modules: list[_Module], changes: list[files.Change]) -> list[Result]:
        """Import each module with the project as ``changes`` leave it (none: as it is)."""
        self.scratch.apply(changes)
        jobs = [
            Job(
                m.name,
                str(self.scratch.copy_of(m.path)),
                tuple(str(self.scratch.copy_of(r)) for r in m.roots),
                str(self.scratch.copy_of(self.scratch.base_of(m.path))),
                TIMEOUT,
            )
            for m in modules
        ]
        return self.importer.results(self.importer.submit(jobs))

    def until_it_imports(
        self,
        outcomes: list[runner.Outcome],
        references: References,
        pythonpath: Sequence[Path] | None,
        vouch: Callable[[Surrogate], SurrogateReport | str] | None,
    ) -> None:
        """Check the rewritten project; leave alone what stops a module from importing, and
        check again, until every module that imported before imports after."""
        checking = list(self.modules)
        for round in range(ROUNDS):
            changes = _changes(outcomes)
            if not changes or not checking:
                return
            after = self._import(checking, changes)
            failures = [(m, r) for m, r in zip(checking, after, strict=True) if not r.ok]
            if failures:  # did they import before?
                before = self._import([m for m, _ in failures], [])
                for (module, _), result in zip(failures, before, strict=True):
                    if not result.ok:
                        checking.remove(module)
                        self.report.not_importing.append(
                            (self.show(module.path), result.error or "")
                        )
                failures = [f for f, b in zip(failures, before, strict=True) if b.ok]
            if not failures:
                self.report.imported = len(checking)
                return
            blamed = _blame(failures, outcomes, references, self.scratch, self.show)
            for outcome, refusals in blamed:
                runner.impose(outcome, refusals)
                if round < ROUNDS - 1:
                    runner.verify_and_refuse(outcome, True, pythonpath, vouch)
        for outcome in outcomes:  # still failing: write nothing that might be the cause
            if outcome.changed and outcome.error is None:
                outcome.error = (
                    f"not written: a module of the project still does not import after "
                    f"{ROUNDS} checks, each leaving more classes alone"
                )


def _parsed(paths: list[Path]) -> dict[Path, ast.Module]:
    """The files that parse, parsed."""
    trees = {}
    for path in paths:
        try:
            trees[path] = ast.parse(path.read_bytes(), filename=str(path))
        except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    return trees


def _installed_imports(
    trees: dict[Path, ast.Module], pythonpath: Sequence[Path] | None
) -> list[str]:
    """The modules the project imports that are not its own (``matplotlib.pyplot``)."""
    project = Project(pythonpath)
    names = set()
    for path, tree in trees.items():
        for node in _statements(tree.body):
            if isinstance(node, ast.Import):
                spelled = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                spelled = [node.module]
            else:
                continue
            names |= {n for n in spelled if project.find(n.split(".")[0], path) is None}
    return sorted(n for n in names if n.split(".")[0] not in sys.builtin_module_names)


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement, nested ones too, without walking into expressions (fast)."""
    for stmt in body:
        yield stmt
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            for child in getattr(stmt, name, None) or ():
                if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                    yield from _statements(child.body)
                elif isinstance(child, ast.stmt):
                    yield from _statements([child])


def _blame(
    failures: list[tuple[_Module, Result]],
    outcomes: list[runner.Outcome],
    references: References,
    scratch: Scratch,
    show: Callable[[Path], str],
) -> list[tuple[runner.Outcome, dict[str, tuple[str, str]]]]:
    """For each module that no longer imports, the rewritten classes responsible and why: the
    reason names the innermost file of the project the failure passed through, and the
    TorchScript function there that calls the class, if one does."""
    live = {
        Path(o.path).resolve(): o for o in outcomes if o.changed and o.error is None and o.rewrite
    }
    blamed: dict[int, tuple[runner.Outcome, dict[str, tuple[str, str]]]] = {}
    for module, result in failures:
        frames = [(scratch.original(Path(f)), n) for f, n in result.frames]
        mentioned = [(scratch.original(Path(f)), n) for f, n in result.mentioned]
        inside = [(f, n) for f, n in frames if scratch.base_of(f) in scratch.bases]
        path, line = inside[-1] if inside else (module.path, 1)
        for outcome, surrogate in _culprits(module, frames + mentioned, live, references):
            target = (Path(outcome.path).resolve(), surrogate.name)
            scripted = next(
                (
                    u
                    for u in references.uses
                    if u.path == path
                    and u.scripted
                    and (u.target.path, u.target.qualname) == target
                ),
                None,
            )
            if scripted is not None:
                why = (
                    f"`{scripted.scripted}` ({show(path)}:{scripted.line}) calls it and is "
                    "compiled by TorchScript at import: after the rewrite it no longer compiles "
                    f"({result.error})"
                )
            else:
                why = f"{show(path)}:{line} no longer imports after the rewrite ({result.error})"
            entry = blamed.setdefault(id(outcome), (outcome, {}))
            entry[1].setdefault(key(surrogate), ("breaks-import", why))
    return list(blamed.values())


def _culprits(
    module: _Module,
    frames: list[tuple[Path, int]],
    live: dict[Path, runner.Outcome],
    references: References,
) -> list[tuple[runner.Outcome, Surrogate]]:
    """The rewritten classes a failing import points at: one whose generated code a frame
    (or TorchScript's error) is in; else those the module and the files of its traceback
    reach; else those of the rewritten files in its traceback; else every one."""
    rewritten = [(o, s) for o in live.values() for s in o.rewrite.surrogates]  # type: ignore[union-attr]
    found = []
    for path, line in frames:
        outcome = live.get(path)
        if outcome is not None:
            found += [(outcome, s) for s in _generated_at(outcome, line)]
    if found:
        return found
    files_seen = {module.path} | {f for f, _ in frames}
    reached = {(c.path, c.qualname) for f in files_seen for c in references.reached_from(f)}
    found = [(o, s) for o, s in rewritten if (Path(o.path).resolve(), s.name) in reached]
    if found:
        return found
    found = [(o, s) for o, s in rewritten if Path(o.path).resolve() in files_seen]
    return found or rewritten


def _generated_at(outcome: runner.Outcome, line: int) -> list[Surrogate]:
    """The surrogates whose FGI function (or rewritten class) spans a line of the new source."""
    assert outcome.rewrite is not None and outcome.new_source is not None
    tree = ast.parse(outcome.new_source)
    spans: dict[str, list[tuple[int, int]]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            spans.setdefault(node.name, []).append((node.lineno, node.end_lineno or node.lineno))
    found = []
    for surrogate in outcome.rewrite.surrogates:
        names = [outcome.rewrite.function(surrogate) or "", surrogate.name.split(".")[-1]]
        if any(a <= line <= b for name in names for a, b in spans.get(name, [])):
            found.append(surrogate)
    return found


class Scratch:
    """A copy of the project's code in a temporary folder: its Python files copied, every
    other entry of their folders linked, so that rewritten sources are imported there and
    never in the project. Each project (the folder of its marker, else of its top package)
    gets a folder of its own; one inside another is copied with it."""

    def __init__(self, paths: list[Path]):
        self.home = Path(tempfile.mkdtemp(prefix="fgirewrite-project-"))
        self.originals: dict[Path, bytes] = {}  # project file -> its content
        bases = {project_root(p) or package_of(p)[1] for p in paths}
        bases = {b for b in bases if not any(o in b.parents for o in bases)}
        self.bases = {base: self.home / str(i) for i, base in enumerate(sorted(bases))}
        for base, copy in self.bases.items():
            self._mirror(base, copy, [p for p in paths if self.base_of(p) == base])

    def base_of(self, path: Path) -> Path:
        """The project folder a path is in (itself, outside every one)."""
        return next((b for b in self.bases if b == path or b in path.parents), path)

    def _mirror(self, base: Path, copy: Path, code: list[Path]) -> None:
        paths = set(code)
        folders = {base} | {f for p in paths for f in p.parents if base in f.parents}
        for folder in sorted(folders, key=lambda f: len(f.parts)):
            target = copy / folder.relative_to(base)
            target.mkdir(parents=True, exist_ok=True)
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for item in entries:
                source = Path(item.path)
                if source in folders or item.name in files.SKIP_DIRS:
                    continue
                if source in paths:
                    self.originals[source] = source.read_bytes()
                    (target / item.name).write_bytes(self.originals[source])
                else:
                    os.symlink(source, target / item.name)

    def copy_of(self, path: Path) -> Path:
        """Where a project path is in the copy (a path outside every project: itself)."""
        base = self.base_of(path)
        return self.bases[base] / path.relative_to(base) if base in self.bases else path

    def original(self, path: Path) -> Path:
        """The project path a path in the copy stands for."""
        for base, copy in self.bases.items():
            if path == copy or copy in path.parents:
                return base / path.relative_to(copy)
        return path

    def apply(self, changes: list[files.Change]) -> None:
        """The copy as these changes would leave the project (its other files as they are)."""
        new = {c.path.resolve(): c.data for c in changes}
        for source, data in self.originals.items():
            self.copy_of(source).write_bytes(new.pop(source, data))
        for source, data in new.items():  # a file the rewrite adds
            self.copy_of(source).write_bytes(data)

    def remove(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
