"""``inject`` on models built from snntorch, norse and spikingjelly (optional dependencies).

For each library neuron: the injected model's forward equals the original's bit for bit and
its gradients match, no custom Function is left in its autograd graph, and per-sample
gradients with ``torch.func.vmap(torch.func.grad(...))`` fail on the original and work after.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import load_module

from fgirewrite.live.inject import autograd_functions, inject

models = load_module("library_models", Path(__file__).parent / "fixtures" / "library_models.py")

X = torch.randn(6, 3, models.N_IN, generator=torch.Generator().manual_seed(0))


@pytest.fixture(params=list(models.BUILDERS), ids=list(models.BUILDERS))
def build(request):
    library, builder = models.BUILDERS[request.param]
    pytest.importorskip(library)
    return builder


def _run(model, x):
    x = x.detach().clone().requires_grad_()
    out = model(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    return out.detach(), [x.grad] + [p.grad for p in model.parameters()], autograd_functions(out)


def test_gradients_equal_and_no_function_left(build):
    original = build()
    result = inject(original, report=True)
    assert result.ok and result.replaced, str(result)
    expected, expected_grads, before = _run(original, X)
    actual, actual_grads, after = _run(result.model, X)
    assert before and after == []
    assert torch.equal(actual, expected)
    assert float(expected.sum()) > 0, "no spikes: the comparison would prove little"
    for a, e in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e)


def test_vmap_of_grad_fails_on_the_original_and_works_after(build):
    xs = X.reshape(3, 2, *X.shape[1:])  # three samples of two steps
    original = build()
    injected = inject(original)
    with pytest.raises(RuntimeError, match="setup_context|vmap"):
        torch.func.vmap(torch.func.grad(lambda x: original(x).sum()))(xs)
    original = build()  # the failed vmap may have left functorch wrappers in its state
    grads = torch.func.vmap(torch.func.grad(lambda x: injected(x).sum()))(xs)
    expected = torch.stack(
        [torch.autograd.grad(original(x).sum(), x)[0] for x in xs.clone().requires_grad_()]
    )
    torch.testing.assert_close(grads, expected)
    assert float(expected.abs().sum()) > 0


def test_snntorch_stochastic_surrogate_is_reported_not_rewritten():
    pytest.importorskip("snntorch")
    from snntorch import surrogate

    result = inject(models.snntorch_leaky(surrogate.SSO()), report=True)
    assert result.replaced == []
    [skipped] = result.skipped
    assert skipped.where == ("neuron.spike_grad (SSO.<locals>.inner) -> StochasticSpikeOperator")
    assert (skipped.skip.code, skipped.skip.message) == (
        "backward-random",
        "draws random numbers with `torch.rand_like`",
    )


def test_norse_reports_every_threshold_method_it_replaced():
    pytest.importorskip("norse")
    result = inject(models.norse_lif_cell(), report=True)
    assert sorted({r.surrogate.name for r in result.replaced}) == [
        "HeaviCirc",
        "HeaviErfc",
        "HeaviTanh",
        "SuperSpike",
        "Triangle",
    ]
    assert (
        "neuron.activation (lif_feed_forward_step) -> threshold -> superspike_fn -> "
        "SuperSpike" in [r.where for r in result.replaced]
    )


def test_spikingjelly_surrogate_copy_is_not_taken_for_the_builtin():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import surrogate

    injected = inject(models.spikingjelly_lif_node())
    function = injected.neuron.surrogate_function
    assert isinstance(function, surrogate.ATan) and type(function) is not surrogate.ATan
    # spikingjelly picks a fused kernel with a built-in surrogate by class name and module;
    # the copy must not match, or the rewritten method would be bypassed.
    assert type(function).__module__ == "fgirewrite.injected"
