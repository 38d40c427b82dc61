"""The perf harness (``python -m bench``) and the older single-purpose benchmarks."""
