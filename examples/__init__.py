"""Runnable examples: ``python -m examples.NAME`` from the repository root.

A package (not a bare folder), so that another distribution's top-level ``examples`` package
(opacus installs one) cannot shadow it.
"""
