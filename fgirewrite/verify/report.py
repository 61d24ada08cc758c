"""Verification reports: JSON (versioned schema), JUnit XML, Markdown, and the terminal table."""

from __future__ import annotations

import json
import platform
import shutil
import sys
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from fgirewrite import __version__
from fgirewrite.surrogate import Skip, Surrogate
from fgirewrite.verify.model import ModelReport
from fgirewrite.verify.pair import Check, SurrogateReport

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("schema.json")


@dataclass
class FileVerification:
    """Everything verified about one file."""

    path: str
    surrogates: list[tuple[Surrogate, SurrogateReport]] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    model: ModelReport | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and all(r.ok for _, r in self.surrogates)
            and (self.model is None or self.model.ok)
        )


def _tolerances() -> dict:
    import torch

    from fgirewrite.verify.compare import tolerance
    from fgirewrite.verify.probes import DTYPES

    return {
        str(d).replace("torch.", ""): dict(zip(("rtol", "atol"), tolerance(d), strict=True))
        for d in DTYPES
    } | {"torch": torch.__version__}


def to_json(files: list[FileVerification]) -> dict:
    """The report as a JSON-ready dict, following ``schema.json``."""
    import torch

    from fgirewrite.verify.pair import devices

    tolerances = _tolerances()
    return {
        "schema": "fgirewrite-verify",
        "version": SCHEMA_VERSION,
        "tool": {"name": "fgirewrite", "version": __version__},
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "devices": devices(),
        },
        "tolerances": {k: v for k, v in tolerances.items() if k != "torch"},
        "ok": all(f.ok for f in files),
        "files": [_file_json(f) for f in files],
    }


def _file_json(f: FileVerification) -> dict:
    return {
        "path": f.path,
        "ok": f.ok,
        "error": f.error,
        "surrogates": [
            {
                "name": s.name,
                "location": str(s.location),
                "function": r.function,
                "ok": r.ok,
                "error": r.error,
                "arguments": {k: str(v) for k, v in r.arguments.items()},
                "gradients": {g.param: g.derivative for g in s.gradients},
                "checks": [check_json(c) for c in r.checks],
            }
            for s, r in f.surrogates
        ],
        "skipped": [
            {"name": s.name, "location": str(s.location), "code": s.code, "message": s.message}
            for s in f.skipped
        ],
        "model": None if f.model is None else _model_json(f.model),
    }


def check_json(c: Check) -> dict:
    """One dtype and device of a surrogate's verification."""
    return {
        "dtype": c.dtype,
        "device": c.device,
        "ok": c.ok,
        "compared": c.compared,
        "bitwise": c.bitwise,
        "failures": list(c.failures),
        "notes": list(c.notes),
    }


def verification_json(r: SurrogateReport) -> dict:
    """A surrogate's verdict, as ``fgirewrite --write --output-format json`` lists it."""
    return {
        "ok": r.ok,
        "error": r.error,
        "arguments": {k: str(v) for k, v in r.arguments.items()},
        "reached": list(r.reached),
        "checks": [check_json(c) for c in r.checks],
    }


def _model_json(m: ModelReport) -> dict:
    return {
        "entry": m.entry,
        "ok": m.ok,
        "error": m.error,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in m.checks],
        "capabilities": [
            {
                "name": c.name,
                "original": {"status": c.original, "detail": c.original_detail},
                "rewritten": {"status": c.rewritten, "detail": c.rewritten_detail},
            }
            for c in m.capabilities
        ],
        "warnings": list(m.warnings),
    }


def to_junit(files: list[FileVerification]) -> str:
    """JUnit XML: a test case per surrogate x dtype x device, and per model check."""
    root = ET.Element("testsuites", name="fgirewrite verify")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for f in files:
        suite = ET.SubElement(root, "testsuite", name=f.path)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}

        def case(classname: str, name: str, counts=counts, suite=suite) -> ET.Element:
            counts["tests"] += 1
            return ET.SubElement(suite, "testcase", classname=classname, name=name)

        if f.error is not None:
            ET.SubElement(case(f.path, "read"), "error", message=f.error)
            counts["errors"] += 1
        for s, r in f.surrogates:
            classname = f"{f.path}::{s.name}"
            if r.error is not None:
                ET.SubElement(case(classname, "evaluate"), "error", message=r.error)
                counts["errors"] += 1
            for c in r.checks:
                element = case(classname, f"{c.dtype}-{c.device}")
                if c.failures:
                    failure = ET.SubElement(element, "failure", message=c.failures[0][:500])
                    failure.text = "\n".join(c.failures)
                    counts["failures"] += 1
                if c.notes:
                    ET.SubElement(element, "system-out").text = "\n".join(c.notes)
        for skip in f.skipped:
            element = case(f"{f.path}::{skip.name}", "rewrite")
            ET.SubElement(element, "skipped", message=f"{skip.code}: {skip.message}")
            counts["skipped"] += 1
        if f.model is not None:
            classname = f"{f.path}::model:{f.model.entry}"
            if f.model.error is not None:
                ET.SubElement(case(classname, "build"), "error", message=f.model.error)
                counts["errors"] += 1
            for check in f.model.checks:
                element = case(classname, check.name)
                if not check.ok:
                    ET.SubElement(
                        element, "failure", message=check.detail[:500]
                    ).text = check.detail
                    counts["failures"] += 1
            if f.model.capabilities:
                out = ET.SubElement(suite, "system-out")
                out.text = capability_markdown(f.model) + "\n" + "\n".join(f.model.warnings)
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


_MARK = {"ok": "✅ ok", "fails": "❌ fails", "differs": "⚠️ differs"}


