"""``fgirewrite.inject`` on live models: every way a model reaches a surrogate.

The surrogates live in ``fixtures/surrogate_lib.py``, loaded as an installed library would be;
each test checks numeric gradient equality with the original model, that the injected forward
has no custom Function left in its autograd graph, and that the library is left untouched.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import load_module
from torch import nn

import fgirewrite
from fgirewrite import codegen
from fgirewrite.live.inject import InjectResult, autograd_functions, inject

ROOT = Path(__file__).resolve().parents[1]


lib = load_module("surrogate_lib", Path(__file__).parent / "fixtures" / "surrogate_lib.py")
alif = load_module("alif_example", ROOT / "examples" / "alif.py")


class Recurrent(nn.Module):
    """A linear layer into a stateful neuron, unrolled over time with Python control flow."""

    def __init__(self, neuron: nn.Module, n_in: int = 3, n_out: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(n_in, n_out)
        self.neuron = neuron

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.neuron, "reset"):
            self.neuron.reset()
        return torch.stack([self.neuron(self.fc(x_t) * 3) for x_t in x])


def _run(model: nn.Module, x: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    out = model(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    grads = [x.grad] + [p.grad for p in model.parameters()]
    return out.detach(), grads, autograd_functions(out)


def assert_injected(original: nn.Module, x: torch.Tensor, **options) -> InjectResult:
    """Inject, then: same forward bit for bit, gradients equal within float32 tolerance (a
    reassociated product may differ in the last bit), no Function left."""
    result = inject(original, report=True, **options)
    assert isinstance(result, InjectResult)
    expected, expected_grads, before = _run(original, x)
    actual, actual_grads, after = _run(result.model, x)
    assert before, "the original model should call a custom Function"
    assert after == []
    assert torch.equal(actual, expected)
    assert any(float(g.abs().sum()) > 0 for g in expected_grads)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e)
    return result


X = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(0))


def test_alif_example_module_level_alias():
    model, (x,) = alif.build(steps=8, batch=4, n_in=5, n_hidden=8)
    result = assert_injected(model, x)
    assert [str(r) for r in result.replaced] == [
        "layer (ALIFLayer) -> ALIFLayer.forward -> spike: SpikeFunction -> FGI (d/dx = "
        "torch.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)); verified)"
    ]
    assert result.ok and result.skipped == []
    layer = result.model.layer
    assert isinstance(layer, alif.ALIFLayer) and type(layer) is not alif.ALIFLayer
    assert type(layer).__module__ == "fgirewrite.injected" and type(layer).__name__ == "ALIFLayer"


def test_closure_from_a_factory():
    result = assert_injected(Recurrent(lib.Neuron()), X)
    assert [r.where for r in result.replaced] == ["neuron.spike_fn (atan.<locals>.inner) -> Atan"]
    assert result.summary() == "fgirewrite: injected 1 surrogate at 1 site; 0 left unrewritten"


def test_module_level_alias_as_attribute():
    result = assert_injected(Recurrent(lib.Neuron(lib.gauss)), X)
    assert [r.where for r in result.replaced] == ["neuron.spike_fn (Gauss.apply)"]


def test_surrogate_module_with_static_method():
    result = assert_injected(Recurrent(lib.Neuron(lib.SurrogateModule())), X)
    assert [r.where for r in result.replaced] == [
        "neuron.spike_fn (SurrogateModule) -> SurrogateModule.spiking_function -> Atan"
    ]
    assert isinstance(result.model.neuron.spike_fn, lib.SurrogateModule)


def test_function_class_passed_as_value_keeps_class_attributes():
    result = assert_injected(lib.ClassValueNeuron(), X)
    stand_in = result.model.spike_cls
    assert stand_in.required_states == ("v",)
    assert not issubclass(stand_in, torch.autograd.Function)
    assert stand_in.__fgi_original__ is lib.MultiSpike


def test_nested_function_class_bound_apply():
    result = assert_injected(lib.NestedNeuron(), X)
    # The class attribute is replaced too: `self.Step.apply(...)` must not reach the original.
    assert [r.where for r in result.replaced] == [
        "NestedNeuron.spike_grad (NestedNeuron.Step.apply)",
        "NestedNeuron (NestedNeuron) -> NestedNeuron.Step",
    ]


@pytest.mark.parametrize("method", ["gauss", "atan"])
def test_module_level_functions_and_dispatch_table(method):
    result = assert_injected(lib.GlobalPathNeuron(method), X)
    assert sorted(r.where for r in result.replaced) == [
        "GlobalPathNeuron (GlobalPathNeuron) -> GlobalPathNeuron.forward -> spike -> SURROGATES"
        f" -> [{name!r}]"
        for name in ("atan", "gauss")
    ]


def test_functools_partial():
    assert_injected(lib.PartialNeuron(), X)


class _ThroughModuleObject(nn.Module):
    def forward(self, x):
        return lib.gauss(x, 0.5)  # `lib` is a module object read by this function


def test_attribute_of_a_module_object():
    result = assert_injected(_ThroughModuleObject(), X)
    assert [r.where for r in result.replaced] == [
        "_ThroughModuleObject (_ThroughModuleObject) -> _ThroughModuleObject.forward -> lib -> "
        "gauss"
    ]


def test_modules_that_reference_each_other():
    a, b = types.ModuleType("fgi_fixture_a"), types.ModuleType("fgi_fixture_b")
    a.b, b.a, b.gauss = b, a, lib.gauss
    namespace: dict = {"a": a, "__name__": "fgi_fixture_ns"}
    exec("def spike(x):\n    return a.b.gauss(x, 1.0)\n", namespace)  # noqa: S102

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fn = namespace["spike"]

        def forward(self, x):
            return self.fn(x)

    result = assert_injected(Model(), X)
    assert [r.where for r in result.replaced] == ["Model.fn (spike) -> a -> b -> gauss"]
    assert b.gauss == lib.Gauss.apply


def test_library_and_original_model_untouched():
    model = Recurrent(lib.Neuron())
    closure = model.neuron.spike_fn
    table = dict(lib.SURROGATES)
    injected = inject(model)
    assert model.neuron.spike_fn is closure and type(model.neuron) is lib.Neuron
    assert lib.gauss == lib.Gauss.apply and lib.SURROGATES == table
    assert lib.spike.__globals__ is vars(lib)
    assert injected is not model and injected.neuron.spike_fn is not closure
    assert _run(model, X)[2] == [lib.Atan]


def test_inplace_rewrites_the_given_model():
    model = Recurrent(lib.Neuron())
    assert inject(model, inplace=True) is model
    assert _run(model, X)[2] == []


def test_unrewritable_surrogate_is_reported_with_its_reason_code():
    result = inject(lib.NoisyNeuron(), report=True)
    assert result.replaced == [] and not result.ok
    [skipped] = result.skipped
    assert skipped.skip.code == "backward-random"
    assert str(skipped).startswith(
        "NoisyNeuron (NoisyNeuron) -> NoisyNeuron.forward -> NoisyBackward: backward-random: "
        "NoisyBackward: draws random numbers with `torch.rand_like`"
    )
    assert _run(result.model, X)[2] == [lib.NoisyBackward]  # kept, with its gradient


def test_inject_report_is_inject_with_report_and_never_warns(recwarn):
    result = fgirewrite.inject_report(lib.NoisyNeuron())
    assert isinstance(result, InjectResult)
    assert [str(s) for s in result.skipped] == [
        str(s) for s in inject(lib.NoisyNeuron(), report=True).skipped
    ]
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    model = Recurrent(lib.Neuron())
    assert isinstance(inject(model), nn.Module)
    assert isinstance(fgirewrite.inject_report(model).model, nn.Module)


def test_unrewritable_surrogate_warns_without_report():
    with pytest.warns(UserWarning, match="backward-random: NoisyBackward"):
        inject(lib.NoisyNeuron())


def test_hidden_call_is_found_by_running_example_inputs():
    assert inject(lib.HiddenNeuron(), report=True).skipped == []  # nothing to follow statically
    result = inject(lib.HiddenNeuron(), report=True, example_inputs=(X,))
    [skipped] = result.skipped
    assert (skipped.where, skipped.skip.code, skipped.skip.name) == (
        "HiddenNeuron(*example_inputs)",
        "hidden-call",
        "Gauss",
    )


def test_verification_failure_is_a_skip(monkeypatch):
    class Sigmoidal(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).float()

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return grad_output * torch.sigmoid(x) * (1 - torch.sigmoid(x))

    class Model(nn.Module):
        def forward(self, x):
            return Sigmoidal.apply(x)

    source = codegen.function_source

    def doubled(surrogate, name, helpers=None, annotate=False):  # twice the gradient: wrong
        text = source(surrogate, name, helpers, annotate)
        return text.replace("_fgi_inject(out, ", "_fgi_inject(out, 2 * ")

    monkeypatch.setattr(codegen, "function_source", doubled)
    result = inject(Model(), report=True)
    [skipped] = result.skipped
    assert skipped.skip.code == "verification-failed"
    assert "grid d/dx: mismatched elements" in skipped.skip.message
    unverified = inject(Model(), report=True, verify=False)
    assert [r.report for r in unverified.replaced] == [None] and unverified.skipped == []


def test_vmap_of_grad_works_only_after_injection():
    model, _ = alif.build(steps=4, batch=1, n_in=3, n_hidden=6)
    xs = torch.rand(5, 4, 1, 3, generator=torch.Generator().manual_seed(2))
    with pytest.raises(RuntimeError, match="must override the setup_context"):
        torch.func.vmap(torch.func.grad(lambda x: model(x).sum()))(xs)
    injected = inject(model)
    grads = torch.func.vmap(torch.func.grad(lambda x: injected(x).sum()))(xs)
    expected = torch.stack(
        [torch.autograd.grad(model(x).sum(), x)[0] for x in xs.clone().requires_grad_()]
    )
    torch.testing.assert_close(grads, expected)


def test_compile_fullgraph_without_graph_breaks():
    injected = inject(Recurrent(lib.Neuron(lib.SurrogateModule())))
    compiled = torch.compile(injected, fullgraph=True, backend="eager")
    x = X[:3].clone().requires_grad_()
    out = compiled(x)
    out.sum().backward()
    eager_x = X[:3].clone().requires_grad_()
    expected = injected(eager_x)
    expected.sum().backward()
    assert torch.equal(out.detach(), expected.detach())
    torch.testing.assert_close(x.grad, eager_x.grad)


def test_import_is_cheap_and_inject_is_exported_lazily():
    code = "import sys, fgirewrite; assert 'torch' not in sys.modules; print('ok')"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout == "ok\n"
    assert fgirewrite.inject is inject
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        fgirewrite.nothing  # noqa: B018
