"""Spiking neurons, as research code writes them: a surrogate spike as a custom
``torch.autograd.Function``, and a LIF layer that keeps its membrane between calls."""

import torch
from torch import nn


class SpikeFn(torch.autograd.Function):
    """Heaviside step forward; fast-sigmoid surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x, slope: float = 5.0):
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output / (ctx.slope * x.abs() + 1.0) ** 2, None


class LIF(nn.Module):
    """Leaky integrate-and-fire neurons; the membrane stays on the module until reset()."""

    def __init__(self, beta: float = 0.9, threshold: float = 1.0):
        super().__init__()
        self.beta = beta
        self.threshold = threshold
        self.mem = None

    def reset(self):
        self.mem = None

    def forward(self, x):
        mem = x if self.mem is None else self.beta * self.mem + x
        spike = SpikeFn.apply(mem - self.threshold)
        self.mem = mem - spike * self.threshold
        return spike
