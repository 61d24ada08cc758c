"""Steady-state timing with ``torch.utils.benchmark``: median and interquartile range."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils import benchmark

from fgirewrite.bench import device as dev

NOISY = 0.10
"""An IQR above this fraction of the median is flagged: the figure is unreliable."""

MIN_BLOCKS = 3
"""Blocks per round at least, so slow statements still get a median and an IQR."""


def measure(
    fn: Callable[[], object], device: torch.device, min_run_time: float, label: str
) -> list[benchmark.Measurement]:
    """Time ``fn()`` in blocks for at least ``min_run_time`` seconds and ``MIN_BLOCKS``
    blocks, at the current thread count (``Timer`` would otherwise pin one thread), with CUDA
    events on GPU."""
    timer = benchmark.Timer(
        stmt="fn()",
        globals={"fn": fn},
        timer=dev.timer(device),
        num_threads=torch.get_num_threads(),
        label=label,
    )
    parts = [timer.blocked_autorange(min_run_time=min_run_time)]
    for _ in range(MIN_BLOCKS - len(parts[0].times)):
        parts.append(timer.timeit(number=parts[0].number_per_run))
    return parts


def summary(rounds: list[list[benchmark.Measurement]]) -> dict:
    """The JSON form of one or more rounds of the same statement: seconds per call."""
    parts = [part for round_ in rounds for part in round_]
    m = benchmark.Measurement.merge(parts)[0]
    median, iqr = m.median, m.iqr
    rel = iqr / median if median > 0 else 0.0
    return {
        "status": "ok",
        "median_s": median,
        "iqr_s": iqr,
        "rel_iqr": rel,
        "mean_s": m.mean,
        "min_s": min(m.times),
        "rounds": len(rounds),
        "blocks": len(m.times),
        "calls": sum(len(p.times) * p.number_per_run for p in parts),
        "warning": (
            f"IQR is {rel:.0%} of the median (> {NOISY:.0%}): noisy" if rel > NOISY else None
        ),
    }
