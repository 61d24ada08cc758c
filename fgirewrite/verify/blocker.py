"""What blocks a capability on a model: a custom Function still in it, or something else in
the model (an op, a module, a line), read from the error and its traceback.

torch raises a generic error for a Function a transform cannot run ("In order to use an
autograd.Function with functorch transforms ... it must override the setup_context
staticmethod") that names no class. The class is still on the stack when torch raises:
``Function.apply`` is a classmethod whose frame holds it as ``cls``, and the frame below is
the model line that called it. Anything else is named by the innermost module of the model
on the stack and the innermost line of the model's own code.
"""

from __future__ import annotations

import contextlib
import inspect
import linecache
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch
from torch import nn

from fgirewrite.execute.importer import installed, source_path

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
    (
        ("You must implement the jvp function",),
        "it has no jvp staticmethod for forward-mode AD",
    ),
    (
        ("Could not export Python function call",),
        "TorchScript cannot save a call into Python (the Function's forward and backward)",
    ),
)
_EXPORT_CALL = re.compile(r"Could not export Python function call '(\w+)'")
_SCRIPT_SOURCE = re.compile(r'File "([^"]+)", line (\d+)')  # TorchScript's source ranges

BATCH_NORM_ADVICE = (
    "batch norm in train mode computes statistics over the batch and updates its running "
    "buffers in place, which per-sample gradients cannot do: measure in eval mode "
    "(model.eval()), use GroupNorm, or let Opacus replace it "
    "(opacus.validators.ModuleValidator.fix turns BatchNorm into GroupNorm)"
)
INPLACE_ADVICE = (
    "an in-place write of a batched value into a tensor that is not batched (an output "
    "preallocated with torch.zeros and filled by `out[t] = ...`): collect the values and "
    "torch.stack them, or allocate the output from the input (x.new_zeros)"
)


def blocking_reason(exc: BaseException) -> str | None:
    """Why torch refused a custom Function, or None for other errors."""
    text = str(exc)
    return next((why for phrases, why in _BLOCKING if all(p in text for p in phrases)), None)


def _frames(exc: BaseException) -> Iterator[list[TracebackType]]:
    """The traceback entries of ``exc`` and of its causes and contexts, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        entries = []
        tb = current.__traceback__
        while tb is not None:
            entries.append(tb)
            tb = tb.tb_next
        yield entries
        current = current.__cause__ or current.__context__


def _is_apply_frame(tb: TracebackType) -> bool:
    code = tb.tb_frame.f_code
    cls = tb.tb_frame.f_locals.get("cls")
    return (
        code.co_name == "apply"
        and isinstance(cls, type)
        and issubclass(cls, torch.autograd.Function)
        and code.co_filename.replace(os.sep, "/").endswith("torch/autograd/function.py")
    )


def _place(filename: str, line: int) -> str:
    rewritten = " of the rewritten source" if filename != source_path(filename) else ""
    return f"{display(filename)}:{line}{rewritten}"


def _where(tb: TracebackType) -> str:
    return _place(tb.tb_frame.f_code.co_filename, tb.tb_lineno)


def function_from_traceback(exc: BaseException) -> tuple[type, str | None] | None:
    """The innermost Function class being applied when ``exc`` (or its cause) was raised,
    and the call site ``path:line`` that applied it."""
    for entries in _frames(exc):
        found = None
        for previous, tb in zip([None, *entries], entries, strict=False):
            if _is_apply_frame(tb):
                found = tb.tb_frame.f_locals["cls"], None if previous is None else _where(previous)
        if found is not None:
            return found
    return None


def display(path: str) -> str:
    """A path relative to the working directory when it lies below it."""
    path = source_path(path)
    with contextlib.suppress(ValueError):
        relative = os.path.relpath(path)
        if not relative.startswith(".."):
            return relative.replace(os.sep, "/")
    return path


def source_of(cls: type) -> tuple[str | None, int | None]:
    """A class's source file (displayed) and line."""
    try:
        path = inspect.getsourcefile(cls) or inspect.getfile(cls)
    except TypeError:
        return None, None
    try:
        line = inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        line = None
    return display(path), line


@dataclass(frozen=True)
class Blocker:
    """What stops a capability: a Function (``function`` is its qualified name and
    ``file`` its source) or something else in the model; ``advice`` says what to do."""

    what: str
    advice: str = ""
    function: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        return self.what + (f": {self.advice}" if self.advice else "")


def _own_code(filename: str) -> bool:
    """Code of the model's project, not torch's, an installed package's or fgirewrite's."""
    return not filename.startswith("<") and not installed(Path(source_path(filename)))


def function_blocker(cls: type, reason: str, call_site: str | None = None) -> Blocker:
    path, line = source_of(cls)
    where = "source unknown" if path is None else path if line is None else f"{path}:{line}"
    called = f", called at {call_site}" if call_site else ""
    return Blocker(
        f"torch.autograd.Function `{cls.__qualname__}` ({where}{called})",
        reason,
        cls.__qualname__,
        None if path is None else os.path.realpath(source_path(inspect.getsourcefile(cls) or path)),
    )


def model_blocker(exc: BaseException, model: nn.Module | None) -> Blocker:
    """The module and line of the model that raised ``exc``, with advice where known."""
    names = {id(m): n for n, m in model.named_modules()} if model is not None else {}
    module: nn.Module | None = None
    line: TracebackType | None = None
    for entries in _frames(exc):
        for tb in entries:
            owner = tb.tb_frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names:
                module = owner
            if _own_code(tb.tb_frame.f_code.co_filename):
                line = tb
        break  # the exception raised: its causes were handled
    parts = []
    if module is not None:
        name = names[id(module)]
        parts.append(f"{type(module).__name__}" + (f" `{name}`" if name else " (the model)"))
    if line is not None:
        filename = line.tb_frame.f_code.co_filename
        text = linecache.getline(filename, line.tb_lineno).strip()
        parts.append(f"at {_where(line)}" + (f": `{text}`" if text else ""))
    text = str(exc)
    scripted = [m for m in _SCRIPT_SOURCE.finditer(text) if _own_code(m.group(1))]
    if line is None and scripted:  # TorchScript names the model's line in its message
        filename, number = scripted[-1].group(1), int(scripted[-1].group(2))
        code = linecache.getline(filename, number).strip()
        parts.append(f"at {_place(filename, number)}" + (f": `{code}`" if code else ""))
    if module is None and parts:
        parts.insert(0, "the model")
    what = " ".join(parts) or "the model"
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
        return Blocker(what, BATCH_NORM_ADVICE)
    if "vmap: inplace arithmetic" in text or "mutate a captured Tensor" in text:
        return Blocker(what, INPLACE_ADVICE)
    return Blocker(what)


def blocker(exc: BaseException, model: nn.Module | None, functions: list[type]) -> Blocker:
    """What blocks: the Function being applied when ``exc`` was raised, one of the model's
    ``functions`` that the message names, or else the model's own module and line."""
    reason = blocking_reason(exc)
    found = function_from_traceback(exc)
    if found is not None and reason is not None:
        return function_blocker(found[0], reason, found[1])
    named = _EXPORT_CALL.search(str(exc))
    for cls in functions:
        if named is not None and cls.__name__ == named.group(1):
            return function_blocker(cls, reason or "TorchScript cannot call it")
    if reason is not None and len(functions) == 1:
        return function_blocker(functions[0], reason)
    return model_blocker(exc, model)
