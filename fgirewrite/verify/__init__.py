"""Verification: prove each rewrite gradient-equivalent to the Function it replaces.

For every surrogate, dtype and device: forward values equal bit for bit and of the same dtype
(with and without grad), gradients with respect to every differentiable input equal within
the dtype's tolerance wherever the original's gradient is finite (infinite inputs included),
and forward-mode tangents equal to the backward gradient.

The flow: ``arguments.py`` decides how to call a surrogate, ``pair.py`` compares one original
with its rewrite, and this module evaluates the surrogates of a rewritten file and verifies each.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

from fgirewrite import codegen, discover
from fgirewrite.rewrite import Rewrite
from fgirewrite.surrogate import Surrogate
from fgirewrite.verify.pair import Check, SurrogateReport, devices, verify_pair
from fgirewrite.verify.sandbox import TEST_CALLABLE, SandboxError, evaluate, factory_bindings

__all__ = [
    "Check",
    "SurrogateReport",
    "devices",
    "verify_pair",
    "call_site_arguments",
    "evaluate_surrogate",
    "verify_rewrite",
]


def call_site_arguments(tree: ast.Module, class_name: str) -> list[object] | None:
    """Literal arguments of the first ``Class.apply(...)`` call in the file, if any."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "apply"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == class_name
            and len(node.args) > 1
        ):
            try:
                return [None] + [ast.literal_eval(a) for a in node.args[1:]]
            except ValueError:
                continue
    return None


def evaluate_surrogate(rewrite: Rewrite, surrogate: Surrogate, path: Path | None = None):
    """The original ``apply``, the compiled rewrite, call-site arguments and closure defaults.

    Executes only the slice of the module the class needs (see ``sandbox``).
    """
    path = Path(path or rewrite.path)
    text = rewrite.source.decode(_encoding(rewrite.source))
    tree = ast.parse(rewrite.source)
    info = discover.module_info(text, tree)
    site = next(
        s
        for s in discover.find_classes(tree, info.imports)
        if (s.qualname, s.line) == (surrogate.name, surrogate.location.line)
    )
    name = rewrite.names.get(surrogate.name, "rewritten")
    namespace = evaluate(path, text, tree, info, site, set(surrogate.free_names))
    fgi = codegen.compile_surrogate(surrogate, dict(namespace), name)
    cls = namespace[site.name]
    original = getattr(cls, "__func__", cls).apply  # a class under @staticmethod
    holder = next(s for s in tree.body if s.lineno <= site.line <= (s.end_lineno or 0))
    closure = {
        k: "a test callable, exp(-|first argument|)"
        if v == TEST_CALLABLE
        else f"{v} (default of the enclosing function)"
        for k, v in factory_bindings(holder, site)
        if k
    }
    return original, fgi, call_site_arguments(tree, site.name), closure


def verify_rewrite(rewrite: Rewrite, path: Path | None = None) -> list[SurrogateReport]:
    """Verify every surrogate of a rewritten file, evaluating only what each one needs."""
    reports = []
    for surrogate in rewrite.surrogates:
        name = rewrite.names.get(surrogate.name, "rewritten")
        try:
            original, fgi, call_args, closure = evaluate_surrogate(rewrite, surrogate, path)
        except SandboxError as exc:
            reports.append(
                SurrogateReport(surrogate.name, str(surrogate.location), name, error=str(exc))
            )
            continue
        except Exception as exc:  # noqa: BLE001 - generated code that does not compile
            reports.append(
                SurrogateReport(
                    surrogate.name,
                    str(surrogate.location),
                    name,
                    error=f"{type(exc).__name__}: {exc}",
                )
            )
            continue
        report = verify_pair(original, fgi, surrogate, name, call_args)
        reports.append(replace(report, arguments={**report.arguments, **closure}))
    return reports


def _encoding(data: bytes) -> str:
    import io
    import tokenize

    return tokenize.detect_encoding(io.BytesIO(data).readline)[0]
