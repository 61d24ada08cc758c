"""Peak memory of one call: what it allocates on top of what was live before it."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator

import torch

CUDA_METHOD = "torch.cuda.max_memory_allocated - memory_allocated before the call"
CPU_METHOD = (
    "torch.profiler (profile_memory=True): running sum of the CPU allocator's "
    "allocations and frees during the call, its maximum"
)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's C++ start/stop lines, which would tear the progress bar."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch._C._autograd.DeviceType.CPU
    ]
    events.sort(key=lambda e: e.start_ns())
    # Frees of blocks allocated before profiling started are not counted by the allocator's
    # reporter; the running sum therefore starts at 0 with what was live before the call.
    return max(itertools.accumulate((e.nbytes() for e in events), initial=0))


def peak(fn: Callable[[], object], device: torch.device) -> dict:
    """Peak bytes ``fn()`` allocates beyond what is live before it, and how that was read."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return {
            "status": "ok",
            "peak_bytes": torch.cuda.max_memory_allocated(device) - before,
            "method": CUDA_METHOD,
        }
    return {"status": "ok", "peak_bytes": _cpu_peak(fn), "method": CPU_METHOD}
