"""What a benchmark run measures: modes, variants, shapes and presets. No torch import here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

MODES = ("eager", "script", "compile", "compile-fullgraph")
"""Execution modes, in report order: the first (eager, original) is the baseline."""

COMPILE_MODES = ("compile", "compile-fullgraph")
"""The modes that run ``torch.compile``."""

VARIANTS = ("original", "fgi")
"""The model as written (custom autograd.Function) and as rewritten by fgirewrite."""

MEASURES = ("train", "infer", "no_grad")
"""Training step (forward + loss + backward), the paper's inference (forward with grad
enabled, in training mode) and a real ``torch.no_grad()`` forward."""

MEASURE_TITLES = {
    "train": "train (fwd+bwd)",
    "infer": "inference, grad on",
    "no_grad": "inference, no_grad",
}
VARIANT_TITLES = {"original": "original", "fgi": "FGI"}

PAPER_LENGTHS = (28, 49, 98, 196, 392, 784)
SEQUENCE_PIXELS = 784  # sequential MNIST: n_in = 784 / T pixels per step


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. ``n_in=None`` means the paper's ``784 // T`` pixels per step."""

    path: Path | None
    entry: str = "build"
    lengths: tuple[int, ...] = (8,)
    batch: int = 16
    hidden: int = 32
    n_in: int | None = None
    modes: tuple[str, ...] = MODES
    compile_mode: str = "default"
    compile_backend: str = "inductor"
    min_run_time: float = 0.25
    rounds: int = 4
    warmup: int = 3
    threads: int | None = None
    device: str = "auto"
    matmul_precision: str | None = None
    memory: bool = True
    compile_cache: bool = False
    compile_cache_length: int | None = None
    worker_timeout: float = 1800.0
    paper: bool = False
    smoke: bool = False

    @property
    def compiling(self) -> bool:
        """Whether a ``torch.compile`` mode is selected."""
        return any(m in COMPILE_MODES for m in self.modes)

    def inputs_for(self, steps: int) -> int:
        """Features per time step at sequence length ``steps``."""
        return self.n_in if self.n_in is not None else max(1, SEQUENCE_PIXELS // steps)

    def entry_kwargs(self, steps: int) -> dict[str, int]:
        """Keyword arguments of the entry function at sequence length ``steps``."""
        return {
            "steps": steps,
            "batch": self.batch,
            "n_in": self.inputs_for(steps),
            "n_hidden": self.hidden,
        }

    def check_kwargs(self) -> dict[str, int]:
        """The entry's arguments for the check before the run: the shortest length at batch
        2 at most (the sizes the model must accept, the least work)."""
        return {**self.entry_kwargs(min(self.lengths)), "batch": min(self.batch, 2)}

    def as_json(self) -> dict:
        data = asdict(self)
        data["path"] = None if self.path is None else str(self.path)
        for key in ("lengths", "modes"):
            data[key] = list(data[key])
        return data


def paper(config: BenchConfig, cuda: bool) -> BenchConfig:
    """The FGI paper's protocol: S-MNIST lengths, batch 128, 128 neurons, 'high' matmul
    precision; torch.compile in max-autotune mode on GPU (on CPU its autotuning would dominate
    the run, so the default mode is kept there)."""
    return replace(
        config,
        lengths=PAPER_LENGTHS,
        batch=128,
        hidden=128,
        n_in=None,
        matmul_precision="high",
        compile_mode="max-autotune" if cuda else "default",
        min_run_time=0.5,
        rounds=8,
        warmup=10,
        compile_cache=True,
        paper=True,
    )


def smoke(config: BenchConfig) -> BenchConfig:
    """A seconds-long run that exercises every code path (its figures mean nothing): a tiny
    model, one short round, and torch.compile with the ``aot_eager`` backend (dynamo and
    AOTAutograd trace as with inductor, but nothing is code-generated: inductor's start-up and
    C++ compiles cost 10-30 s each here)."""
    return replace(
        config,
        lengths=(2,),
        batch=2,
        hidden=4,
        min_run_time=0.001,
        rounds=1,
        warmup=1,
        threads=1,
        compile_backend="aot_eager",
        smoke=True,
    )


def parse_list(text: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``"a,b"`` as a tuple, checked against ``allowed``."""
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        raise ValueError("empty list")
    if allowed is not None:
        unknown = [t for t in items if t not in allowed]
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return items


def parse_lengths(text: str) -> tuple[int, ...]:
    """``"28,49"`` as ``(28, 49)``; ``"paper"`` as the paper's six lengths."""
    if text.strip() == "paper":
        return PAPER_LENGTHS
    try:
        lengths = tuple(int(t) for t in parse_list(text))
    except ValueError as exc:
        raise ValueError(f"lengths must be positive integers: {text!r}") from exc
    if any(n < 1 for n in lengths):
        raise ValueError(f"lengths must be positive integers: {text!r}")
    return lengths
