"""Where the time of one spike call goes: the original Function against its FGI rewrite.

``fgirewrite bench`` times whole models; this times the ALIF example's surrogate alone, on a
``--size`` x ``--size`` float32 tensor at one thread, to explain its ratios: a training call
(forward, then backward with ones) and a grad-enabled forward, for

- ``original``: ``SpikeFunction.apply`` from ``examples/alif.py``;
- ``fgi``: the function fgirewrite writes for it (loaded with ``fgirewrite.load_pair``);
- ``plain identity``: the paper's ``h = x * g'(x); h - h.detach() + f(x)``, which is not exact
  (an infinite input makes its output NaN) and is shown only as the floor of the approach;

and the pieces of the FGI forward: the step, the surrogate derivative, the seed, the term
and the injection (an add and the overwrite of the value that keep the output exact).

The floor of FGI's grad-on forward is the original's forward plus the surrogate derivative
(FGI evaluates in the forward what the original evaluates in its backward).

Run from the repository root: ``python -m benchmarks.spike_call``. Results go to
``benchmarks/results/spike_call.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from collections.abc import Callable
from pathlib import Path

import torch
import torch.utils.benchmark as benchmark

from fgirewrite import load_pair
from fgirewrite._runtime import _fgi_inject, _fgi_seed

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _plain_identity(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    derivative = torch.exp(-0.5 * (x.detach() / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    h = x * derivative
    return h - h.detach() + (x.detach() > 0).to(x.dtype)


def _time(fn: Callable[[], object], seconds: float) -> float:
    """Median microseconds per call."""
    timer = benchmark.Timer("fn()", globals={"fn": fn})
    return timer.blocked_autorange(min_run_time=seconds).median * 1e6


def measure(size: int, seconds: float) -> dict[str, float]:
    """Median microseconds of each variant and of each piece of the FGI forward."""
    original, rewritten, _ = load_pair(ROOT / "examples" / "alif.py", only="SpikeFunction")
    x0 = torch.randn(size, size)
    variants = {
        "original": original.SpikeFunction.apply,
        "fgi": rewritten.spike_function,
        "plain identity": _plain_identity,
    }
    found: dict[str, float] = {}
    for name, fn in variants.items():

        def train(fn=fn) -> None:
            x = x0.clone().requires_grad_()
            y = fn(x)
            y.backward(torch.ones_like(y))

        def forward(fn=fn) -> None:
            fn(x0.clone().requires_grad_())

        found[f"{name}: training call"] = _time(train, seconds)
        found[f"{name}: forward, grad on"] = _time(forward, seconds)
    x = x0.clone().requires_grad_()
    derivative = torch.exp(-0.5 * x0**2) / math.sqrt(2 * math.pi)
    out = (x0 > 0).to(x0.dtype)
    seed = _fgi_seed(x, out)
    term = seed * derivative
    pieces = {
        "step (x > 0).to(dtype)": lambda: (x0 > 0).to(x0.dtype),
        "surrogate derivative": lambda: torch.exp(-0.5 * x0**2) / math.sqrt(2 * math.pi),
        "seed (_fgi_seed)": lambda: _fgi_seed(x, out),
        "term (seed * derivative)": lambda: seed * derivative,
        "injection (_fgi_inject: add, then overwrite)": lambda: _fgi_inject(out, term),
    }
    for name, fn in pieces.items():
        found[f"piece: {name}"] = _time(fn, seconds)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="side of the square input")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    found = measure(args.size, args.seconds)
    record = {
        "size": [args.size, args.size],
        "threads": 1,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "median_us": {k: round(v, 1) for k, v in found.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "spike_call.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# One spike call, {args.size} x {args.size} float32, 1 thread, torch {torch.__version__}",
        "",
        "| what | median |",
        "| --- | ---: |",
        *(f"| {k} | {v:.1f} us |" for k, v in found.items()),
    ]
    (RESULTS / "spike_call.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
