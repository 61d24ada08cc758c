"""The device a run uses, what it records about the machine, and how it reads the clock."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch


def choose(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    return device


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _flag(name: str) -> bool | None:
    fn = getattr(torch._C, name, None)
    try:
        return bool(fn()) if fn is not None else None
    except RuntimeError:
        return None


def torchscript_fusion() -> dict:
    """What TorchScript's NNC fuser may do on this build: on by default on CUDA; on CPU only
    where enabled and compiled with LLVM (see docs/bench.md)."""
    return {
        "texpr_fuser": _flag("_jit_texpr_fuser_enabled"),
        "cpu": _flag("_jit_can_fuse_on_cpu"),
        "gpu": _flag("_jit_can_fuse_on_gpu"),
        "llvm": _flag("_llvm_enabled"),
    }


def describe(device: torch.device) -> dict:
    """Device name, versions and thread counts, as recorded in every result file."""
    info = {
        "device": device.type,
        "device_name": _cpu_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "torchscript_fusion": torchscript_fusion(),
        "cuda": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device_name"] = props.name
        info["cuda"] = {
            "version": torch.version.cuda,
            "capability": f"{props.major}.{props.minor}",
            "memory_bytes": props.total_memory,
        }
    return info


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call takes, device work included (for first calls: compile, warm-up)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


class CudaEventClock:
    """A ``torch.utils.benchmark`` timer that reads CUDA events, not the host clock.

    Each reading records an event on the current stream, waits for it, and returns the
    seconds since a reference event; ``Timer`` subtracts two readings around a block of
    statements, so the block is timed on the device, after its queued work has finished.
    """

    def __init__(self) -> None:
        self._origin = torch.cuda.Event(enable_timing=True)
        self._origin.record()

    def __call__(self) -> float:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        event.synchronize()
        return self._origin.elapsed_time(event) / 1e3


def timer(device: torch.device) -> Callable[[], float]:
    """The clock for steady-state timing on ``device``."""
    return CudaEventClock() if device.type == "cuda" else time.perf_counter
