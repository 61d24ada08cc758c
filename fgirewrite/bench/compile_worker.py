"""One fresh process that times the first compiled calls of one variant, caches on.

Run by ``compile_cache``: ``python -m fgirewrite.bench.compile_worker SPEC_JSON``; prints one
JSON line. The inductor cache directory comes from ``TORCHINDUCTOR_CACHE_DIR``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

CACHE_LOGGERS = ("torch._functorch._aot_autograd.autograd_cache", "torch._inductor.codecache")
COUNTERS = {
    "inductor": ("fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass"),
    "aot_autograd": ("autograd_cache_hit", "autograd_cache_miss", "autograd_cache_bypass"),
}


class _Bypasses(logging.Handler):
    """Keeps the reasons the caches give for bypassing a graph."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = " ".join(record.getMessage().split())
        if "ypass" in message and message not in self.reasons:
            self.reasons.append(message[:300])


def measure(spec: dict) -> dict:
    """Seconds of the first training step and the first no_grad call, and cache counters."""
    import torch
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    from fgirewrite.bench import compiler, models
    from fgirewrite.bench import device as dev

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("matmul_precision"):
        torch.set_float32_matmul_precision(spec["matmul_precision"])
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    bypasses = _Bypasses()
    for name in CACHE_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(bypasses)
    device = torch.device(spec["device"])
    pair = models.load(Path(spec["path"]) if spec["path"] else None, spec["entry"])
    work = models.workload(pair, spec["kwargs"], device)
    model = work.models[spec["variant"]]
    # untimed: both processes time the model's compile, not start-up
    compiler.start(device, spec["backend"])
    counters.clear()
    bypasses.reasons.clear()
    run = torch.compile(model, **compiler.options(spec["backend"], spec["compile_mode"]))
    fns = models.steps(run, work, list(model.parameters()), model)
    train_s = dev.wall(fns["train"], device)
    no_grad_s = dev.wall(fns["no_grad"], device)
    return {
        "status": "ok",
        "train_s": train_s,
        "no_grad_s": no_grad_s,
        "total_s": train_s + no_grad_s,
        "counters": {k: int(counters[group][k]) for group, keys in COUNTERS.items() for k in keys},
        "bypass_reasons": bypasses.reasons,
    }


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    try:
        result = measure(spec)
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the parent
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
