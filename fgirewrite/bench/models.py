"""The model under test: built from its entry as written and as rewritten, wrapped per mode.

The entry (``--entry``: ``FILE:FUNCTION``, ``MODULE:FUNCTION``, or ``FUNCTION`` in the model
file) is loaded as ``fgirewrite verify`` loads it (``fgirewrite.execute.load``): its slice,
with the project imported as written on one side and rewritten file by file on the other,
here both in this process under private module names. It is called with keyword arguments
``steps``, ``batch``, ``n_in`` and ``n_hidden`` and returns ``(model, inputs)`` (``inputs``
a tensor or a tuple of tensors, the first of shape ``[steps, batch, n_in]`` for sequence
models). Both variants get the original's weights and inputs, so they compute the same thing.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fgirewrite.execute.load import Side, load_sides, resolve, search_roots
from fgirewrite.execute.state import resetter
from fgirewrite.project import Entry, EntryError
from fgirewrite.source import described


class ModelError(Exception):
    """The model file or its entry function cannot be used."""


@dataclass
class Pair:
    """The entry loaded as written and as rewritten."""

    path: Path
    entry: Entry
    original: Side
    fgi: Side
    rewrite: dict

    def side(self, variant: str) -> Side:
        return self.original if variant == "original" else self.fgi


def load(path: Path | None, spec: str = "build") -> Pair:
    """Load the entry ``spec`` (a function of ``path`` when it names no file or module) both
    ways; what the rewrite did is kept for the report."""
    try:
        entry, roots = resolve(spec, path, search_roots([path] if path is not None else []))
    except EntryError as exc:
        raise ModelError(str(exc)) from None
    try:
        original, fgi = load_sides(entry, roots)
    except Exception as exc:  # the project's own top level may raise anything
        raise ModelError(f"cannot import {entry}: {described(exc)}") from exc
    served = fgi.importer.served.values()
    rewrite = {
        "changed": any(r.changed for r in served),
        "rewritten": {s.name: r.function(s) for r in served for s in r.surrogates},
        "skipped": {s.name: f"[{s.code}] {s.message}" for r in served for s in r.skipped},
    }
    return Pair(original.path, entry, original, fgi, rewrite)


def call(entry: str, kwargs: dict) -> str:
    """The entry call as written in messages: ``build(steps=2, batch=2, ...)``."""
    return f"{entry}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"


def build(pair: Pair, variant: str, kwargs: dict) -> tuple[nn.Module, tuple]:
    """Call the entry function of one variant; ``(model, inputs)``."""
    entry = pair.entry.function
    try:
        fn = pair.side(variant).function
    except EntryError as exc:
        raise ModelError(str(exc)) from None
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as exc:
        raise ModelError(
            f"{pair.path}: `{entry}` must accept steps, batch, n_in and n_hidden as keywords "
            f"({exc})"
        ) from None
    except ValueError:  # no signature to inspect (a builtin): the call will tell
        pass
    built = fn(**kwargs)
    if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], nn.Module)):
        got = type(built).__name__
        if isinstance(built, tuple):
            got = f"({', '.join(type(x).__name__ for x in built)})"
        raise ModelError(
            f"{pair.path}: `{entry}` must return (model, inputs) with model an nn.Module; "
            f"it returned {got}"
        )
    model, inputs = built
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    return model, inputs


@dataclass
class Workload:
    """Two variants of one model at one shape, with the same weights, inputs and target."""

    models: dict[str, nn.Module]
    inputs: tuple
    target: torch.Tensor | None
    shapes: list[list[int]]

    def loss(self, out: torch.Tensor) -> torch.Tensor:
        """Cross-entropy for [batch, classes] logits (as in the paper), else a mean square."""
        if self.target is not None:
            return nn.functional.cross_entropy(out, self.target)
        return out.float().square().mean()


def _first_output(variants: list[nn.Module], inputs: tuple) -> object:
    """The no-grad output of the first variant that runs: an original that fails (a known
    limitation of its Function, say) leaves the rewrite to be measured. The original's error
    when none runs."""
    errors = []
    for model in variants:
        try:
            with torch.no_grad():
                return model(*inputs)
        except Exception as exc:  # noqa: BLE001 - the model may raise anything
            errors.append(exc)
    raise errors[0]


def workload(pair: Pair, kwargs: dict, device: torch.device) -> Workload:
    """Build both variants; the rewritten one takes the original's weights."""
    original, inputs = build(pair, "original", kwargs)
    fgi, _ = build(pair, "fgi", kwargs)
    fgi.load_state_dict(original.state_dict())
    original.to(device).train()
    fgi.to(device).train()
    inputs = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs)
    out = _first_output([original, fgi], inputs)
    target = None
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.is_floating_point():
        generator = torch.Generator().manual_seed(0)
        target = torch.randint(0, out.shape[1], (out.shape[0],), generator=generator).to(device)
    shapes = [list(t.shape) for t in inputs if isinstance(t, torch.Tensor)]
    return Workload({"original": original, "fgi": fgi}, inputs, target, shapes)


