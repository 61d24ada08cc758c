"""A grammar of surrogate-gradient ``torch.autograd.Function`` classes, for property tests.

``surrogates()`` draws classes fgirewrite must rewrite: a random derivative over torch ops in
a random style (old or new, one expression or statements, ctx attributes, in-place ops, masks,
a learnable second input, helper functions, precomputed or output-dependent derivatives, odd
names that collide with what the rewrite generates). ``broken()`` draws the same classes with
one fault that fgirewrite must refuse, and the reason code it must give.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from hypothesis import strategies as st

# Bounded derivatives of a step, in ``{u}`` (the scaled, shifted input) and ``{t}`` (torch).
SHAPES = {
    "sigmoid": "{t}.sigmoid({u}) * (1 - {t}.sigmoid({u}))",
    "atan": "1 / (1 + (math.pi * {u}) ** 2)",
    "gaussian": "{t}.exp(-0.5 * {u} ** 2)",
    "fast_sigmoid": "1 / (1 + {u}.abs()) ** 2",
    "rectangle": "({u}.abs() < 0.5).float()",
    "triangle": "{t}.clamp(1 - {u}.abs(), min=0)",
    "tanh": "1 - {t}.tanh({u}) ** 2",
    "straight_through": "{t}.ones_like({x})",
    "erfc": "{t}.special.erfc({u}.abs()) + 0.1",
}

# The same derivatives as statements with in-place ops on fresh tensors; they bind ``sg``.
INPLACE_SHAPES = {
    "sigmoid": ["sg = {t}.sigmoid({u})", "sg.mul_(1 - sg)"],
    "fast_sigmoid": ["sg = {u}.abs()", "sg.add_(1).pow_(2)", "sg = 1 / sg"],
    "gaussian": ["sg = ({u}).pow(2)", "sg.mul_(-0.5).exp_()"],
    "tanh": ["sg = {t}.tanh({u})", "sg = 1 - sg.pow_(2)"],
}

FORWARDS = [
    "({x} > {thr}).float()",
    "({x} >= {thr}).to({x}.dtype)",
    "{x}.gt({thr}).type_as({x})",
    "({x} - {thr}).sign()",
    "{t}.round({x} - {thr})",
]

BOUNDED = FORWARDS[:4]  # outputs in [-1, 1]

INPUT_NAMES = ["x", "input_", "v", "mem", "out", "grad", "sg", "mask", "inputs", "apply", "ξ"]
GRAD_NAMES = ["grad_output", "grad", "dy", "g", "grad_out", "out", "grad_x"]
PARAM_NAMES = ["alpha", "k", "slope", "scale", "sg", "α"]
BASES = {
    "torch.autograd.Function": "",
    "Function": "from torch.autograd import Function\n",
    "ag.Function": "import torch.autograd as ag\n",
    "autograd.Function": "from torch import autograd\n",
    "AF": "from torch.autograd import Function as AF\n",
}


@dataclass(frozen=True)
class Case:
    """A generated module: its source, and what fgirewrite must do with its class."""

    source: str
    expect: str  # "rewrite", or the reason code of the Skip
    summary: str  # the choices made, for failure messages
    inputs: tuple[str, ...] = ("full",)  # tensor arguments of ``spike``: full or per column
    companion: bool = False  # a ``Noisy`` Function that must be skipped, byte for byte

    def __str__(self) -> str:
        return f"{self.summary}\n{self.source}"


def _indent(lines: list[str], depth: int) -> str:
    return "".join(" " * (4 * depth) + line + "\n" for line in lines)


@st.composite
def _choices(draw) -> dict:
    """Every independent choice of one class."""
    c: dict = {}
    c["t"] = draw(st.sampled_from(["torch", "th"]))
    c["base"] = draw(st.sampled_from(sorted(BASES)))
    c["style"] = draw(st.sampled_from(["old", "new"]))
    c["x"] = draw(st.sampled_from(INPUT_NAMES))
    c["grad"] = draw(st.sampled_from([n for n in GRAD_NAMES if n != c["x"]]))
    c["ctx"] = draw(st.sampled_from(["ctx", "self"]))
    c["learnable"] = draw(st.booleans())
    c["reduce_thr"] = c["learnable"] and draw(st.booleans())
    # what the backward does to the threshold's summed gradient: reshape, negate or scale it
    c["after_sum"] = draw(st.sampled_from(["", "view", "neg", "scale", "keepdim"]))
    c["no_grad_forward"] = draw(st.booleans())  # the forward's body under torch.no_grad()
    c["alpha"] = draw(st.sampled_from(["none", "literal", "ctx", "module", "call_site"]))
    c["p"] = draw(st.sampled_from([n for n in PARAM_NAMES if n != c["x"]]))
    c["shape"] = draw(st.sampled_from(sorted(SHAPES)))
    c["second"] = draw(st.sampled_from([None, *sorted(SHAPES)]))
    c["combine"] = draw(st.sampled_from(["+", "*"]))
    c["scale"] = draw(st.sampled_from([None, "0.5", "3"]))
    c["derivative"] = draw(
        st.sampled_from(["inline", "temporary", "inplace", "helper", "precomputed"])
    )
    c["grad_style"] = draw(
        st.sampled_from(
            ["mul", "rmul", "method", "torch_mul", "clone", "clone_inplace", "guard", "div", "neg"]
        )
    )
    c["mask"] = draw(st.sampled_from([None, "index", "masked_fill", "where", "index_scale"]))
    c["save"] = draw(st.sampled_from(["tuple", "comma", "index", "attr"]))
    c["forward"] = draw(st.sampled_from(range(len(FORWARDS))))
    # The output is a factor of the derivative only where it is bounded (not ``round``):
    # every derivative stays bounded, so no product overflows on the edge probes.
    c["uses_out"] = FORWARDS[c["forward"]] in BOUNDED and draw(st.booleans())
    c["forward_temp"] = draw(st.booleans())
    c["once_differentiable"] = draw(st.booleans())
    c["grad_helper"] = draw(st.booleans())
    c["save_first"] = draw(st.booleans())
    c["scope"] = draw(st.sampled_from(["module", "class", "factory"]))
    c["companion"] = draw(st.booleans())
    return c


def _derivative(c: dict, x: str, p: str | None) -> str:
    """The surrogate derivative as one expression in the backward's names."""
    t = c["t"]
    if c["learnable"]:
        u = f"({x} - thr)"
    elif p is not None:
        u = f"({p} * {x})"
    else:
        u = x
    parts = [SHAPES[c["shape"]].format(t=t, u=u, x=x)]
    if c["second"] is not None:
        parts.append(SHAPES[c["second"]].format(t=t, u=u, x=x))
    expression = f"({parts[0]})"
    if len(parts) == 2:
        expression = f"({parts[0]}) {c['combine']} ({parts[1]})"
    if c["scale"] is not None:
        expression = f"{c['scale']} * ({expression})"
    return f"({expression})"


