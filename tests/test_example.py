"""The bundled ALIF network: bitwise equivalent after the rewrite, and more capable."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import EXAMPLES

from fgirewrite.execute.load import entry, load_pair


@pytest.fixture(scope="module")
def models():
    original, rewritten, result = load_pair(EXAMPLES / "alif.py")
    assert [s.name for s in result.surrogates] == ["SpikeFunction"]
    m0, (x,) = entry(original, "build")
    m1, _ = entry(rewritten, "build")
    m1.load_state_dict(m0.state_dict())
    return m0, m1, x


def test_outputs_and_all_gradients_bitwise_equal(models):
    m0, m1, x = models
    x = x.clone().requires_grad_()
    y0, y1 = m0(x), m1(x)
    assert torch.equal(y0, y1)
    inputs0 = [*m0.parameters(), x]
    inputs1 = [*m1.parameters(), x]
    g0 = torch.autograd.grad(y0.square().sum(), inputs0)
    g1 = torch.autograd.grad(y1.square().sum(), inputs1)
    for a, b in zip(g0, g1, strict=True):
        assert torch.equal(a, b)


def test_rewritten_scripts_and_saves_the_original_does_not(models):
    m0, m1, x = models
    with pytest.raises(RuntimeError):
        torch.jit.save(torch.jit.script(m0), io.BytesIO())
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(m1), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    assert torch.equal(loaded(x), m1(x))


def test_per_sample_gradients_only_after_rewrite(models):
    m0, m1, x = models
    params = {k: v.detach() for k, v in m1.named_parameters()}

    def loss(model):
        def f(p, sample):
            return torch.func.functional_call(model, p, (sample[:, None],)).sum()

        return f

    with pytest.raises(RuntimeError, match="setup_context"):
        torch.func.vmap(torch.func.grad(loss(m0)), in_dims=(None, 1))(params, x[:, :2])
    per_sample = torch.func.vmap(torch.func.grad(loss(m1)), in_dims=(None, 1))(params, x[:, :2])
    (first,) = torch.autograd.grad(m0(x[:, :1]).sum(), [m0.layer.weight])
    torch.testing.assert_close(per_sample["layer.weight"][0], first)


def test_readme_shows_the_rewrite_of_the_example_as_it_is():
    """README's before/after pair is the example's class, and exactly what the tool writes."""
    from fgirewrite.rewrite import rewrite_source

    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What the rewrite looks like", 1)[1]
    before, after = (block.split("```", 1)[0] for block in section.split("```python\n")[1:3])
    source = (EXAMPLES / "alif.py").read_text(encoding="utf-8")
    assert before in source
    assert after in rewrite_source(source.encode(), "alif.py").new_source.decode()


SCRIPTS = [
    ("alif.py", [], "step 19"),
    ("per_sample_grads.py", [], "per-sample gradients"),
    ("forward_gradient_training.py", ["--help"], "usage:"),
    ("private_training.py", ["--help"], "usage:"),
    ("spiking_project/train.py", [], "epoch 4"),
]


@pytest.mark.parametrize(("script", "args", "printed"), SCRIPTS, ids=[s for s, _, _ in SCRIPTS])
def test_every_example_runs_as_a_script_from_anywhere(script, args, printed, tmp_path):
    """``python examples/private_training.py`` failed with ModuleNotFoundError."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(EXAMPLES.parent))
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert printed in done.stdout


def test_every_example_is_listed():
    found = {
        str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.py") if p.name != "__init__.py"
    }
    runnable = {s for s, _, _ in SCRIPTS}
    libraries = {"spiking_project/neurons.py", "spiking_project/models/snn.py"}
    assert found == runnable | libraries
