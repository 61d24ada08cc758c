"""A recurrent adaptive LIF (ALIF) spiking network, as in the FGI paper's benchmark.

One ALIF layer whose input is the data concatenated with its own spikes (no bias), and a
leaky-integrator readout; decays are trainable through a sigmoid; threshold 0.1, adaptation
strength 0.8; the spike is a Heaviside step with a Gaussian surrogate derivative (sigma 1),
written the classic way: an old-style ``torch.autograd.Function``.

Rewrite it with ``fgirewrite examples/alif.py`` (shows the diff) or ``--write``.
Run it with ``python examples/alif.py`` (a few training steps on synthetic data).
"""

import math

import torch
from torch import nn


class SpikeFunction(torch.autograd.Function):
    """Heaviside step forward; Gaussian surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x, sigma: float = 1.0):
        ctx.save_for_backward(x)
        ctx.sigma = sigma
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        sigma = ctx.sigma
        surrogate = torch.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        return grad_output * surrogate, None


spike = SpikeFunction.apply


class ALIFLayer(nn.Module):
    """Adaptive LIF neurons fed by the input and their own spikes of the previous step."""

    def __init__(self, n_in: int, n_hidden: int, threshold: float = 0.1, beta: float = 0.8):
        super().__init__()
        self.n_hidden = n_hidden
        self.threshold = threshold
        self.beta = beta
        scale = 1.0 / math.sqrt(n_in + n_hidden)
        self.weight = nn.Parameter(torch.randn(n_hidden, n_in + n_hidden) * scale)
        self.membrane_decay = nn.Parameter(torch.full((n_hidden,), 2.0))  # sigmoid(2) ~ 0.88
        self.adaptation_decay = nn.Parameter(torch.full((n_hidden,), 3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [time, batch, n_in] -> spikes [time, batch, n_hidden]."""
        steps, batch = x.shape[0], x.shape[1]
        zeros = x.new_zeros(batch, self.n_hidden)
        u, a, z = zeros, zeros, zeros
        alpha = torch.sigmoid(self.membrane_decay)
        rho = torch.sigmoid(self.adaptation_decay)
        spikes = []
        for t in range(steps):
            current = torch.matmul(torch.cat([x[t], z], dim=-1), self.weight.t())
            a = rho * a + (1 - rho) * z
            theta = self.threshold + self.beta * a
            u = alpha * u + (1 - alpha) * current - z * theta
            z = spike(u - theta)
            spikes.append(z)
        return torch.stack(spikes)


class LeakyReadout(nn.Module):
    """A leaky integrator of the spikes, one unit per class."""

    def __init__(self, n_hidden: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_hidden) / math.sqrt(n_hidden))
        self.decay = nn.Parameter(torch.full((n_out,), 2.0))

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        kappa = torch.sigmoid(self.decay)
        y = spikes.new_zeros(spikes.shape[1], self.weight.shape[0])
        outputs = []
        for t in range(spikes.shape[0]):
            y = kappa * y + (1 - kappa) * torch.matmul(spikes[t], self.weight.t())
            outputs.append(y)
        return torch.stack(outputs)


class ALIFNetwork(nn.Module):
    """ALIF layer and readout; the logits are the readout averaged over time."""

    def __init__(self, n_in: int = 1, n_hidden: int = 128, n_out: int = 10):
        super().__init__()
        self.layer = ALIFLayer(n_in, n_hidden)
        self.readout = LeakyReadout(n_hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.layer(x)).mean(dim=0)


def build(steps: int = 10, batch: int = 8, n_in: int = 28, n_hidden: int = 32):
    """A small network and an input batch: the entry point for ``fgirewrite verify``."""
    torch.manual_seed(0)
    model = ALIFNetwork(n_in, n_hidden, 10)
    x = torch.rand(steps, batch, n_in)
    return model, (x,)


if __name__ == "__main__":
    model, (x,) = build()
    targets = torch.randint(0, 10, (x.shape[1],))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    for step in range(20):
        loss = nn.functional.cross_entropy(model(x), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"step {step:2d}  loss {loss.item():.4f}")
