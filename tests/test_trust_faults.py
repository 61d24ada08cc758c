"""Fault injection into what ``--write`` would write: each mutant of a correct rewritten
module (a helper swapped, a name rebound, a reduction moved to another dimension, a dtype
widened, an input no longer detached, a module that no longer imports) is rejected by the
verification that backs ``--write``, with the message a user reads."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import FIXTURES

from fgirewrite.rewrite import rewrite_source
from fgirewrite.verify import verify_rewrite

TRUST = FIXTURES / "trust"

MUTANTS = [
    (
        "inject keeps the sum's value",
        "partial_apply.py",
        [("    y.detach().copy_(out)\n", "")],
        "float32/cpu: edges forward: mismatched elements",
    ),
    (
        "seed ignores the backward's dtype",
        "narrow_output_half.py",
        [
            (
                "return x.to(torch.promote_types(out.dtype, x.dtype))\n",
                "return x.to(out.dtype)\n",
            )
        ],
        "d/dx: mismatched elements",
    ),
    (
        "inject widens the output's dtype",
        "narrow_output_half.py",
        [
            ("    y = out + term.to(out.dtype)\n", "    y = out + term\n"),
            (".to(out.dtype) * 0.3", " * 0.3"),
        ],
        "output dtype torch.float32 != original torch.float16",
    ),
    (
        "an alias rebound after the rewrite",
        "alias_then_del.py",
        [("del Spike\n", "del Spike\nspike = lambda v: (v > 0).float() + 0 * v\n")],
        "d/dx: mismatched elements",
    ),
    (
        "apply rebound on the rewritten class",
        "registry_values.py",
        [
            (
                'SURROGATES = {"spike": Spike}\n',
                'Spike.apply = staticmethod(torch.sigmoid)\nSURROGATES = {"spike": Spike}\n',
            )
        ],
        "forward: mismatched elements",
    ),
    (
        "a per-row parameter's gradient reduced over the other dimension",
        "reduce_row_param.py",
        [
            (
                "grad_thr = _fgi_seed(thr_in, out)",
                "grad_thr = _fgi_seed(thr_in.reshape(1, -1), out)",
            )
        ],
        "square d/dthr: mismatched elements",
    ),
    (
        "a number input no longer detached",
        "none_gradient_tensor_input.py",
        [("    thr = thr.detach() if isinstance(thr, torch.Tensor) else thr\n", "")],
        "thr as a tensor d/dthr: the original leaves `.grad` None, the rewrite sets it",
    ),
    (
        "the rewritten module no longer imports",
        "keyword_call.py",
        [
            (
                "def _fgi_seed(x, out):\n",
                "def _fgi_seed(x: Tensor, out):\n",
            )
        ],
        "evaluating the rewritten module for Spike failed: NameError: name 'Tensor' is not "
        "defined (line",
    ),
    (
        "a forward that draws once more",
        "random_forward_bernoulli.py",
        [
            (
                "        out = torch.bernoulli(p)\n",
                "        torch.rand(1)\n        out = torch.bernoulli(p)\n",
            )
        ],
        "forward: mismatched elements",
    ),
    # Issue 22's families: a mutant of the construction each.
    (
        "a module-level tensor read without its copy (leak)",
        "leak_config_attribute.py",
        [("CFG.thresh.detach().clone() if", "CFG.thresh if")],
        "with no input requiring grad, the rewrite's output requires grad",
    ),
    (
        "an element of a module-level parameter read without its copy (leak)",
        "leak_global_parameter_element.py",
        [("value = W[1].detach().clone() if", "value = W[1] if")],
        "with no input requiring grad, the rewrite's output requires grad",
    ),
    (
        "custom_fwd's cast dropped (mixed precision)",
        "amp_cast_inputs.py",
        [(".to(torch.float32) if x.is_floating_point()", " if x.is_floating_point()")],
        "autocast bfloat16: output dtype torch.bfloat16 != original torch.float32",
    ),
]


@pytest.mark.parametrize(("what", "case", "edit", "message"), MUTANTS, ids=[m[0] for m in MUTANTS])
def test_mutant_of_a_written_module_is_rejected(what, case, edit, message):
    path = TRUST / case
    rewrite = rewrite_source(path.read_bytes(), str(path))
    [report] = verify_rewrite(rewrite, path)
    assert report.ok, report.failures()  # the unmutated module verifies
    text = rewrite.new_source.decode()
    for old, new in edit:
        assert old in text, f"{what}: the mutation does not apply"
        text = text.replace(old, new, 1)
    mutant = replace(rewrite, new_source=text.encode())
    [report] = verify_rewrite(mutant, path)
    assert not report.ok, what
    assert any(message in failure for failure in report.failures()), report.failures()


# Mutants of the static checks: with the check gone, the class is rewritten, and the written
# module is wrong in a way verification sees (or, for what it cannot see, the check is the
# only guard: a forward that keeps its output, a decorator that logs).
CHECKS = [
    (
        "decorators",
        "fgirewrite.extract.check_decorators",
        lambda methods, imports: None,
        "decorator_scales_backward.py",
        "d/dx: mismatched elements",
    ),
    (
        "forwards reading autograd state",
        "fgirewrite.extract.check_forward",
        lambda *args: None,
        "forward_branches_on_requires_grad.py",
        "forward: mismatched elements",
    ),
    (
        "needs_input_grad as a value",
        "fgirewrite.extract._needs_input_grad_only_guards",
        lambda *args: None,
        "needs_input_grad_as_a_scale.py",
        "only x requiring grad d/dx: mismatched elements",
    ),
]


@pytest.mark.parametrize(
    ("what", "target", "stub", "case", "message"), CHECKS, ids=[c[0] for c in CHECKS]
)
def test_without_its_static_check_a_family_is_caught_by_verification(
    what, target, stub, case, message, monkeypatch
):
    path = TRUST / case
    assert not rewrite_source(path.read_bytes(), str(path)).surrogates  # refused statically
    monkeypatch.setattr(target, stub)
    rewrite = rewrite_source(path.read_bytes(), str(path))
    [report] = verify_rewrite(rewrite, path)
    assert not report.ok, what
    assert any(message in failure for failure in report.failures()), report.failures()
