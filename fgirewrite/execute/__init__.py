"""Where user code runs, in one place: nothing else in fgirewrite executes a user's file.

``sandbox`` executes only the slice of a module a surrogate needs (its imports, helpers and
constants); ``load`` imports a whole model file as written and as rewritten, in memory.
"""
