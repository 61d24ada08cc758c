"""What the project-level steps add to ``fgirewrite --write`` on a repository of ~100 files.

    python benchmarks/project_write.py [--repeat N] [--baseline REF] [--cpus N]

A repository shaped like research code is generated (``generate``: a surrogate package, model
folders without ``__init__.py`` that import it, helper modules, training scripts at the top
level): 100 Python files, 10 surrogates. Each run is a fresh copy and a fresh process, pinned
to ``--cpus`` CPUs (2: the project's machine), alternating:

- ``--write --no-verify`` with this checkout (the static rewrite alone);
- ``--write`` with the baseline: this repository at ``--baseline`` (default: the commit before
  the project-level steps), extracted with ``git archive``: per-class verification only;
- ``--write`` with this checkout: per-class verification, the cross-file references, the
  project's import check (every module imported before and after, in parallel workers) and
  the all-or-none write.

Medians are reported, with what the project-level steps add over the baseline (the goal: at
most 15 s). Writes benchmarks/results/project_write.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BASELINE = "4f6633c"  # main before the project-level steps (issue 26)

SURROGATE = """import torch

from .constants import {constant}


class {name}(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output / ({constant} * x.abs() + 1.0) ** {power}
"""
MODEL = """import torch
from torch import nn

from snnlib.{module} import {name}
from utils.helpers_{helper} import normalize_{helper}


class Net{index}(nn.Module):
    def __init__(self, n_in=8, n_out=4):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, x):
        return {name}.apply(normalize_{helper}(self.fc(x)))
"""
HELPER = """import torch


def normalize_{index}(x):
    return (x - x.mean()) / (x.std() + 1e-6)


SCALE_{index} = torch.tensor({index}.0)
"""
SCRIPT = """import torch

from models.net_{index} import Net{index}

torch.manual_seed(0)
model = Net{index}()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(2):
    loss = model(torch.randn(16, 8)).pow(2).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""


def generate(root: Path) -> tuple[int, int]:
    """Write the repository; (Python files, surrogates)."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "generated"\n')
    package = root / "snnlib"
    package.mkdir()
    names = [f"Spike{i}" for i in range(10)]
    (package / "constants.py").write_text("".join(f"ALPHA_{i} = {i + 1}.0\n" for i in range(10)))
    exports = []
    for i, name in enumerate(names):
        module = f"surrogate_{i}"
        text = SURROGATE.format(name=name, constant=f"ALPHA_{i}", power=2 + i % 3)
        (package / f"{module}.py").write_text(text)
        exports.append(f"from .{module} import {name}\n")
    (package / "__init__.py").write_text("".join(exports))
    for folder in ("models", "utils", "experiments"):
        (root / folder).mkdir()
    for i in range(30):
        (root / "utils" / f"helpers_{i}.py").write_text(HELPER.format(index=i))
    for i in range(38):
        text = MODEL.format(
            index=i, module=f"surrogate_{i % 10}", name=names[i % 10], helper=i % 30
        )
        (root / "models" / f"net_{i}.py").write_text(text)
    for i in range(20):
        (root / "experiments" / f"run_{i}.py").write_text(SCRIPT.format(index=i))
    return len(list(root.rglob("*.py"))), len(names)


def run(fgirewrite: Path, repository: Path, args: list[str], cpus: list[int]) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "repo"
        shutil.copytree(repository, copy)
        code = (
            "import sys; del sys.path[0]; sys.argv[0] = 'fgirewrite'; "
            "from fgirewrite.cli import main; main()"
        )
        env = {**os.environ, "PYTHONPATH": str(fgirewrite)}
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code, "--write", "--quiet", *args, "."],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        seconds = time.perf_counter() - start
        return seconds, (done.stderr.strip().splitlines() or [""])[-1]


def baseline_tree(ref: str, into: Path) -> Path:
    """This repository at ``ref``, extracted into ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", default=BASELINE, help="git ref of the baseline")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))[: args.cpus]
    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch) / "generated"
        files, surrogates = generate(repository)
        base = baseline_tree(args.baseline, Path(scratch) / "baseline")
        variants = {
            "static": (ROOT, ["--no-verify"]),
            "baseline": (base, []),
            "project": (ROOT, []),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        summaries: dict[str, str] = {}
        for _ in range(args.repeat):
            for name, (tree, extra) in variants.items():
                seconds, summaries[name] = run(tree, repository, extra, cpus)
                times[name].append(seconds)
                print(f"{name}: {seconds:.2f} s  {summaries[name]}", flush=True)
    medians = {name: round(statistics.median(t), 2) for name, t in times.items()}
    added = round(medians["project"] - medians["baseline"], 2)
    result = {
        "files": files,
        "surrogates": surrogates,
        "baseline": args.baseline,
        "seconds": medians,
        "seconds_all": {name: [round(t, 2) for t in ts] for name, ts in times.items()},
        "added_by_project_steps_s": added,
        "summaries": summaries,
        "cpus": len(cpus),
        "python": platform.python_version(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "project_write.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        "# What the project-level steps add to `fgirewrite --write`",
        "",
        f"`python benchmarks/project_write.py --repeat {args.repeat}`: a generated repository "
        f"of {files} Python files with {surrogates} surrogates; medians of fresh processes, "
        f"{len(cpus)} CPUs, Python {platform.python_version()}.",
        "",
        "| run | median | all |",
        "| --- | ---: | --- |",
        *(
            f"| {label} | {medians[name]:.2f} s | {', '.join(f'{t:.2f}' for t in times[name])} |"
            for name, label in (
                ("static", "`--write --no-verify` (static)"),
                ("baseline", f"`--write` at {args.baseline} (per-class verification)"),
                ("project", "`--write` (per-class verification and the project's steps)"),
            )
        ),
        "",
        f"Added by the project-level steps: {added:+.2f} s (goal: at most +15 s).",
        "",
        f"Last summary: `{summaries['project']}`",
        "",
    ]
    (RESULTS / "project_write.md").write_text("\n".join(rows))
    print(f"added by the project-level steps: {added:+.2f} s")


if __name__ == "__main__":
    main()
