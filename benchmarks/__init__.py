"""Benchmark scripts (run from the repository root, e.g. ``python -m benchmarks.per_sample``).

A regular package, so that a top-level ``benchmarks`` package installed by another
distribution (opacus ships one) cannot shadow it.
"""
