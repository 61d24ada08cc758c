"""fgirewrite: rewrite surrogate-gradient autograd.Functions into inline forward gradient
injection (FGI), and prove each rewrite gradient-equivalent.

The flow is visible in the module names: ``discover`` finds Function subclasses, ``extract``
turns each into one ``surrogate.Surrogate`` description, ``codegen`` turns that into FGI code,
``rewrite`` edits source files with it, and ``verify`` proves the result equivalent.
"""

__version__ = "0.1.0"
