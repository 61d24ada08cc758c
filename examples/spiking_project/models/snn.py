"""A two-layer spiking network: its model module imports the neuron module."""

import torch
from neurons import LIF
from torch import nn


class SpikingNet(nn.Module):
    def __init__(self, n_in: int, n_hidden: int, n_out: int):
        super().__init__()
        self.fc1 = nn.Linear(n_in, n_hidden)
        self.lif1 = LIF()
        self.fc2 = nn.Linear(n_hidden, n_out)
        self.lif2 = LIF()

    def forward(self, x):
        """x: [time, batch, n_in] -> spike counts [batch, n_out]."""
        counts = 0
        for step in x:
            counts = counts + self.lif2(self.fc2(self.lif1(self.fc1(step))))
        return counts


def build(steps: int = 8, batch: int = 4, n_in: int = 16, n_hidden: int = 32):
    """The entry point of `fgirewrite verify --entry models.snn:build` (and of bench)."""
    torch.manual_seed(0)
    return SpikingNet(n_in, n_hidden, 10), (torch.rand(steps, batch, n_in) * 2,)
