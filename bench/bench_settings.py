"""Bench-only settings: the project's settings with a URLconf that adds a trivial JSON view (bench/api_load.py)."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bench_urls"
