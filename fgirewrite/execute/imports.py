"""Import a project's modules, each in a fresh process with a time limit, several at a time.

A server process (``Importer``) imports torch and the installed packages the project
imports, once; then each module is imported in a child forked from it (a fresh process that
starts with those packages loaded), with the module's import roots first on ``sys.path``,
its working folder set, no arguments, no input, and its output discarded. A module whose
top level would train a model (``script_line``) is never imported.

Only ``--write`` imports modules this way (never the static modes): the project's modules
run as ``import`` runs them, their ``if __name__ == "__main__":`` blocks excepted.
"""

from __future__ import annotations

import ast
import json
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# A top-level call of one of these (its last name) only sets things up: not a script's work.
SET_UP = frozenset(
    {
        "print",
        "seed",
        "manual_seed",
        "manual_seed_all",
        "use",
        "filterwarnings",
        "simplefilter",
        "basicConfig",
        "add_argument",
        "add_argument_group",
        "set_defaults",
        "append",
        "insert",
        "extend",
        "setdefault",
        "update",
        "register",
        "set_printoptions",
        "use_deterministic_algorithms",
        "set_num_threads",
        "set_default_dtype",
        "set_default_tensor_type",
        "set_grad_enabled",
        "set_float32_matmul_precision",
        "setLevel",
        "addHandler",
        "disable",
        "info",
        "debug",
        "warning",
        "warn",
    }
)
# Calls that train, or save what training made, wherever they stand at the top level.
TRAINING = frozenset({"backward", "fit", "save"})


def script_line(tree: ast.Module) -> tuple[int, str] | None:
    """Where a module's top level does a script's work, and what: a loop, a call that is not
    set-up (``main()``, ``train(model)``), or a call that trains (``loss.backward()``);
    None for a module that only defines and sets up. ``if __name__ == "__main__":`` blocks,
    functions and classes do not count."""
    for stmt in _top(tree.body):
        if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
            return stmt.lineno, f"a `{type(stmt).__name__.lower()}` loop at the top level"
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, (ast.Call, ast.Await)):
            call = stmt.value if isinstance(stmt.value, ast.Call) else stmt.value.value
            name = _called(call)
            if name not in SET_UP:
                return stmt.lineno, f"a call of `{name or 'an expression'}` at the top level"
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call) and _called(node) in TRAINING:
                return node.lineno, f"a call of `{_called(node)}` at the top level"
    return None


def _top(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(stmt, ast.If) and "__name__" in {
            n.id for n in ast.walk(stmt.test) if isinstance(n, ast.Name)
        }:
            continue
        if isinstance(stmt, (ast.If, ast.Try, ast.With)):
            yield from _top(
                stmt.body + getattr(stmt, "orelse", []) + getattr(stmt, "finalbody", [])
            )
            for handler in getattr(stmt, "handlers", []):
                yield from _top(handler.body)
            continue
        yield stmt


def _called(call: ast.AST) -> str | None:
    func = getattr(call, "func", None)
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


@dataclass(frozen=True)
class Job:
    """One module to import: its name, file, import roots and working folder."""

    module: str
    path: str
    roots: tuple[str, ...]
    cwd: str
    timeout: float


@dataclass(frozen=True)
class Result:
    """How importing one module went."""

    ok: bool
    error: str | None = None  # ``Type: first line``
    frames: tuple[tuple[str, int], ...] = ()  # the traceback's (file, line), outermost first
    mentioned: tuple[tuple[str, int], ...] = ()  # (file, line) the message names (TorchScript)
    seconds: float = 0.0
    timed_out: bool = False


MESSAGE_LIMIT = 200  # characters of an error's first line


class ImportCheckError(RuntimeError):
    """The import checker itself failed (not a module it imports): one line."""


_LOCATION = re.compile(r'File "([^"]+)", line (\d+)')


class Importer:
    """A server that imports modules in forked children; start it early, ask it later."""

    def __init__(self, preload: Iterable[str] = (), workers: int = 2, cwd: Path | None = None):
        here = str(Path(__file__).resolve().parents[2])
        boot = (
            "import sys; sys.path.append(" + repr(here) + "); "
            "from fgirewrite.execute.imports import serve; serve()"
        )
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", boot],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=cwd,
                text=True,
            )
        except OSError as exc:
            raise ImportCheckError(f"the import check cannot start: {exc}") from None
        self._results: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()  # written by a thread: the server may be busy
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()
        self._send({"preload": sorted(set(preload)), "workers": workers})
        self._asked = 0

    def _send(self, message: dict) -> None:
        self._outbox.put(json.dumps(message) + "\n")

    def _write(self) -> None:
        assert self._process.stdin is not None
        while (line := self._outbox.get()) is not None:
            try:
                self._process.stdin.write(line)
                self._process.stdin.flush()
            except OSError:  # the server is gone: ``results`` says so
                return

    def _read(self) -> None:
        assert self._process.stdout is not None
        try:
            for line in self._process.stdout:
                self._results.put(json.loads(line))
        except ValueError:  # not an answer: the server is broken; ``results`` says so
            pass
        self._results.put(None)

    def submit(self, jobs: Sequence[Job]) -> int:
        """Hand jobs to the server (it starts on them at once); a ticket for ``results``."""
        ticket = self._asked
        self._asked += 1
        self._send({"ticket": ticket, "jobs": [asdict(j) for j in jobs]})
        return ticket

    def results(self, ticket: int) -> list[Result]:
        """The results of a submission, in the order of its jobs (waits for them)."""
        while True:
            message = self._results.get()
            if message is None:
                code = self._process.wait()
                raise ImportCheckError(f"the import check stopped unexpectedly (exit code {code})")
            if message.get("ticket") == ticket:
                return [_result(r) for r in message["results"]]

    def close(self) -> None:
        """Stop the server now (what it still imports is of no use any more), and the
        processes it started."""
        self._outbox.put(None)
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process.wait()

    def __enter__(self) -> Importer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _result(raw: dict) -> Result:
    for name in ("frames", "mentioned"):
        raw[name] = tuple(tuple(f) for f in raw[name])
    return Result(**raw)


