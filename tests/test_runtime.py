"""The FGI helpers and generated code under every transform the original Function refuses."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from conftest import FIXTURES

from fgirewrite import _runtime, codegen
from fgirewrite.execute.load import load_pair
from fgirewrite.surrogate import RUNTIME_NAMES


def test_runtime_source_is_the_module_source():
    namespace = {"torch": torch}
    exec("\n\n".join(codegen.runtime_sources().values()), namespace)  # noqa: S102 - our own code
    assert tuple(f.__name__ for f in _runtime.HELPERS) == RUNTIME_NAMES
    x = torch.tensor([-0.0, 0.0, float("inf"), float("nan"), 2.0, 3e38], requires_grad=True)
    out = torch.tensor([-0.0, 1.0, 1.0, 1.0, -0.0, 1.0])
    y = namespace["_fgi_inject"](out, namespace["_fgi_seed"](x, out) * 3.0)
    # -0.0 stays -0.0, and the term's inf, NaN and overflow (3e38 * 3) never reach the value
    assert torch.equal(y.view(torch.int32), out.view(torch.int32))
    y.sum().backward()
    assert x.grad.tolist() == [3.0] * 6  # the derivative at every input, infinite ones too


def test_injection_keeps_the_output_dtype_and_shape():
    x = torch.randn(4, 3, requires_grad=True)
    thr = torch.rand(3, requires_grad=True)
    out = (x > thr).to(torch.float16)
    y = _runtime._fgi_inject(out, _runtime._fgi_seed(thr, out) * 2.0)  # a (3,) term
    assert y.dtype == torch.float16 and y.shape == (4, 3)
    y.sum().backward()
    assert thr.grad.tolist() == [8.0] * 3  # broadcast, then summed by autograd


def _load(name: str):
    original, rewritten, _ = load_pair(FIXTURES / "rewrite" / name)
    return vars(original), vars(rewritten)


def test_original_refuses_what_the_rewrite_does():
    original, rewritten = _load("single_expression.py")
    x = torch.linspace(-2, 2, 9)
    with pytest.raises(RuntimeError, match="setup_context"):
        torch.func.grad(lambda v: original["run"](v).sum())(x)
    with pytest.raises(RuntimeError, match="jvp"), fwAD.dual_level():
        original["run"](fwAD.make_dual(x, torch.ones_like(x)))
    expected = torch.exp(-0.5 * x * x) / (2 * torch.pi) ** 0.5
    grad = torch.func.grad(lambda v: rewritten["run"](v).sum())(x)
    torch.testing.assert_close(grad, expected)
    per_sample = torch.func.vmap(torch.func.grad(lambda v: rewritten["run"](v).sum()))(x[:, None])
    torch.testing.assert_close(per_sample[:, 0], expected)
    _, tangent = torch.func.jvp(rewritten["run"], (x,), (torch.ones_like(x),))
    torch.testing.assert_close(tangent, expected)
    with fwAD.dual_level():
        dual = rewritten["run"](fwAD.make_dual(x, torch.ones_like(x)))
        torch.testing.assert_close(fwAD.unpack_dual(dual).tangent, expected)


def test_inference_skips_injection_but_forward_mode_under_no_grad_does_not():
    _, rewritten = _load("single_expression.py")
    x = torch.linspace(-2, 2, 9, requires_grad=True)
    with torch.no_grad():
        y = rewritten["run"](x)
        _, tangent = torch.func.jvp(rewritten["run"], (x.detach(),), (torch.ones(9),))
        with fwAD.dual_level():
            dual = rewritten["run"](fwAD.make_dual(x.detach(), torch.ones(9)))
            dual_tangent = fwAD.unpack_dual(dual).tangent
    assert y.grad_fn is None and not y.requires_grad
    expected = torch.exp(-0.5 * x.detach() ** 2) / (2 * torch.pi) ** 0.5
    torch.testing.assert_close(tangent, expected)  # not silently zero
    torch.testing.assert_close(dual_tangent, expected)


def test_compile_fullgraph_without_graph_breaks():
    _, rewritten = _load("single_expression.py")
    torch._dynamo.reset()
    compiled = torch.compile(rewritten["run"], fullgraph=True, backend="aot_eager")
    x = torch.linspace(-2, 2, 9, requires_grad=True)
    compiled(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(-0.5 * x.detach() ** 2) / (2 * torch.pi) ** 0.5)


def test_double_backward_differs_as_documented():
    """First-order equivalence is the contract; a second derivative through FGI is refused."""
    _, rewritten = _load("single_expression.py")
    x = torch.linspace(-2, 2, 9, requires_grad=True)
    (grad,) = torch.autograd.grad(rewritten["run"](x).sum(), x, create_graph=True)
    assert not grad.requires_grad


def test_export_keeps_the_gradient_and_decompositions_refuse_it_loudly():
    """torch.export keeps the overwrite through a detached alias; run_decompositions()
    functionalizes it into aten::copy, whose backward torch refuses (never a silent zero)."""
    _, rewritten = _load("single_expression.py")

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(4, 4))

        def forward(self, v):
            return rewritten["run"](v @ self.weight)

    model, v = Model(), torch.randn(3, 4)
    (expected,) = torch.autograd.grad(model(v).sum(), model.weight)
    exported = torch.export.export(model, (v,)).module()
    (grad,) = torch.autograd.grad(exported(v).sum(), dict(exported.named_parameters())["weight"])
    assert torch.equal(grad, expected)
    decomposed = torch.export.export(model, (v,)).run_decompositions().module()
    y = decomposed(v)
    assert torch.equal(y, model(v))
    with pytest.raises(RuntimeError, match="derivative for aten::copy is not implemented"):
        y.sum().backward()


def test_a_users_in_place_write_after_the_rewrite_is_seen_by_autograd():
    _, rewritten = _load("single_expression.py")
    x = torch.linspace(-2, 2, 9, requires_grad=True)
    y = rewritten["run"](x)
    y.mul_(3)
    y.sum().backward()
    torch.testing.assert_close(
        x.grad, 3 * torch.exp(-0.5 * x.detach() ** 2) / (2 * torch.pi) ** 0.5
    )
