"""Per-sample gradients of the ALIF spiking network, which its autograd.Function forbids.

``examples/alif.py`` writes its spike as an old-style ``torch.autograd.Function``, so
``torch.func.vmap(torch.func.grad(...))`` refuses it. The same file rewritten into forward
gradient injection (in memory here, with ``fgirewrite.load_pair``; on disk with
``fgirewrite --write examples/alif.py``) gives every sample's gradient in one vmapped call,
equal to a loop of per-sample backward passes through the original.

Run from the repository root: ``python -m examples.per_sample_grads``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from fgirewrite import load_pair
from fgirewrite.grads.checks import check_per_sample_grads
from fgirewrite.grads.transforms import TransformBlockedError, per_sample_grads

ALIF = Path(__file__).resolve().parent / "alif.py"


def main(batch: int = 16, steps: int = 28, n_in: int = 28, n_hidden: int = 32) -> None:
    original, rewritten, _ = load_pair(ALIF)
    model, (x,) = original.build(steps, batch, n_in, n_hidden)  # x: [time, batch, features]
    fgi_model, _ = rewritten.build(steps, batch, n_in, n_hidden)  # same seed, same weights
    targets = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(0))

    try:
        per_sample_grads(model, F.cross_entropy, x, targets, batch_dim=1)
    except TransformBlockedError as exc:
        print(f"original model: {exc}\n")

    grads = per_sample_grads(fgi_model, F.cross_entropy, x, targets, batch_dim=1)
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    print("rewritten model: per-sample gradients")
    for name, g in grads.items():
        print(f"  {name:24s} {tuple(g.shape)}")
    print("per-sample gradient norms:", " ".join(f"{n:.3f}" for n in norms.tolist()))
    print(f"largest: sample {int(norms.argmax())}, smallest: sample {int(norms.argmin())}\n")

    # The claim, checked: vmap(grad) on the rewrite == one backward per sample on the original.
    print(check_per_sample_grads(model, fgi_model, F.cross_entropy, x, targets, batch_dim=1))


if __name__ == "__main__":
    main()
