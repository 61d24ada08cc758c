"""What a DP-SGD step costs on the ALIF spiking network, against a non-private step.

DP-SGD needs every sample's gradient, clipped, summed and noised. At batch 64, one
training step each way (forward, backward, optimizer step; SGD):

- non-private: one backward pass of the batch loss, through the original
  ``autograd.Function`` model and through its FGI rewrite;
- Opacus, ``grad_sample_mode="functorch"``, on the rewrite made one layer by
  ``fgirewrite.for_opacus`` (the original refuses ``torch.func``);
- Opacus per layer (``make_private(..., batch_first=False)`` on the rewrite itself), which
  this network happens to allow: each of its layers takes the whole time-major sequence;
- a per-sample loop on the original: one backward pass per sample, clipped, summed and
  noised by hand, the way to do DP-SGD without ``torch.func``.

Noise multiplier 1.0, clipping norm 1.0. Timed with ``torch.utils.benchmark``
(``blocked_autorange``: median and IQR per call) in interleaved rounds merged per variant.
Results go to ``benchmarks/results/private_step.{json,md}``.

Run from the repository root: ``python -m benchmarks.private_step`` (``--help``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.per_sample import measure
from fgirewrite import load_pair
from fgirewrite.grads.private import for_opacus

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NOISE, CLIP, LR = 1.0, 1.0, 0.01


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int, clock: str) -> dict:
    """What the numbers were measured on."""
    import opacus

    return {
        "device": "cpu",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "opacus": opacus.__version__,
        "python": sys.version.split()[0],
        "threads": threads,
        "clock": clock,
    }


def plain_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def opacus_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, whole: bool):
    """A DP-SGD step with Opacus; ``whole``: the model as one layer (``for_opacus``)."""
    from opacus import PrivacyEngine

    batch_first = x.transpose(0, 1)  # what Opacus's data loader gives: [batch, time, in]
    data = DataLoader(TensorDataset(batch_first, y), batch_size=len(y))
    private, optimizer, _ = PrivacyEngine().make_private(
        module=for_opacus(model, batch_dim=1) if whole else model,
        optimizer=torch.optim.SGD(model.parameters(), lr=LR),
        data_loader=data,
        noise_multiplier=NOISE,
        max_grad_norm=CLIP,
        grad_sample_mode="functorch",
        poisson_sampling=False,
        batch_first=whole,
    )
    inputs = batch_first if whole else x

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(private(inputs), y).backward()
        optimizer.step()

    return step


def loop_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """DP-SGD by hand: a backward pass per sample, flat clipping, Gaussian noise, SGD."""
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        total = [torch.zeros_like(p) for p in params]
        for i in range(x.shape[1]):
            grads = torch.autograd.grad(
                F.cross_entropy(model(x[:, i : i + 1]), y[i : i + 1]), params
            )
            norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
            factor = (CLIP / (norm + 1e-6)).clamp(max=1.0)
            for t, g in zip(total, grads, strict=True):
                t.add_(g * factor)
        with torch.no_grad():
            for p, t in zip(params, total, strict=True):
                noise = torch.randn(p.shape, generator=generator) * (NOISE * CLIP)
                p -= LR * (t + noise) / x.shape[1]

    return step


def run(
    batch: int, steps: int, n_in: int, hidden: int, min_run_time: float, rounds: int, clock: str
) -> dict:
    original, rewritten, _ = load_pair(ROOT / "examples" / "alif.py")

    def build(module):
        model, (x,) = module.build(steps, batch, n_in, hidden)  # same seed, same weights
        return model, x

    model, x = build(original)
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(0))
    rows = measure(
        {
            "non-private step, original (Function)": plain_step(model, x, y),
            "non-private step, rewritten (FGI)": plain_step(build(rewritten)[0], x, y),
            "DP-SGD, Opacus functorch, for_opacus(rewritten)": opacus_step(
                build(rewritten)[0], x, y, whole=True
            ),
            "DP-SGD, Opacus functorch per layer, rewritten": opacus_step(
                build(rewritten)[0], x, y, whole=False
            ),
            "DP-SGD, per-sample loop, original": loop_step(build(original)[0], x, y),
        },
        min_run_time,
        rounds,
        clock,
    )
    base, fgi, whole, per_layer, loop = (row["median_ms"] for row in rows)
    for row in rows:
        row["x_non_private_original"] = row["median_ms"] / base
    parameters = sum(p.numel() for p in model.parameters())
    return {
        "model": f"ALIF {n_in}-{hidden}-10 ({parameters} parameters), T={steps}",
        "batch": batch,
        "steps": steps,
        "n_in": n_in,
        "hidden": hidden,
        "parameters": parameters,
        "rows": rows,
        "ratios": {
            "for_opacus_over_non_private": whole / base,
            "for_opacus_over_non_private_fgi": whole / fgi,
            "per_layer_over_non_private": per_layer / base,
            "loop_over_for_opacus": loop / whole,
            "loop_over_non_private": loop / base,
        },
    }


def markdown(results: list[dict], env: dict, command: str) -> str:
    first = results[0]
    lines = [
        "# DP-SGD steps on the ALIF spiking network",
        "",
        f"`{command}`",
        "",
        f"Batch {first['batch']}, T={first['steps']}, {first['n_in']} inputs, cross-entropy, "
        f"SGD; noise multiplier {NOISE}, clipping norm {CLIP}. CPU: {env['cpu']}; torch "
        f"{env['torch']}, Opacus {env['opacus']}, Python {env['python']}, {env['threads']} "
        f"thread(s), {env['clock']} clock. Median and IQR of `torch.utils.benchmark` "
        "`blocked_autorange`, merged over interleaved rounds; shared, noisy machine: read "
        "the ratios.",
        "",
        "| hidden | parameters | for_opacus / non-private | for_opacus / non-private (FGI) "
        "| per layer / non-private | loop / for_opacus | loop / non-private |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        r = result["ratios"]
        lines.append(
            f"| {result['hidden']} | {result['parameters']} | "
            f"{r['for_opacus_over_non_private']:.2f}x | "
            f"{r['for_opacus_over_non_private_fgi']:.2f}x | "
            f"{r['per_layer_over_non_private']:.2f}x | {r['loop_over_for_opacus']:.1f}x | "
            f"{r['loop_over_non_private']:.1f}x |"
        )
    lines += [
        "",
        "Goals: a DP-SGD step at most 5x a non-private step, at least 10x faster than a "
        'per-sample loop. "non-private" is a step through the original Function model, '
        '"non-private (FGI)" through the rewrite; "per layer" is Opacus\'s own per-layer '
        "replay of the rewrite (`batch_first=False`).",
        "",
    ]
    for result in results:
        lines += [
            f"## {result['model']}",
            "",
            "| variant | median ms | IQR ms | runs | x non-private (original) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for row in result["rows"]:
            lines.append(
                f"| {row['variant']} | {row['median_ms']:.2f} | {row['iqr_ms']:.2f} | "
                f"{row['runs']} | {row['x_non_private_original']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--n-in", type=int, default=28)
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--min-run-time", type=float, default=6.0, help="seconds of timed runs per variant"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        help="process CPU time or wall-clock time (default: cpu on one thread, else wall)",
    )
    parser.add_argument("--name", default="private_step", help="results file name")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    if clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures one CPU thread: use it with --threads 1")
    warnings.filterwarnings("ignore", module="opacus")  # its note on secure RNG
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    env = environment(args.threads, clock)
    results = []
    for hidden in args.hidden:
        print(f"hidden {hidden}:")
        results.append(
            run(args.batch, args.steps, args.n_in, hidden, args.min_run_time, args.rounds, clock)
        )
    command = ("python -m benchmarks.private_step " + " ".join(sys.argv[1:])).strip()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(
        json.dumps({"command": command, **env, "results": results}, indent=2) + "\n"
    )
    (RESULTS / f"{args.name}.md").write_text(markdown(results, env, command))
    print(f"wrote {RESULTS / args.name}.json and .md")


if __name__ == "__main__":
    main()
