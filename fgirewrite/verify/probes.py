"""Probe inputs: a dense grid around the threshold, random tensors at several scales, and
the edge values (signed zeros, infinities, NaN, subnormals, the largest finite values)."""

from __future__ import annotations

import torch

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
COLUMNS = 3  # every probe value is repeated across a few columns, for broadcast parameters


# Input domains, tried in order until the original accepts its probes: the real line, then
# [0, 1] for forwards that sample (a Bernoulli spike takes a probability).
DOMAINS = ((-5.0, 5.0), (0.0, 1.0))


def grid(dtype: torch.dtype, centers: list[float], domain=DOMAINS[0]) -> torch.Tensor:
    """Finite values: a dense grid over the domain and around each center, plus random ones
    at several scales, all within the domain."""
    low, high = domain
    generator = torch.Generator().manual_seed(0)
    parts = [torch.linspace(low, high, 2001, dtype=torch.float64)]
    for center in centers:
        parts.append(center + torch.linspace(-1, 1, 401, dtype=torch.float64))
    for scale in (1e-3, 1.0, 1e2):
        parts.append(torch.randn(300, generator=generator, dtype=torch.float64) * scale)
    values = torch.cat(parts)
    if domain != DOMAINS[0]:
        values = values.clamp(low, high)
    values = values.to(dtype)
    return values[torch.isfinite(values)]


def edges(dtype: torch.dtype) -> torch.Tensor:
    """Values where a careless rewrite breaks: ±0, ±inf, NaN, subnormals, huge magnitudes."""
    info = torch.finfo(dtype)
    subnormal = info.smallest_normal * info.eps
    magnitudes = [
        0.0,
        subnormal,
        info.smallest_normal / 2,
        info.smallest_normal,
        info.eps,
        1.0,
        1e4,
        info.max / 2,
        info.max,
        float("inf"),
    ]
    values = [m for v in magnitudes for m in (v, -v)] + [float("nan")]
    return torch.tensor(values, dtype=torch.float64).to(dtype)


def as_matrix(values: torch.Tensor) -> torch.Tensor:
    """Each value in its own row, repeated over COLUMNS columns."""
    return values[:, None].expand(-1, COLUMNS).contiguous()


# Probe layouts by rank: rows of values (rank 2), or images (N, C, H, W) for a backward that
# reduces over a batch of feature maps (``grad.sum((0, 2, 3))``: a per-channel parameter).
IMAGE = (COLUMNS, 2, 2)


def laid_out(values: torch.Tensor, rank: int) -> torch.Tensor:
    """``values`` (a matrix from ``as_matrix``) as probes of ``rank`` 2 or 4. For images, the
    values are repeated from the start to fill the last one, so that none is left out."""
    if rank == 2:
        return values
    flat = values.reshape(-1)
    size = IMAGE[0] * IMAGE[1] * IMAGE[2]
    flat = torch.cat([flat, flat[: -len(flat) % size]]) if len(flat) % size else flat
    return flat.reshape(-1, *IMAGE).contiguous()


def parameter(
    shape_kind: str,
    dtype: torch.dtype,
    like: tuple[int, ...],
    value: float | None,
    seed: int,
) -> torch.Tensor:
    """A second tensor input (a threshold, a slope) for a first input of shape ``like``: near
    1, or ``value`` if given. Shaped like the first input (``full``), one per column
    (``row``), one per row (``col``), one per channel of images (``channel``: (1, C, 1, 1);
    ``channels``: (C,)) or 0-d."""
    shape = {
        "full": like,
        "row": like[-1:],
        "col": (like[0], 1),
        "channel": (1, like[1], 1, 1) if len(like) == 4 else (),
        "channels": like[1:2],
        "scalar": (),
    }[shape_kind]
    if value is not None:
        return torch.full(shape, value, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    return (0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)).to(dtype)


def square(values: torch.Tensor, size: int = 48) -> torch.Tensor:
    """A square matrix of probe values: a per-row and a per-column parameter then have the
    same shape, so a gradient reduced over the wrong dimension shows."""
    picked = values[torch.linspace(0, len(values) - 1, size * size).long()]
    return picked.reshape(size, size)


def incoming(shape: torch.Size, dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    """A fixed incoming gradient whose magnitudes span 1e-2 to 1e3 (to 1 in the half types):
    a clamp or a rounding of the gradient that small values would hide shows on large ones."""
    generator = torch.Generator().manual_seed(seed)
    go = torch.randn(shape, generator=generator, dtype=torch.float64)
    decades = 5 if torch.finfo(dtype).max > 1e5 else 2  # half types: a sum must not overflow
    scale = 10 ** (torch.rand(shape, generator=generator, dtype=torch.float64) * decades - 2)
    return (go * scale).to(dtype)
