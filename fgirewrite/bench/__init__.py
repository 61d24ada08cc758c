"""``fgirewrite bench``: time a model as written and as rewritten, side by side.

The flow follows the module names: ``config`` says what to run, ``models`` builds and wraps
the two variants, ``timing`` and ``memory`` measure them, ``runner`` runs every length, mode
and variant (a failure becomes a result, never an exception), ``compile_cache`` times cold and
warm compiles in fresh processes, ``expected`` tells known limitations of a custom
``autograd.Function`` from unexpected failures, and ``report``, ``plot`` and ``schema`` write
what was found. ``command`` checks every option and the model file before anything runs.

Importing this package does not import torch; ``runner.run`` does.
"""
