"""Verify what is written: each case in ``fixtures/trust`` is rewritten with ``--write`` as a
user would, then the written module is imported and every name its callers reach (the
``# probe:`` expressions) is compared with the original module's: values bit for bit and of
the same dtype, every input's ``.grad`` (None stays None), under small and large incoming
gradients. A second run must change nothing, and each class's outcome is the one the case
expects (``# expect:``), reason code and message included.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import FIXTURES
from typer.testing import CliRunner

from fgirewrite.cli import app

CASES = sorted((FIXTURES / "trust").glob("*.py"))
SUPPORT = FIXTURES / "trust" / "support"


@dataclass
class Case:
    path: Path
    expect: dict[str, str]  # class (or "" for the file's only class) -> "rewrite" / "skip ..."
    probes: list[str]
    raises: list[tuple[str, str]] = field(default_factory=list)  # (expression, "Type: text")


def parse(path: Path) -> Case:
    text = path.read_text(encoding="utf-8")
    expect = {}
    for line in re.findall(r"^# expect: (.*)$", text, re.M):
        name, _, rest = line.partition(": ")
        if name in ("rewrite",) or name.startswith("skip "):
            expect[""] = line
        else:
            expect[name] = rest
    raises = [
        tuple(r.split(" -> ", 1)) for r in re.findall(r"^# rewritten-raises: (.*)$", text, re.M)
    ]
    return Case(path, expect, re.findall(r"^# probe: (.*)$", text, re.M), raises)  # type: ignore[arg-type]


@contextlib.contextmanager
def _world(directory: Path, case: ModuleType | None = None) -> Iterator[None]:
    """``directory`` first on the path, its own ``case`` module (when given) in sys.modules,
    and none of the other world's support modules."""
    names = {p.stem for p in SUPPORT.glob("*/*.py")} | {"case"}
    for name in names & set(sys.modules):
        del sys.modules[name]
    if case is not None:
        sys.modules["case"] = case
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        sys.path.remove(str(directory))


def _import(directory: Path) -> ModuleType:
    with _world(directory):
        return importlib.import_module("case")


def _inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 4, generator=generator) * 2
    x[0, 0], x[1, 1], x[2, 2] = 0.0, -0.0, 30.0
    values = {
        "x": x,
        "x3": torch.randn(2, 4, 4, generator=generator),
        "thr": torch.rand(4, generator=generator),
        "thr_row": torch.rand(4, 1, generator=generator),
        "thr0": torch.tensor(0.75),
        "thr1": torch.tensor([0.25]),
    }
    return {k: v.clone().requires_grad_() for k, v in values.items()}


def _evaluate(module: ModuleType, directory: Path, expression: str, scale: float):
    """The expression's value, and for a tensor the .grad of every input after backward."""
    inputs = _inputs()
    namespace = {**vars(module), **inputs, "torch": torch, "other": importlib.import_module}
    torch.manual_seed(0)
    try:
        with _world(directory, module):
            value = eval(expression, namespace)  # noqa: S307 - the case's own probe
    except Exception as exc:  # noqa: BLE001 - both sides must fail alike
        return ("raises", type(exc).__name__, str(exc)), {}
    if not isinstance(value, torch.Tensor):
        return ("value", value if not callable(value) else "callable"), {}
    if value.requires_grad:
        generator = torch.Generator().manual_seed(1)
        go = torch.randn(value.shape, generator=generator, dtype=torch.float64) * scale
        value.backward(go.to(value.dtype))
    return ("tensor", value.detach()), {k: v.grad for k, v in inputs.items()}


def _same(a, b, what: str) -> None:
    if isinstance(a, tuple) and isinstance(b, tuple) and a[:1] == b[:1] == ("raises",):
        assert a[1] == b[1], f"{what}: {a} != {b}"
        return
    if isinstance(a, tuple) and isinstance(b, tuple):
        assert a[0] == b[0], f"{what}: {a} != {b}"
        a, b = a[1], b[1]
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), what
        assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{tuple(a.shape)}"
        torch.testing.assert_close(a, b, equal_nan=True, msg=lambda m: f"{what}: {m}")
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


def _run(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, [*args, "--output-format", "json"])
    return result.exit_code, json.loads(result.stdout)


def _setup(case: Case, root: Path) -> tuple[Path, Path]:
    original, written = root / "original", root / "written"
    for directory in (original, written):
        directory.mkdir()
        shutil.copy(case.path, directory / "case.py")
        if (SUPPORT / case.path.stem).is_dir():
            for support in (SUPPORT / case.path.stem).glob("*.py"):
                shutil.copy(support, directory / support.name)
    return original, written


@pytest.mark.parametrize("case", [parse(p) for p in CASES], ids=lambda c: c.path.stem)
def test_written_module_reaches_equivalent_functions(case: Case, tmp_path: Path) -> None:
    original_dir, written_dir = _setup(case, tmp_path)
    target = written_dir / "case.py"
    code, report = _run("--write", str(target))
    assert code in (0, 1), report
    outcomes = {f["class"]: f for f in report["findings"]}
    for name, expected in case.expect.items():
        found = outcomes[name] if name else next(iter(outcomes.values()))
        said = f"{found['status']} {found.get('code', '')}: {found.get('message', '')}"
        if expected == "rewrite":
            assert found["status"] == "rewritten", said
        else:
            code_and_message = expected.removeprefix("skip ")
            assert found["status"] in ("skipped", "failed"), said
            assert f"{found['code']}: {found['message']}".startswith(code_and_message), said
    assert len(outcomes) == len(case.expect), outcomes
    rewritten = any(f["status"] == "rewritten" for f in outcomes.values())
    assert (target.read_bytes() != case.path.read_bytes()) == rewritten

    original = _import(original_dir)
    written = _import(written_dir)
    for expression in case.probes:
        for scale in (1.0, 1e4):
            before = _evaluate(original, original_dir, expression, scale)
            after = _evaluate(written, written_dir, expression, scale)
            _same(after[0], before[0], f"{expression} value")
            for key in before[1]:
                _same(after[1][key], before[1][key], f"{expression}: {key}.grad (x{scale:g})")
    for expression, error in case.raises:
        assert _evaluate(original, original_dir, expression, 1.0)[0][0] == "tensor"
        outcome = _evaluate(written, written_dir, expression, 1.0)[0]
        kind, _, text = error.partition(": ")
        assert outcome[:2] == ("raises", kind) and text in outcome[2], outcome

    again = target.read_bytes()
    code, second = _run("--check", str(target))
    assert target.read_bytes() == again
    # Static modes cannot know that verification refused a class: only those come back, with
    # the subclasses such a refusal held back.
    refused = {f["class"] for f in outcomes.values() if f["status"] == "failed"}
    refused |= {
        f["class"]
        for f in outcomes.values()
        if f.get("code") == "relies-on-function"
        and any(f["message"].startswith(f"its base `{name}`") for name in refused)
    }
    again_proposed = {f["class"] for f in second["findings"] if f["status"] == "would-rewrite"}
    assert again_proposed <= refused, second
    assert code == (1 if second["findings"] else 0)


def test_there_are_at_least_fifty_cases() -> None:
    assert len(CASES) >= 50
