"""The catalog's Prometheus collector: figures that live in the catalog (executions by
status, the oldest pending execution, workers online and their heartbeat ages), read at
scrape time so they are never stale or double-counted across master restarts.

It lives in the catalog package, not in :mod:`dispatcher.metrics`, because the worker
imports the metrics module and must never import the catalog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dispatcher.catalog.records import CatalogCounts, WorkerAgentRow
from dispatcher.metrics import CATALOG_ERRORS
from schemas.states import ExecutionStatus

logger = logging.getLogger(__name__)


class CatalogCollector(Collector):
    """Reads catalog-held figures at scrape time."""

    def __init__(
        self,
        counts: Callable[[], CatalogCounts],
        workers: Callable[[], list[WorkerAgentRow]],
    ) -> None:
        self._counts = counts
        self._workers = workers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self._counts()
            workers = self._workers()
        except Exception:  # a scrape must not fail the process; the error is the signal
            logger.warning("metrics.catalog_unavailable", exc_info=True)
            CATALOG_ERRORS.labels(loop="metrics").inc()
            return
        yield from _execution_families(counts)
        yield from _worker_families(counts, workers)


def _execution_families(counts: CatalogCounts) -> Iterator[GaugeMetricFamily]:
    by_status = GaugeMetricFamily(
        "scaleout_executions", "Executions in the catalog, by status", labels=["status"]
    )
    for status in ExecutionStatus:
        by_status.add_metric([status.key], counts.executions_by_status.get(status, 0))
    yield by_status
    yield GaugeMetricFamily(
        "scaleout_oldest_pending_execution_seconds",
        "Age of the oldest execution waiting for a worker (0 when none)",
        value=counts.oldest_pending_age_s,
    )


def _worker_families(
    counts: CatalogCounts, workers: list[WorkerAgentRow]
) -> Iterator[GaugeMetricFamily]:
    yield GaugeMetricFamily(
        "scaleout_workers_online", "Workers with a recent heartbeat", value=counts.workers_online
    )
    yield GaugeMetricFamily(
        "scaleout_workers_enabled", "Workers enabled for dispatch", value=counts.workers_enabled
    )
    # Not scaleout_worker_*: that prefix is a worker process's own metrics, and this is the
    # master's view of every worker, from the catalog (workers without a metrics port too).
    age = GaugeMetricFamily(
        "scaleout_agent_heartbeat_age_seconds",
        "Seconds since each worker's last heartbeat recorded in the catalog",
        labels=["worker", "enabled"],
    )
    now = time.time()
    for worker in workers:
        if worker.last_online_time is not None:
            seconds = max(0.0, now - worker.last_online_time.timestamp())
            age.add_metric([worker.worker_agent_id, str(worker.is_enabled).lower()], seconds)
    yield age
