"""Benchmarks of tagfleet: stage ceilings, end to end, a naive consumer, latency, scaling.

Run from the repository root, e.g. ``python -m benchmarks.run_all``; see docs/benchmarks.md.
"""
