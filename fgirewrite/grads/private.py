"""Differentially private training (DP-SGD with Opacus) of spiking networks, on ``torch.func``.

Opacus computes per-sample gradients layer by layer: each module with trainable parameters
of its own is replayed per sample with ``torch.func`` (``grad_sample_mode="functorch"``, and
in ``"hooks"`` mode for modules it has no rule for) from its first input and the gradient of
its first output, on a copy of the module made when it was prepared. Spiking networks break
those assumptions: time-major inputs, a cell called once per time step with its state as a
second input and output, neurons that keep their state on the module or hold their constants
in buffers (Opacus refuses a layer with buffers), and a surrogate written as a custom
``autograd.Function``, which refuses ``torch.func``.

``for_opacus(model, batch_dim=...)`` makes the whole model one Opacus layer that takes the
batch first, as Opacus's data loader gives it. Opacus then replays the whole model per sample
with ``vmap(grad)``, as ``fgirewrite.grads.transforms.per_sample_grads`` does, so whatever happens
inside is differentiated exactly, and the replay starts from the state (buffers and tensor
attributes) the real forward started from. Since the model's modules are hidden from Opacus,
``for_opacus`` applies Opacus's module validator to them itself, and refuses buffers that a
forward pass changes (statistics of the batch that DP-SGD would not protect).

Opacus is optional (``pip install opacus``): this module imports it only to validate.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._pytree import KeyPath, keystr, tree_flatten, tree_map, tree_map_with_path

from fgirewrite.grads.blockers import explain_blocked

__all__ = ["OpacusModel", "PrivateTrainingError", "for_opacus"]

# nn.Module bookkeeping (parameters, submodules, hooks) is not state; buffers are.
_NOT_STATE = frozenset(vars(nn.Module())) - {"_buffers"}
_SCALARS = (bool, int, float, complex, str, type(None))


class PrivateTrainingError(ValueError):
    """The model cannot be trained privately as it is; the message says what to change."""


class _Saved:
    """A tensor of the model's state, with its version to notice in-place changes."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor.detach()
        self.version = tensor._version


class _Shared:
    """What the latest real forward started from, seen by Opacus's copy of the layer.

    Opacus deep-copies a layer once, when it prepares it, and replays the copy; returning
    this object itself from ``__deepcopy__`` lets the copy read what the live layer records.
    """

    def __init__(self) -> None:
        self.recorder: int | None = None  # id() of the layer that recorded it
        self.state: dict[str, dict[str, Any]] = {}

    def __deepcopy__(self, memo: dict) -> _Shared:
        return self

    def __reduce__(self) -> tuple:
        return (_Shared, ())  # a pickled (or copied) layer records afresh


