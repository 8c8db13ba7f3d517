"""Benchmarks: run each as `.venv/bin/python -m bench.NAME` from the repository root.

See bench/README.md for what each measures and the figures it gave.
"""
