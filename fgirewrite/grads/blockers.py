"""Name the custom ``torch.autograd.Function`` that stops a ``torch.func`` transform, and say
what to do about it: never a command that would refuse.

The class is found on the stack (``fgirewrite.verify.blocker``); when a traceback has lost
that frame, the autograd graph of one eager run names the Function classes the model uses.
Whether fgirewrite can rewrite the class is asked of the rewriter itself (the file's
rewrite, or the live extraction for an installed package), so that a Function it refuses
is reported with its reason, not with a command that would refuse it again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch

from fgirewrite.execute.census import function_classes
from fgirewrite.surrogate import Skip
from fgirewrite.verify.blocker import blocking_reason, function_from_traceback, source_of

_source_of = source_of  # a module attribute: tests stand an installed file in


def _installed(path: str) -> bool:
    parts = path.replace(os.sep, "/").split("/")
    return "site-packages" in parts or "dist-packages" in parts


def refusal(cls: type, path: str | None) -> Skip | None:
    """Why fgirewrite leaves ``cls`` as a Function (its file's rewrite, or for an installed
    package the live extraction), or None when it rewrites it."""
    if path is None or _installed(path):
        from fgirewrite.live.surrogates import extract_class

        found = extract_class(cls)
        return found if isinstance(found, Skip) else None
    from fgirewrite.rewrite import rewrite_source
    from fgirewrite.source import SourceError

    try:
        with open(path, "rb") as handle:
            result = rewrite_source(handle.read(), path)
    except (OSError, SourceError):
        return None
    for finding in result.findings:
        if finding.name == cls.__qualname__:
            return finding if isinstance(finding, Skip) else None
    return None


class TransformBlockedError(RuntimeError):
    """A custom autograd.Function in the model blocks a torch.func transform."""

    def __init__(
        self, message: str, function: type | None, source: str | None, call_site: str | None
    ):
        super().__init__(message)
        self.function = function  # the Function subclass, if it could be found
        self.source = source  # its file, relative to the working directory where possible
        self.call_site = call_site  # "path:line" of the model code that called .apply


def functions_in_graph(output: torch.Tensor) -> list[type]:
    """The custom Function classes in the autograd graph of ``output``, first seen first."""
    return list(function_classes(output))


def blocked_message(
    what: str, cls: type | None, reason: str, call_site: str | None = None
) -> tuple[str, str | None]:
    """The error message, and the class's source file."""
    if cls is None:
        return (
            f"{what}: the model calls a torch.autograd.Function that blocks torch.func "
            f"({reason}); rewrite it into forward gradient injection with "
            "`fgirewrite --write <its file>`"
        ), None
    path, line = _source_of(cls)
    where = "source unknown" if path is None else path if line is None else f"{path}:{line}"
    called = f", called at {call_site}" if call_site else ""
    name = cls.__qualname__
    refused = refusal(cls, path)
    if refused is not None:
        fix = (
            f"fgirewrite leaves it as a Function ([{refused.code}] {refused.message}), so "
            "its rewrite cannot help: give it a setup_context staticmethod with a jvp and a "
            "vmap rule (generate_vmap_rule=True), or keep it out of the transformed code"
        )
    elif path is None:
        fix = "rewrite its source file with `fgirewrite --write <file>`"
    elif _installed(path):
        fix = (
            "it comes from an installed package: rewrite the model in memory with "
            "`fgirewrite.inject(model)`"
        )
    else:
        fix = (
            f"rewrite it with `fgirewrite --write {path}`, or load the model rewritten in "
            f"memory with `fgirewrite.load.load_pair({path!r})`"
        )
    return (
        f"{what}: the model calls torch.autograd.Function `{name}` ({where}"
        f"{called}), which blocks torch.func: {reason}; {fix}"
    ), path


@contextlib.contextmanager
def explain_blocked(
    what: str, run_eagerly: Callable[[], torch.Tensor] | None = None
) -> Iterator[None]:
    """Turn torch's refusal of a custom Function into a ``TransformBlockedError`` naming it.

    ``run_eagerly`` computes the loss without transforms; it is called only when the
    traceback does not show the class, to find it in the autograd graph.
    """
    try:
        yield
    except (RuntimeError, NotImplementedError) as exc:
        reason = blocking_reason(exc)
        if reason is None or isinstance(exc, TransformBlockedError):
            raise
        found = function_from_traceback(exc)
        cls, call_site = found if found is not None else (None, None)
        if cls is None and run_eagerly is not None:
            with contextlib.suppress(Exception), torch.enable_grad():
                classes = functions_in_graph(run_eagerly())
                cls = classes[0] if classes else None
        message, source = blocked_message(what, cls, reason, call_site)
        raise TransformBlockedError(message, cls, source, call_site) from exc
