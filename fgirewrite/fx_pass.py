"""Old path of ``fgirewrite.live.fx``, kept for code that imports it from here."""

from fgirewrite.live.fx import FGIPass, SurrogateTracer, surrogate_calls, trace

__all__ = ["trace", "FGIPass", "SurrogateTracer", "surrogate_calls"]
