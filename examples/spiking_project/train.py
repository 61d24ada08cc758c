"""Train the spiking network a few steps on random data: ``python examples/spiking_project/
train.py`` (or ``cd examples/spiking_project && python train.py``), as research code runs."""

import torch
from models.snn import build
from neurons import LIF


def reset(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, LIF):
            module.reset()


def main(epochs: int = 5) -> None:
    model, (x,) = build()
    targets = torch.randint(0, 10, (x.shape[1],), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(epochs):
        reset(model)
        loss = torch.nn.functional.cross_entropy(model(x), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"epoch {epoch}  loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
