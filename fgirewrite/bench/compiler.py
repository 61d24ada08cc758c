"""torch.compile housekeeping: where its caches live, starting it up, what it captured."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

import torch

CACHE_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


@contextlib.contextmanager
def isolated() -> Iterator[str]:
    """Point inductor's and triton's on-disk caches at a temporary directory, so a run neither
    reads nor fills the user's caches."""
    saved = {k: os.environ.get(k) for k in CACHE_ENV}
    root = tempfile.mkdtemp(prefix="fgirewrite-bench-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(root, "inductor")
    os.environ["TRITON_CACHE_DIR"] = os.path.join(root, "triton")
    try:
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(root, ignore_errors=True)


def fresh() -> contextlib.AbstractContextManager:
    """Empty compile caches, on disk and in memory, so what compiles inside is compiled from
    scratch (a variant compiled second would otherwise reuse the first one's kernels)."""
    try:
        from torch._inductor.utils import fresh_cache
    except ImportError:  # older torch: the in-memory kernel caches stay shared
        return contextlib.nullcontext()
    return fresh_cache()


def options(backend: str, mode: str) -> dict:
    """``torch.compile`` keyword arguments: a mode is inductor's only."""
    return {"backend": backend, **({} if mode == "default" else {"mode": mode})}


def _tiny(x: torch.Tensor) -> torch.Tensor:
    return (x.sin() * 2).sum()


def start(device: torch.device, backend: str = "inductor") -> None:
    """Compile something tiny, so that the backend's one-time start-up (imports, inductor's
    compiler workers) is not charged to the first model compiled."""
    x = torch.ones(8, device=device, requires_grad=True)
    torch.compile(_tiny, backend=backend)(x).backward()


def reset_stats() -> None:
    from torch._dynamo.utils import counters

    counters.clear()


def stats() -> dict:
    """Graphs captured and graph breaks since ``reset_stats``."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "break_reasons": sorted(counters["graph_break"])[:5],
    }
