"""Benchmark scripts: ``python -m benchmarks.NAME`` (or ``python benchmarks/NAME.py``) from the
repository root; results in ``benchmarks/results/``.

A package (not a bare folder), so that another distribution's top-level ``benchmarks``
package (opacus installs one) cannot shadow it.
"""
