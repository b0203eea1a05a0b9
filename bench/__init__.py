"""Benchmarks (scripts, plus the bench-only Django settings and URLconf that bench/api_load.py serves)."""
