"""Expected failures: known limitations of a custom ``torch.autograd.Function``, hit by the
original variant. They are findings of the benchmark (what FGI removes), not errors of it;
any other failure is unexpected and makes ``fgirewrite bench`` exit 1. No torch import here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fgirewrite.bench.config import MEASURES, VARIANT_TITLES


@dataclass(frozen=True)
class Limitation:
    """A known limitation, recognised by a fixed part of the error torch raises; ``named``:
    the error names the Function (TorchScript quotes the Python call it cannot export)."""

    marker: str
    reason: str
    named: bool = False


LIMITATIONS = (
    Limitation(
        "Could not export Python function call",
        "TorchScript cannot save a custom autograd.Function (the model calls back into Python)",
        named=True,
    ),
    Limitation(
        "it must override the setup_context staticmethod",
        "torch.func (vmap, grad, jvp) refuses an autograd.Function without setup_context",
    ),
    Limitation(
        "You must implement the jvp function for custom autograd.Function",
        "forward-mode AD needs a jvp, which the autograd.Function does not define",
    ),
)
_CALL = re.compile(r"Python function call '([^']+)'")


@dataclass(frozen=True)
class Functions:
    """The model file's custom Functions: rewritten into FGI, and left as they are."""

    rewritten: frozenset[str]
    skipped: frozenset[str]

    @classmethod
    def of(cls, doc: dict) -> Functions:
        rewrite = doc["model"]["rewrite"]
        return cls(frozenset(rewrite["rewritten"]), frozenset(rewrite["skipped"]))


def reason(variant: str, error: str | None, functions: Functions) -> str | None:
    """Why a failure of ``variant`` with ``error`` is expected; None when it is not. The
    original hits these through the file's custom Functions; the rewritten model only through
    a Function the rewrite left as it was (the same error there otherwise means the rewrite
    did not remove it). A Python call TorchScript names that is not one of the file's
    Functions (an ignored method, a library's Function) is not recognised."""
    limitation = next((lim for lim in LIMITATIONS if error and lim.marker in error), None)
    if limitation is None:
        return None
    candidates = functions.skipped if variant == "fgi" else functions.rewritten | functions.skipped
    if limitation.named:
        found = _CALL.search(error or "")
        if not found or found.group(1) not in candidates:
            return None
    elif not candidates:
        return None
    left = " (left as a custom Function by the rewrite)" if variant == "fgi" else ""
    return limitation.reason + left


@dataclass(frozen=True)
class Failure:
    """One failed measurement, check or experiment; ``expected`` says why it was expected."""

    where: str
    error: str
    expected: str | None


def _result_failures(r: dict, functions: Functions) -> list[Failure]:
    where = f"T={r['length']} {r['mode']} {VARIANT_TITLES[r['variant']]}"
    if r["status"] == "failed":
        return [Failure(where, r["error"], reason(r["variant"], r["error"], functions))]
    parts = [(measure, r["timings"][measure]) for measure in MEASURES]
    parts += list(r["checks"].items())
    parts += [("peak memory", r["memory"])] if r["memory"] else []
    return [
        Failure(f"{where} {name}", part["error"], reason(r["variant"], part["error"], functions))
        for name, part in parts
        if part["status"] == "failed"
    ]


def failures(doc: dict) -> list[Failure]:
    """Every failure in a result document, in report order."""
    functions = Functions.of(doc)
    found = [f for r in doc["results"] for f in _result_failures(r, functions)]
    cc = doc.get("compile_cache")
    for variant, entry in (cc or {}).get("variants", {}).items():
        for state in ("cold", "warm"):
            run = entry[state]
            if run["status"] == "failed":
                found.append(
                    Failure(
                        f"compile cache {variant} {state}",
                        run["error"],
                        reason(variant, run["error"], functions),
                    )
                )
    return found


def unexpected(doc: dict) -> list[Failure]:
    """The failures that are not known limitations: exit 1 when there is one."""
    return [f for f in failures(doc) if f.expected is None]


def _mark(failure: dict, variant: str, functions: Functions) -> None:
    why = reason(variant, failure.get("error"), functions)
    if why:
        failure["expected"] = why
    else:
        failure.pop("expected", None)


def annotate(doc: dict) -> None:
    """Record in the document, as ``expected: reason``, each failure that is expected."""
    functions = Functions.of(doc)
    for r in doc["results"]:
        variant = r["variant"]
        parts = [r["timings"][m] for m in MEASURES] + list(r["checks"].values())
        parts += [r["memory"]] if r["memory"] else []
        for part in parts:
            if part.get("status") == "failed":
                _mark(part, variant, functions)
        if r["status"] != "failed":
            r.pop("expected", None)
            continue
        _mark(r, variant, functions)
