"""Benchmark harnesses (run with ``python -m benchmarks.<name>``); results are recorded in BENCHMARKS.md."""