def serve() -> None:
    """The server's loop (in its own process): preload, then answer submissions in order."""
    sys.dont_write_bytecode = True
    sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
    signal.signal(signal.SIGTERM, _stop)
    # Answers go to the pipe fgirewrite reads; what packages print goes nowhere.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    first = json.loads(sys.stdin.readline())
    _preload(first["preload"])
    workers = max(1, int(first["workers"]))
    for line in sys.stdin:
        request = json.loads(line)
        jobs = [Job(**{**j, "roots": tuple(j["roots"])}) for j in request["jobs"]]
        results = _run_all(jobs, workers)
        answer = {"ticket": request["ticket"], "results": [asdict(r) for r in results]}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


_RUNNING: set[int] = set()  # the children of this process, each leading a process group


def _stop(*_: object) -> None:
    """SIGTERM: stop every child (and what they started), then this process."""
    for pid in _RUNNING:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(1)


def _preload(names: list[str]) -> None:
    """Import torch and the installed modules the project imports (``matplotlib.pyplot``),
    once, each within a minute; one that fails or hangs is left to each child."""

    def stop(*_: object) -> None:
        raise TimeoutError

    signal.signal(signal.SIGALRM, stop)
    for name in ["torch", *names]:
        signal.alarm(60)
        try:
            __import__(name)
        except BaseException:  # noqa: BLE001 - anything a package raises: not preloaded
            pass
        finally:
            signal.alarm(0)


