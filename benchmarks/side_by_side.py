"""The ALIF network three ways in one run: the original Function, fgirewrite's rewrite, and the
FGI paper's hand-written plain identity, in eager mode and under ``torch.compile``.

    python -m benchmarks.side_by_side [--steps 28] [--compile-steps 8] [--rounds 15]

The plain identity is ``h = x * g'(x).detach(); h - h.detach() + f(x).detach()`` written into
the model by hand, as the paper does (not exact: an infinite input makes its output NaN); the
rewrite must be at least as fast. Variants are measured in turns, round after round, each
round timing one training step (forward, backward, no optimizer step) of every variant in
thread CPU time, so that the shared machine's load hits them alike; the ratios are medians
of the per-round ratios to the original. Batch 128, 128 hidden units, one thread. Results go
to ``benchmarks/results/side_by_side.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from fgirewrite import load_pair

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _plain_identity(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """The paper's hand-written FGI of the Gaussian surrogate."""
    derivative = torch.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    h = x * derivative.detach()
    return h - h.detach() + (x > 0).to(x.dtype).detach()


def variants() -> dict[str, Callable[[int], tuple[torch.nn.Module, torch.Tensor]]]:
    """Each variant's builder: (model, input) for a sequence length."""
    original, rewritten, _ = load_pair(ROOT / "examples" / "alif.py")

    def builder(module, spike=None):
        def build(steps: int):
            if spike is not None:
                module.spike = spike
            model, (x,) = module.build(steps=steps, batch=128, n_in=1, n_hidden=128)
            return model, x

        return build

    return {
        "original": builder(original),
        "rewrite": builder(rewritten),
        "hand-written plain identity": builder(_plain_identity_module(), _plain_identity),
    }


def _plain_identity_module():
    original, _, _ = load_pair(ROOT / "examples" / "alif.py")
    return original  # its own module object: patching its `spike` leaves the others alone


def _step(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), target).backward()


def measure(steps: int, compiled: bool, rounds: int) -> dict[str, list[float]]:
    """Thread CPU seconds of one training step per variant, per round."""
    torch.manual_seed(0)
    prepared = {}
    for name, build in variants().items():
        model, x = build(steps)
        target = torch.randint(0, 10, (x.shape[1],))
        run = torch.compile(model) if compiled else model
        for _ in range(3):  # warm-up, and the compile
            _step(run, x, target)
        prepared[name] = (run, x, target)
    times: dict[str, list[float]] = {name: [] for name in prepared}
    for _ in range(rounds):
        for name, (run, x, target) in prepared.items():
            start = time.thread_time()
            _step(run, x, target)
            times[name].append(time.thread_time() - start)
    return times


def ratios(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    base = times["original"]
    return {
        name: {
            "median_ms": 1e3 * statistics.median(values),
            "speed_vs_original": statistics.median(
                b / v for b, v in zip(base, values, strict=True)
            ),
        }
        for name, values in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=28, help="sequence length in eager mode")
    parser.add_argument("--compile-steps", type=int, default=8, help="sequence length compiled")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    found = {
        f"eager, T={args.steps}": ratios(measure(args.steps, False, args.rounds)),
        f"torch.compile, T={args.compile_steps}": ratios(
            measure(args.compile_steps, True, args.rounds)
        ),
    }
    record = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "device": "cpu, 1 thread",
        "rounds": args.rounds,
        "results": found,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "side_by_side.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# ALIF training step, batch 128, 128 units, CPU 1 thread, torch {torch.__version__}",
        "",
        "Median of per-round ratios to the original (above 1: faster); one step each, in turns.",
        "",
        "| mode | variant | median step | speed vs original |",
        "| --- | --- | ---: | ---: |",
    ]
    for mode, by_variant in found.items():
        for name, result in by_variant.items():
            lines.append(
                f"| {mode} | {name} | {result['median_ms']:.1f} ms | "
                f"{result['speed_vs_original']:.2f}x |"
            )
    (RESULTS / "side_by_side.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
