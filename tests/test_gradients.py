"""Per-sample and forward gradients of the rewritten model equal backprop on the original."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fgirewrite.execute.load import load_pair
from fgirewrite.grads.checks import (
    backprop_gradient,
    check_forward_gradient,
    check_gradients,
    check_per_sample_grads,
)
from fgirewrite.grads.transforms import (
    aggregate,
    directional_derivatives,
    forward_gradient,
    per_sample_grads,
    sample_tangents,
    trainable_parameters,
)

ALIF = Path(__file__).resolve().parents[1] / "examples" / "alif.py"


@pytest.fixture(scope="module")
def pair():
    original, rewritten, _ = load_pair(ALIF)
    return original, rewritten


def _models(pair, dtype=torch.float64, n_in=3, n_hidden=6, n_out=4):
    """The same tiny ALIF network twice: as written and rewritten, equal parameters."""
    torch.manual_seed(0)
    original = pair[0].ALIFNetwork(n_in, n_hidden, n_out).to(dtype)
    rewritten = pair[1].ALIFNetwork(n_in, n_hidden, n_out).to(dtype)
    rewritten.load_state_dict(original.state_dict())
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(6, 5, n_in, generator=generator, dtype=dtype)  # [time, batch, features]
    y = torch.randint(0, n_out, (5,), generator=generator)
    return original, rewritten, x, y


def _spikes(model, x):
    return model.layer(x)


def test_the_network_spikes(pair):
    # Gradients through a network that never spikes would not exercise the surrogate.
    original, _, x, _ = _models(pair)
    rate = float(_spikes(original, x).mean())
    assert 0.05 < rate < 0.95


def test_per_sample_grads_equal_a_backward_loop_on_the_original(pair):
    original, rewritten, x, y = _models(pair)
    check = check_per_sample_grads(original, rewritten, F.cross_entropy, x, y, batch_dim=1)
    assert check.ok, str(check)


def test_per_sample_grads_shapes_and_mean(pair):
    original, rewritten, x, y = _models(pair)
    grads = per_sample_grads(rewritten, F.cross_entropy, x, y, batch_dim=1)
    batch = backprop_gradient(original, F.cross_entropy, x, y)
    assert set(grads) == {n for n, _ in rewritten.named_parameters()}
    for name, p in rewritten.named_parameters():
        assert grads[name].shape == (5, *p.shape)
        # cross_entropy averages over the batch, so the per-sample gradients average to it.
        torch.testing.assert_close(grads[name].mean(0), batch[name], rtol=1e-12, atol=1e-14)
    assert not torch.allclose(grads["layer.weight"][0], grads["layer.weight"][1])


def test_per_sample_grads_batch_first_several_inputs_and_frozen_parameters(pair):
    spike = pair[1].spike

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 4).double()
            self.b = torch.nn.Linear(2, 4).double()
            self.b.weight.requires_grad_(False)

        def forward(self, u, v):
            return spike(self.a(u) + self.b(v)).sum(-1) * self.a.bias.sum()

    model = TwoInputs()
    u, v = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    y = torch.randn(7, dtype=torch.float64)
    grads = per_sample_grads(model, F.mse_loss, (u, v), y, chunk_size=3)
    assert set(grads) == {"a.weight", "a.bias", "b.bias"}
    for i in range(7):
        model.zero_grad()
        F.mse_loss(model(u[i : i + 1], v[i : i + 1]), y[i : i + 1]).backward()
        for name in grads:
            expected = model.get_parameter(name).grad
            torch.testing.assert_close(grads[name][i], expected, rtol=1e-12, atol=1e-14)


def test_forward_gradient_equals_backprop_projections(pair):
    original, rewritten, x, y = _models(pair)
    checks = check_forward_gradient(
        original,
        rewritten,
        F.cross_entropy,
        x,
        y,
        num_tangents=5,
        generator=torch.Generator().manual_seed(2),
    )
    assert len(checks) == 4
    assert all(c.ok for c in checks), "\n".join(map(str, checks))


def test_check_gradients_in_float32_with_default_tolerances(pair):
    original, rewritten, x, y = _models(pair, torch.float32)
    checks = check_gradients(
        original,
        rewritten,
        F.cross_entropy,
        x,
        y,
        batch_dim=1,
        generator=torch.Generator().manual_seed(3),
    )
    assert all(c.ok for c in checks), "\n".join(map(str, checks))


def test_the_checks_catch_a_wrong_surrogate(pair, monkeypatch):
    original, rewritten, x, y = _models(pair)
    # The rewrite with another sigma: same forward, another gradient.
    monkeypatch.setattr(pair[1], "spike", lambda v: pair[1].spike_function(v, 0.5))
    checks = check_gradients(original, rewritten, F.cross_entropy, x, y, batch_dim=1)
    assert [c.ok for c in checks] == [False] * 5
    assert "per-sample d/dlayer.weight: mismatched elements" in checks[0].failures[0]


def test_directional_derivatives_keep_the_surrogate_under_no_grad(pair):
    # Inside jvp inputs report requires_grad=False; the injected term must still flow.
    _, rewritten, x, y = _models(pair)
    tangents = sample_tangents(trainable_parameters(rewritten), 3, torch.Generator().manual_seed(4))
    loss, expected = directional_derivatives(rewritten, F.cross_entropy, x, y, tangents)
    with torch.no_grad():
        loss_no_grad, actual = directional_derivatives(rewritten, F.cross_entropy, x, y, tangents)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    torch.testing.assert_close(loss, F.cross_entropy(rewritten(x), y), rtol=0, atol=0)
    assert loss_no_grad.item() == loss.item()


def test_forward_gradient_is_reproducible_and_composed_of_the_parts(pair):
    _, rewritten, x, y = _models(pair)
    first = forward_gradient(
        rewritten,
        F.cross_entropy,
        x,
        y,
        num_tangents=3,
        aggregation="orthogonal",
        generator=torch.Generator().manual_seed(5),
    )
    again = forward_gradient(
        rewritten,
        F.cross_entropy,
        x,
        y,
        num_tangents=3,
        aggregation="orthogonal",
        generator=torch.Generator().manual_seed(5),
    )
    tangents = sample_tangents(trainable_parameters(rewritten), 3, torch.Generator().manual_seed(5))
    _, d = directional_derivatives(rewritten, F.cross_entropy, x, y, tangents, chunk_size=2)
    parts = aggregate(tangents, d, "orthogonal")
    for name in first:
        assert torch.equal(first[name], again[name])
        torch.testing.assert_close(parts[name], first[name], rtol=1e-12, atol=1e-15)


def _synthetic(k: int, shapes=((3, 2), (4,)), seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = {f"p{i}": torch.zeros(s, dtype=torch.float64) for i, s in enumerate(shapes)}
    gradient = {
        n: torch.randn(p.shape, generator=generator, dtype=p.dtype) for n, p in params.items()
    }
    tangents = sample_tangents(params, k, generator)
    d = sum(torch.tensordot(tangents[n], gradient[n], dims=gradient[n].dim()) for n in params)
    return gradient, tangents, d


def test_sum_is_k_times_mean_and_single_tangent_is_dv():
    _, tangents, d = _synthetic(4)
    total, mean = aggregate(tangents, d, "sum"), aggregate(tangents, d, "mean")
    for n in tangents:
        torch.testing.assert_close(total[n], 4 * mean[n], rtol=1e-14, atol=0)
    _, one, d1 = _synthetic(1)
    for n in one:
        torch.testing.assert_close(aggregate(one, d1, "sum")[n], d1[0] * one[n][0])


def test_orthogonal_recovers_the_gradient_when_tangents_span_everything():
    gradient, tangents, d = _synthetic(12)  # 10 parameters, 12 tangents (dependent)
    projected = aggregate(tangents, d, "orthogonal")
    for n in gradient:
        torch.testing.assert_close(projected[n], gradient[n], rtol=1e-10, atol=1e-12)


def test_orthogonal_is_a_projection():
    gradient, tangents, d = _synthetic(3)
    projected = aggregate(tangents, d, "orthogonal")
    flat_g = torch.cat([g.reshape(-1) for g in gradient.values()])
    flat_p = torch.cat([p.reshape(-1) for p in projected.values()])
    v = torch.cat([t.reshape(3, -1) for t in tangents.values()], dim=1)
    # The residual is orthogonal to every tangent, and the projection lies in their span.
    torch.testing.assert_close(
        v @ (flat_g - flat_p), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12
    )
    coefficients = torch.linalg.lstsq(v.T, flat_p.unsqueeze(1)).solution
    torch.testing.assert_close((v.T @ coefficients).squeeze(1), flat_p, rtol=0, atol=1e-12)
    assert float(flat_p.norm()) < float(flat_g.norm())


def test_orthogonal_keeps_the_tangents_dtype():
    _, tangents, d = _synthetic(2)
    tangents = {n: t.float() for n, t in tangents.items()}
    assert all(
        t.dtype == torch.float32 for t in aggregate(tangents, d.float(), "orthogonal").values()
    )


def test_bad_arguments():
    _, tangents, d = _synthetic(2)
    with pytest.raises(
        ValueError, match="aggregation must be one of sum, mean, orthogonal, not 'median'"
    ):
        aggregate(tangents, d, "median")
    with pytest.raises(ValueError, match="num_tangents must be at least 1, not 0"):
        sample_tangents({"w": torch.zeros(2)}, 0)
    with pytest.raises(ValueError, match="tangents are for"):
        directional_derivatives(
            torch.nn.Linear(2, 1),
            F.mse_loss,
            torch.zeros(1, 2),
            torch.zeros(1, 1),
            {"weight": torch.zeros(1, 1, 2)},
        )
