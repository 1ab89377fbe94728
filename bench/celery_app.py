"""The Celery peer: one no-op task (``noop``); a ``task_postrun`` hook sends a UDP datagram
to the bench, which counts completions (without a backend Celery records nothing we could
read; with one, postrun comes after the result is stored).

Configured from the environment by ``bench.peers``: ``BENCH_BROKER_URL``, ``BENCH_QUEUE``,
``BENCH_UDP_PORT`` and, for the like-for-like peer, ``BENCH_RESULT_BACKEND`` (a ``db+``
SQLAlchemy URL on the catalog's database) with ``task_track_started``.
"""

from __future__ import annotations

import os
import socket

from celery import Celery, signals

_BACKEND = os.environ.get("BENCH_RESULT_BACKEND") or None
_QUEUE = os.environ.get("BENCH_QUEUE", "bench")
_TARGET = ("127.0.0.1", int(os.environ.get("BENCH_UDP_PORT", "9")))
_SOCKET = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

app = Celery("bench", broker=os.environ.get("BENCH_BROKER_URL", "amqp://"), backend=_BACKEND)
app.conf.update(
    task_acks_late=True,
    task_default_queue=_QUEUE,
    task_ignore_result=_BACKEND is None,
    task_track_started=_BACKEND is not None,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_extended=False,
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]  # celery is untyped
def noop() -> None:
    """Nothing: the task is the measure."""


@signals.task_postrun.connect  # type: ignore[untyped-decorator]
def _done(**_kwargs: object) -> None:
    # After the result (and its SUCCESS state) is stored, as Celery's tracer orders them.
    _SOCKET.sendto(b"1", _TARGET)
