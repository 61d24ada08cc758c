"""Running the rewriter over many files: reading, rewriting in parallel, verifying, writing."""

from __future__ import annotations

import ast
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

from fgirewrite import config, discover, files, notebook, project, skips
from fgirewrite.rewrite.result import Rewrite
from fgirewrite.scopes import last_name
from fgirewrite.source import SourceError, decode, internal_error
from fgirewrite.surrogate import Location, Skip, Surrogate, key

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
    # (line, what): see second_order_lines
    second_order: list[tuple[int, str]] = field(default_factory=list)
    notebook: notebook.Notebook | None = None  # a notebook's cells, read as one module
    options: dict = field(default_factory=dict)  # rewrite_source's options for this file
    helper_path: Path | None = None  # the package's helper module the rewrite imports from
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
    annotate: bool = False,
    closed: frozenset[Path] = frozenset(),
) -> Outcome:
    """Read and rewrite one file (or only analyse it); never raises for a bad file.
    ``closed``: project roots whose every module the run sees, so that no subclass of a
    rewritten class can hide in another (the rewritten classes then need no guard)."""
    # Imported here: the main process of ``--check`` forks its workers before it needs libcst.
    from fgirewrite.rewrite.edit import analyse, rewrite_source
    from fgirewrite.rewrite.helpers import placement

    outcome = Outcome(str(path))
    try:
        snapshot = files.read(path)
        data, outcome.notebook = _module(snapshot.data, str(path))
        if analyse_only:
            result: Rewrite = analyse(data, str(path))[0]
            result.source = b""
            outcome.rewrite, outcome.analysed_only = result, True
            return outcome
        placed = None if outcome.notebook else placement(path, data)
        outcome.options = {
            "helpers": placed and placed[0],
            "annotate": annotate,
            "target": _target(path),
            "guard": project.project_root(path) not in closed,
        }
        result = rewrite_source(data, str(path), refused, **outcome.options)
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
        outcome.helper_path = placed and placed[1]
    else:
        result.source = b""  # not needed again; keeps parallel results small
    outcome.rewrite = result
    return outcome


def _target(path: Path) -> tuple[int, int] | None:
    """The oldest Python the file's project runs on (``target-version``, ``requires-python``)."""
    try:
        return config.settings_for(path).target_version
    except config.ConfigError:  # reported where the run reads its configuration
        return None


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
    annotate: bool | None = None,
    closed: frozenset[Path] = frozenset(),
) -> list[Outcome]:
    """Process files, in parallel when many could define a Function; results in order.

    The cheap byte scan runs here, file after file; the files that pass it are handed to
    worker processes as they are found, so the workers parse while the scan goes on. Each
    outcome records the file's second-order uses (``second_order``), found by the same scan.
    ``annotate``: type generated functions' literal defaults (None: when a file scripts).
    """
    paths = list(paths)
    results: list[Outcome | None] = [None] * len(paths)
    if annotate is None:  # typed for TorchScript when a file given scripts
        annotate = not analyse_only and uses_torchscript(paths)
    work = partial(process, analyse_only=analyse_only, annotate=annotate, closed=closed)
    workers = jobs if jobs > 0 else available_cpus()
    pool: ProcessPoolExecutor | None = None
    pending: list[int] = []  # candidates not handed out yet
    futures: dict[int, Future] = {}
    second: dict[int, list[tuple[int, str]]] = {}
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


_SCRIPT = re.compile(rb"jit\s*\.\s*script\b")


def uses_torchscript(paths: Iterable[Path]) -> bool:
    """Any of the files scripts with TorchScript, which needs literal defaults typed."""
    for path in paths:
        try:
            if _SCRIPT.search(files.read(path).data):
                return True
        except files.FileError:
            continue
    return False