def check(pair: Pair, kwargs: dict, device: torch.device) -> None:
    """Build both variants once, at a tiny size, and run one forward: a bad entry function is
    reported (as a ModelError) before any warm-up or compile."""
    try:
        workload(pair, kwargs, device)
    except ModelError:
        raise
    except Exception as exc:  # the entry function and the model may raise anything
        what = call(pair.entry.function, kwargs)
        raise ModelError(f"{pair.path}: {what} failed: {described(exc)}") from exc


def equivalence(work: Workload) -> dict:
    """Eager sanity check before timing: forward bit for bit, gradients close; ``{"error":
    ...}`` when a variant cannot run a training step (its cells show why)."""
    results = {}
    for variant, model in work.models.items():
        model.zero_grad(set_to_none=True)
        try:
            out = model(*work.inputs)
            work.loss(out).backward()
        except Exception as exc:  # noqa: BLE001 - the model may raise anything
            return {"error": f"{variant}: {described(exc)}"}
        grads = [
            p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for p in model.parameters()
        ]
        model.zero_grad(set_to_none=True)
        results[variant] = (out.detach(), grads)
    (out_o, grads_o), (out_f, grads_f) = results["original"], results["fgi"]
    diff = max(
        ((a - b).abs().max().item() for a, b in zip(grads_o, grads_f, strict=True) if a.numel()),
        default=0.0,
    )
    close = all(
        torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads_o, grads_f, strict=True)
    )
    return {
        "forward_bitwise_equal": bool(torch.equal(out_o, out_f)),
        "grad_max_abs_diff": diff,
        "grad_close": close,
    }


def wrap(model: nn.Module, mode: str, compile_options: dict) -> Callable:
    """The model as run in ``mode``: eager, scripted or compiled (``torch.compile`` with
    ``compile_options``)."""
    if mode == "eager":
        return model
    if mode == "script":
        return torch.jit.script(model)
    return torch.compile(model, fullgraph=mode == "compile-fullgraph", **compile_options)


def steps(
    run: Callable, work: Workload, parameters: list[nn.Parameter], model: nn.Module | None = None
) -> dict[str, Callable]:
    """The timed statements. The optimizer step is excluded, as in the paper; gradients are
    reset to None so each backward allocates them afresh. A ``model`` that keeps state
    between calls (a membrane on a module) is reset before each call, as ``verify`` resets
    it (``fgirewrite.execute.state``): in both variants alike."""
    inputs = work.inputs
    reset = (resetter(model) if model is not None else None) or (lambda: None)

    def train() -> None:
        for p in parameters:
            p.grad = None
        reset()
        work.loss(run(*inputs)).backward()

    def infer() -> None:
        reset()
        run(*inputs)

    def no_grad() -> None:
        reset()
        with torch.no_grad():
            run(*inputs)

    return {"train": train, "infer": infer, "no_grad": no_grad}


def jit_save(scripted: torch.jit.ScriptModule) -> None:
    """Save to memory; raises where TorchScript cannot serialize the model."""
    torch.jit.save(scripted, io.BytesIO())
