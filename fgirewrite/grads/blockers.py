"""Name the custom ``torch.autograd.Function`` that stops a ``torch.func`` transform.

torch raises a generic error ("In order to use an autograd.Function with functorch
transforms ... it must override the setup_context staticmethod") that names no class. The
class is still on the stack when torch raises: ``Function.apply`` is a classmethod whose
frame holds it as ``cls``, and the frame below is the model line that called it. When a
traceback has lost that frame, the autograd graph of one eager run names the Function
classes the model uses (each backward node keeps its ``_forward_cls``).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from types import TracebackType

import torch

# Phrases of the errors torch raises for a Function that a transform cannot run, and why.
_BLOCKING = (
    (
        ("autograd.Function", "setup_context"),
        "an old-style Function (forward(ctx, ...)) cannot run under vmap, grad or jvp",
    ),
    (
        ("vmap over", "does not have vmap support"),
        "it has no vmap rule (a vmap staticmethod or generate_vmap_rule=True)",
    ),
    (
        ("custom autograd.Function", "forward mode AD"),
        "it has no jvp staticmethod for forward-mode AD",
    ),
)


class TransformBlockedError(RuntimeError):
    """A custom autograd.Function in the model blocks a torch.func transform."""

    def __init__(
        self, message: str, function: type | None, source: str | None, call_site: str | None
    ):
        super().__init__(message)
        self.function = function  # the Function subclass, if it could be found
        self.source = source  # its file, relative to the working directory where possible
        self.call_site = call_site  # "path:line" of the model code that called .apply


def blocking_reason(exc: BaseException) -> str | None:
    """Why torch refused a custom Function under a transform, or None for other errors."""
    text = str(exc)
    return next((why for phrases, why in _BLOCKING if all(p in text for p in phrases)), None)


def _is_apply_frame(tb: TracebackType) -> bool:
    code = tb.tb_frame.f_code
    cls = tb.tb_frame.f_locals.get("cls")
    return (
        code.co_name == "apply"
        and isinstance(cls, type)
        and issubclass(cls, torch.autograd.Function)
        and code.co_filename.replace(os.sep, "/").endswith("torch/autograd/function.py")
    )


def _where(frame_tb: TracebackType) -> str:
    return f"{_display(frame_tb.tb_frame.f_code.co_filename)}:{frame_tb.tb_lineno}"


def function_from_traceback(exc: BaseException) -> tuple[type, str | None] | None:
    """The innermost Function class being applied when ``exc`` (or its cause) was raised,
    and the call site ``path:line`` that applied it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = None
        previous: TracebackType | None = None
        tb = current.__traceback__
        while tb is not None:
            if _is_apply_frame(tb):
                found = (
                    tb.tb_frame.f_locals["cls"],
                    None if previous is None else _where(previous),
                )
            previous, tb = tb, tb.tb_next
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def functions_in_graph(output: torch.Tensor) -> list[type]:
    """The custom Function classes in the autograd graph of ``output``, first seen first."""
    found: list[type] = []
    stack = [output.grad_fn] if output.grad_fn is not None else []
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None)
        if cls is not None and cls not in found:
            found.append(cls)
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return found


def _display(path: str) -> str:
    """A path relative to the working directory when it lies below it."""
    with contextlib.suppress(ValueError):
        relative = os.path.relpath(path)
        if not relative.startswith(".."):
            return relative.replace(os.sep, "/")
    return path


def _installed(path: str) -> bool:
    parts = path.replace(os.sep, "/").split("/")
    return "site-packages" in parts or "dist-packages" in parts


def _source_of(cls: type) -> tuple[str | None, int | None]:
    try:
        path = inspect.getsourcefile(cls) or inspect.getfile(cls)
    except TypeError:
        return None, None
    try:
        line = inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        line = None
    return _display(path), line


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
    if path is None:
        fix = "rewrite its source file with `fgirewrite --write <file>`"
    elif _installed(path):
        fix = (
            f"it comes from an installed package: swap it in memory with `{name}.apply = "
            f"staticmethod(fgirewrite.live.fgi_function({name})[0])`, or rewrite a copy of "
            "its file with `fgirewrite --write`"
        )
    else:
        fix = (
            f"rewrite it with `fgirewrite --write {path}`, or load the model rewritten in "
            f"memory with `fgirewrite.load_pair({path!r})`"
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
