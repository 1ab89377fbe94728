"""Benchmarks of scaleout against Celery, Dramatiq and a raw pika round trip, measured
side by side in the same run (``make bench``; ``python -m bench.run --quick``)."""

from __future__ import annotations
