"""The procrastinate peer: a PostgreSQL job queue that keeps every transition of a job
(deferred, started, succeeded) durably in the database, as scaleout's catalog does. One
no-op async task (its fastest kind); the bench reads completions from procrastinate's own
``procrastinate_events`` (database clock), so nothing is sent from the task.

``BENCH_PROCRASTINATE_DSN`` (a libpq URL of its own database) and ``BENCH_QUEUE`` come from
``bench.peers``.
"""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

QUEUE = os.environ.get("BENCH_QUEUE", "bench")

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_PROCRASTINATE_DSN", "")))


@app.task(name="bench.noop", queue=QUEUE)
async def noop() -> None:
    """Nothing: the task is the measure."""
