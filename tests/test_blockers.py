"""The transforms refuse the original model with a message that names the Function class."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fgirewrite.execute.load import load_pair
from fgirewrite.grads import blockers
from fgirewrite.grads.blockers import TransformBlockedError, functions_in_graph
from fgirewrite.grads.transforms import forward_gradient, per_sample_grads

ROOT = Path(__file__).resolve().parents[1]
ALIF = ROOT / "examples" / "alif.py"

FIX = (
    "rewrite it with `fgirewrite --write examples/alif.py`, or load the model rewritten in "
    "memory with `fgirewrite.load.load_pair('examples/alif.py')`"
)
OLD_STYLE = "an old-style Function (forward(ctx, ...)) cannot run under vmap, grad or jvp"


@pytest.fixture(scope="module")
def pair():
    original, rewritten, _ = load_pair(ALIF)
    return original, rewritten


@pytest.fixture()
def tiny(pair, monkeypatch):
    """The original ALIF network, tiny, with the working directory at the repository root."""
    monkeypatch.chdir(ROOT)
    return pair[0].ALIFNetwork(3, 5, 4), torch.rand(4, 3, 3), torch.tensor([0, 3, 1])


def test_per_sample_grads_names_the_function(tiny, pair):
    model, x, y = tiny
    with pytest.raises(TransformBlockedError) as info:
        per_sample_grads(model, F.cross_entropy, x, y, batch_dim=1)
    assert str(info.value) == (
        "per_sample_grads: the model calls torch.autograd.Function `SpikeFunction` "
        "(examples/alif.py:18, called at examples/alif.py:64), which blocks torch.func: "
        f"{OLD_STYLE}; {FIX}"
    )
    assert info.value.function is pair[0].SpikeFunction
    assert info.value.source == "examples/alif.py"
    assert "setup_context" in str(info.value.__cause__)


def test_forward_gradient_names_the_function(tiny):
    model, x, y = tiny
    with pytest.raises(TransformBlockedError) as info:
        forward_gradient(model, F.cross_entropy, x, y, num_tangents=2)
    assert str(info.value).startswith(
        "forward_gradient: the model calls torch.autograd.Function `SpikeFunction` "
        "(examples/alif.py:18, called at examples/alif.py:64), which blocks torch.func"
    )
    assert str(info.value).endswith(FIX)


def test_the_rewritten_model_runs_both(pair):
    model, x, y = pair[1].ALIFNetwork(3, 5, 4), torch.rand(4, 3, 3), torch.tensor([0, 3, 1])
    grads = per_sample_grads(model, F.cross_entropy, x, y, batch_dim=1)
    assert grads["layer.weight"].shape == (3, 5, 8)
    estimate = forward_gradient(model, F.cross_entropy, x, y, num_tangents=2)
    assert estimate["layer.weight"].shape == (5, 8)


class NoVmapRule(torch.autograd.Function):
    """New-style, but neither a vmap staticmethod nor generate_vmap_rule."""

    @staticmethod
    def forward(x):
        return (x > 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * 0.5


class NoJvp(NoVmapRule):
    """vmap-able, but without a jvp staticmethod."""

    generate_vmap_rule = True


class Step(torch.nn.Module):
    def __init__(self, function: type):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.function = function

    def forward(self, x):
        return self.function.apply(self.linear(x))


def _mse(output, target):
    return ((output - target) ** 2).mean()


def _where(cls: type) -> str:
    return f"tests/test_blockers.py:{inspect.getsourcelines(cls)[1]}"


def test_a_function_without_vmap_rule(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(TransformBlockedError) as info:
        per_sample_grads(Step(NoVmapRule), _mse, torch.randn(4, 3), torch.zeros(4, 2))
    assert f"`NoVmapRule` ({_where(NoVmapRule)}, called at " in str(info.value)
    assert "it has no vmap rule (a vmap staticmethod or generate_vmap_rule=True)" in str(info.value)


def test_a_function_without_jvp(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(TransformBlockedError) as info:
        forward_gradient(Step(NoJvp), _mse, torch.randn(4, 3), torch.zeros(4, 2))
    assert f"`NoJvp` ({_where(NoJvp)}, called at " in str(info.value)
    assert "it has no jvp staticmethod for forward-mode AD" in str(info.value)


class Swallowing(torch.nn.Module):
    """Re-raises torch's error without its traceback: only the graph scan can name the class."""

    def __init__(self, function: type):
        super().__init__()
        self.inner = Step(function)

    def forward(self, x):
        message = None
        try:
            return self.inner(x)
        except RuntimeError as exc:
            message = str(exc)
        raise RuntimeError(message)


def test_the_graph_scan_names_the_function_when_the_traceback_does_not(pair, monkeypatch):
    monkeypatch.chdir(ROOT)
    model = Swallowing(pair[0].SpikeFunction)
    with pytest.raises(TransformBlockedError) as info:
        per_sample_grads(model, _mse, torch.randn(4, 3), torch.zeros(4, 2))
    assert info.value.function is pair[0].SpikeFunction
    assert info.value.call_site is None
    assert "`SpikeFunction` (examples/alif.py:18), which blocks torch.func" in str(info.value)


def test_functions_in_graph(pair):
    model = pair[0].ALIFNetwork(3, 5, 4)
    assert functions_in_graph(model(torch.rand(4, 2, 3)).sum()) == [pair[0].SpikeFunction]
    assert functions_in_graph(pair[1].ALIFNetwork(3, 5, 4)(torch.rand(4, 2, 3)).sum()) == []


def test_a_function_from_an_installed_package(monkeypatch):
    monkeypatch.setattr(
        blockers,
        "_source_of",
        lambda cls: ("/usr/lib/python3/dist-packages/spiking/surrogate.py", 12),
    )
    message, source = blockers.blocked_message("per_sample_grads", NoVmapRule, "why")
    assert message == (
        "per_sample_grads: the model calls torch.autograd.Function `NoVmapRule` "
        "(/usr/lib/python3/dist-packages/spiking/surrogate.py:12), which blocks torch.func: "
        "why; it comes from an installed package: rewrite the model in memory with "
        "`fgirewrite.inject(model)`"
    )
    assert source == "/usr/lib/python3/dist-packages/spiking/surrogate.py"


REFUSED = """
import torch


class Noisy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * torch.rand_like(x)
"""


def test_a_function_fgirewrite_refuses_is_named_with_its_reason_not_a_command(tmp_path):
    """The message told the user to run `fgirewrite --write` on a file whose Function
    fgirewrite had just refused."""
    path = tmp_path / "noisy.py"
    path.write_text(REFUSED)
    original, _, _ = load_pair(path)
    model = Step(original.Noisy)
    with pytest.raises(TransformBlockedError) as info:
        per_sample_grads(model, _mse, torch.randn(4, 3), torch.zeros(4, 2))
    message = str(info.value)
    assert "fgirewrite leaves it as a Function ([backward-random] " in message
    assert "--write" not in message and "load_pair" not in message


def test_other_errors_pass_through():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(RuntimeError) as info:
        per_sample_grads(model, _mse, torch.randn(4, 5), torch.zeros(4, 2))
    assert not isinstance(info.value, TransformBlockedError)
    assert "shapes cannot be multiplied" in str(info.value)


def test_import_fgirewrite_stays_cheap():
    code = (
        "import sys, fgirewrite; assert 'torch' not in sys.modules; "
        "f = fgirewrite.per_sample_grads; assert 'torch' in sys.modules; "
        "assert f.__module__ == 'fgirewrite.grads.transforms'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
