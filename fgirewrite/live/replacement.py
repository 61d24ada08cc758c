"""Verified FGI replacements for live Function classes, shared by the fx pass and ``inject``.

Both rewrite models already in memory: they resolve each ``torch.autograd.Function`` class
they meet through ``live.surrogates`` (the same description the source rewriter uses), prove
the replacement with ``fgirewrite.verify.verify_pair`` before using it, and report what they
replaced and, with the extraction's reason codes, what they left alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fgirewrite.live import surrogates as live
from fgirewrite.live.namespaces import rehome
from fgirewrite.surrogate import Skip, Surrogate
from fgirewrite.verify.pair import SurrogateReport, verify_pair


@dataclass(frozen=True)
class Replaced:
    """One surrogate Function replaced by its FGI function, and where."""

    where: str
    surrogate: Surrogate
    report: SurrogateReport | None  # None when verification was turned off
    note: str = ""

    def __str__(self) -> str:
        derivatives = ", ".join(f"d/d{g.param} = {g.derivative}" for g in self.surrogate.gradients)
        verified = "not verified" if self.report is None else "verified"
        note = f"; {self.note}" if self.note else ""
        return f"{self.where}: {self.surrogate.name} -> FGI ({derivatives}; {verified}{note})"


@dataclass(frozen=True)
class Unrewritten:
    """A Function the model reaches and keeps, with the extraction's reason."""

    where: str
    skip: Skip

    def __str__(self) -> str:
        return f"{self.where}: {self.skip.code}: {self.skip.name}: {self.skip.message}"


@dataclass(frozen=True)
class Resolution:
    """What a Function class becomes: its FGI function (None if none) and the evidence."""

    function: Callable | None
    found: Surrogate | Skip  # a Skip when extraction or verification declined
    report: SurrogateReport | None = None


# Set on functions that stand for ``cls.apply`` (the fx pass's node targets).
FUNCTION_CLASS = "__fgi_function_class__"


def function_class(target: object) -> type | None:
    """The Function subclass of which ``target`` is the class or the ``apply``."""
    owner = getattr(target, FUNCTION_CLASS, None)
    if owner is None:
        owner = target
        if not isinstance(target, type):
            owner = getattr(target, "__self__", None)
            if getattr(target, "__name__", None) != "apply":
                return None
    if (
        isinstance(owner, type)
        and issubclass(owner, torch.autograd.Function)
        and owner.__module__ != torch.autograd.function.__name__
    ):
        return owner
    return None


def _numbers(args: Sequence[object]) -> list[object] | None:
    """Call-site arguments for verification: the literal numbers before the first other value."""
    found: list[object] = [None]
    for arg in args[1:]:
        if isinstance(arg, bool) or not isinstance(arg, (int, float)):
            break
        found.append(arg)
    return found if len(found) > 1 else None


class Resolver:
    """Resolves Function classes to verified FGI functions, once per class and arguments."""

    def __init__(self, verify: bool = True):
        self.verify = verify
        self._cache: dict[tuple, Resolution] = {}

    def resolve(
        self, cls: type[torch.autograd.Function], call_args: Sequence[object] = ()
    ) -> Resolution:
        """The FGI function for ``cls.apply``, verified on ``call_args`` literals if given."""
        numbers = _numbers(call_args) if call_args else None
        key = (cls, tuple(numbers or ()))
        if key not in self._cache:
            self._cache[key] = self._resolve(cls, numbers)
        return self._cache[key]

    def _resolve(
        self, cls: type[torch.autograd.Function], numbers: list[object] | None
    ) -> Resolution:
        function, found = _fgi_function(cls)
        if function is None or isinstance(found, Skip):
            return Resolution(None, found)
        if not self.verify:
            return Resolution(function, found)
        try:
            report = verify_pair(cls.apply, function, found, function.__name__, numbers)
        except Exception as exc:  # noqa: BLE001 - a verifier crash must not pass
            return Resolution(None, _failed(found, f"verification raised {exc!r}"))
        if not report.ok:
            return Resolution(None, _failed(found, "; ".join(report.failures()[:2])), report)
        return Resolution(function, found, report)


@functools.cache
def _fgi_function(cls: type) -> tuple[Callable | None, Surrogate | Skip]:
    """``live.fgi_function``, its globals in a registered module (see ``_namespaces``)."""
    function, found = live.fgi_function(cls)
    return (None if function is None else rehome(function, cls.__qualname__)), found


def _failed(s: Surrogate, message: str) -> Skip:
    return Skip(s.name, s.location, "verification-failed", message)
