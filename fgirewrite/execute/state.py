"""Running a model more than once the same way: seeds, and the state a forward leaves.

Spiking layers keep their membrane on the module between calls (``self.mem``), binary layers
keep the binarized weight (``self.Rweight``): after a forward these are non-leaf tensors, so
a model that has run cannot be deep-copied, and a second forward would backpropagate into the
first. Models are therefore built afresh for each check, reset between the forwards of one
check as their own training loops reset them, and seeded before every forward (dropout,
random spikes).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import random
import sys
from collections.abc import Callable, Iterator

import torch
from torch import nn

_RESETS = ("reset", "reset_state", "reset_states")


def seed_all(seed: int) -> None:
    """Seed torch, ``random`` and, when the model imported it, NumPy."""
    torch.manual_seed(seed)
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed)


def _resets(model: nn.Module) -> list[tuple[str, Callable[[], object]]]:
    """What resets the model's state: (what, how), in the order they run."""
    found: list[tuple[str, Callable[[], object]]] = []
    functional = sys.modules.get("spikingjelly.activation_based.functional")
    if functional is not None:
        found.append(("spikingjelly's functional.reset_net", lambda: functional.reset_net(model)))
    utils = sys.modules.get("snntorch.utils")
    if utils is not None:
        found.append(("snntorch's utils.reset", lambda: utils.reset(model)))
    for name, module in model.named_modules():
        for method in _RESETS:
            function = getattr(type(module), method, None)
            if function is None or getattr(nn.Module, method, None) is function:
                continue
            try:
                inspect.signature(getattr(module, method)).bind()
            except (TypeError, ValueError):  # it takes arguments: not a state reset
                continue
            found.append((f"{name or type(module).__name__}.{method}()", getattr(module, method)))
            break
    return found


def reset_state(model: nn.Module) -> list[str]:
    """Reset what the model's own reset methods (``reset()``, ``reset_state()``,
    ``reset_states()`` taking no argument, on any of its modules) and spikingjelly's and
    snntorch's reset functions reset; what was called."""
    done = []
    for what, reset in _resets(model):
        reset()
        done.append(what)
    return done


def resetter(model: nn.Module) -> Callable[[], object] | None:
    """A function that resets the model's state before a forward, or None if nothing does."""
    resets = [reset for _, reset in _resets(model)]
    if not resets:
        return None
    return lambda: [reset() for reset in resets]


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Run a forward that leaves no trace: every module's attributes, its buffers' values
    and the random generators are restored afterwards."""
    saved = [
        (module, dict(vars(module)), dict(module._buffers), dict(module._parameters))
        for module in model.modules()
    ]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    with torch.random.fork_rng(devices=[]):
        state = random.getstate()
        try:
            yield
        finally:
            random.setstate(state)
            for module, attributes, buffers_of, parameters in saved:
                vars(module).clear()
                vars(module).update(attributes)
                module._buffers.clear()
                module._buffers.update(buffers_of)
                module._parameters.clear()
                module._parameters.update(parameters)
            with torch.no_grad():
                for buffer, value in buffers:
                    buffer.copy_(value)


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy, also of a model that has run: tensors a forward left on its modules
    (a membrane, a binarized weight: non-leaf, which ``copy.deepcopy`` refuses) are copied
    detached, as values without the graph of that forward."""
    memo: dict[int, object] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)
