"""Which custom ``torch.autograd.Function`` classes a model ran: their nodes in the autograd
graph of its outputs (each custom Function's node keeps its class as ``_forward_cls``).

The one check that a rewrite reached the model: ``verify --entry``, ``inject``,
``load_pair``'s entries and the fx pass count these nodes before they call anything
"rewritten".
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_flatten

from fgirewrite.execute.importer import source_path


@dataclass(frozen=True)
class FunctionNodes:
    """One Function class in a graph: where it is defined, and how many nodes it made."""

    qualname: str
    module: str  # the module it was imported as
    file: str | None  # its source file (the file on disk, for a rewritten module too)
    line: int | None
    nodes: int

    @property
    def key(self) -> tuple[str | None, str]:
        """The class's identity across processes: its file and qualified name."""
        return self.file, self.qualname

    @property
    def where(self) -> str:
        """``file:line`` or the module, for messages."""
        if self.file is None:
            return f"module `{self.module}`"
        return self.file if self.line is None else f"{self.file}:{self.line}"


def function_classes(outputs: object) -> dict[type, int]:
    """Custom Function classes in the autograd graph of ``outputs`` (any nesting of
    tensors), with their node counts, first seen first. torch's own Functions (checkpoint
    and the like) are not counted."""
    tensors = [t for t in tree_flatten(outputs)[0] if isinstance(t, torch.Tensor)]
    stack = [t.grad_fn for t in tensors if t.grad_fn is not None]
    seen: set[int] = set()
    found: dict[type, int] = {}
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None)
        if isinstance(cls, type) and not cls.__module__.startswith("torch."):
            found[cls] = found.get(cls, 0) + 1
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return found


def describe(cls: type, nodes: int = 0) -> FunctionNodes:
    """Where a Function class comes from."""
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    line = None
    try:
        file = inspect.getsourcefile(cls) or file
        line = inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):  # a module loaded by path and not registered: its code's file
        code = getattr(vars(cls).get("forward"), "__func__", vars(cls).get("forward"))
        code = getattr(code, "__code__", None)
        file = file if code is None else code.co_filename
    return FunctionNodes(
        cls.__qualname__,
        cls.__module__,
        None if file is None else os.path.realpath(source_path(file)),
        line,
        nodes,
    )


def census(outputs: object) -> list[FunctionNodes]:
    """Every custom Function class in the graph of ``outputs``, described, with its nodes."""
    return [describe(cls, n) for cls, n in function_classes(outputs).items()]