def capability_markdown(model: ModelReport) -> str:
    rows = ["| capability | original | rewritten |", "| --- | --- | --- |"]
    for c in model.capabilities:
        rows.append(
            f"| {c.name} | {_MARK.get(c.original, c.original)}: {_md(c.original_detail)} "
            f"| {_MARK.get(c.rewritten, c.rewritten)}: {_md(c.rewritten_detail)} |"
        )
    return "\n".join(rows)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(files: list[FileVerification]) -> str:
    """A summary for a CI job page."""
    ok = all(f.ok for f in files)
    lines = [f"## fgirewrite verify: {'✅ all equivalent' if ok else '❌ not equivalent'}", ""]
    lines += _markdown_surrogates([(s, r) for f in files for s, r in f.surrogates])
    skipped = [s for f in files for s in f.skipped]
    if skipped:
        lines += ["", "Left as they are:", ""]
        lines += [f"- `{s.name}` ({s.location}): `{s.code}` {_md(s.message)}" for s in skipped]
    for f in files:
        if f.error:
            lines += ["", f"- ❌ {f.path}: {_md(f.error)}"]
        if f.model is not None:
            lines += _markdown_model(f.path, f.model)
    return "\n".join(lines) + "\n"


def _markdown_surrogates(surrogates: list[tuple[Surrogate, SurrogateReport]]) -> list[str]:
    if not surrogates:
        return []
    lines = [
        "| surrogate | location | rewritten as | d/dinput | dtypes × devices | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s, r in surrogates:
        grads = "; ".join(f"d/d{g.param} = `{_md(g.derivative)}`" for g in s.gradients)
        exact = [c.dtype for c in r.checks if c.bitwise]
        result = "✅ equivalent" if r.ok else "❌ " + _md("; ".join(r.failures())[:300])
        if r.ok and exact:
            result += f" (gradients bit-identical in {', '.join(dict.fromkeys(exact))})"
        lines.append(
            f"| `{s.name}` | {s.location} | `{r.function}` | {grads} | {len(r.checks)} | {result} |"
        )
    notes = sorted({n for _, r in surrogates for c in r.checks for n in c.notes})
    if notes:
        lines += ["", "Notes:", *[f"- {_md(n)}" for n in notes]]
    return lines


def _markdown_model(path: str, m: ModelReport) -> list[str]:
    lines = ["", f"### Model `{path}:{m.entry}`", ""]
    if m.error:
        lines.append(f"❌ {_md(m.error)}")
    lines += ["| check | result |", "| --- | --- |"]
    lines += [f"| {c.name} | {'✅' if c.ok else '❌'} {_md(c.detail)} |" for c in m.checks]
    if m.capabilities:
        lines += ["", capability_markdown(m)]
    lines += [f"\n> ⚠️ {w}" for w in m.warnings]
    return lines


def print_terminal(files: list[FileVerification], width: int | None = None) -> None:
    """The report on stdout (errors are not part of it: the command prints them on stderr)."""
    sys.stdout.write("".join(line + "\n" for line in terminal_lines(files, width)))


def terminal_lines(files: list[FileVerification], width: int | None = None) -> list[str]:
    """The report as plain indented lines, wrapped to ``width`` (the terminal's; 80 columns
    in a pipe or a CI log): a list, not a table, so that it reads at any width. A finding
    left as it is, or a warning, stays on one line, whatever the width, to be grepped."""
    width = max(40, width or shutil.get_terminal_size((80, 24)).columns)
    lines: list[str] = []
    surrogates = [(s, r) for f in files for s, r in f.surrogates]
    if surrogates:
        lines.append("Surrogates")
    for s, r in surrogates:
        passed = sum(c.ok for c in r.checks)
        verdict = "equivalent" if r.ok else "NOT equivalent"
        lines += _wrap(
            f"{s.name} ({s.location}) as {r.function}(): {verdict} "
            f"({passed} of {len(r.checks)} dtype and device checks passed)",
            width,
            "  ",
        )
        for g in s.gradients:
            lines += _wrap(f"d/d{g.param} = {g.derivative}", width, "      ")
        for failure in [] if r.ok else r.failures():
            lines += _wrap(failure, width, "      ")
    for f in files:
        for skip in f.skipped:
            lines.append(
                f"{skip.location}: left as it is: {skip.name} [{skip.code}] {skip.message}"
            )
        if f.model is not None:
            lines += _model_lines(f.path, f.model, width)
    return lines


def _model_lines(path: str, m: ModelReport, width: int) -> list[str]:
    lines = [f"Model {path}:{m.entry}"]
    if m.error:
        lines += _wrap(f"not verified: {m.error}", width, "  ")
    for c in m.checks:
        lines += _wrap(f"{'ok' if c.ok else 'FAILED'}: {c.name}: {c.detail}", width, "  ")
    if m.capabilities:
        lines.append("Capabilities, measured on both models")
    for capability in m.capabilities:
        lines.append(f"  {capability.name}")
        for label, status, detail in (
            ("original: ", capability.original, capability.original_detail),
            ("rewritten:", capability.rewritten, capability.rewritten_detail),
        ):
            lines += _wrap(f"{status}: {detail}", width, f"    {label} ", 0)
    lines += [f"warning: {w}" for w in m.warnings]
    return lines


def _wrap(text: str, width: int, indent: str, hang: int = 4) -> list[str]:
    """``text`` wrapped to ``width``; continuation lines under the text, ``hang`` further."""
    return textwrap.wrap(
        " ".join(text.split()),
        width,
        initial_indent=indent,
        subsequent_indent=" " * (len(indent) + hang),
        break_on_hyphens=False,
    ) or [indent.rstrip()]


def write_json(files: list[FileVerification], path: Path) -> None:
    path.write_text(json.dumps(to_json(files), indent=2) + "\n", encoding="utf-8")
