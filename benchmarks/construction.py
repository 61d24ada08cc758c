"""Where the injection construction works: every transform and mode, on one spike call.

The generated code adds each injected term to the forward's value and then overwrites the
sum's value through a detached alias (``_fgi_inject``). This script checks that construction
on the ALIF example's surrogate (as fgirewrite writes it) against the original Function:
values bit for bit at the edge inputs (±0, subnormals, ±1e38, ±inf, NaN), gradients equal at
every input (±inf included), and each of: a user's in-place write afterwards, torch.func
(grad, vmap, jvp, jacrev, jacfwd, hessian), forward-mode dual numbers (also under no_grad),
TorchScript + save, torch.compile (aot_eager fullgraph, inductor default, reduce-overhead,
max-autotune), torch.export with and without ``run_decompositions()``, torch.fx
``symbolic_trace``, the fx pass and ``inject``, autocast, and float16 / bfloat16 / float64.

Run from the repository root: ``python -m benchmarks.construction`` (``--quick`` skips the
inductor modes, which compile for minutes here). Results: ``benchmarks/results/
construction.{json,md}``.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.autograd.forward_ad as fwAD

from fgirewrite import load_pair

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
EDGES = [-float("inf"), -1e38, -2.0, -0.0, 0.0, 1e-45, 0.5, 1e38, float("inf"), float("nan")]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({4: torch.int32, 8: torch.int64, 2: torch.int16}[t.element_size()])


def _same_grad(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))


def checks(original: Callable, fgi: Callable, quick: bool) -> dict[str, Callable[[], object]]:
    """Each check returns True, or a string that says what it found."""
    x0 = torch.tensor(EDGES)
    xf = torch.linspace(-3, 3, 13)
    expected = torch.exp(-0.5 * xf**2) / (2 * torch.pi) ** 0.5

    def eager(dtype: torch.dtype = torch.float32):
        xa, xb = (x0.to(dtype).detach().clone().requires_grad_() for _ in range(2))
        ya, yb = original(xa), fgi(xb)
        go = torch.randn(len(EDGES), generator=torch.Generator().manual_seed(0)).to(dtype)
        ya.backward(go)
        yb.backward(go)
        same = ya.dtype == yb.dtype and torch.equal(_bits(ya.detach()), _bits(yb.detach()))
        return (same and _same_grad(xa.grad, xb.grad)) or f"grads {xa.grad} vs {xb.grad}"

    def inplace_after():
        x = xf.clone().requires_grad_()
        y = fgi(x)
        y.mul_(2)
        y.sum().backward()
        return torch.allclose(x.grad, 2 * expected)

    def saved_then_inplace():
        messages = []
        for fn in (original, fgi):
            x, w = xf.clone().requires_grad_(), torch.ones(13, requires_grad=True)
            y = fn(x)
            z = y * w
            y.add_(1)
            try:
                z.sum().backward()
                messages.append("no error")
            except RuntimeError as exc:
                messages.append(str(exc).split(":")[0])
        return messages[0] == messages[1] or f"original: {messages[0]}; fgi: {messages[1]}"

    def func(name: str):
        transforms = {
            "grad": lambda: torch.func.grad(lambda v: fgi(v).sum())(xf),
            "vmap(grad)": lambda: torch.func.vmap(torch.func.grad(lambda v: fgi(v).sum()))(
                xf[:, None]
            )[:, 0],
            "jvp": lambda: torch.func.jvp(fgi, (xf,), (torch.ones(13),))[1],
            "jacrev": lambda: torch.func.jacrev(fgi)(xf).diagonal(),
            "jacfwd": lambda: torch.func.jacfwd(fgi)(xf).diagonal(),
        }
        return lambda: torch.allclose(transforms[name](), expected)

    def hessian():
        h = torch.func.hessian(lambda v: (fgi(v) ** 2).sum())(xf)
        return f"runs (first order only: diagonal {h.diagonal()[6]:.3f} at 0)"

    def dual(no_grad: bool):
        def run():
            with torch.set_grad_enabled(not no_grad), fwAD.dual_level():
                out = fwAD.unpack_dual(fgi(fwAD.make_dual(xf, torch.ones(13))))
            return torch.allclose(out.tangent, expected) and torch.equal(
                out.primal, (xf > 0).float()
            )

        return run

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(4, 4))

        def forward(self, v):
            return fgi(v @ self.weight)

    def script():
        scripted = torch.jit.script(Model())
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
        v = torch.randn(3, 4)
        return torch.equal(loaded(v), scripted(v))

    def compiled(**kw):
        def run():
            torch._dynamo.reset()
            fn = torch.compile(fgi, **kw)
            xb, xa = (x0.detach().clone().requires_grad_() for _ in range(2))
            yb, ya = fn(xb), original(xa)
            yb.backward(torch.ones(len(EDGES)))
            ya.backward(torch.ones(len(EDGES)))
            return torch.equal(_bits(yb.detach()), _bits(ya.detach())) and _same_grad(
                xb.grad, xa.grad
            )

        return run

    def export(decompose: bool):
        def run():
            model, v = Model(), torch.randn(3, 4)
            program = torch.export.export(model, (v,))
            if decompose:
                program = program.run_decompositions()
            module = program.module()
            y, y_ref = module(v), model(v)
            if not torch.equal(y, y_ref):
                return "forward differs"
            (g_ref,) = torch.autograd.grad(y_ref.sum(), model.weight)
            try:
                (g,) = torch.autograd.grad(y.sum(), dict(module.named_parameters())["weight"])
            except RuntimeError as exc:
                return f"forward bitwise; backward raises: {exc}"
            return torch.equal(g, g_ref)

        return run

    def fx():
        traced = torch.fx.symbolic_trace(Model())
        v = torch.randn(3, 4)
        traced(v).sum().backward()
        return bool(traced.weight.grad.abs().sum() > 0)

    def autocast():
        model = Model()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(torch.randn(3, 4))
        y.float().sum().backward()
        return f"output {y.dtype}, gradient reaches the weight: {model.weight.grad is not None}"

    def no_grad():
        with torch.no_grad():
            y = fgi(x0.detach().clone().requires_grad_())
        return not y.requires_grad and torch.equal(_bits(y), _bits(original(x0)))

    found = {
        "eager: edge values bitwise, gradients equal (±inf included)": eager,
        "a user's in-place write afterwards": inplace_after,
        "an in-place write into a tensor saved for backward: same error": saved_then_inplace,
        **{f"torch.func.{name}": func(name) for name in ("grad", "vmap(grad)", "jvp")},
        **{f"torch.func.{name}": func(name) for name in ("jacrev", "jacfwd")},
        "torch.func.hessian": hessian,
        "forward-mode dual numbers": dual(False),
        "forward-mode dual numbers under no_grad": dual(True),
        "torch.jit.script + save/load": script,
        "torch.compile(aot_eager, fullgraph)": compiled(backend="aot_eager", fullgraph=True),
        "torch.export": export(False),
        "torch.export + run_decompositions()": export(True),
        "torch.fx.symbolic_trace": fx,
        "autocast (bfloat16)": autocast,
        "torch.no_grad(): value, no graph": no_grad,
        **{f"eager {d}": (lambda d=d: eager(d)) for d in (torch.float16, torch.bfloat16)},
        "eager float64": lambda: eager(torch.float64),
    }
    if not quick:
        found["torch.compile (inductor)"] = compiled()
        found["torch.compile(mode='reduce-overhead')"] = compiled(mode="reduce-overhead")
        found["torch.compile(mode='max-autotune')"] = compiled(mode="max-autotune")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Skip the inductor modes.")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    original, rewritten, _ = load_pair(ROOT / "examples" / "alif.py", only="SpikeFunction")
    rows = {}
    for name, check in checks(
        original.SpikeFunction.apply, rewritten.spike_function, args.quick
    ).items():
        try:
            result = check()
            rows[name] = "ok" if result is True else ("FAILS" if result is False else str(result))
        except Exception as exc:  # noqa: BLE001 - a failing cell is a result
            rows[name] = f"FAILS: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        print(f"{name:64s} {rows[name]}", flush=True)
    meta = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "construction.json").write_text(
        json.dumps({"meta": meta, "checks": rows}, indent=2) + "\n"
    )
    lines = [
        f"# The injection construction, cell by cell (torch {meta['torch']}, CPU)",
        "",
        "`python -m benchmarks.construction` on the ALIF example's spike, as fgirewrite writes it.",
        "",
        "| check | result |",
        "| --- | --- |",
        *(f"| {k} | {v.replace('|', '/')} |" for k, v in rows.items()),
    ]
    (RESULTS / "construction.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
