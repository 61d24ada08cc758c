"""Runnable examples: ``python -m examples.NAME`` from the repository root.

A regular package, so that a top-level ``examples`` package installed by another
distribution (Opacus ships one) cannot shadow it.
"""
