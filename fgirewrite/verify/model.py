"""Model-level verification: the original and the rewritten model, each in its own process.

The entry (``FILE:FUNCTION`` or ``MODULE:FUNCTION``) returns ``(model, example_inputs)``. One
process builds it from the project as written, the other from the project rewritten file by
file (``fgirewrite.verify.side``); the rewritten model takes the original's weights and inputs.
Before anything is compared, one forward of each counts the autograd nodes of every custom
Function: the original must run at least one Function the rewrite replaces, the rewritten
none, or there is nothing to compare. Then: outputs bit for bit and gradients over seeds,
parameters after a few optimizer steps, and a capability table measured on both.

Three verdicts, never mixed: ``equivalent``, ``not equivalent`` (the first mismatch) and
``could not verify`` (the cause, and what to do).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from fgirewrite.execute.census import FunctionNodes
from fgirewrite.project import Entry, EntryError, entry_file
from fgirewrite.surrogate import Skip, Surrogate
from fgirewrite.verify.blocker import display
from fgirewrite.verify.capabilities import CAPABILITIES, Cell
from fgirewrite.verify.compare import bitwise_mismatch, close_mismatch, tolerance
from fgirewrite.verify.side import CheckError, SideError, SideProcess

EQUIVALENT, NOT_EQUIVALENT, COULD_NOT_VERIFY = "equivalent", "not equivalent", "could not verify"
TIMEOUT = 1800.0  # seconds one side may take to answer one request (a compile, say)


@dataclass(frozen=True)
class ModelCheck:
    """One equivalence check: ``ok``, ``mismatch`` (not equivalent) or ``error`` (it could
    not run on the original, so nothing was compared)."""

    name: str
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Capability:
    """One capability measured on both models: 'ok', 'fails' or 'differs', with details and,
    where it does not work, what blocks it."""

    name: str
    original: str
    original_detail: str
    rewritten: str
    rewritten_detail: str
    original_blocker: str = ""
    rewritten_blocker: str = ""


@dataclass(frozen=True)
class FunctionUse:
    """A custom Function the original model runs, and what the rewrite did with it."""

    name: str
    where: str
    original_nodes: int
    rewritten_nodes: int
    status: str  # replaced, still there, left
    reason: str = ""

    def __str__(self) -> str:
        nodes = f"{self.original_nodes} node{'s' * (self.original_nodes != 1)} in the original"
        after = f", {self.rewritten_nodes} in the rewritten model"
        why = f": {self.reason}" if self.reason else ""
        return f"`{self.name}` ({self.where}): {self.status} ({nodes}{after}){why}"


@dataclass(frozen=True)
class ModelReport:
    path: str
    entry: str
    checks: tuple[ModelCheck, ...]
    capabilities: tuple[Capability, ...]
    warnings: tuple[str, ...] = ()
    error: str | None = None  # could not verify, and why
    functions: tuple[FunctionUse, ...] = ()
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        if any(c.status == "mismatch" for c in self.checks):
            return NOT_EQUIVALENT
        if self.error is not None or any(c.status == "error" for c in self.checks):
            return COULD_NOT_VERIFY
        return EQUIVALENT

    @property
    def ok(self) -> bool:
        return self.verdict == EQUIVALENT

    @property
    def cause(self) -> str | None:
        """The first mismatch, or why it could not be verified; None when equivalent."""
        verdict = self.verdict
        if verdict == NOT_EQUIVALENT:
            first = next(c for c in self.checks if c.status == "mismatch")
            return f"{first.name}: {first.detail}"
        if verdict == COULD_NOT_VERIFY:
            if self.error is not None:
                return self.error
            first = next(c for c in self.checks if c.status == "error")
            return f"{first.name}: {first.detail}"
        return None


# -- the two processes ---------------------------------------------------------------------


class _Sides:
    def __init__(self, original: SideProcess, rewritten: SideProcess):
        self.original, self.rewritten = original, rewritten

    def both(self, operation: str, **arguments) -> tuple[object, object]:
        """Ask both sides at once; each answer, or the ``CheckError`` it raised."""
        for side in (self.original, self.rewritten):
            side.send(operation, **arguments)
        answers: list[object] = []
        for side in (self.original, self.rewritten):
            try:
                answers.append(side.receive(operation))
            except CheckError as exc:
                answers.append(exc)
        return answers[0], answers[1]


@contextmanager
def _sides(timeout: float) -> Iterator[_Sides]:
    threads = max(1, (os.cpu_count() or 2) // 2)
    started = [SideProcess(variant, timeout, threads) for variant in ("original", "rewritten")]
    try:
        yield _Sides(*started)
    finally:
        for side in started:
            side.close()


# -- never vacuous -------------------------------------------------------------------------


def _installed(path: str | None) -> bool:
    parts = (path or "").replace(os.sep, "/").split("/")
    return "site-packages" in parts or "dist-packages" in parts


def function_uses(
    original: list[FunctionNodes],
    rewritten: list[FunctionNodes],
    served: dict[str, list[Surrogate | Skip]],
) -> tuple[tuple[FunctionUse, ...], str | None]:
    """What the rewrite did to each Function the original runs, and why there is nothing to
    compare (None when the original runs a Function the rewrite replaces and the rewritten
    model runs none of those)."""
    findings: dict[tuple[str | None, str], Surrogate | Skip] = {
        (os.path.realpath(path), f.name): f for path, found in served.items() for f in found
    }
    after = {f.key: f.nodes for f in rewritten}
    uses = []
    for f in original:
        found = findings.get(f.key)
        left = after.get(f.key, 0)
        where = display(f.where)
        if isinstance(found, Surrogate):
            status, reason = ("replaced", "") if not left else ("still there", "")
        elif isinstance(found, Skip):
            status, reason = (
                "left",
                f"fgirewrite leaves it as it is: [{found.code}] {found.message}",
            )
        elif _installed(f.file):
            status = "left"
            reason = (
                "it comes from an installed package, which fgirewrite does not rewrite: "
                "`fgirewrite.inject(model)` rewrites it in memory"
            )
        else:
            status = "left"
            reason = (
                f"its module `{f.module}` was not imported through the project's imports (a "
                "file loaded by path, or a folder outside the import roots), so the model "
                "runs it as written"
            )
        uses.append(FunctionUse(f.qualname, where, f.nodes, left, status, reason))
    still = [u for u in uses if u.status == "still there"]
    if still:
        names = "; ".join(
            f"`{u.name}` ({u.where}, {u.rewritten_nodes} node{'s' * (u.rewritten_nodes != 1)})"
            for u in still
        )
        module = {f.qualname: f.module for f in rewritten}
        imported = ", ".join(f"`{module.get(u.name, '?')}`" for u in still)
        return tuple(uses), (
            f"the rewritten model still runs the Function the rewrite replaces: {names}; it "
            f"was imported as {imported} from the file as written (a dynamic import or a "
            "sys.path the project's import roots do not cover): nothing to compare"
        )
    if not any(u.status == "replaced" for u in uses):
        if not uses:
            return (), (
                "one forward of the model (its floating inputs requiring grad) runs no "
                "torch.autograd.Function: the rewrite changes nothing in it, so there is "
                "nothing to compare; check that the entry builds the model that uses the "
                "Function"
            )
        listed = "; ".join(f"`{u.name}` ({u.where}): {u.reason}" for u in uses)
        return tuple(uses), (
            f"the rewrite replaces none of the Functions the model runs, so there is nothing "
            f"to compare: {listed}"
        )
    return tuple(uses), None


# -- the checks ----------------------------------------------------------------------------


def _failed(name: str, original: object, rewritten: object) -> ModelCheck | None:
    """A check that raised: on the original nothing was compared; on the rewritten model
    alone it is a difference."""
    if isinstance(original, CheckError):
        return ModelCheck(name, "error", f"the original model raises {original}")
    if isinstance(rewritten, CheckError):
        return ModelCheck(
            name, "mismatch", f"the rewritten model raises {rewritten} where the original runs"
        )
    return None


def _gradient_checks(seed: int, original: dict, rewritten: dict) -> list[ModelCheck]:
    outputs = f"outputs bitwise (seed {seed})"
    if len(original["outputs"]) != len(rewritten["outputs"]):
        counts = f"{len(rewritten['outputs'])} output tensors, not {len(original['outputs'])}"
        return [ModelCheck(outputs, "mismatch", counts)]
    problems = [
        str(m)
        for a, b in zip(rewritten["outputs"], original["outputs"], strict=True)
        if (m := bitwise_mismatch("output", a, b, torch.zeros(()))) is not None
    ]
    checks = [
        ModelCheck(
            outputs, "mismatch" if problems else "ok", "; ".join(problems) or "bit-identical"
        )
    ]
    expected, actual = original["grads"], rewritten["grads"]
    name = f"gradients of {len(expected)} parameters and inputs (seed {seed})"
    if set(expected) != set(actual):
        missing = sorted(set(expected) ^ set(actual))
        checks.append(ModelCheck(name, "mismatch", f"different leaves: {', '.join(missing)}"))
        return checks
    problems, exact = [], True
    for key, b in expected.items():
        a = actual[key]
        exact &= torch.equal(a, b)
        rtol, atol = tolerance(b.dtype)
        if (m := close_mismatch(f"d/d{key}", a, b, torch.zeros(()), rtol, atol)) is not None:
            problems.append(str(m))
    detail = "; ".join(problems) or ("bit-identical" if exact else "within tolerance")
    checks.append(ModelCheck(name, "mismatch" if problems else "ok", detail))
    return checks


def _trajectory_check(steps: int, original: dict, rewritten: dict) -> ModelCheck:
    name = f"parameters after {steps} SGD steps"
    if not original["parameters"]:
        return ModelCheck(name, "ok", "the model has no parameters to train")
    worst, problems = 0.0, []
    for key, b in original["parameters"].items():
        a = rewritten["parameters"].get(key)
        if a is None:
            problems.append(f"{key}: missing in the rewritten model")
            continue
        rtol, atol = tolerance(b.dtype)
        worst = max(worst, float((a - b).abs().max()) if a.numel() else 0.0)
        if (m := close_mismatch(key, a, b, torch.zeros(()), rtol, atol)) is not None:
            problems.append(str(m))
    resets = original["resets"]
    reset = f" (reset between steps: {', '.join(resets)})" if resets else ""
    detail = "; ".join(problems) or f"greatest parameter difference {worst:.3g}{reset}"
    return ModelCheck(name, "mismatch" if problems else "ok", detail)


def _cell(answer: object) -> Cell:
    if isinstance(answer, CheckError):
        return Cell("fails", f"the model could not be built: {answer}")
    assert isinstance(answer, Cell)
    return answer


def _capability(name: str, original: object, rewritten: object, reasons: dict) -> Capability:
    cells = [_cell(original), _cell(rewritten)]
    if (
        name == "double backward"
        and cells[0].status == "ok"
        and cells[1].status == "ok"
        and cells[1].detail != cells[0].detail
    ):
        cells[1] = Cell("differs", f"{cells[1].detail}, original {cells[0].detail.split()[-1]}")
    blockers = []
    for cell in cells:
        text = "" if cell.blocker is None else str(cell.blocker)
        if cell.blocker is not None and cell.blocker.function is not None:
            reason = reasons.get((cell.blocker.file, cell.blocker.function))
            text += f"; {reason}" if reason else ""
        blockers.append(text)
    return Capability(
        name, cells[0].status, cells[0].detail, cells[1].status, cells[1].detail, *blockers
    )


def _warnings(table: list[Capability]) -> list[str]:
    double = next((c for c in table if c.name == "double backward"), None)
    if double is not None and double.original == "ok" and double.rewritten != "ok":
        return [
            "double backward differs: FGI gradients are first-order (the injected derivative "
            "is detached), so gradient penalties, Hessians or meta-gradients through a "
            "surrogate change; keep the original Function if you differentiate through "
            "gradients"
        ]
    return []


def verify_model(
    entry: Entry,
    roots: list[Path],
    seeds: int = 3,
    steps: int = 3,
    batch_dim: int = 0,
    backend: str = "aot_eager",
    capabilities: tuple[str, ...] | None = None,
    progress: Callable[[str], None] | None = None,
    rewriter: str | None = None,
    timeout: float = TIMEOUT,
) -> ModelReport:
    """Verify the rewritten model against the original and measure the capability table.

    ``rewriter`` (``FILE:FUNCTION``, for tests) stands in for ``rewrite_source``."""
    start = time.perf_counter()
    try:
        path = display(str(entry_file(entry, roots)))
    except EntryError as exc:
        return ModelReport(str(entry.path or entry.module), str(entry), (), (), error=str(exc))
    report = _Report(path, str(entry))
    show = progress or (lambda what: None)
    try:
        with _sides(timeout) as sides:
            _run(
                sides,
                report,
                entry,
                roots,
                seeds,
                steps,
                batch_dim,
                backend,
                capabilities,
                show,
                rewriter,
            )
    except SideError as exc:
        report.error = report.error or str(exc)
    return report.done(time.perf_counter() - start)


class _Report:
    """A report being filled in: whatever ran is kept when a later step fails."""

    def __init__(self, path: str, entry: str):
        self.path, self.entry = path, entry
        self.checks: list[ModelCheck] = []
        self.table: list[Capability] = []
        self.functions: tuple[FunctionUse, ...] = ()
        self.error: str | None = None

    def done(self, seconds: float) -> ModelReport:
        return ModelReport(
            self.path,
            self.entry,
            tuple(self.checks),
            tuple(self.table),
            tuple(_warnings(self.table)),
            self.error,
            self.functions,
            seconds,
        )


def _run(
    sides: _Sides,
    report: _Report,
    entry: Entry,
    roots: list[Path],
    seeds: int,
    steps: int,
    batch_dim: int,
    backend: str,
    capabilities: tuple[str, ...] | None,
    show: Callable[[str], None],
    rewriter: str | None,
) -> None:
    show("import both sides")
    common = {"entry": entry, "roots": [str(r) for r in roots], "rewriter": rewriter}
    sides.original.send("load", variant="original", **common)
    sides.rewritten.send("load", variant="rewritten", **common)
    for side in (sides.original, sides.rewritten):
        try:
            side.receive("load")
        except CheckError as exc:
            report.error = report.error or f"the {side.variant} side cannot import the entry: {exc}"
    if report.error:
        return
    show("build both models, count their Functions")
    try:
        original = sides.original.call("build")
    except CheckError as exc:
        report.error = f"building the original model and running one forward raised {exc}"
        return
    try:
        rewritten = sides.rewritten.call(
            "build", state=original["state"], inputs=original["inputs"]
        )
    except CheckError as exc:
        report.checks.append(
            ModelCheck("build and run", "mismatch", f"the rewritten model raises {exc}")
        )
        return
    report.functions, report.error = function_uses(
        original["census"], rewritten["census"], rewritten["served"]
    )
    if report.error:
        return
    for seed in range(seeds):
        show(f"gradients, seed {seed}")
        o, r = sides.both("gradients", seed=seed)
        failed = _failed(f"outputs and gradients (seed {seed})", o, r)
        report.checks += [failed] if failed else _gradient_checks(seed, o, r)  # type: ignore[arg-type]
    show(f"{steps} SGD steps")
    o, r = sides.both("trajectory", steps=steps)
    failed = _failed(f"parameters after {steps} SGD steps", o, r)
    report.checks.append(failed or _trajectory_check(steps, o, r))  # type: ignore[arg-type]
    reasons = {
        (os.path.realpath(path), f.name): f"fgirewrite leaves it as it is: [{f.code}] {f.message}"
        for path, found in rewritten["served"].items()
        for f in found
        if isinstance(f, Skip)
    }
    for name in capabilities or tuple(CAPABILITIES):
        show(name)
        o, r = sides.both("capability", name=name, batch_dim=batch_dim, backend=backend)
        report.table.append(_capability(name, o, r, reasons))
