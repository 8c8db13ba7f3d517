"""Investigation scripts: each answered one question once (bench/README.md lists them).

Run as `.venv/bin/python -m bench.probes.NAME` from the repository root. They are kept so
a finding can be re-checked, not maintained as benchmarks.
"""
