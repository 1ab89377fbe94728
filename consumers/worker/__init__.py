"""The reference Scale Out Worker: consumes its task and control queues, runs packages,
reports status, logs and heartbeats. It talks only to RabbitMQ, never to the catalog.

``run_worker(settings)`` in :mod:`consumers.worker.service` is the entry point."""

from __future__ import annotations
