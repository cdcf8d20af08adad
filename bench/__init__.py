"""Benchmarks for routerweb; `python -m bench.gateway` is the one to start with (see docs/benchmarks.md)."""
