"""DP-SGD with Opacus on spiking networks: ``fgirewrite.grads.private.for_opacus``.

The clipped per-sample gradients of a private training run (noise off) equal a loop of
per-sample backward passes through the original model with clipping done by hand, for the
rewritten ALIF file, for ``inject`` and for the spiking libraries' neurons; the original
fails with an error that names its Function; what Opacus would refuse is refused with what
to change. Opacus is an optional dependency (installed by ``.ci/run``).
"""

from __future__ import annotations

import argparse
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES, ROOT, load_module
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip(
    "opacus", reason="Opacus is optional: pip install --no-deps opacus (see .ci/run)"
)

from opacus import PrivacyEngine
from opacus.grad_sample import GradSampleModule
from opacus.validators import ModuleValidator

from fgirewrite import inject
from fgirewrite.execute.load import load_pair
from fgirewrite.grads.blockers import TransformBlockedError
from fgirewrite.grads.private import PrivateTrainingError, for_opacus
from fgirewrite.grads.transforms import per_sample_grads

ALIF = ROOT / "examples" / "alif.py"
library = load_module("library_models", FIXTURES / "library_models.py")

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning:opacus.*", "ignore:Full backward hook is firing:UserWarning"
)


@pytest.fixture(scope="module")
def pair():
    original, rewritten, _ = load_pair(ALIF)
    return original, rewritten


def _alif(module, seed=0):
    torch.manual_seed(seed)
    return module.ALIFNetwork(3, 6, 4).double()


def _data(batch=5, steps=6, n_in=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(steps, 2 * batch, n_in, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, 4, (2 * batch,), generator=generator)  # [time, batch, in]


def _loop_grads(model, x, y, batch_dim=1, loss=F.cross_entropy):
    """One backward pass per sample: {name: [batch, *shape]}."""
    grads = []
    for i in range(x.shape[batch_dim]):
        model.zero_grad()
        loss(model(x.narrow(batch_dim, i, 1)), y[i : i + 1]).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    return {n: torch.stack([g[n] for g in grads]) for n in grads[0]}


def _norms(grads):
    return torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()]).norm(dim=0)


def _clip_factors(grads, clip):
    return (clip / (_norms(grads) + 1e-6)).clamp(max=1.0)  # Opacus's flat clipping


def _private_sgd(model, x, y, clip, epochs, lr=0.5, batch=5, mode="functorch"):
    """Opacus DP-SGD without noise: the grad samples and parameters after each step."""
    data = DataLoader(TensorDataset(x.transpose(0, 1), y), batch_size=batch)
    private, optimizer, data = PrivacyEngine().make_private(
        module=for_opacus(model, batch_dim=1),
        optimizer=torch.optim.SGD(model.parameters(), lr=lr),
        data_loader=data,
        noise_multiplier=0.0,
        max_grad_norm=clip,
        grad_sample_mode=mode,
        poisson_sampling=False,
    )
    record = []
    for _ in range(epochs):
        for xb, yb in data:
            optimizer.zero_grad()
            F.cross_entropy(private(xb), yb).backward()
            samples = {n: p.grad_sample.clone() for n, p in model.named_parameters()}
            optimizer.step()
            record.append((samples, {n: p.detach().clone() for n, p in model.named_parameters()}))
    return record


def _manual_sgd(model, x, y, clip, epochs, lr=0.5, batch=5):
    """The same by hand on the original: per-sample loop, clip, average, SGD."""
    record = []
    for _ in range(epochs):
        for start in range(0, x.shape[1], batch):
            xb, yb = x[:, start : start + batch], y[start : start + batch]
            grads = _loop_grads(model, xb, yb)
            factors = _clip_factors(grads, clip)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    clipped = (grads[n] * factors.view(-1, *[1] * p.dim())).sum(0)
                    p -= lr * clipped / batch
            record.append((grads, {n: p.detach().clone() for n, p in model.named_parameters()}))
    return record


