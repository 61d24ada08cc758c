"""Old path of ``fgirewrite.execute.load``, kept for code that imports it from here."""

from fgirewrite.execute.load import entry, load_pair

__all__ = ["load_pair", "entry"]