def _run_all(
    jobs: list[Job], workers: int, group: bool = True, prepared: bool = False
) -> list[Result]:
    """Each job in a forked child, ``workers`` at a time, each killed at its time limit.

    With ``group``, the modules of one package (same package, roots and folder) are imported
    in children forked from one that imported the package first: ``import a.b.c`` begins with
    ``import a.b`` anyway, so each still starts as a fresh ``import a.b.c`` would be at that
    point, and a package whose ``__init__`` imports all of it is imported once.
    ``prepared``: this process is a package's, set up for its modules already."""
    tasks = _tasks(jobs) if group else [[i] for i in range(len(jobs))]
    results: dict[int, Result] = {}
    waiting = list(tasks)
    running: dict[int, tuple[list[int], int, float, float, bytearray]] = {}  # fd -> task, ...
    while waiting or running:
        while waiting and _room(running, waiting[0], workers):
            task = waiting.pop(0)
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                batch = [jobs[i] for i in task]
                if len(task) > 1:
                    _package(batch, workers, write)
                _child(batch[0], write, prepared)
            os.close(write)
            _RUNNING.add(pid)
            limit = max(jobs[i].timeout for i in task) * (1 + -(-(len(task) - 1) // workers))
            running[read] = (task, pid, time.monotonic(), limit, bytearray())
        ready, _, _ = select.select(list(running), [], [], 0.05)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                running[fd][4].extend(chunk)
                continue
            task, pid, begun, _, data = running.pop(fd)
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            _RUNNING.discard(pid)
            results.update(zip(task, _finished(data, status, len(task)), strict=True))
        for fd, (task, pid, begun, limit, _) in list(running.items()):
            if time.monotonic() - begun > limit:
                _kill(pid)
                _RUNNING.discard(pid)
                os.close(fd)
                del running[fd]
                error = f"TimeoutError: took more than {limit:.0f} s"
                results.update(
                    (i, Result(False, error, seconds=limit, timed_out=True)) for i in task
                )
    return [results[i] for i in range(len(jobs))]


def _tasks(jobs: list[Job]) -> list[list[int]]:
    """The jobs in groups: the modules of one package together, any other module alone."""
    packages: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        parent = job.module.rpartition(".")[0]
        key = (parent, job.roots, job.cwd) if parent else (i,)
        packages.setdefault(key, []).append(i)
    return list(packages.values())


def _room(running: dict, task: list[int], workers: int) -> bool:
    """Whether a task may start now: a package's (whose children take every worker) only
    alone, a module beside other modules up to ``workers``."""
    if not running:
        return True
    alone = len(task) == 1 and all(len(other) == 1 for other, *_ in running.values())
    return alone and len(running) < workers


def _kill(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except OSError:
            pass
    os.waitpid(pid, 0)


def _finished(data: bytearray, status: int, count: int) -> list[Result]:
    try:
        return [_result(raw) for raw in json.loads(bytes(data))]
    except (ValueError, TypeError):
        code = os.waitstatus_to_exitcode(status)
        return [Result(False, f"the process ended without a result (exit code {code})")] * count


def _prepare(job: Job) -> None:
    """This forked process as the module's own run would be: its own process group, no
    input or output, the working folder, the import roots first, no arguments."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.chdir(job.cwd)
    sys.path[:0] = list(job.roots)
    sys.argv = [job.path]
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _child(job: Job, out: int, prepared: bool = False) -> None:
    """Import one module in this forked process and report on ``out``; never returns."""
    try:
        if prepared:  # in its package's process group: stopped with it
            sys.argv = [job.path]
        else:
            _prepare(job)
        result = _import(job)
    except BaseException as exc:  # noqa: BLE001 - reported, whatever it is
        result = Result(False, _described(exc))
    _report(out, [result])


def _package(jobs: list[Job], workers: int, out: int) -> None:
    """Import a package, then each of its modules in a child forked from here; never
    returns. A package that does not import fails each of its modules the same way."""
    import importlib

    try:
        _prepare(jobs[0])
        try:
            importlib.import_module(jobs[0].module.rpartition(".")[0])
        except BaseException as exc:  # noqa: BLE001 - as each module's import would fail
            results = [_failure(exc, 0.0)] * len(jobs)
        else:
            results = _run_all(jobs, workers, group=False, prepared=True)
    except BaseException as exc:  # noqa: BLE001 - reported, whatever it is
        results = [Result(False, _described(exc))] * len(jobs)
    _report(out, results)


def _report(out: int, results: list[Result]) -> None:
    try:
        os.write(out, json.dumps([asdict(r) for r in results]).encode())
    finally:
        os._exit(0)


def _import(job: Job) -> Result:
    import importlib

    start = time.perf_counter()
    try:
        module = importlib.import_module(job.module)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt included
        return _failure(exc, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    loaded = os.path.realpath(getattr(module, "__file__", "") or "")
    if loaded != os.path.realpath(job.path):
        return Result(False, f"ImportError: `{job.module}` is another file here ({loaded})")
    return Result(True, seconds=seconds)


def _failure(exc: BaseException, seconds: float) -> Result:
    frames = [(f.filename, f.lineno or 0) for f in traceback.extract_tb(exc.__traceback__)]
    mentioned = [(file, int(line)) for file, line in _LOCATION.findall(str(exc))]
    return Result(False, _described(exc), tuple(frames), tuple(mentioned), seconds)


def _described(exc: BaseException) -> str:
    """``Type: the message's first line``, cut short (TorchScript's end in a colon)."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: {exc.code}"
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    first = lines[0].rstrip(":") if lines else ""
    if len(first) > MESSAGE_LIMIT:
        first = first[: MESSAGE_LIMIT - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