@pytest.mark.parametrize(
    "how, mode", [("rewritten file", "functorch"), ("inject", "functorch"), ("inject", "hooks")]
)
def test_private_training_equals_a_per_sample_loop_with_manual_clipping(pair, how, mode):
    x, y = _data()
    reference = _alif(pair[0])
    model = _alif(pair[1]) if how == "rewritten file" else inject(_alif(pair[0]))
    # A clipping norm at the median per-sample norm: some samples are clipped, some not.
    first = _loop_grads(_alif(pair[0]), x[:, :5], y[:5])
    clip = float(_norms(first).median())
    factors = _clip_factors(first, clip)
    assert (factors < 1).any() and (factors == 1).any()

    expected = _manual_sgd(reference, x, y, clip, epochs=2)
    actual = _private_sgd(model, x, y, clip, epochs=2, mode=mode)
    assert len(actual) == len(expected) == 4
    for (samples, params), (loop, loop_params) in zip(actual, expected, strict=True):
        for name in loop:
            torch.testing.assert_close(samples[name], loop[name], rtol=1e-10, atol=1e-13)
            torch.testing.assert_close(params[name], loop_params[name], rtol=1e-10, atol=1e-13)
    assert not torch.equal(expected[-1][1]["layer.weight"], _alif(pair[0]).layer.weight)


def test_the_original_fails_naming_its_function(pair, monkeypatch):
    monkeypatch.chdir(ROOT)
    x, y = _data()
    model = for_opacus(_alif(pair[0]), batch_dim=1)
    private = GradSampleModule(model, force_functorch=True)
    with pytest.raises(TransformBlockedError) as info:
        F.cross_entropy(private(x.transpose(0, 1)), y).backward()
    assert str(info.value) == (
        "Opacus per-sample gradients: the model calls torch.autograd.Function `SpikeFunction` "
        "(examples/alif.py:18, called at examples/alif.py:64), which blocks torch.func: an "
        "old-style Function (forward(ctx, ...)) cannot run under vmap, grad or jvp; rewrite "
        "it with `fgirewrite --write examples/alif.py`, or load the model rewritten in "
        "memory with `fgirewrite.load_pair('examples/alif.py')`"
    )
    assert info.value.function is pair[0].SpikeFunction


def _snntorch_learnable():
    import snntorch as snn

    neuron = snn.Leaky(beta=0.9, learn_beta=True, learn_threshold=True)  # and buffers
    return library.Unrolled(neuron, library._snntorch_step, gain=2.0)


class _JellyReset(nn.Module):
    """spikingjelly as its tutorials use it: state on the neuron, reset after each batch."""

    def __init__(self):
        super().__init__()
        from spikingjelly.activation_based import neuron, surrogate

        torch.manual_seed(0)
        self.fc = nn.Linear(library.N_IN, library.N_OUT)
        self.node = neuron.ParametricLIFNode(surrogate_function=surrogate.ATan())

    def forward(self, x):
        return torch.stack([self.node(self.fc(x_t) * 3.0) for x_t in x])


def _jelly_reset(model):
    from spikingjelly.activation_based import functional

    functional.reset_net(model)


NEURONS = {
    **{name: (lib, build, None) for name, (lib, build) in library.BUILDERS.items()},
    "snntorch Leaky (learnable beta and threshold)": ("snntorch", _snntorch_learnable, None),
    "spikingjelly ParametricLIFNode (reset outside forward)": (
        "spikingjelly",
        _JellyReset,
        _jelly_reset,
    ),
}


def _rate_loss(spikes, y):
    return F.cross_entropy(spikes.mean(0) * 4, y, reduction="sum")  # spikes: [time, batch, 6]


@pytest.mark.parametrize("name", list(NEURONS))
def test_library_neurons_through_inject(name):
    lib, build, reset = NEURONS[name]
    pytest.importorskip(lib)
    x = torch.randn(6, 6, library.N_IN, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6) % library.N_OUT
    model = inject(build())
    private = GradSampleModule(
        for_opacus(model, batch_dim=1, output_batch_dim=1),
        force_functorch=True,
        loss_reduction="sum",
    )
    for step, batch in enumerate((slice(0, 3), slice(3, 6))):  # state carried over, or reset
        if reset is not None:
            reset(model)
        spikes = private(x[:, batch].transpose(0, 1)).transpose(0, 1)
        _rate_loss(spikes, y[batch]).backward()
        reference = build()

        def loss(out, target, reference=reference):
            if reset is not None:
                reset(reference)
            return _rate_loss(out, target)

        expected = _loop_grads(reference, x[:, batch], y[batch], loss=loss)
        assert float(spikes.detach().sum()) > 0
        for n, p in model.named_parameters():
            actual = p.grad_sample if step == 0 else p.grad_sample[-1]
            torch.testing.assert_close(actual, expected[n], rtol=1e-4, atol=1e-5)
            assert float(expected[n].abs().sum()) > 0, n


