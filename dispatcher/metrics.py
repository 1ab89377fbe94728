"""Every Prometheus metric scaleout exports, declared once.

Names carry the ``scaleout_`` prefix, ``_total`` on counters and units in the name. Labels
take bounded values only (status, outcome, reason, queue, worker): never a task or
execution id. Figures that live in the catalog (executions by status, workers online) are
read at scrape time by :class:`dispatcher.catalog.collector.CatalogCollector`, so they are
never stale or double-counted across master restarts.
"""

from __future__ import annotations

import contextlib
import logging
import time
from threading import Lock

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.registry import REGISTRY, Collector

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

# --- master -----------------------------------------------------------------------------
TASKS_DISPATCHED = Counter("scaleout_tasks_dispatched_total", "Attempts published to workers")
REPUBLISHED = Counter(
    "scaleout_tasks_republished_total", "Attempts published again (unconfirmed outbox rows)"
)
LEASES_EXPIRED = Counter(
    "scaleout_leases_expired_total", "Leases that lapsed, by what became of the task", ["outcome"]
)
ATTEMPTS_REQUEUED = Counter(
    "scaleout_attempts_requeued_total", "Tasks returned to pending for a new attempt", ["reason"]
)
REPORTS = Counter(
    "scaleout_status_reports_total",
    "Worker status reports by type and outcome (applied, duplicate, stale, forged_sender, ...)",
    ["type", "outcome"],
)
HEARTBEATS = Counter(
    "scaleout_agent_heartbeats_total", "Worker heartbeats received, by outcome", ["outcome"]
)
CANCELS_SENT = Counter("scaleout_cancels_sent_total", "Cancels published to workers", ["reason"])
DEAD_LETTERS = Counter(
    "scaleout_dead_letters_total",
    "Messages dead-lettered, by queue and reason",
    ["queue", "reason"],
)
RECONCILE_SECONDS = Histogram(
    "scaleout_reconcile_batch_seconds",
    "Time to apply one batch of status reports (one commit)",
    buckets=_LATENCY_BUCKETS,
)
RECONCILE_SIZE = Histogram(
    "scaleout_reconcile_batch_size", "Status reports per commit", buckets=_BATCH_BUCKETS
)
DISPATCH_LATENCY = Histogram(
    "scaleout_dispatch_latency_seconds",
    "From start_execution to the worker's started report recorded",
    buckets=_LATENCY_BUCKETS,
)
PUBLISH_CONFIRM_SECONDS = Histogram(
    "scaleout_publish_confirm_seconds",
    "Time from publish to broker confirm, per batch",
    buckets=_LATENCY_BUCKETS,
)
BROKER_RECONNECTS = Counter(
    "scaleout_broker_reconnects_total", "Broker reconnections, by connection", ["connection"]
)
CATALOG_ERRORS = Counter(
    "scaleout_catalog_errors_total", "Catalog operations that failed, by loop", ["loop"]
)
MASTER_HEARTBEAT_AGE = Gauge(
    "scaleout_master_heartbeat_age_seconds",
    "Seconds since this master last wrote LAST_ONLINE_TIME",
    registry=None,  # registered by HeartbeatClock: only a master exports it (absent() alerts)
)

# --- worker -----------------------------------------------------------------------------
WORKER_TASKS_RUNNING = Gauge("scaleout_worker_tasks_running", "Packages running on this worker")
WORKER_TASKS_FINISHED = Counter(
    "scaleout_worker_tasks_finished_total", "Packages finished, by outcome", ["outcome"]
)
WORKER_PACKAGE_SECONDS = Histogram(
    "scaleout_worker_package_duration_seconds",
    "Package run time",
    buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400),
)
WORKER_HEARTBEAT_GAP = Histogram(
    "scaleout_worker_heartbeat_gap_seconds",
    "Time between two heartbeats sent by this worker",
    buckets=(0.5, 1, 2, 5, 10, 15, 20, 30, 60, 90, 120, 300),
)
WORKER_DISK_REMOVED = Counter(
    "scaleout_worker_disk_removed_total",
    "Entries removed to bound the worker's disk, by what (task_folder: an attempt's folder "
    "and log; log_cache: a cached report; project_cache: a project version)",
    ["what"],
)
WORKER_DISK_REMOVED_BYTES = Counter(
    "scaleout_worker_disk_removed_bytes_total",
    "Bytes freed by those removals, by what (task_folder, log_cache, project_cache)",
    ["what"],
)
WORKER_DISK_REMOVE_FAILED = Counter(
    "scaleout_worker_disk_remove_failures_total",
    "Paths the retention sweep could not remove or read, by what",
    ["what"],
)
WORKER_FREE_DISK_BYTES = Gauge(
    "scaleout_worker_free_disk_bytes", "Free space of the filesystem holding TasksRootFolder"
)
WORKER_CACHED_REPORTS = Gauge(
    "scaleout_worker_cached_reports", "Reports held on disk until the broker takes them"
)
WORKER_ATTEMPTS_STOPPED = Counter(
    "scaleout_worker_attempts_stopped_total",
    "Packages this worker stopped before they ended, by reason (canceled, lease_lost, "
    "heartbeat_tolerance, shutdown)",
    ["reason"],
)
WORKER_PROGRESS_SENT = Counter(
    "scaleout_worker_progress_sent_total", "task.progress reports submitted to the broker"
)
WORKER_PROGRESS_DROPPED = Counter(
    "scaleout_worker_progress_dropped_total",
    "Progress values not sent, by reason (invalid, out_of_range, superseded, unsent)",
    ["reason"],
)


class HeartbeatClock:
    """Tracks when this master last wrote its heartbeat, for the age gauge."""

    def __init__(self) -> None:
        self._lock = Lock()
        self._last: float | None = None
        MASTER_HEARTBEAT_AGE.set_function(self.age)
        with contextlib.suppress(ValueError):  # already registered by an earlier master
            REGISTRY.register(MASTER_HEARTBEAT_AGE)

    def beat(self) -> None:
        with self._lock:
            self._last = time.monotonic()

    def age(self) -> float:
        with self._lock:
            return float("inf") if self._last is None else time.monotonic() - self._last


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics; ``port`` 0 turns the endpoint off."""
    if port:
        start_http_server(port, addr=host)
        logger.info("metrics.listening", extra={"host": host, "port": port})


def register(collector: Collector) -> None:
    REGISTRY.register(collector)


def unregister(collector: Collector) -> None:
    REGISTRY.unregister(collector)
