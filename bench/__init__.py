"""Benchmarks for the notification service: `python bench/run.py` (see docs/benchmarks.md)."""