# Two quick scans, each a literal alternation ``re`` is fast at: the words of a second-order
# use, and ``grad(grad(``; then, on the few files they pass, the calls such a use needs. A
# hit is confirmed on the parsed file.
_WORDS = re.compile(rb"create_graph|hessian|hvp|vhp|jacrev|jacfwd")
_NESTED = rb"\s*\(\s*(?:\w+\s*\.\s*)*(?:jacrev|jacfwd|grad|vjp|jvp|hessian)\s*\("
_GRAD_OF_GRAD = re.compile(rb"(?:grad|vjp|jvp)" + _NESTED)
_CALLS = re.compile(
    rb"create_graph\s*=\s*(?!(?:False|None|0)\s*[,)])|(?:hessian|hvp|vhp)\s*\("
    rb"|(?:jacrev|jacfwd|grad|vjp|jvp|hessian)" + _NESTED
)
_TRANSFORMS = frozenset({"grad", "jacrev", "jacfwd", "vjp", "jvp", "hessian"})


def second_order_lines(data: bytes) -> list[tuple[int, str]]:
    """Where a file differentiates through gradients, and how: a call with
    ``create_graph=True`` (or any value but a literal false one, or a parameter the enclosing
    function only passes on: its callers set it, and are found where they do), a Hessian or
    Hessian-vector product, a torch.func transform of a transform (``jacrev(jacrev(f))``).
    There an FGI rewrite changes the result, since its gradients are first-order. Comments,
    strings and files that do not parse never count."""
    if not (_WORDS.search(data) or _GRAD_OF_GRAD.search(data)) or not _CALLS.search(data):
        return []
    try:
        tree = ast.parse(data)
    except (SyntaxError, ValueError):
        return []
    found: list[tuple[int, str]] = []
    _second_order(tree, frozenset(), found)
    return sorted(found)


def _second_order(node: ast.AST, passed_on: frozenset[str], found: list[tuple[int, str]]) -> None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = node.args
        passed_on = passed_on | {  # a nested function passes on its enclosing one's too
            p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if p
        }
    elif isinstance(node, ast.Call):
        what = _second_order_call(node, passed_on)
        if what:
            found.append((node.lineno, what))
    for child in ast.iter_child_nodes(node):
        _second_order(child, passed_on, found)


def _second_order_call(node: ast.Call, passed_on: frozenset[str]) -> str | None:
    name = last_name(node.func)
    for k in node.keywords:
        if k.arg != "create_graph":
            continue
        value = k.value
        if isinstance(value, ast.Constant):
            return "create_graph=True" if value.value else None
        if isinstance(value, ast.Name) and value.id in passed_on:
            return None
        return f"create_graph={ast.unparse(value)}"
    if name in ("hessian", "hvp", "vhp"):
        return f"{name}()"
    if name in _TRANSFORMS and any(
        isinstance(a, ast.Call) and last_name(a.func) in _TRANSFORMS for a in node.args[:1]
    ):
        return f"{name}() of a transform"
    return None


SECOND_ORDER_FLAG = "--accept-first-order"


def hold_back_second_order(outcomes: list[Outcome], jobs: int = 0) -> None:
    """Leave a surrogate alone where a file that differentiates through gradients reaches it
    (its own file, or one that file imports, directly or through others): an FGI rewrite
    would change those second derivatives (``--accept-first-order`` opts out). ``jobs``:
    processes that read the imports of a large tree (0: one per CPU)."""
    users = [o for o in outcomes if o.second_order]
    targets = {Path(o.path).resolve() for o in outcomes if o.rewrite and o.rewrite.surrogates}
    if not users or not targets:
        return
    blocked: dict[Path, tuple[Outcome, int, str]] = {}
    with _ImportGraph([Path(o.path) for o in outcomes], jobs) as imports:
        for user in users:  # each target is blamed on the first user that reaches it
            line, what = user.second_order[0]
            for reached in imports.reach(Path(user.path), targets - blocked.keys()):
                blocked[reached] = (user, line, what)
    for outcome in outcomes:
        rewrite = outcome.rewrite
        cause = blocked.get(Path(outcome.path).resolve())
        if rewrite is None or not rewrite.surrogates or cause is None:
            continue
        user, line, what = cause
        how = "" if user is outcome else ", and imports this module"
        message = (
            f"{user.line(line)} differentiates through gradients ({what}){how}: the "
            "rewrite's gradients are first-order, so second derivatives through it would "
            f"change; pass {SECOND_ORDER_FLAG} to rewrite anyway"
        )
        impose(outcome, {key(s): ("second-order", message) for s in rewrite.surrogates})


