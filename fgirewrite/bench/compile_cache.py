"""Compile cost, cold and warm: each variant compiled in a fresh process with an empty cache
directory, then again in a second fresh process that finds the first one's caches.

Graphs holding a custom ``autograd.Function`` bypass the AOTAutograd cache, so their warm
compile redoes the autograd tracing; FGI graphs are plain tensor code and are cached whole.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import fgirewrite
from fgirewrite.bench.config import VARIANTS, BenchConfig
from fgirewrite.bench.progress import Progress

UNITS = 2 * len(VARIANTS)
METHOD = (
    "wall seconds of the first training step (forward + backward) plus the first "
    "torch.no_grad() call under torch.compile, each variant in a fresh process; cold: "
    "empty TORCHINDUCTOR_CACHE_DIR, warm: a second process on the same directory, FX "
    "graph cache and AOTAutograd cache on; inductor start-up excluded"
)


def _spawn(spec: dict, cache_root: str, timeout: float) -> dict:
    env = dict(os.environ)
    package_root = str(Path(fgirewrite.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache_root, "inductor")
    env["TRITON_CACHE_DIR"] = os.path.join(cache_root, "triton")
    command = [sys.executable, "-m", "fgirewrite.bench.compile_worker", json.dumps(spec)]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip()[-1500:]
        return {"status": "failed", "error": f"worker exited {done.returncode}: {tail}"}
    return json.loads(lines[-1])


def run(config: BenchConfig, device: torch.device, progress: Progress) -> dict:
    """Cold and warm compile seconds per variant, with the caches' hit/miss/bypass counts."""
    length = config.compile_cache_length or config.lengths[0]
    kwargs = config.entry_kwargs(length)
    out: dict[str, Any] = {
        "status": "ok",
        "length": length,
        "kwargs": kwargs,
        "mode": "compile",
        "compile_mode": config.compile_mode,
        "backend": config.compile_backend,
        "method": METHOD,
        "variants": {},
    }
    for variant in VARIANTS:
        spec = {
            "path": str(Path(config.path).resolve()) if config.path else None,
            "entry": config.entry,
            "kwargs": kwargs,
            "variant": variant,
            "compile_mode": config.compile_mode,
            "backend": config.compile_backend,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "matmul_precision": config.matmul_precision,
        }
        root = tempfile.mkdtemp(prefix="fgirewrite-cache-")
        entry: dict = {}
        try:
            for state in ("cold", "warm"):
                with progress.unit(f"T={length} compile cache: {variant}, {state} process"):
                    entry[state] = _spawn(spec, root, config.worker_timeout)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        cold, warm = entry["cold"], entry["warm"]
        if cold["status"] == "ok" and warm["status"] == "ok":
            entry["saved_s"] = cold["total_s"] - warm["total_s"]
            entry["saved_fraction"] = entry["saved_s"] / cold["total_s"]
        else:
            out["status"] = "partial"
        out["variants"][variant] = entry
    if all(v["cold"]["status"] != "ok" for v in out["variants"].values()):
        out["status"] = "failed"
    return out