class OpacusModel(nn.Module):
    """``model`` as one Opacus layer that takes the batch first; made by ``for_opacus``."""

    _model: nn.Module  # set in __init__ past nn.Module's __setattr__

    def __init__(self, model: nn.Module, batch_dim: int = 0, output_batch_dim: int = 0):
        super().__init__()
        _validate(model)
        vars(self)["_model"] = model  # not a submodule: Opacus must see one layer, no buffers
        self.batch_dim = batch_dim
        self.output_batch_dim = output_batch_dim
        self._names: dict[str, str] = {}  # own parameter name -> the model's
        for name, parameter in model.named_parameters():
            self.register_parameter(name.replace(".", "/"), parameter)
            self._names[name.replace(".", "/")] = name
        # Every name of a parameter used twice, for the copy: moving it to meta unties them.
        first = {id(p): name for name, p in model.named_parameters()}
        self._aliases = {
            name: first[id(p)] for name, p in model.named_parameters(remove_duplicate=False)
        }
        self._shared = _Shared()
        self.train(model.training)

    @property
    def module(self) -> nn.Module:
        """The model itself (its parameters are this module's, the same objects)."""
        return self._model

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
            raise TypeError(
                "for_opacus: the model takes one tensor, the batch (Opacus replays a layer "
                "from its first input only); pass other inputs inside the model"
            )
        (x,) = args
        replaced = self._replaced_parameters()
        if replaced:
            return self._replay(x, replaced)
        recording = self.training and torch.is_grad_enabled()  # what Opacus will replay
        if recording:
            self._check_batch_first()
            self._shared.recorder = id(self)
            self._shared.state = _state(self._model)
            buffers = _persistent_buffers(self._model)
        output = self._model(x.movedim(0, self.batch_dim))
        if recording:
            _check_buffers(buffers, _persistent_buffers(self._model))
        return self._batch_first(output, x.shape[0])

    def _check_batch_first(self) -> None:
        # Opacus's forward hook is a method of its GradSampleModule, which knows batch_first.
        for hook in self._forward_hooks.values():
            if getattr(getattr(hook, "__self__", None), "batch_first", True) is False:
                raise PrivateTrainingError(
                    "for_opacus: the model takes the batch first: leave make_private's "
                    "batch_first=True (the default) and give the model's own batch dimension "
                    "as for_opacus(model, batch_dim=...)"
                )

    def _replaced_parameters(self) -> dict[str, torch.Tensor]:
        """The model's parameters by name, when ``functional_call`` swapped this module's."""
        current = dict(self._model.named_parameters())
        own = {name: self._parameters[key] for key, name in self._names.items()}
        if all(value is current.get(name) for name, value in own.items()):
            return {}
        return {name: value for name, value in own.items() if value is not None}

    def _replay(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        if self._shared.recorder not in (None, id(self)):  # Opacus's copy of this layer
            _restore(self._model, self._shared.state)
        params = {name: params[first] for name, first in self._aliases.items() if first in params}
        try:
            with explain_blocked("Opacus per-sample gradients"):
                output = functional_call(self._model, params, (x.movedim(0, self.batch_dim),))
        except RuntimeError as exc:
            if "randomness error mode" not in str(exc):
                raise
            raise PrivateTrainingError(
                "for_opacus: the model draws random numbers in its forward pass (dropout, a "
                "stochastic neuron): the per-sample replay cannot draw what the batch drew, "
                "so its gradients would not be the loss's; train privately without them (or "
                "draw them outside the model, into the input tensor)"
            ) from exc
        return self._batch_first(output, x.shape[0])

    def _batch_first(self, output: object, batch: int) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"for_opacus: the model returned {type(output).__name__}, not one tensor "
                "(Opacus takes per-sample gradients from the gradient of a layer's output); "
                "return only what the loss uses"
            )
        output = output.movedim(self.output_batch_dim, 0)
        if output.shape[0] != batch:
            raise PrivateTrainingError(
                f"for_opacus: the model's output has {output.shape[0]} entries along "
                f"output_batch_dim={self.output_batch_dim} for a batch of {batch}; give the "
                "output's batch dimension as output_batch_dim"
            )
        return output

    # The model is not a submodule: do for it what nn.Module does for one.
    def _apply(self, fn: Any, recurse: bool = True) -> OpacusModel:
        self._model._apply(fn)
        current = dict(self._model.named_parameters())
        for key, name in self._names.items():
            self._parameters[key] = current[name]
        return self

    def train(self, mode: bool = True) -> OpacusModel:
        super().train(mode)
        self._model.train(mode)
        return self

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The model's state dict, under the model's names."""
        return self._model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """Load the model's state dict (as ``state_dict`` returns it)."""
        return self._model.load_state_dict(state_dict, *args, **kwargs)

    def extra_repr(self) -> str:
        dims = f"batch_dim={self.batch_dim}, output_batch_dim={self.output_batch_dim}"
        return f"{dims},\n{self._model!r}"


def for_opacus(model: nn.Module, batch_dim: int = 0, output_batch_dim: int = 0) -> OpacusModel:
    """``model`` as one Opacus layer, its per-sample gradients computed by ``vmap(grad)``.

    Give the result to ``PrivacyEngine.make_private`` (``grad_sample_mode="functorch"`` or
    ``"hooks"``; keep ``batch_first=True``). It takes one tensor with the batch first, moves
    the batch to ``batch_dim`` for the model (``1`` for ``[time, batch, ...]``) and returns
    the model's output with the batch moved from ``output_batch_dim`` to the front. Its
    parameters are the model's own objects. A model that still calls a custom
    ``autograd.Function`` without ``torch.func`` support fails in the backward pass with a
    ``fgirewrite.TransformBlockedError`` naming it and the fgirewrite command that fixes it.

    Raises ``PrivateTrainingError`` for modules Opacus refuses, with what to change, and in
    the forward pass for buffers it changes (DP-SGD would not protect them).
    """
    return OpacusModel(model, batch_dim, output_batch_dim)