class _ImportGraph:
    """Which of a run's files a file imports, directly or through others. Files are read a
    level of the search at a time, in worker processes where a level is large."""

    def __init__(self, paths: list[Path], jobs: int):
        self.files = {p.resolve() for p in paths}
        # A module can only be one of the run's files if some file's path ends like it.
        self._tails = {(f.parent.name if f.stem == "__init__" else f.stem) for f in self.files}
        self._edges: dict[Path, set[Path]] = {}
        self._roots: dict[Path, tuple[Path, ...]] = {}
        self._modules: dict[tuple[str, tuple[Path, ...]], Path | None] = {}
        self._workers = jobs if jobs > 0 else available_cpus()
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _ImportGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def reach(self, start: Path, wanted: set[Path]) -> set[Path]:
        """Which of ``wanted`` the file at ``start`` reaches (it stops once it has them all:
        a large tree's import closure is most of the tree)."""
        start = start.resolve()
        seen, level = {start}, [start]
        while level and not wanted <= seen:
            self._read(level)
            level = [found for path in level for found in self._edges[path] - seen]
            seen.update(level)
            level = list(dict.fromkeys(level))
        return seen & wanted

    def _read(self, paths: list[Path]) -> None:
        todo = [p for p in paths if p not in self._edges]
        if len(todo) >= PARALLEL_FROM * 4 and self._workers > 1 and self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self._workers)
        chunk = max(1, len(todo) // (self._workers * 4))
        found = self._pool.map(_imported_modules, todo, chunksize=chunk) if self._pool else None
        for path, names in zip(todo, found or map(_imported_modules, todo), strict=True):
            roots = self._roots_of(path)
            modules = (self._module(n, roots) for n in names if n.rpartition(".")[2] in self._tails)
            self._edges[path] = {m for m in modules if m is not None}

    def _roots_of(self, path: Path) -> tuple[Path, ...]:
        """Import roots depend on a file's folder only (its package and configuration)."""
        if path.parent not in self._roots:
            self._roots[path.parent] = tuple(project.import_roots(path))
        return self._roots[path.parent]

    def _module(self, name: str, roots: tuple[Path, ...]) -> Path | None:
        """The run's file that ``import name`` loads from ``roots``, if it is one."""
        if (name, roots) not in self._modules:
            found = project.find_module(name, roots)
            if found is not None and found not in self.files:
                found = found.resolve()  # through a link, perhaps
            self._modules[name, roots] = found if found in self.files else None
        return self._modules[name, roots]


_SCOPES = (ast.Module, ast.stmt, ast.ExceptHandler, ast.match_case)


def _imported_modules(path: Path) -> set[str]:
    """Dotted names a file imports (a ``from a import b`` also as ``a.b``: b may be one), and
    the packages above them, whose ``__init__.py`` an import runs first."""
    try:
        tree = ast.parse(notebook.python_source(path.read_bytes(), str(path)))
    except (OSError, SyntaxError, ValueError, notebook.NotebookError):
        return set()
    names: set[str] = set()
    todo: list[ast.AST] = [tree]
    while todo:  # imports are statements: expressions never hold one
        node = todo.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (
                project.relative_module(path, node.module, node.level)
                if node.level
                else node.module
            )
            if base:  # None: above the top package, where the import fails
                names.add(base)
                names.update(f"{base}.{a.name}" for a in node.names)
        else:
            todo.extend(c for c in ast.iter_child_nodes(node) if isinstance(c, _SCOPES))
    packages = {name.rsplit(".", i)[0] for name in names for i in range(1, name.count(".") + 1)}
    return names | packages


def impose(outcome: Outcome, refusals: dict[str, tuple[str, str]]) -> None:
    """Leave classes of a file alone for what other files do with them (``refusals``: key ->
    code and why), and rewrite the file again without them."""
    outcome.imposed |= refusals
    fresh = process(
        Path(outcome.path),
        outcome.imposed,
        annotate=outcome.options.get("annotate", False),
        closed=_closed_if(outcome),
    )
    outcome.rewrite, outcome.snapshot, outcome.error = fresh.rewrite, fresh.snapshot, fresh.error
    outcome.options, outcome.helper_path = fresh.options, fresh.helper_path
    outcome.notebook = fresh.notebook
    outcome.analysed_only = False


def _closed_if(outcome: Outcome) -> frozenset[Path]:
    """The ``closed`` that gives a file the guard it had."""
    if outcome.options.get("guard", True):
        return frozenset()
    root = project.project_root(Path(outcome.path))
    return frozenset() if root is None else frozenset({root})


ENTRY_HINT = (
    "; `--write --entry FILE:FUNCTION` verifies it through a model that uses it, where "
    "FUNCTION returns (model, example_inputs)"
)


def verify_and_refuse(
    outcome: Outcome,
    verify: bool = True,
    pythonpath: Sequence[Path] | None = None,
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
        outcome.rewrite = rewrite_source(
            outcome.rewrite.source, outcome.path, refused, **outcome.options
        )
    imposed = {name.rpartition("@")[0] for name in outcome.imposed}
    if outcome.rewrite.changed and (problem := instability(outcome.rewrite, imposed)) is not None:
        outcome.error = problem
    if outcome.rewrite.changed and outcome.error is None and outcome.notebook is not None:
        try:
            outcome.notebook.render(outcome.rewrite.new_source or b"")
        except SourceError as exc:
            outcome.error = str(exc)


@dataclass
class HelperModule:
    """The helper module of a package: what it must hold, and what it holds now."""

    path: Path
    text: str
    snapshot: files.Snapshot | None  # None: the module does not exist yet

    @property
    def changed(self) -> bool:
        return self.snapshot is None or self.snapshot.data != self.text.encode()

    def diff(self) -> str:
        before = "" if self.snapshot is None else decode(self.snapshot.data, str(self.path))
        return "".join(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                self.text.splitlines(keepends=True),
                fromfile="/dev/null" if self.snapshot is None else f"a/{self.path}",
                tofile=f"b/{self.path}",
            )
        )


def helper_modules(outcomes: list[Outcome]) -> list[HelperModule]:
    """The helper module each package's rewritten files import, as it must be written. A
    module that exists is only ever replaced by a text of fgirewrite's own (it never loses
    the guard base that written files may import); one a user edited is an error for every
    file that needs it, which then stays as it is."""
    from fgirewrite.rewrite.helpers import known_sources, module_source

    by_path: dict[Path, list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.helper_path is not None and outcome.changed and outcome.error is None:
            by_path.setdefault(outcome.helper_path, []).append(outcome)
    modules = []
    for path, users in by_path.items():
        try:
            snapshot: files.Snapshot | None = files.read(path) if path.exists() else None
        except files.FileError as exc:
            for outcome in users:
                outcome.error = f"{path}: {exc}; not written"
            continue
        current = None if snapshot is None else snapshot.data.decode("utf-8", "replace")
        if current is not None and current not in known_sources():
            for outcome in users:
                outcome.error = (
                    f"{path} differs from the helpers fgirewrite writes (edited?): restore "
                    "it, or delete it to have it written again; not written"
                )
            continue
        guard = any(o.rewrite is not None and o.rewrite.guarded for o in users)
        guard = guard or current == module_source(True)
        modules.append(HelperModule(path, module_source(guard), snapshot))
    return modules


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
    pythonpath: Sequence[Path] | None = None,
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
