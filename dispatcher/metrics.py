"""Every Prometheus metric scaleout exports, declared once.

Names carry the ``scaleout_`` prefix, ``_total`` on counters and units in the name. Labels
take bounded values only (status, outcome, reason, queue, worker, and the catalog's project
and package names): never a task or execution id. Figures that live in the catalog
(executions by status, workers online) are read at scrape time by
:class:`dispatcher.catalog.collector.CatalogCollector`, so they are never stale or
double-counted across master restarts.

Each role has its own registry, and its ``/metrics`` serves only that one: :data:`MASTER`
(and the catalog collector) on the master, :data:`WORKER` on a worker, which adds its
``worker`` label when served (:func:`with_labels`). Every metric names its registry at its
declaration (``registry=MASTER`` or ``registry=WORKER``); the broker client's counter, used
by both roles, is registered in both. Nothing goes to prometheus_client's global registry
(``tests/unit/test_metrics.py`` checks it), so a metric declared without a role is served
by no one. Names under ``scaleout_worker_`` are a worker's own; the master's never start so.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator, Mapping
from threading import Lock

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from schemas.states import TERMINAL_EXECUTION_STATUSES, ExecutionStatus

logger = logging.getLogger(__name__)

MASTER = CollectorRegistry(auto_describe=True)
"""The master's ``/metrics``: its own metrics below, and the catalog collector's gauges."""
WORKER = CollectorRegistry(auto_describe=True)
"""A worker's ``/metrics``: the ``scaleout_worker_*`` metrics and the broker client's."""
for _registry in (MASTER, WORKER):  # what the global registry gave each process: CPU, memory
    ProcessCollector(registry=_registry)
    PlatformCollector(registry=_registry)
    GCCollector(registry=_registry)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
_PACKAGE_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400)

# --- master -----------------------------------------------------------------------------
TASKS_DISPATCHED = Counter(
    "scaleout_tasks_dispatched_total", "Attempts published to workers", registry=MASTER
)
REPUBLISHED = Counter(
    "scaleout_tasks_republished_total",
    "Attempts published again (unconfirmed outbox rows)",
    registry=MASTER,
)
LEASES_EXPIRED = Counter(
    "scaleout_leases_expired_total",
    "Leases that lapsed, by what became of the task",
    ["outcome"],
    registry=MASTER,
)
ATTEMPTS_REQUEUED = Counter(
    "scaleout_attempts_requeued_total",
    "Tasks returned to pending for a new attempt",
    ["reason"],
    registry=MASTER,
)
REPORTS = Counter(
    "scaleout_status_reports_total",
    "Worker status reports by type and outcome (applied, duplicate, stale, not_holder, "
    "unknown_attempt, unknown_task, forged_sender)",
    ["type", "outcome"],
    registry=MASTER,
)
HEARTBEATS = Counter(
    "scaleout_agent_heartbeats_total",
    "Worker heartbeats received, by outcome",
    ["outcome"],
    registry=MASTER,
)
CANCELS_SENT = Counter(
    "scaleout_cancels_sent_total", "Cancels published to workers", ["reason"], registry=MASTER
)
EXPIRY_SWEEPS = Counter(
    "scaleout_expiry_sweeps_total",
    "Lease expiry sweeps, by outcome (swept, or deferred and why)",
    ["outcome"],
    registry=MASTER,
)
READ_MARKERS = Counter(
    "scaleout_read_markers_total",
    "The master's read markers (read, timed_out, not_sent, foreign)",
    ["outcome"],
    registry=MASTER,
)
CANCELS_CAPPED = Counter(
    "scaleout_cancels_capped_total",
    "Cancels a heartbeat asked for beyond the per-heartbeat cap (sent with later heartbeats)",
    registry=MASTER,
)
REFUSALS_SENT = Counter(
    "scaleout_refusals_sent_total",
    "task.refused replies to workers, by outcome (sent, suppressed as a repeat, failed)",
    ["outcome"],
    registry=MASTER,
)
DEAD_LETTERS = Counter(
    "scaleout_dead_letters_total",
    "Messages dead-lettered, by queue and reason",
    ["queue", "reason"],
    registry=MASTER,
)
RECONCILE_SECONDS = Histogram(
    "scaleout_reconcile_batch_seconds",
    "Time to apply one batch of status reports (one commit)",
    buckets=_LATENCY_BUCKETS,
    registry=MASTER,
)
RECONCILE_SIZE = Histogram(
    "scaleout_reconcile_batch_size",
    "Status reports per commit",
    buckets=_BATCH_BUCKETS,
    registry=MASTER,
)
DISPATCH_LATENCY = Histogram(
    "scaleout_dispatch_latency_seconds",
    "From start_execution to the worker's started report recorded",
    buckets=_LATENCY_BUCKETS,
    registry=MASTER,
)
PUBLISH_CONFIRM_SECONDS = Histogram(
    "scaleout_publish_confirm_seconds",
    "Time from publish to broker confirm, per batch",
    buckets=_LATENCY_BUCKETS,
    registry=MASTER,
)
CATALOG_ERRORS = Counter(
    "scaleout_catalog_errors_total",
    "Catalog operations that failed, by loop",
    ["loop"],
    registry=MASTER,
)
MASTER_IS_LEADER = Gauge(
    "scaleout_master_is_leader",
    "1 while this master holds the leader lease, else 0 (a standby)",
    registry=MASTER,
)
MASTER_EPOCH = Gauge(
    "scaleout_master_epoch",
    "The fencing epoch this master leads under (0 while a standby)",
    registry=MASTER,
)
LEADERSHIP_CHANGES = Counter(
    "scaleout_leadership_changes_total",
    "This master's leadership changes: elected, deposed (lost the lease), released",
    ["change"],
    registry=MASTER,
)
MASTER_HEARTBEAT_AGE = Gauge(
    "scaleout_master_heartbeat_age_seconds",
    "Seconds since this master last wrote LAST_ONLINE_TIME",
    registry=MASTER,
)
MASTER_HEARTBEAT_AGE.set(float("inf"))  # none written yet, until a HeartbeatClock reads it

# Package-labelled: the catalog's project and package names, a bounded set that the operator
# chooses by deploying (never an execution or task id). Counted by the master when it applies
# an end: a worker's task.finished, or the lease sweep.
PACKAGE_EXECUTIONS_ENDED = Counter(
    "scaleout_package_executions_ended_total",
    "Executions the master ended, by project, package and terminal status (succeeded, "
    "failed, canceled, ended_unexpectedly)",
    ["project", "package", "status"],
    registry=MASTER,
)
PACKAGE_ATTEMPTS_ENDED = Counter(
    "scaleout_package_attempts_ended_total",
    "Attempts that ended, by project, package and outcome (succeeded, failed, canceled: "
    "the worker's report; expired: the lease lapsed)",
    ["project", "package", "outcome"],
    registry=MASTER,
)
PACKAGE_ATTEMPT_SECONDS = Histogram(
    "scaleout_package_attempt_duration_seconds",
    "Run time of each attempt a worker reported finished, from its started report recorded "
    "to its finished one (catalog clock), by project and package",
    ["project", "package"],
    buckets=_PACKAGE_BUCKETS,
    registry=MASTER,
)

# --- both -------------------------------------------------------------------------------
CONSUMER_BATCHES_HELD = Counter(
    "scaleout_consumer_batches_held_total",
    "Handler retries of a batch held unacked while the catalog is unavailable",
    ["queue"],
    registry=MASTER,
)
BROKER_RECONNECTS = Counter(
    "scaleout_broker_reconnects_total",
    "Broker reconnections, by connection",
    ["connection"],
    registry=MASTER,
)
WORKER.register(BROKER_RECONNECTS)  # the broker client is shared: each process counts its own

# --- worker -----------------------------------------------------------------------------
WORKER_TASKS_RUNNING = Gauge(
    "scaleout_worker_tasks_running", "Packages running on this worker", registry=WORKER
)
WORKER_TASKS_FINISHED = Counter(
    "scaleout_worker_tasks_finished_total",
    "Packages finished, by outcome",
    ["outcome"],
    registry=WORKER,
)
WORKER_PACKAGE_SECONDS = Histogram(
    "scaleout_worker_package_duration_seconds",
    "Package run time",
    buckets=_PACKAGE_BUCKETS,
    registry=WORKER,
)
WORKER_HEARTBEAT_GAP = Histogram(
    "scaleout_worker_heartbeat_gap_seconds",
    "Time between two heartbeats sent by this worker",
    buckets=(0.5, 1, 2, 5, 10, 15, 20, 30, 60, 90, 120, 300),
    registry=WORKER,
)
WORKER_DISK_REMOVED = Counter(
    "scaleout_worker_disk_removed_total",
    "Entries removed to bound the worker's disk, by what (task_folder: an attempt's folder "
    "and log; log_cache: a cached report; project_cache: a project version)",
    ["what"],
    registry=WORKER,
)
WORKER_DISK_REMOVED_BYTES = Counter(
    "scaleout_worker_disk_removed_bytes_total",
    "Bytes freed by those removals, by what (task_folder, log_cache, project_cache)",
    ["what"],
    registry=WORKER,
)
WORKER_DISK_REMOVE_FAILED = Counter(
    "scaleout_worker_disk_remove_failures_total",
    "Paths the retention sweep could not remove or read, by what",
    ["what"],
    registry=WORKER,
)
WORKER_FREE_DISK_BYTES = Gauge(
    "scaleout_worker_free_disk_bytes",
    "Free space of the filesystem holding TasksRootFolder",
    registry=WORKER,
)
WORKER_CACHED_REPORTS = Gauge(
    "scaleout_worker_cached_reports",
    "Reports held on disk until the broker takes them",
    registry=WORKER,
)
WORKER_ATTEMPTS_STOPPED = Counter(
    "scaleout_worker_attempts_stopped_total",
    "Packages this worker stopped before they ended, by reason (canceled, lease_lost, "
    "heartbeat_tolerance, shutdown)",
    ["reason"],
    registry=WORKER,
)
WORKER_ASSIGNMENTS_DROPPED = Counter(
    "scaleout_worker_assignments_dropped_total",
    "Assignments this worker acked without starting them, by reason (lease_lapsed: it "
    "waited for a slot past its dispatch lease)",
    ["reason"],
    registry=WORKER,
)
WORKER_PROGRESS_SENT = Counter(
    "scaleout_worker_progress_sent_total",
    "task.progress reports submitted to the broker",
    registry=WORKER,
)
WORKER_PROGRESS_DROPPED = Counter(
    "scaleout_worker_progress_dropped_total",
    "Progress values not sent, by reason (invalid, out_of_range, superseded, unsent)",
    ["reason"],
    registry=WORKER,
)
WORKER_REPORTS_REFUSED = Counter(
    "scaleout_worker_reports_refused_total",
    "task.refused replies from the master: a report of this worker it did not record",
    ["reason"],
    registry=WORKER,
)
WORKER_ORPHANS_STOPPED = Counter(
    "scaleout_worker_orphans_stopped_total",
    "Package processes a previous run of this worker left running, stopped at its start",
    registry=WORKER,
)
WORKER_OUTBOX_WRITE_FAILURES = Counter(
    "scaleout_worker_outbox_write_failures_total",
    "Unsent reports that could not be written to ExecutionLogCacheFolder (disk full, "
    "read-only, ...); they are held in memory and tried again",
    registry=WORKER,
)
WORKER_REPORTS_LOST = Counter(
    "scaleout_worker_reports_lost_total",
    "Reports neither confirmed by the broker nor cached on disk when the worker stopped",
    registry=WORKER,
)


class HeartbeatClock:
    """Tracks when this master last wrote its heartbeat, for the age gauge."""

    def __init__(self) -> None:
        self._lock = Lock()
        self._last: float | None = None
        MASTER_HEARTBEAT_AGE.set_function(self.age)

    def beat(self) -> None:
        with self._lock:
            self._last = time.monotonic()

    def age(self) -> float:
        with self._lock:
            return float("inf") if self._last is None else time.monotonic() - self._last


# --- package ends -----------------------------------------------------------------------

_ATTEMPT_OUTCOMES = ("succeeded", "failed", "canceled", "expired")
_ENDED_STATUSES = tuple(sorted(status.key for status in TERMINAL_EXECUTION_STATUSES))
_ATTEMPTS_FROM_ZERO: set[tuple[str, str]] = set()
_EXECUTIONS_FROM_ZERO: set[tuple[str, str]] = set()
"""(project, package) pairs whose every series exists already: a labels() call costs a
lock and a lookup, and ten per execution were 2 % of a busy master's samples. No series
is ever removed, so a pair set up once stays set up."""


def attempt_ended(project: str, package: str, outcome: str, run_s: float | None = None) -> None:
    """Count one ended attempt of ``project``/``package``, and observe its run time when it
    is known. The package's every outcome is exported from then on, from 0: a series born
    at 1 is invisible to increase(), so a failure rate would miss its first failure."""
    if (project, package) not in _ATTEMPTS_FROM_ZERO:
        for each in _ATTEMPT_OUTCOMES:
            PACKAGE_ATTEMPTS_ENDED.labels(project=project, package=package, outcome=each)
        _ATTEMPTS_FROM_ZERO.add((project, package))
    PACKAGE_ATTEMPTS_ENDED.labels(project=project, package=package, outcome=outcome).inc()
    if run_s is not None:
        PACKAGE_ATTEMPT_SECONDS.labels(project=project, package=package).observe(run_s)


def execution_ended(project: str, package: str, status: ExecutionStatus) -> None:
    """Count one execution of ``project``/``package`` ended with ``status`` (terminal); each
    terminal status of the package is exported from 0 from then on, as in attempt_ended."""
    if (project, package) not in _EXECUTIONS_FROM_ZERO:
        for each in _ENDED_STATUSES:
            PACKAGE_EXECUTIONS_ENDED.labels(project=project, package=package, status=each)
        _EXECUTIONS_FROM_ZERO.add((project, package))
    PACKAGE_EXECUTIONS_ENDED.labels(project=project, package=package, status=status.key).inc()


# --- serving ----------------------------------------------------------------------------


class _Labelled:
    """A collector's samples with constant labels added (a worker's ``worker`` label).

    A worker's ``instance`` is an address, one per container under DNS discovery, while its
    id is what the catalog's gauges, the dashboard's variable and an operator name it by;
    the worker knows its id, so it says it (as Go's WrapRegistererWith would)."""

    def __init__(self, source: Collector, labels: Mapping[str, str]) -> None:
        self._source = source
        self._labels = dict(labels)

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            labelled = copy.copy(family)
            labelled.samples = [
                s._replace(labels={**s.labels, **self._labels}) for s in family.samples
            ]
            yield labelled


def with_labels(registry: CollectorRegistry, **labels: str) -> CollectorRegistry:
    """A registry serving ``registry``'s metrics with ``labels`` added to every sample."""
    served = CollectorRegistry(support_collectors_without_names=True)
    served.register(_Labelled(registry, labels))
    return served


def serve_first_free(
    port: int, host: str, registry: CollectorRegistry, *, tries: int = 10
) -> int | None:
    """:func:`serve` on ``port``, or, when another process has it (a second master on
    this host), on the first free one of the next ``tries - 1``; the port it took, or None
    when the endpoint is off. It never gives up the process for a port."""
    if not port:
        return None
    for candidate in range(port, port + tries):
        try:
            start_http_server(candidate, addr=host, registry=registry)
        except OSError:
            continue
        if candidate != port:
            logger.warning(
                "metrics.port_taken",
                extra={"wanted": port, "port": candidate, "hint": "point Prometheus at it"},
            )
        logger.info("metrics.listening", extra={"host": host, "port": candidate})
        return candidate
    logger.error(
        "metrics.no_free_port",
        extra={"from": port, "to": port + tries - 1, "hint": "set metrics_port"},
    )
    return None


def serve(port: int, host: str, registry: CollectorRegistry) -> None:
    """Expose ``registry`` (one role's metrics, never another's) on /metrics; ``port`` 0
    turns the endpoint off."""
    if port:
        start_http_server(port, addr=host, registry=registry)
        logger.info("metrics.listening", extra={"host": host, "port": port})