def render(c: dict, fault: str | None = None) -> str:
    """The module source for one set of choices, with an optional fault in the backward."""
    t, x, g, ctx, p = c["t"], c["x"], c["grad"], c["ctx"], c["p"]
    old = c["style"] == "old"
    has_param = c["alpha"] in ("ctx", "call_site")
    learnable = c["learnable"]
    head = ["import math", "import torch" if t == "torch" else "import torch as th"]
    head_text = "\n".join(head) + "\n" + BASES[c["base"]]
    base = c["base"].replace("torch.", f"{t}.")
    if c["once_differentiable"]:
        head_text += "from torch.autograd.function import once_differentiable\n"
    module: list[str] = []
    if c["alpha"] == "module":
        module.append("ALPHA = 2.0\n")

    # The value of the derivative's parameter as the backward sees it.
    if c["alpha"] == "literal":
        p_value: str | None = "2.0"
    elif c["alpha"] == "module":
        p_value = "ALPHA"
    elif has_param:
        p_value = p
    else:
        p_value = None

    inputs = [x] + (["thr"] if learnable else []) + ([p] if has_param else [])
    # A missing gradient is a fault only for an input without a default (autograd accepts
    # fewer gradients while callers leave defaulted inputs out).
    default = "" if fault == "missing_gradient" else "=2.0"
    params = [x] + (["thr"] if learnable else []) + ([f"{p}{default}"] if has_param else [])
    thr = "thr" if learnable else "0"
    value = FORWARDS[c["forward"]].format(x=x, thr=thr, t=t)

    helper_needed = c["derivative"] == "helper"
    if helper_needed:
        # A module-level helper computing the derivative from the saved input.
        hp = ["x_", "thr"] if learnable else ["x_"]
        hp += ["a"] if p_value is not None else []
        inner = dict(c, learnable=learnable)
        body = _derivative(inner, "x_", "a" if p_value is not None else None)
        module.append(f"def surrogate_grad({', '.join(hp)}):\n    return {body}\n")
    if c["grad_helper"]:
        module.append("def apply_grad(go, d):\n    return go * d\n")

    # ---- forward (and setup_context)
    fwd: list[str] = []
    precomputed = c["derivative"] == "precomputed"
    saved = [x] + (["thr"] if learnable else [])
    if c["uses_out"]:
        saved.append("spikes")
    if precomputed:
        saved = ["sg_saved", *saved]
    forward_value = value
    if c["forward_temp"] or c["uses_out"] or precomputed:
        fwd.append(f"spikes = {value}")
        forward_value = "spikes"
    derivative_p = p_value
    if precomputed:
        fwd.append(f"sg_saved = {_derivative(c, x, derivative_p)}")
    save_stmt = []
    if c["save"] == "attr" and not learnable and not precomputed and not c["uses_out"]:
        save_stmt.append(f"{ctx}.saved_x = {x}")
    else:
        save_stmt.append(f"{ctx}.save_for_backward({', '.join(saved)})")
    if c["alpha"] in ("ctx", "call_site"):
        save_stmt.append(f"{ctx}.{p} = {p}")
    if old:
        first = c["save_first"] and not precomputed and not c["uses_out"]
        fwd = save_stmt + fwd if first else fwd + save_stmt
        forward_lines = fwd + [f"return {forward_value}"]
        if c["no_grad_forward"]:
            forward_lines = [f"with {t}.no_grad():", *("    " + line for line in forward_lines)]
        forward = f"    @staticmethod\n    def forward({ctx}, {', '.join(params)}):\n" + _indent(
            forward_lines, 2
        )
    else:
        # setup_context only sees inputs and output: the derivative and the spikes come from
        # those there.
        forward_value = value
        forward_lines = [f"return {value}"]
        forward = f"    @staticmethod\n    def forward({', '.join(params)}):\n" + _indent(
            forward_lines, 2
        )
        setup = [f"{', '.join(inputs)}{',' if len(inputs) == 1 else ''} = inputs"]
        if c["uses_out"] or precomputed:
            setup.append("spikes = output")
        if precomputed:
            setup.append(f"sg_saved = {_derivative(c, x, derivative_p)}")
        setup += save_stmt
        forward += (
            f"\n    @staticmethod\n    def setup_context({ctx}, inputs, output):\n"
            + _indent(setup, 2)
        )

    # ---- backward
    back: list[str] = []
    if c["save"] == "attr" and not learnable and not precomputed and not c["uses_out"]:
        back.append(f"{x} = {ctx}.saved_x")
    elif c["save"] == "index":
        for i, name in enumerate(saved):
            back.append(f"{name} = {ctx}.saved_tensors[{i}]")
    elif c["save"] == "comma":
        back.append(f"{', '.join(saved)}, = {ctx}.saved_tensors")
    else:
        back.append(f"({', '.join(saved)},) = {ctx}.saved_tensors")
    if has_param:
        back.append(f"{p} = {ctx}.{p}")
    if fault == "inplace_input":
        back.append(f"{saved[0]}.mul_(2.0)")

    # The derivative, as an expression ``d`` (possibly a name bound by statements).
    if precomputed:
        d = "sg_saved"
    elif c["derivative"] == "helper":
        args = [x] + (["thr"] if learnable else []) + ([p_value] if p_value is not None else [])
        d = f"surrogate_grad({', '.join(args)})"
    elif c["derivative"] == "temporary":
        back.append(f"sg = {_derivative(c, x, derivative_p)}")
        d = "sg"
    elif c["derivative"] == "inplace" and c["shape"] in INPLACE_SHAPES and not c["second"]:
        u = f"({x} - thr)" if learnable else (f"({p_value} * {x})" if p_value else x)
        back += [line.format(t=t, u=u) for line in INPLACE_SHAPES[c["shape"]]]
        d = "sg" if c["scale"] is None else f"{c['scale']} * sg"
    else:
        d = _derivative(c, x, derivative_p)
    if c["uses_out"]:
        d = f"({d}) * (1.5 - spikes)"

    if fault == "inplace_view":  # held.mul_ also changes the view taken before it
        back += [f"held = {x}.abs() + 1", "view = held[...]", "held.mul_(2)"]
        d = f"({d}) * view"
    if fault == "random":
        d = f"({d}) * {t}.rand_like({x})"
    if fault == "random_method":
        back.append(f"noise = {x}.new_empty({x}.shape).uniform_()")
        d = f"({d}) * noise"

    gv = g
    if fault == "nonlinear_power":
        gv = f"({g} ** 2)"
    elif fault == "nonlinear_abs":
        gv = f"{g}.abs()"
    elif fault == "nonlinear_square":
        gv = f"({g} * {g})"
    elif fault == "nonlinear_shift":
        gv = f"({g} + 1.0)"
    elif fault == "nonlinear_tanh":
        gv = f"{t}.tanh({g})"

    style = c["grad_style"]
    if c["grad_helper"]:
        back.append(f"grad_in = apply_grad({gv}, {d})")
    elif style == "mul":
        back.append(f"grad_in = {gv} * {d}")
    elif style == "rmul":
        back.append(f"grad_in = {d} * {gv}")
    elif style == "method":
        back.append(f"grad_in = {gv}.mul({d})")
    elif style == "torch_mul":
        back.append(f"grad_in = {t}.mul({gv}, {d})")
    elif style == "clone":
        back.append(f"grad_in = {gv}.clone()")
        back.append(f"grad_in = grad_in * {d}")
    elif style == "clone_inplace":
        back.append(f"grad_in = {gv}.clone()")
        back.append(f"grad_in.mul_({d})")
    elif style == "div":
        back.append(f"grad_in = {gv} / (1 / {d})")
    elif style == "neg":
        back.append(f"grad_in = -(-{gv}).mul({d})")
    else:  # guard
        back.append("grad_in = None")
        back.append(f"if {ctx}.needs_input_grad[0]:")
        back.append(f"    grad_in = {gv} * {d}")
    if fault == "inplace_grad":
        back.append(f"{g}.mul_(2.0)")
        back.append(f"grad_in = grad_in + {g}")

    mask_of = f"({x} - thr).abs() > 2" if learnable else f"{x}.abs() > 2"
    if c["mask"] == "index":
        back.append(f"grad_in[{mask_of}] = 0")
    elif c["mask"] == "index_scale":
        back.append(f"grad_in[{mask_of}] *= 0.5")
    elif c["mask"] == "masked_fill":
        back.append(f"grad_in = grad_in.masked_fill({mask_of}, 0)")
    elif c["mask"] == "where":
        back.append(f"grad_in = {t}.where({mask_of}, 0.0, grad_in)")

    if fault == "loop":
        back.append("for _ in range(2):")
        back.append("    grad_in = grad_in * 0.5")
    if fault == "while_loop":
        back.append("i = 0")
        back.append("while i < 2:")
        back.append("    grad_in = grad_in * 0.5")
        back.append("    i += 1")
    if fault == "branch":
        back.append(f"if {g}.sum() > 0:")
        back.append("    grad_in = grad_in * 2")
    if fault == "write_ctx":
        back.append(f"{ctx}.used = True")

    results = ["grad_in"]
    if learnable:
        summed = {
            "": "(-grad_in).sum(0)",
            "view": "(-grad_in).sum(0).view(-1)",
            "neg": "-grad_in.sum(0)",
            "scale": "-1.0 * grad_in.sum(0)",
            "keepdim": "(-grad_in).sum(0, keepdim=True).reshape(-1)",
        }[c["after_sum"]]
        results.append(summed if c["reduce_thr"] else "-grad_in")
    if has_param:
        results.append("None")
    if fault == "extra_gradient":  # autograd allows extra Nones, not an extra gradient
        results.append("grad_in")
    if fault == "missing_gradient":
        results = results[:-1] if len(results) > 1 else []
    if fault == "none_only":
        results = ["None"] * len(results)
    back.append(f"return {', '.join(results)}" if results else "return ()")

    decorators = ["    @staticmethod"]
    if c["once_differentiable"]:
        decorators.append("    @once_differentiable")
    backward = "\n".join(decorators) + f"\n    def backward({ctx}, {g}):\n" + _indent(back, 2)
    if fault == "multiple_outputs":
        forward = forward.replace(
            f"return {forward_value}\n", f"return {forward_value}, {forward_value}\n"
        )

    classdef = f"class Spike({base}):\n" + '    """A generated surrogate."""\n\n'
    classdef += forward + "\n" + backward
    if c["scope"] == "class":
        classdef = "class Neuron:\n    threshold = 1.0\n\n" + textwrap.indent(classdef, "    ")
        ref = "Neuron.Spike"
    elif c["scope"] == "factory":
        classdef = f"def make_spike():\n{textwrap.indent(classdef, '    ')}\n    return Spike\n"
        ref = "make_spike()"
    else:
        ref = "Spike"
    call_site = ""
    if c["alpha"] == "call_site":
        args = [x] + (["thr"] if learnable else []) + ["3.0"]
        call_site = (
            f"\n\ndef spike_fn({', '.join(inputs)}):\n    return {ref}.apply({', '.join(args)})\n"
        )
    parts = [head_text, *module, classdef, f"spike = {ref}.apply\n"]
    if c["companion"]:
        parts.append(COMPANION.format(t=t, base=base))
    parts.append(call_site.lstrip("\n") + UNTOUCHED if call_site else UNTOUCHED)
    return "\n\n".join(part.rstrip("\n") + "\n" for part in parts)


