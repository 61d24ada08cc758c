"""Differentially private training (DP-SGD with Opacus) of the ALIF spiking network.

DP-SGD clips every sample's gradient and adds noise to their sum, so it needs per-sample
gradients, which Opacus computes with ``torch.func`` (``grad_sample_mode="functorch"``).
The ALIF network's surrogate, an old-style ``torch.autograd.Function``, refuses
``torch.func``: Opacus fails on the network as written. Rewritten into forward gradient
injection (here in memory with ``fgirewrite.load_pair``, on disk with
``fgirewrite --write examples/alif.py``), or with the live model passed through
``fgirewrite.inject`` (``--inject``), it trains privately and Opacus accounts its privacy
budget. ``fgirewrite.for_opacus`` makes the time-major network one Opacus layer
that takes the batch first, as Opacus's data loader gives it.

Data: scikit-learn's bundled 8x8 digits (1797 images, no download), read row by row: 8 time
steps of 8 pixels. Needs ``pip install opacus scikit-learn``.

Run from the repository root: ``python -m examples.private_training`` or
``python examples/private_training.py`` (``--help`` for the options; about a minute on one
CPU core).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import fgirewrite
from fgirewrite import load_pair
from fgirewrite.grads.private import for_opacus

try:
    from .forward_gradient_training import accuracy, digits
except ImportError:  # run as `python examples/private_training.py`, or loaded by path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from forward_gradient_training import accuracy, digits  # type: ignore[no-redef]

ALIF = Path(__file__).resolve().parent / "alif.py"


def make_private(model: torch.nn.Module, data: DataLoader, args: argparse.Namespace):
    """The model, its optimizer and the data loader, made private by Opacus."""
    from opacus import PrivacyEngine

    engine = PrivacyEngine(accountant="rdp")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    private_model, optimizer, data = engine.make_private(
        module=for_opacus(model, batch_dim=1),  # the network is time-major: [time, batch, 8]
        optimizer=optimizer,
        data_loader=data,
        noise_multiplier=args.noise,
        max_grad_norm=args.clip,
        grad_sample_mode="functorch",
    )
    return engine, private_model, optimizer, data


def show_the_original_fails(args: argparse.Namespace, data: DataLoader) -> None:
    original, _, _ = load_pair(ALIF)
    model = original.ALIFNetwork(8, args.hidden, 10)
    _, private_model, _, private_data = make_private(model, data, args)
    x, y = next(iter(private_data))
    try:
        F.cross_entropy(private_model(x), y).backward()
    except fgirewrite.TransformBlockedError as exc:
        print(f"the network as written:\n  {exc}\n")


def train(args: argparse.Namespace) -> list[dict]:
    """Private (or, with ``--non-private``, ordinary) training; returns the logged curve."""
    x_train, y_train, x_test, y_test = digits(args.seed)
    train_set = TensorDataset(x_train.transpose(0, 1), y_train)  # batch first, as Opacus wants
    generator = torch.Generator().manual_seed(args.seed)
    data = DataLoader(train_set, batch_size=args.batch, shuffle=True, generator=generator)
    if not args.non_private:
        show_the_original_fails(args, data)

    original, rewritten, _ = load_pair(ALIF)
    torch.manual_seed(args.seed)
    if args.inject:
        model = fgirewrite.inject(original.ALIFNetwork(8, args.hidden, 10))
    else:
        model = rewritten.ALIFNetwork(8, args.hidden, 10)
    n = sum(p.numel() for p in model.parameters())
    how = "fgirewrite.inject" if args.inject else "the FGI rewrite of examples/alif.py"
    if args.non_private:
        engine, optimizer = None, torch.optim.Adam(model.parameters(), lr=args.lr)
        net = for_opacus(model, batch_dim=1)
        print(f"ALIF 8-{args.hidden}-10 ({n} parameters, {how}), non-private, Adam lr {args.lr}")
    else:
        engine, net, optimizer, data = make_private(model, data, args)
        print(
            f"ALIF 8-{args.hidden}-10 ({n} parameters, {how}), DP-SGD: noise multiplier "
            f"{args.noise}, clipping norm {args.clip}, expected batch {args.batch} of "
            f"{len(train_set)} (Poisson sampling), delta {args.delta}, Adam lr {args.lr}"
        )
    curve, start = [], time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        net.train()
        losses = []
        for x, y in data:
            if len(y) == 0:  # Poisson sampling can draw an empty batch
                continue
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach().item())
        net.eval()
        record = {
            "epoch": epoch,
            "train_loss": sum(losses) / max(len(losses), 1),
            "test_accuracy": accuracy(model, x_test, y_test),
            "epsilon": None if engine is None else engine.get_epsilon(args.delta),
            "seconds": time.perf_counter() - start,
        }
        curve.append(record)
        eps = "" if engine is None else f"  epsilon {record['epsilon']:.2f}"
        print(
            f"epoch {epoch:2d}  train loss {record['train_loss']:.3f}  test accuracy "
            f"{record['test_accuracy']:.3f}{eps}  ({record['seconds']:.0f} s)"
        )
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="expected batch size")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--noise", type=float, default=1.0, help="noise multiplier")
    parser.add_argument("--clip", type=float, default=1.0, help="per-sample clipping norm")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument(
        "--inject", action="store_true", help="fgirewrite.inject the live model instead"
    )
    parser.add_argument("--non-private", action="store_true", help="ordinary training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the curve here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", module="opacus")  # its note on secure RNG
    # Opacus hooks the model, whose input needs no gradient: torch notes it at every step.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    curve = train(args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "threads")}
        record = {"torch": torch.__version__, "threads": args.threads, **settings}
        args.out.write_text(json.dumps({**record, "curve": curve}, indent=2) + "\n")


if __name__ == "__main__":
    main()
