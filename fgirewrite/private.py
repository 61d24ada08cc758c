"""Old path of ``fgirewrite.grads.private``, kept for code that imports it from here."""

from fgirewrite.grads.private import OpacusModel, PrivateTrainingError, for_opacus

__all__ = ["for_opacus", "OpacusModel", "PrivateTrainingError"]
