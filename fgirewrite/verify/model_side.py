"""What one side's process does with its model (``fgirewrite.verify.side`` runs it).

Every operation builds the model afresh from the entry, seeded, with the original's weights
and inputs (the rewritten side gets them from the parent), and seeds every forward.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fgirewrite.execute.census import census, function_classes
from fgirewrite.execute.load import Side, load_side, model_and_inputs
from fgirewrite.execute.state import reset_state, seed_all
from fgirewrite.project import Entry
from fgirewrite.verify.capabilities import (
    Cell,
    leaves,
    loss,
    measure,
    named_gradients,
    outputs,
    passed,
)


class Worker:
    """The operations a side answers, on the model its entry builds."""

    def __init__(self, rewriter: Callable[[str | None], Callable | None]):
        self._rewriter = rewriter
        self.side: Side | None = None
        self.state: dict | None = None
        self.inputs: tuple | None = None
        self.functions: list[type] = []

    def load(self, entry: Entry, roots: list[str], variant: str, rewriter: str | None) -> None:
        self.side = load_side(
            entry, [Path(r) for r in roots], variant, "", self._rewriter(rewriter)
        )

    def fresh(self) -> tuple[nn.Module, tuple]:
        """The model as the entry builds it (seed 0), with the reference weights and inputs."""
        assert self.side is not None
        seed_all(0)
        model, inputs = model_and_inputs(self.side.function(), self.side.entry.function)
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"`{self.side.entry.function}()` must return (model, example_inputs) with model "
                f"an nn.Module; it returned a {type(model).__name__}"
            )
        if self.state is not None:
            model.load_state_dict(self.state)
        return model, leaves(self.inputs if self.inputs is not None else inputs, grad=False)

    def build(self, state: bytes | None = None, inputs: bytes | None = None) -> dict:
        """Build once; the weights and inputs (the original's, pickled), what the forward ran
        (Function classes and their nodes), and what the rewrite did to each file."""
        self.state = None if state is None else pickle.loads(state)
        self.inputs = None if inputs is None else pickle.loads(inputs)
        model, built_inputs = self.fresh()
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.inputs = built_inputs
        probe, probe_inputs = self.fresh()
        seed_all(0)
        out = probe(*passed(leaves(probe_inputs, grad=True)))
        self.functions = list(function_classes(out))
        assert self.side is not None
        try:
            sent_inputs: bytes | None = pickle.dumps(self.inputs)
        except Exception:  # noqa: BLE001 - inputs that cannot cross: each side builds its own
            sent_inputs = None
        return {
            "state": pickle.dumps(self.state),
            "inputs": sent_inputs,
            "census": census(out),
            "served": {path: r.findings for path, r in self.side.importer.served.items()},
            "training": model.training,
        }

    def gradients(self, seed: int) -> dict:
        """Outputs and gradients of a random projection of them, by parameter and input."""
        model, inputs = self.fresh()
        out, grads = named_gradients(model, model, inputs, seed)
        return {
            "outputs": [o.detach() for o in outputs(out)],
            "grads": {k: g.detach() for k, g in grads.items()},
        }

    def trajectory(self, steps: int) -> dict:
        """Parameters after ``steps`` SGD steps, the model reset between forwards."""
        model, inputs = self.fresh()
        parameters = [p for p in model.parameters() if p.requires_grad]
        if not parameters:
            return {"parameters": {}, "resets": []}
        optimizer = torch.optim.SGD(parameters, lr=1e-2)
        resets: list[str] = []
        for step in range(steps):
            if step:
                resets = reset_state(model)
            optimizer.zero_grad()
            seed_all(step)
            loss(model(*leaves(inputs, grad=False)), step).backward()
            optimizer.step()
        named = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
        return {"parameters": named, "resets": resets}

    def capability(self, name: str, batch_dim: int, backend: str) -> Cell:
        return measure(name, self.fresh, batch_dim, backend, self.functions)
