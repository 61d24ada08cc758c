"""Old path of ``fgirewrite.grads.checks``, kept for code that imports it from here."""

from fgirewrite.grads.checks import (
    GradientCheck,
    backprop_gradient,
    check_forward_gradient,
    check_gradients,
    check_per_sample_grads,
    per_sample_loop,
    verify_gradients,
)

__all__ = [
    "check_gradients",
    "verify_gradients",
    "check_per_sample_grads",
    "check_forward_gradient",
    "backprop_gradient",
    "per_sample_loop",
    "GradientCheck",
]