def test_opacus_alone_replays_a_stateful_neuron_without_its_state():
    # Why the whole model is one layer: Opacus replays the neuron from its input alone.
    pytest.importorskip("spikingjelly")
    x = torch.randn(6, 3, library.N_IN, generator=torch.Generator().manual_seed(0))
    y = torch.arange(3)
    model = inject(_JellyReset())
    _jelly_reset(model)
    private = GradSampleModule(model, force_functorch=True, loss_reduction="sum")
    _rate_loss(private(x), y).backward()
    reference = _JellyReset()

    def loss(out, target):
        _jelly_reset(reference)
        return _rate_loss(out, target)

    expected = _loop_grads(reference, x, y, loss=loss)
    torch.testing.assert_close(model.fc.weight.grad_sample, expected["fc.weight"])
    assert not torch.allclose(model.node.w.grad_sample, expected["node.w"], atol=1e-3)


def test_opacus_alone_takes_time_steps_for_samples_behind_a_batch_first_wrapper(pair):
    # Why for_opacus moves the batch itself: Opacus's batch_first holds for every layer.
    class BatchFirst(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x.transpose(0, 1))

    x, y = _data()  # 6 steps, 10 samples
    model = _alif(pair[1])
    private = GradSampleModule(BatchFirst(model), force_functorch=True)
    F.cross_entropy(private(x.transpose(0, 1)[:5]), y[:5]).backward()
    assert model.layer.weight.grad_sample.shape == (6, 6, 9)  # 6 time steps, not 5 samples


def test_modules_opacus_refuses_are_named_with_the_fix():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(PrivateTrainingError) as info:
        for_opacus(model)
    assert str(info.value) == (
        "for_opacus: Opacus refuses `1` (BatchNorm1d): BatchNorm cannot support training with "
        "differential privacy. `model = opacus.validators.ModuleValidator.fix(model)` "
        "replaces such modules (BatchNorm by GroupNorm, LSTM by DPLSTM, running statistics "
        "off); then call for_opacus on the fixed model"
    )
    fixed = for_opacus(ModuleValidator.fix(model))
    assert isinstance(fixed.module[1], nn.GroupNorm)


class _RunningMean(nn.Module):
    def __init__(self, persistent):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.register_buffer("mean", torch.zeros(3), persistent=persistent)
        self.register_buffer("scale", torch.ones(3))  # a constant buffer: fine

    def forward(self, x):
        if self.training:
            self.mean.mul_(0.9).add_(0.1 * x.mean(0).detach())
        return self.fc(x * self.scale - self.mean)


def test_a_buffer_the_forward_changes_is_refused():
    model = for_opacus(_RunningMean(persistent=True))
    with pytest.raises(PrivateTrainingError, match=r"changed the buffer `mean`, saved with"):
        model(torch.randn(4, 3))
    model.eval()
    assert model(torch.randn(4, 3)).shape == (4, 2)  # not recorded outside training


def test_in_place_state_cannot_be_replayed():
    private = GradSampleModule(for_opacus(_RunningMean(persistent=False)), force_functorch=True)
    with pytest.raises(PrivateTrainingError, match=r"changed `mean` in place during its forward"):
        private(torch.randn(4, 3)).sum().backward()


class _TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x, scale=1.0):
        y = self.fc(x) * scale
        return y, y.detach()


def test_one_tensor_in_one_tensor_out():
    model = for_opacus(_TwoOutputs())
    with pytest.raises(TypeError, match=r"^for_opacus: the model takes one tensor, the batch"):
        model(torch.randn(4, 3), 2.0)
    with pytest.raises(TypeError, match=r"^for_opacus: the model returned tuple, not one tensor"):
        model(torch.randn(4, 3))


