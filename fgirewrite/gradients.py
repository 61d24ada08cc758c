"""Old path of ``fgirewrite.grads.transforms``, kept for code that imports it from here."""

from fgirewrite.grads.transforms import (
    TransformBlockedError,
    aggregate,
    directional_derivatives,
    forward_gradient,
    per_sample_grads,
    sample_tangents,
)

__all__ = [
    "per_sample_grads",
    "forward_gradient",
    "aggregate",
    "sample_tangents",
    "directional_derivatives",
    "TransformBlockedError",
]
