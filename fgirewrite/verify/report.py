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
from fgirewrite.verify.model import COULD_NOT_VERIFY, EQUIVALENT, NOT_EQUIVALENT, ModelReport
from fgirewrite.verify.pair import Check, SurrogateReport

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("schema.json")


def surrogate_verdict(r: SurrogateReport) -> str:
    """``equivalent``, ``not equivalent`` (a compared value differs, on its own name or on
    another name callers reach it by) or ``could not verify`` (nothing compared, or the
    evaluation failed)."""
    if r.ok:
        return EQUIVALENT
    if any(c.failures for c in r.checks if c.compared) or (r.error or "").startswith("through `"):
        return NOT_EQUIVALENT
    return COULD_NOT_VERIFY


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
        "verdict": m.verdict,
        "cause": m.cause,
        "error": m.error,
        "seconds": round(m.seconds, 3),
        "functions": [
            {
                "name": u.name,
                "where": u.where,
                "status": u.status,
                "original_nodes": u.original_nodes,
                "rewritten_nodes": u.rewritten_nodes,
                "reason": u.reason,
            }
            for u in m.functions
        ],
        "checks": [
            {"name": c.name, "ok": c.ok, "status": c.status, "detail": c.detail} for c in m.checks
        ],
        "capabilities": [
            {
                "name": c.name,
                "original": _cell_json(c.original, c.original_detail, c.original_blocker),
                "rewritten": _cell_json(c.rewritten, c.rewritten_detail, c.rewritten_blocker),
            }
            for c in m.capabilities
        ],
        "warnings": list(m.warnings),
    }


def _cell_json(status: str, detail: str, blocker: str) -> dict:
    return {"status": status, "detail": detail, "blocked_by": blocker or None}


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
                ET.SubElement(case(classname, "compare"), "error", message=f.model.error)
                counts["errors"] += 1
            for check in f.model.checks:
                element = case(classname, check.name)
                if not check.ok:
                    kind = "failure" if check.status == "mismatch" else "error"
                    ET.SubElement(element, kind, message=check.detail[:500]).text = check.detail
                    counts["failures" if kind == "failure" else "errors"] += 1
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
        cells = [
            f"{_MARK.get(status, status)}: {_md(detail)}"
            + (f" (blocked by {_md(blocker)})" if blocker else "")
            for status, detail, blocker in (
                (c.original, c.original_detail, c.original_blocker),
                (c.rewritten, c.rewritten_detail, c.rewritten_blocker),
            )
        ]
        rows.append(f"| {c.name} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(files: list[FileVerification]) -> str:
    """A summary for a CI job page."""
    lines = [f"## fgirewrite verify: {_headline(files)}", ""]
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


def _headline(files: list[FileVerification]) -> str:
    verdicts = {surrogate_verdict(r) for f in files for _, r in f.surrogates}
    verdicts |= {f.model.verdict for f in files if f.model is not None}
    if NOT_EQUIVALENT in verdicts:
        return "❌ not equivalent"
    if COULD_NOT_VERIFY in verdicts or any(f.error for f in files):
        return "⚠️ could not verify everything"
    return "✅ all equivalent"


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
    mark = {EQUIVALENT: "✅", NOT_EQUIVALENT: "❌", COULD_NOT_VERIFY: "⚠️"}[m.verdict]
    lines = ["", f"### Model `{m.entry}`: {mark} {m.verdict}", ""]
    if m.cause:
        lines += [_md(m.cause), ""]
    lines += [f"- `{_md(u.name)}` ({u.where}): {u.status}" for u in m.functions]
    lines += ["", "| check | result |", "| --- | --- |"]
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
        verdict = surrogate_verdict(r)
        counted = ""
        if verdict != COULD_NOT_VERIFY:
            passed = sum(c.ok for c in r.checks)
            counted = f" ({passed} of {len(r.checks)} dtype and device checks passed)"
        lines += _wrap(
            f"{s.name} ({s.location}) as {r.function}(): {verdict}{counted}", width, "  "
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
    lines = [f"Model {m.entry}: {m.verdict} ({m.seconds:.1f} s)"]
    if m.cause:
        lines += _wrap(m.cause, width, "  ")
    for use in m.functions:
        lines += _wrap(f"Function {use}", width, "  ")
    label = {"ok": "ok", "mismatch": "NOT EQUIVALENT", "error": "COULD NOT RUN"}
    for c in m.checks:
        lines += _wrap(f"{label[c.status]}: {c.name}: {c.detail}", width, "  ")
    if m.capabilities:
        lines.append("Capabilities, measured on both models")
    for capability in m.capabilities:
        lines.append(f"  {capability.name}")
        for side, status, detail, blocker in (
            (
                "original: ",
                capability.original,
                capability.original_detail,
                capability.original_blocker,
            ),
            (
                "rewritten:",
                capability.rewritten,
                capability.rewritten_detail,
                capability.rewritten_blocker,
            ),
        ):
            blocked = f" (blocked by {blocker})" if blocker else ""
            lines += _wrap(f"{status}: {detail}{blocked}", width, f"    {side} ", 0)
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