def _first_sentence(text: str) -> str:
    return text.split(". ")[0].rstrip(".")


def _validate(model: nn.Module) -> None:
    try:
        from opacus.validators import ModuleValidator
    except ImportError:  # Opacus says it is missing when it is used
        return
    refused = [
        f"`{path or 'model'}` ({type(module).__name__}): {_first_sentence(str(error))}"
        for path, module in model.named_modules()
        if type(module) in ModuleValidator.VALIDATORS
        for error in ModuleValidator.VALIDATORS[type(module)](module)
    ]
    if refused:
        raise PrivateTrainingError(
            f"for_opacus: Opacus refuses {'; '.join(refused)}. "
            "`model = opacus.validators.ModuleValidator.fix(model)` replaces such modules "
            "(BatchNorm by GroupNorm, LSTM by DPLSTM, running statistics off); then call "
            "for_opacus on the fixed model"
        )


def _is_data(value: object) -> bool:
    if isinstance(value, (nn.Module, nn.Parameter)):
        return False
    leaves, _ = tree_flatten(value)
    return all(
        isinstance(v, _SCALARS) or (isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter))
        for v in leaves
    )


def _state(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Each module's buffers and data attributes: tensors, numbers, containers of them."""
    return {
        path: {
            name: tree_map(lambda v: _Saved(v) if isinstance(v, torch.Tensor) else v, value)
            for name, value in vars(module).items()
            if name not in _NOT_STATE and _is_data(value)
        }
        for path, module in model.named_modules()
    }


def _restore(model: nn.Module, state: Mapping[str, Mapping[str, Any]]) -> None:
    for path, module in model.named_modules():
        for name, value in state.get(path, {}).items():
            vars(module)[name] = tree_map_with_path(partial(_unsaved, path, name), value)


def _unsaved(path: str, name: str, keys: KeyPath, saved: Any) -> Any:
    if not isinstance(saved, _Saved):
        return saved
    if saved.tensor._version == saved.version:
        return saved.tensor
    # A buffer by its name, any other attribute with the keys into it.
    where = keystr(keys)[2:-2] if name == "_buffers" else name + keystr(keys)
    raise PrivateTrainingError(
        f"for_opacus: the model changed `{f'{path}.' if path else ''}{where}` in place during "
        "its forward pass, so the per-sample replay cannot start from the state the batch "
        "started from; assign a new tensor instead"
    )


def _persistent_buffers(model: nn.Module) -> dict[str, tuple[torch.Tensor, int]]:
    """Each buffer the state dict saves, and its version."""
    return {
        f"{path}.{name}" if path else name: (buffer, buffer._version)
        for path, module in model.named_modules()
        for name, buffer in module._buffers.items()
        if buffer is not None and name not in module._non_persistent_buffers_set
    }


def _check_buffers(before: Mapping[str, tuple], after: Mapping[str, tuple]) -> None:
    def same(a: tuple | None, b: tuple | None) -> bool:
        return a is not None and b is not None and a[0] is b[0] and a[1] == b[1]

    changed = sorted(
        n for n in before.keys() | after.keys() if not same(before.get(n), after.get(n))
    )
    if changed:
        raise PrivateTrainingError(
            f"for_opacus: the forward pass changed the buffer{'s' * (len(changed) > 1)} "
            f"{', '.join(f'`{n}`' for n in changed)}, saved with the model and computed from "
            "the training data, which DP-SGD does not protect (Opacus refuses such layers); "
            "keep it constant while training (running statistics: track_running_stats=False, "
            "or GroupNorm), or register per-batch state with persistent=False"
        )
