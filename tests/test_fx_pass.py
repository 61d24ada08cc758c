"""The torch.fx pass: ``trace`` keeps Function calls as nodes, ``FGIPass`` inlines their FGI.

Every case goes through one helper, in the style of torch's test_cse_pass: node counts change
as expected, ``modified`` is consistent, a second run changes nothing, and outputs and
gradients match the original module.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import load_module
from torch import fx, nn
from torch.fx.passes.infra.pass_manager import PassManager

from fgirewrite import _runtime
from fgirewrite.live.fx import FGIPass, surrogate_calls, trace

lib = load_module("surrogate_lib", Path(__file__).parent / "fixtures" / "surrogate_lib.py")


def _targets(gm: fx.GraphModule) -> Counter:
    return Counter(n.target for n in gm.graph.nodes if n.op == "call_function")


def _outputs_and_grads(module: nn.Module, inputs: tuple[torch.Tensor, ...]):
    torch.manual_seed(0)  # a kept Function may draw random numbers in its backward
    inputs = tuple(x.detach().clone().requires_grad_() for x in inputs)
    out = module(*inputs)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(
        (out * weights).sum(), [*inputs, *module.parameters()], allow_unused=True
    )
    return out.detach(), grads


def check(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    *,
    calls: int,
    inlined: int,
    called: int = 0,
    kept: tuple[str, ...] = (),
) -> FGIPass:
    """Trace ``model``, run the pass, and check it did exactly what is expected.

    ``calls`` Function nodes before; ``inlined`` replaced by traced FGI subgraphs,
    ``called`` replaced by one call to the FGI function, ``kept`` (reason codes) left alone.
    """
    gm = trace(model)
    assert len(surrogate_calls(gm.graph)) == calls == inlined + called + len(kept)
    nodes_before = len(gm.graph.nodes)
    fgi_pass = FGIPass()
    result = fgi_pass(gm)
    assert result.graph_module is gm
    assert result.modified == (inlined + called > 0)
    assert len(fgi_pass.replaced) == inlined + called
    assert tuple(s.skip.code for s in fgi_pass.skipped) == kept
    assert len(surrogate_calls(gm.graph)) == len(kept)
    targets = _targets(gm)
    assert targets[_runtime._fgi_inject] == inlined
    assert targets[_runtime._fgi_seed] == inlined  # one differentiable input each here
    assert sum(1 for r in fgi_pass.replaced if r.note.startswith("called as one node")) == called
    if inlined:
        assert len(gm.graph.nodes) > nodes_before
    gm.graph.lint()

    code = gm.code
    again = FGIPass()
    second = again(gm)
    assert not second.modified and again.replaced == [] and gm.code == code
    assert tuple(s.skip.code for s in again.skipped) == kept

    expected, expected_grads = _outputs_and_grads(model, inputs)
    actual, actual_grads = _outputs_and_grads(gm, inputs)
    assert torch.equal(actual, expected)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        if e is None:
            assert a is None
        else:
            torch.testing.assert_close(a, e)
    assert any(float(g.abs().sum()) > 0 for g in expected_grads if g is not None)
    return fgi_pass


class Cell(nn.Module):
    """One step of a LIF cell: a linear input, a decay, and a surrogate spike."""

    def __init__(self, spike=lib.gauss):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 4)
        self.spike = spike

    def forward(self, x, v):
        v = 0.9 * v + self.fc(x)
        z = self.spike(v - 0.5)
        return z + v * 0  # keep v's gradient path alive next to the spike


X = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)) * 2
V = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))


def test_one_surrogate_is_inlined():
    fgi_pass = check(Cell(), (X, V), calls=1, inlined=1)
    [replaced] = fgi_pass.replaced
    assert str(replaced) == (
        "Cell:Gauss_apply: Gauss -> FGI (d/dx = torch.exp(-0.5 * (x / sigma) ** 2) / "
        "(sigma * math.sqrt(2 * math.pi)); verified)"
    )


class Several(nn.Module):
    def forward(self, x):
        a = lib.Gauss.apply(x, 0.5)
        b = lib.Atan.apply(x, 2.0)
        c = lib.NestedNeuron.Step.apply(x)
        d = lib.Gauss.apply(x)  # the default sigma
        return a + 2 * b + 3 * c + 4 * d


def test_old_style_new_style_nested_and_defaults():
    fgi_pass = check(Several(), (X,), calls=4, inlined=4)
    assert [r.report.arguments for r in fgi_pass.replaced] == [
        {"x": "tensor", "sigma": 0.5},
        {"x": "tensor", "alpha": 2.0},
        {"x": "tensor"},
        {"x": "tensor", "sigma": 1.0},
    ]


class Noisy(nn.Module):
    def forward(self, x):
        return lib.NoisyBackward.apply(x) + lib.Gauss.apply(x, 1.0)


def test_unrewritable_call_is_kept_and_reported():
    fgi_pass = check(Noisy(), (X,), calls=2, inlined=1, kept=("backward-random",))
    [kept] = fgi_pass.skipped
    assert str(kept).startswith("Noisy:NoisyBackward_apply: backward-random: NoisyBackward: ")
    assert kept.skip.message == "draws random numbers with `torch.rand_like`"


def test_only_unrewritable_calls_leave_the_graph_unmodified():
    class OnlyNoisy(nn.Module):
        def forward(self, x):
            return lib.NoisyBackward.apply(x) * 2

    check(OnlyNoisy(), (X,), calls=1, inlined=0, kept=("backward-random",))


class DimBranch(torch.autograd.Function):
    """Its forward branches on a tensor's dim(): fine eagerly, not traceable by fx."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        out = (x > 0).float()
        if x.dim() > 1:
            out = out.clone()
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output / (1 + x.abs()) ** 2