# Next to the generated class: a Function that must stay byte for byte (its backward draws
# random numbers), and code outside any Function.
COMPANION = """class Noisy({base}):  # left as it is
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * {t}.rand_like(x)
"""
UNTOUCHED = "def untouched(a):  # stays byte for byte\n    return a   +   1\n"


def _summary(c: dict, fault: str | None) -> str:
    keys = (
        *("style", "scope", "shape", "second", "derivative", "grad_style", "mask"),
        *("learnable", "alpha", "after_sum", "no_grad_forward"),
    )
    text = ", ".join(f"{k}={c[k]}" for k in keys)
    return text + (f", fault={fault}" if fault else "")


@st.composite
def surrogates(draw) -> Case:
    """A class fgirewrite must rewrite, and verify equivalent."""
    c = draw(_choices())
    inputs = ("full",) + (("row" if c["reduce_thr"] else "full",) if c["learnable"] else ())
    return Case(render(c), "rewrite", _summary(c, None), inputs, c["companion"])


# Each fault, the reason code fgirewrite must give for it.
FAULTS = {
    "random": "backward-random",
    "random_method": "backward-random",
    "loop": "backward-loop",
    "while_loop": "backward-loop",
    "nonlinear_power": "backward-not-linear",
    "nonlinear_abs": "backward-not-linear",
    "nonlinear_square": "backward-not-linear",
    "nonlinear_shift": "backward-not-linear",
    "nonlinear_tanh": "backward-not-linear",
    "branch": "backward-not-linear",
    "inplace_input": "in-place-alias",
    "inplace_grad": "in-place-alias",
    "inplace_view": "in-place-alias",
    "write_ctx": "unsupported-ctx",
    "extra_gradient": "gradient-count",
    "missing_gradient": "gradient-count",
    "none_only": "no-gradient",
    "multiple_outputs": "multiple-outputs",
}


@st.composite
def broken(draw) -> Case:
    """A class with one fault fgirewrite must refuse, with the reason code it must give."""
    c = draw(_choices())
    fault = draw(st.sampled_from(sorted(FAULTS)))
    return Case(render(c, fault), FAULTS[fault], _summary(c, fault), (), c["companion"])
