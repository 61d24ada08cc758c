"""Check ``fgirewrite.inject`` on third-party models: gradients, vmap(grad), torch.compile.

    python scripts/check_live_models.py [--backend eager|inductor] [--steps T]

Run from the repository root. For each library model of ``tests/fixtures/library_models.py``
(skipped when the library is missing) and the ALIF example: the largest gradient difference
between the original and the injected model, whether ``vmap(grad)`` works on each, and whether
``torch.compile(fullgraph=True)`` captures each without a graph break (and matches eager).
Compiling with inductor costs about a minute and a half per model on a small CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fgirewrite.live.inject import inject  # noqa: E402


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"


def _grads(model, x):
    x = x.detach().clone().requires_grad_()
    out = model(x)
    grads = torch.autograd.grad(out.sum(), [x, *model.parameters()])
    return out.detach(), torch.cat([g.flatten() for g in grads])


def _vmap(model, xs) -> str:
    try:
        torch.func.vmap(torch.func.grad(lambda x: model(x).sum()))(xs)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported
        return "fails (" + _first_line(exc) + ")"


def _compile(model, x, backend: str) -> str:
    torch._dynamo.reset()
    start = time.perf_counter()
    try:
        compiled = torch.compile(model, fullgraph=True, backend=backend)
        out, grads = _grads(compiled, x)
    except Exception as exc:  # noqa: BLE001 - reported
        return f"fails ({_first_line(exc)})"
    expected, expected_grads = _grads(model, x)
    same = torch.equal(out, expected)
    diff = float((grads - expected_grads).abs().max())
    return (
        f"ok in {time.perf_counter() - start:.0f} s; forward equal {same}; "
        f"gradient max diff {diff:.2g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    models = _load("library_models", ROOT / "tests" / "fixtures" / "library_models.py")
    alif = _load("alif_example", ROOT / "examples" / "alif.py")
    builders = {name: builder for name, (_, builder) in models.BUILDERS.items()}
    builders["fgirewrite ALIF example"] = lambda: alif.build(n_in=models.N_IN, n_hidden=6)[0]
    x = torch.randn(args.steps, 2, models.N_IN, generator=torch.Generator().manual_seed(0))
    xs = torch.randn(3, args.steps, 2, models.N_IN, generator=torch.Generator().manual_seed(1))
    for name, builder in builders.items():
        try:
            original = builder()
        except ImportError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        injected = inject(original)
        (out, grads), (expected, expected_grads) = _grads(injected, x), _grads(original, x)
        print(
            f"{name}: forward equal {torch.equal(out, expected)}; gradient max diff "
            f"{float((grads - expected_grads).abs().max()):.2g}"
        )
        print(f"  vmap(grad): original {_vmap(builder(), xs)}; injected {_vmap(injected, xs)}")
        for label, model in (("original", builder()), ("injected", inject(builder()))):
            print(
                f"  compile(fullgraph=True, backend={args.backend}) {label}: "
                f"{_compile(model, x, args.backend)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