def test_untraceable_fgi_function_becomes_one_call():
    class Model(nn.Module):
        def forward(self, x):
            return DimBranch.apply(x) * 3

    fgi_pass = check(Model(), (X,), calls=1, inlined=0, called=1)
    assert fgi_pass.replaced[0].note == (
        "called as one node: fx cannot trace it (TraceError: symbolically traced variables "
        "cannot be used as inputs to control flow)"
    )


class TensorConstant(torch.autograd.Function):
    """norse's heaviside compares against ``torch.as_tensor(0.0)``."""

    @staticmethod
    def forward(x, alpha):
        return torch.gt(x, torch.as_tensor(0.0)).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output / (torch.abs(x) + 1.0).pow(2), None


def test_tensor_constants_become_non_persistent_buffers():
    class Model(nn.Module):
        def forward(self, x):
            return TensorConstant.apply(x, 100.0)

    check(Model(), (X,), calls=1, inlined=1)
    gm = trace(Model())
    FGIPass()(gm)
    assert [name for name, _ in gm.named_buffers()] == ["_fgi_constant0"]
    assert gm.state_dict() == {}
    torch.testing.assert_close(gm.double()(X.double()), (X.double() > 0).double())


def test_symbolic_trace_drops_the_gradient_that_trace_keeps():
    x = X.clone().requires_grad_()
    assert not fx.symbolic_trace(Several())(x).requires_grad
    expected = torch.autograd.grad(Several()(x).sum(), x)[0]
    traced = torch.autograd.grad(trace(Several())(x).sum(), x)[0]
    assert torch.equal(traced, expected)


def test_requires_a_graph_module():
    with pytest.raises(TypeError, match="FGIPass runs on a torch.fx.GraphModule, not Cell"):
        FGIPass()(Cell())


def test_runs_in_a_pass_manager_and_enables_vmap_of_grad():
    gm = trace(Several())
    result = PassManager([FGIPass()])(gm)
    assert result.modified
    xs = X.clone()
    per_sample = torch.func.vmap(torch.func.grad(lambda x: result.graph_module(x).sum()))(xs)
    expected = torch.stack(
        [torch.autograd.grad(Several()(x).sum(), x)[0] for x in xs.clone().requires_grad_()]
    )
    torch.testing.assert_close(per_sample, expected)
    with pytest.raises(RuntimeError, match="setup_context"):
        torch.func.vmap(torch.func.grad(lambda x: trace(Several())(x).sum()))(xs)


def test_tracer_restores_function_apply_even_when_tracing_fails():
    class Branchy(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent: fx cannot trace it
                return lib.gauss(x)
            return x

    base = torch.autograd.Function.__mro__[1]
    with pytest.raises(fx.proxy.TraceError):
        trace(Branchy())
    assert "apply" not in base.__dict__
    trace(Several())
    assert "apply" not in base.__dict__


def test_rewritten_graph_module_pickles():
    import pickle

    gm = trace(Several())
    FGIPass()(gm)
    loaded = pickle.loads(pickle.dumps(gm))
    x = X.clone().requires_grad_()
    assert torch.equal(loaded(x), gm(x))
    expected = torch.autograd.grad(gm(x).sum(), x)[0]
    assert torch.equal(torch.autograd.grad(loaded(x).sum(), x)[0], expected)


def test_constant_argument_only_the_call_read_is_dropped():
    class Model(nn.Module):
        def forward(self, x):
            return TensorConstant.apply(x, torch.as_tensor(2.0))  # a get_attr constant

    gm = trace(Model())
    assert [n.op for n in gm.graph.nodes].count("get_attr") == 1
    check(Model(), (X,), calls=1, inlined=1)
    FGIPass()(gm)
    # alpha is dropped with the call; the forward's own constant is the pass's buffer
    assert [n.target for n in gm.graph.nodes if n.op == "get_attr"] == ["_fgi_constant0"]


class TupleParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return lib.TupleScaled.apply(x, (self.scale, 2.0))


def test_a_parameter_in_a_tuple_argument_gets_no_gradient_in_the_graph():
    """Only the seed carries a gradient in the inlined subgraph too: the parameter, a proxy
    inside a tuple, is read through a detached copy, as autograd's backward reads it."""
    model = TupleParameter()
    gm = trace(model)
    FGIPass()(gm)
    x = X.clone().requires_grad_()
    gm(x).sum().backward()
    assert model.scale.grad is None and gm.scale.grad is None
    expected = X.clone().requires_grad_()
    model(expected).sum().backward()
    assert torch.equal(x.grad, expected.grad)
