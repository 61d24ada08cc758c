"""What per-sample gradients cost on the ALIF spiking network, against one summed gradient.

Goodfellow's trick (per-sample gradients of ReLU MLPs from retained layer outputs) cost
6-9x one summed gradient; a loop of per-sample backward passes 32-470x. Here, at batch 64:

- summed gradient: one backward pass of the batch loss, through the original
  ``autograd.Function`` model and through its FGI rewrite;
- per-sample, vmap: ``fgirewrite.per_sample_grads`` (``vmap(grad)``) on the rewrite,
  the only model it runs on;
- per-sample, loop: one forward and backward pass per sample, on the original.

Timed with ``torch.utils.benchmark`` (``blocked_autorange``: median and IQR per call), in
interleaved rounds merged per variant.
Results go to ``benchmarks/results/per_sample.{json,md}``.

Run from the repository root: ``python -m benchmarks.per_sample`` (``--help``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import timeit
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from fgirewrite import load_pair
from fgirewrite.grads.checks import per_sample_loop
from fgirewrite.grads.transforms import per_sample_grads

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def environment(device: str, threads: int) -> dict:
    """What the numbers were measured on."""
    name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else (platform.processor() or platform.machine())
    )
    return {
        "device": device,
        "device_name": name,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "threads": threads,
    }


def measure(variants: dict, min_run_time: float, rounds: int, clock: str) -> list[dict]:
    """Time each variant in ``rounds`` interleaved rounds, so that the load of a shared
    machine falls on all of them alike; the rounds' runs are merged.

    ``clock="cpu"`` times the process's CPU time instead of wall-clock time: on a shared
    CPU machine with one thread it leaves out the time the process waits for a core.
    """
    timer_fn = time.process_time if clock == "cpu" else timeit.default_timer
    for fn in variants.values():
        fn()  # warm-up
    times: dict[str, list] = {label: [] for label in variants}
    for _ in range(rounds):
        for label, fn in variants.items():
            timer = benchmark.Timer(
                "fn()",
                globals={"fn": fn},
                label="per-sample gradients",
                description=label,
                timer=timer_fn,
            )
            times[label].append(timer.blocked_autorange(min_run_time=min_run_time / rounds))
    rows = []
    for label, found in times.items():
        m = benchmark.Measurement.merge(found)[0]
        row = {
            "variant": label,
            "median_ms": m.median * 1e3,
            "iqr_ms": m.iqr * 1e3,
            "runs": len(m.times),
        }
        noisy = m.iqr / m.median > 0.1
        print(
            f"{label:42s} median {row['median_ms']:9.2f} ms  IQR {row['iqr_ms']:7.2f} ms"
            f"  ({row['runs']} runs)" + ("  IQR > 10% of median: noisy" if noisy else "")
        )
        rows.append(row)
    return rows


def run(
    batch: int,
    steps: int,
    n_in: int,
    hidden: int,
    device: str,
    min_run_time: float,
    rounds: int,
    clock: str,
) -> dict:
    original, rewritten, _ = load_pair(ROOT / "examples" / "alif.py")
    model, (x,) = original.build(steps, batch, n_in, hidden)
    fgi_model, _ = rewritten.build(steps, batch, n_in, hidden)
    model, fgi_model, x = model.to(device), fgi_model.to(device), x.to(device)
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(0)).to(device)

    def summed(net):
        def fn():
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()

        return fn

    rows = measure(
        {
            "summed gradient, original (Function)": summed(model),
            "summed gradient, rewritten (FGI)": summed(fgi_model),
            "per-sample, vmap(grad), rewritten (FGI)": lambda: per_sample_grads(
                fgi_model, F.cross_entropy, x, y, batch_dim=1
            ),
            "per-sample, loop of backward, original": lambda: per_sample_loop(
                model, F.cross_entropy, x, y, batch_dim=1
            ),
        },
        min_run_time,
        rounds,
        clock,
    )
    base, fgi, vmap_ms, loop_ms = (row["median_ms"] for row in rows)
    ratios = {
        "vmap_over_summed": vmap_ms / base,
        "vmap_over_summed_fgi": vmap_ms / fgi,
        "loop_over_summed": loop_ms / base,
        "loop_over_vmap": loop_ms / vmap_ms,
    }
    for row in rows:
        row["x_summed_original"] = row["median_ms"] / base
    parameters = sum(p.numel() for p in model.parameters())
    return {
        "model": f"ALIF {n_in}-{hidden}-10 ({parameters} parameters), T={steps}",
        "batch": batch,
        "steps": steps,
        "n_in": n_in,
        "hidden": hidden,
        "parameters": parameters,
        "rows": rows,
        "ratios": ratios,
    }


def markdown(results: list[dict], env: dict, command: str) -> str:
    first = results[0]
    lines = [
        "# Per-sample gradients on the ALIF spiking network",
        "",
        f"`{command}`",
        "",
        f"Batch {first['batch']}, T={first['steps']}, {first['n_in']} inputs, cross-entropy. "
        f"Device: {env['device']} ({env['device_name']}), torch {env['torch']}, Python "
        f"{env['python']}, {env['threads']} thread(s), {env['clock']} clock. Median and IQR "
        "of `torch.utils.benchmark` `blocked_autorange`, merged over interleaved rounds; "
        "shared machine, read the ratios.",
        "",
        "| hidden | parameters | vmap / summed | vmap / summed (FGI) | loop / vmap "
        "| loop / summed |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        r = result["ratios"]
        lines.append(
            f"| {result['hidden']} | {result['parameters']} | "
            f"{r['vmap_over_summed']:.2f}x | {r['vmap_over_summed_fgi']:.2f}x | "
            f"{r['loop_over_vmap']:.1f}x | {r['loop_over_summed']:.1f}x |"
        )
    lines += [
        "",
        "Goals: vmap at most 5x a summed gradient, at least 10x faster than the loop. "
        "Goodfellow's trick on MLPs: 6-9x a summed gradient; the loop 32-470x. "
        '"summed" is one backward pass of the batch loss through the original '
        'Function model, "summed (FGI)" through the rewrite.',
        "",
    ]
    for result in results:
        lines += [
            f"## {result['model']}",
            "",
            "| variant | median ms | IQR ms | runs | x summed (original) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for row in result["rows"]:
            lines.append(
                f"| {row['variant']} | {row['median_ms']:.2f} | "
                f"{row['iqr_ms']:.2f} | {row['runs']} | "
                f"{row['x_summed_original']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--n-in", type=int, default=28)
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--min-run-time",
        type=float,
        default=6.0,
        help="seconds of timed runs per variant, over all rounds",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds over the variants"
    )
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        help="process CPU time or wall-clock time (default: cpu on one CPU thread, else wall)",
    )
    parser.add_argument("--name", default="per_sample", help="results file name")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = args.clock or ("cpu" if args.device == "cpu" and args.threads == 1 else "wall")
    if clock == "cpu" and (args.device != "cpu" or args.threads != 1):
        parser.error("--clock cpu measures one CPU thread: use it with --device cpu --threads 1")
    env = {**environment(args.device, args.threads), "clock": clock}
    results = []
    for hidden in args.hidden:
        print(f"hidden {hidden}:")
        results.append(
            run(
                args.batch,
                args.steps,
                args.n_in,
                hidden,
                args.device,
                args.min_run_time,
                args.rounds,
                clock,
            )
        )
    command = ("python -m benchmarks.per_sample " + " ".join(sys.argv[1:])).strip()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(
        json.dumps({"command": command, **env, "results": results}, indent=2) + "\n"
    )
    (RESULTS / f"{args.name}.md").write_text(markdown(results, env, command))
    print(f"wrote {RESULTS / args.name}.json and .md")


if __name__ == "__main__":
    main()
