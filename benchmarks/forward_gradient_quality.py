"""How close multi-tangent forward gradients come to the true gradient of the ALIF network.

For k tangents, the cosine similarity of the mean and of the orthogonal-projection
aggregate (``fgirewrite.grads.transforms.aggregate``) to the backprop gradient of the original
model, over several seeds (each seed: model initialisation, input batch and tangents). The
directional derivatives are real forward-mode AD (``torch.func.jvp``) through the FGI
rewrite. Both aggregates use the same tangents in a seed, so their difference is paired.
"sum" is left out: it is ``k`` times "mean", with the same cosine.

For standard normal tangents in n dimensions theory says: orthogonal, E[cos²] = k/n;
mean, cos ≈ sqrt(k / (n + k + 1)) (E[ĝ·∇f] over the root of E[|ĝ|²]); and since the
projection is the vector of span(V) closest to the gradient, orthogonal ≥ mean for every
draw. The gap only shows when k is not tiny against n, hence two network sizes.

Results: ``benchmarks/results/forward_gradient_quality.{json,md,png}`` (the plot needs
matplotlib). Run from the repository root: ``python -m benchmarks.forward_gradient_quality``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from fgirewrite import load_pair
from fgirewrite.grads.checks import backprop_gradient
from fgirewrite.grads.transforms import (
    aggregate,
    directional_derivatives,
    sample_tangents,
    trainable_parameters,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SIZES = {
    "tiny": dict(steps=8, batch=32, n_in=4, n_hidden=4),
    "example": dict(steps=28, batch=32, n_in=28, n_hidden=32),
}


def _flat(tensors: dict) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors.values()]).double()


def cosine(a: dict, b: dict) -> float:
    return float(F.cosine_similarity(_flat(a), _flat(b), dim=0))


def one_seed(pair, size: dict, seed: int, ks: list[int]) -> tuple[int, dict]:
    """Cosine similarities for each k and aggregation, in one seed."""
    original_module, rewritten_module = pair
    torch.manual_seed(seed)
    original = original_module.ALIFNetwork(size["n_in"], size["n_hidden"], 10)
    rewritten = rewritten_module.ALIFNetwork(size["n_in"], size["n_hidden"], 10)
    rewritten.load_state_dict(original.state_dict())
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(size["steps"], size["batch"], size["n_in"], generator=generator)
    y = torch.randint(0, 10, (size["batch"],), generator=generator)

    truth = backprop_gradient(original, F.cross_entropy, x, y)
    params = trainable_parameters(rewritten)
    result = {}
    for k in ks:
        tangents = sample_tangents(params, k, generator)
        _, derivatives = directional_derivatives(rewritten, F.cross_entropy, x, y, tangents)
        result[k] = {
            kind: cosine(aggregate(tangents, derivatives, kind), truth)
            for kind in ("mean", "orthogonal")
        }
    return sum(p.numel() for p in params.values()), result


def summarise(per_seed: list[dict], ks: list[int], n: int) -> list[dict]:
    rows = []
    for k in ks:
        mean = [s[k]["mean"] for s in per_seed]
        orth = [s[k]["orthogonal"] for s in per_seed]
        gap = [o - m for o, m in zip(orth, mean, strict=True)]
        rows.append(
            {
                "k": k,
                "mean": statistics.fmean(mean),
                "mean_std": statistics.stdev(mean),
                "orthogonal": statistics.fmean(orth),
                "orthogonal_std": statistics.stdev(orth),
                "gap": statistics.fmean(gap),
                "gap_std": statistics.stdev(gap),
                # At k = 1 both are the same vector: equal up to float32 rounding.
                "orthogonal_wins": sum(g >= -1e-6 for g in gap),
                "seeds": len(gap),
                "theory_mean": math.sqrt(k / (n + k + 1)),
                "theory_orthogonal": math.sqrt(min(k, n) / n),
            }
        )
    return rows


def _signed(value: float) -> str:
    return f"{value:+.4f}".replace("-0.0000", "+0.0000")  # no sign for rounding noise


def markdown(results: dict, command: str) -> str:
    lines = [
        "# Multi-tangent forward gradients on the ALIF spiking network",
        "",
        f"`{command}`",
        "",
        "Cosine similarity to the backprop gradient of the original model; mean ± std over "
        "seeds. Directional derivatives by `torch.func.jvp` through the FGI rewrite. "
        "Orthogonal − mean is paired (same tangents). Theory, for standard normal tangents: "
        "mean ≈ sqrt(k/(n+k+1)), orthogonal sqrt(E[cos²]) = sqrt(k/n).",
        "",
    ]
    for result in results.values():
        lines += [
            f"## {result['model']}",
            "",
            "| k | mean | orthogonal | orthogonal − mean | orth ≥ mean "
            "| theory mean | theory orth |",
            "| ---: | --- | --- | --- | ---: | ---: | ---: |",
        ]
        for r in result["rows"]:
            lines.append(
                f"| {r['k']} | {r['mean']:.3f} ± {r['mean_std']:.3f} | "
                f"{r['orthogonal']:.3f} ± {r['orthogonal_std']:.3f} | "
                f"{_signed(r['gap'])} ± {r['gap_std']:.4f} | {r['orthogonal_wins']}/{r['seeds']} | "
                f"{r['theory_mean']:.3f} | {r['theory_orthogonal']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, result in zip(axes[0], results.values(), strict=True):
        ks = [r["k"] for r in result["rows"]]
        for kind, color in (("mean", "tab:blue"), ("orthogonal", "tab:orange")):
            ax.errorbar(
                ks,
                [r[kind] for r in result["rows"]],
                yerr=[r[f"{kind}_std"] for r in result["rows"]],
                marker="o",
                capsize=3,
                color=color,
                label=kind,
            )
            ax.plot(
                ks,
                [r[f"theory_{kind}"] for r in result["rows"]],
                ls="--",
                color=color,
                alpha=0.6,
                label=f"{kind} (theory)",
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("tangents k")
        ax.set_ylabel("cosine similarity to the true gradient")
        ax.set_title(result["model"], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tangents", type=int, nargs="+", default=[1, 2, 4, 16, 64])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="forward_gradient_quality")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    original, rewritten, _ = load_pair(ROOT / "examples" / "alif.py")
    results = {}
    for name in args.sizes:
        size = SIZES[name]
        per_seed = []
        for seed in range(args.seeds):
            n, found = one_seed((original, rewritten), size, seed, args.tangents)
            per_seed.append(found)
        model = (
            f"ALIF {size['n_in']}-{size['n_hidden']}-10, T={size['steps']}, batch "
            f"{size['batch']} (n = {n} parameters)"
        )
        results[name] = {
            "model": model,
            "parameters": n,
            **size,
            "rows": summarise(per_seed, args.tangents, n),
            "per_seed": per_seed,
        }
        print(model)
        for r in results[name]["rows"]:
            print(
                f"  k={r['k']:3d}  mean {r['mean']:.3f} ± {r['mean_std']:.3f}  orthogonal "
                f"{r['orthogonal']:.3f} ± {r['orthogonal_std']:.3f}  gap {_signed(r['gap'])}  "
                f"orth >= mean in {r['orthogonal_wins']}/{r['seeds']}"
            )
    command = ("python -m benchmarks.forward_gradient_quality " + " ".join(sys.argv[1:])).strip()
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "command": command,
        "torch": torch.__version__,
        "device": "cpu",
        "threads": args.threads,
        "seeds": args.seeds,
        "results": results,
    }
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(results, command))
    plotted = plot(results, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / args.name}.json, .md" + (", .png" if plotted else ""))


if __name__ == "__main__":
    main()
