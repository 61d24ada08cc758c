"""Train the ALIF spiking network with forward gradients only: no backward pass at all.

Each step draws ``k`` random tangents, computes the loss's directional derivatives along
them with forward-mode AD (``torch.func.jvp``) and feeds their aggregate to Adam. Real
forward-mode AD through the spiking network needs the FGI rewrite: the original
``SpikeFunction`` has no ``jvp`` and refuses ``torch.func``.

Data: scikit-learn's bundled 8x8 digits (1797 images, no download), read row by row: each
image is a sequence of 8 time steps of 8 pixels. Needs ``pip install scikit-learn`` (the
``examples`` extra).

Run from the repository root: ``python -m examples.forward_gradient_training``
(``--help`` for the options; about a minute on one CPU core).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fgirewrite import load_pair
from fgirewrite.grads.transforms import (
    AGGREGATIONS,
    aggregate,
    directional_derivatives,
    sample_tangents,
    trainable_parameters,
)

ALIF = Path(__file__).resolve().parent / "alif.py"
NEEDS_SKLEARN = (
    "examples/forward_gradient_training.py needs scikit-learn: pip install scikit-learn "
    '(or pip install -e ".[examples]")'
)


def digits(seed: int = 0, train: int = 1400):
    """(train images, train labels, test images, test labels); images [8 rows, N, 8]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(data.target)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    first, rest = order[:train], order[train:]
    return (
        images[first].transpose(0, 1),
        labels[first],
        images[rest].transpose(0, 1),
        labels[rest],
    )


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train(
    steps: int = 600,
    num_tangents: int = 16,
    aggregation: str = "orthogonal",
    hidden: int = 16,
    batch: int = 64,
    lr: float = 3e-2,
    seed: int = 0,
    every: int = 50,
    backprop: bool = False,
) -> list[dict]:
    """Forward-gradient training (or, for comparison, backprop); returns the logged curve."""
    _, rewritten, _ = load_pair(ALIF)
    x_train, y_train, x_test, y_test = digits(seed)
    torch.manual_seed(seed)
    model = rewritten.ALIFNetwork(8, hidden, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = sum(p.numel() for p in model.parameters())
    method = "backprop" if backprop else f"{num_tangents} tangents, {aggregation} aggregation"
    print(f"ALIF 8-{hidden}-10 ({n} parameters), {method}, Adam lr {lr}, batch {batch}")
    curve, start = [], time.perf_counter()
    for step in range(steps + 1):
        if step % every == 0 or step == steps:
            with torch.no_grad():
                train_loss = float(F.cross_entropy(model(x_train), y_train))
            curve.append(
                {
                    "step": step,
                    "train_loss": train_loss,
                    "test_accuracy": accuracy(model, x_test, y_test),
                    "seconds": time.perf_counter() - start,
                }
            )
            print(
                f"step {step:4d}  train loss {train_loss:.4f}  test accuracy "
                f"{curve[-1]['test_accuracy']:.3f}"
            )
        if step == steps:
            break
        pick = torch.randint(0, y_train.shape[0], (batch,), generator=generator)
        optimizer.zero_grad()
        if backprop:
            F.cross_entropy(model(x_train[:, pick]), y_train[pick]).backward()
            optimizer.step()
            continue
        tangents = sample_tangents(trainable_parameters(model), num_tangents, generator)
        _, derivatives = directional_derivatives(
            model, F.cross_entropy, x_train[:, pick], y_train[pick], tangents
        )
        estimate = aggregate(tangents, derivatives, aggregation)
        for name, parameter in model.named_parameters():
            parameter.grad = estimate[name]
        optimizer.step()
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--tangents", type=int, default=16)
    parser.add_argument("--aggregation", choices=AGGREGATIONS, default="orthogonal")
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-2)
    parser.add_argument(
        "--backprop",
        action="store_true",
        help="train with ordinary backprop instead, for comparison",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the curve here as JSON")
    args = parser.parse_args()
    try:
        import sklearn  # noqa: F401 - the data set
    except ImportError:
        raise SystemExit(NEEDS_SKLEARN) from None
    torch.set_num_threads(args.threads)
    curve = train(
        args.steps,
        args.tangents,
        args.aggregation,
        args.hidden,
        lr=args.lr,
        seed=args.seed,
        backprop=args.backprop,
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "torch": torch.__version__,
            "device": "cpu",
            "threads": args.threads,
            **{k: v for k, v in vars(args).items() if k not in ("out", "threads")},
            "curve": curve,
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