class _TiedFrozen(nn.Module):
    """A weight used twice and a frozen bias."""

    def __init__(self, dropout=0.0):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 2)
        self.b.weight = self.a.weight
        self.c.bias.requires_grad_(False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.c(self.dropout(self.b(torch.tanh(self.a(x)))))


def test_tied_and_frozen_parameters():
    model, x = _TiedFrozen(), torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    private = GradSampleModule(for_opacus(model), force_functorch=True, loss_reduction="sum")
    private(x).pow(2).sum().backward()
    expected = _loop_grads(model, x, torch.zeros(5), 0, loss=lambda out, _: out.pow(2).sum())
    assert not hasattr(model.c.bias, "grad_sample")
    for name in ("a.weight", "a.bias", "b.bias", "c.weight"):  # b.weight is a.weight
        torch.testing.assert_close(model.get_parameter(name).grad_sample, expected[name])


def test_random_draws_in_the_forward_are_refused():
    private = GradSampleModule(for_opacus(_TiedFrozen(dropout=0.5)), force_functorch=True)
    with pytest.raises(PrivateTrainingError, match=r"the model draws random numbers in its"):
        private(torch.randn(5, 3)).sum().backward()


def test_batch_dimensions_are_checked(pair):
    x, y = _data()
    with pytest.raises(PrivateTrainingError, match="give the output's batch dimension"):
        for_opacus(_alif(pair[1]), batch_dim=1, output_batch_dim=1)(x.transpose(0, 1))
    private = GradSampleModule(for_opacus(_alif(pair[1]), batch_dim=1), batch_first=False)
    with pytest.raises(PrivateTrainingError) as info:
        private(x.transpose(0, 1))
    assert str(info.value) == (
        "for_opacus: the model takes the batch first: leave make_private's batch_first=True "
        "(the default) and give the model's own batch dimension as "
        "for_opacus(model, batch_dim=...)"
    )


def test_a_copy_replays_from_the_state_the_batch_started_from(pair):
    pytest.importorskip("spikingjelly")
    x = torch.randn(6, 3, library.N_IN, generator=torch.Generator().manual_seed(0))
    y = torch.arange(3)
    model = for_opacus(inject(_JellyReset()), batch_dim=1, output_batch_dim=1)
    replay = copy.deepcopy(model).to("meta")  # what Opacus replays: a copy made once
    params = dict(model.named_parameters())
    for batch in (x, x.flip(0)):
        _jelly_reset(model.module)
        expected = model(batch.transpose(0, 1)).detach()  # from v = 0; leaves v a tensor
        actual = torch.func.functional_call(replay, params, (batch.transpose(0, 1),))
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
        assert isinstance(replay.module.node.v, torch.Tensor)  # the copy's own is stale
    # Not a copy: torch.func on the layer itself runs from the model's current state.
    _jelly_reset(model.module)
    grads = per_sample_grads(
        model, lambda out, y: _rate_loss(out.transpose(0, 1), y), x.transpose(0, 1), y
    )
    _jelly_reset(model.module)
    direct = per_sample_grads(model.module, _rate_loss, x, y, batch_dim=1)
    assert list(grads) == ["fc/weight", "fc/bias", "node/w"]
    for name, value in direct.items():
        torch.testing.assert_close(grads[name.replace(".", "/")], value)


def test_the_wrapper_passes_on_dtype_mode_and_state_dict(pair):
    inner = _alif(pair[1]).float()
    model = for_opacus(inner, batch_dim=1)
    model.double().eval()
    assert inner.layer.weight.dtype == torch.float64 and not inner.training
    assert all(a is b for a, b in zip(model.parameters(), inner.parameters(), strict=True))
    assert list(model.state_dict()) == list(inner.state_dict())
    model.load_state_dict(_alif(pair[1], seed=3).state_dict())
    assert torch.equal(inner.layer.weight, _alif(pair[1], seed=3).layer.weight)
    x, _ = _data()
    assert torch.equal(model(x.transpose(0, 1)), inner(x))
    assert model.module is inner


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the example runs; many small ops, two threads only wait
    yield
    torch.set_num_threads(threads)


def test_the_example_trains_and_reports_epsilon(one_thread, capsys):
    pytest.importorskip("sklearn")
    example = load_module("private_training", ROOT / "examples" / "private_training.py")
    args = argparse.Namespace(
        epochs=1, hidden=4, batch=64, lr=0.1, noise=1.0, clip=1.0, delta=1e-5,
        inject=True, non_private=False, seed=0,
    )  # fmt: skip
    [record] = example.train(args)
    assert 2.0 < record["epsilon"] < 3.0 and 0 <= record["test_accuracy"] <= 1
    out = capsys.readouterr().out
    assert "the model calls torch.autograd.Function `SpikeFunction`" in out
    assert "parameters, fgirewrite.inject), DP-SGD: noise multiplier 1.0" in out
