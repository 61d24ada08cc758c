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
import random
import sys
from collections.abc import Iterator

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


def _library_reset(model: nn.Module) -> list[str]:
    done = []
    functional = sys.modules.get("spikingjelly.activation_based.functional")
    if functional is not None:
        functional.reset_net(model)
        done.append("spikingjelly's functional.reset_net")
    utils = sys.modules.get("snntorch.utils")
    if utils is not None:
        utils.reset(model)
        done.append("snntorch's utils.reset")
    return done


def reset_state(model: nn.Module) -> list[str]:
    """Reset what the model's own reset methods (``reset()``, ``reset_state()``,
    ``reset_states()`` taking no argument, on any of its modules) and spikingjelly's and
    snntorch's reset functions reset; what was called."""
    done = _library_reset(model)
    for name, module in model.named_modules():
        for method in _RESETS:
            function = getattr(type(module), method, None)
            if function is None or getattr(nn.Module, method, None) is function:
                continue
            try:
                getattr(module, method)()
            except TypeError:  # it takes arguments: not a state reset
                continue
            done.append(f"{name or type(module).__name__}.{method}()")
            break
    return done


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
