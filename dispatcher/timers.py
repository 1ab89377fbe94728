"""The master's three timers, with SSIS's names and defaults:

- ``MasterHeartbeatIntervalInMs`` (30 s): write LAST_ONLINE_TIME and the other
  master_properties, so operators (and a standby master) see this one is alive.
- ``DealWithExpiredTasksIntervalInMs`` (5 min): attempts whose lease lapsed go back to
  pending for a new attempt, or end the execution (status 6) when none are left.
- ``CleanupCompletedJobsIntervalInMs`` (12 h): finished tasks past retention move to history.

Each runs on its own thread; a catalog outage skips a tick, it does not kill the timer.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from dispatcher import metrics
from dispatcher.catalog.records import CleanupResult, ExpiredAttempt
from dispatcher.errors import CatalogUnavailable
from schemas.states import TaskState

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Timer:
    name: str
    interval_s: float
    tick: Callable[[], None]

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            try:
                self.tick()
            except CatalogUnavailable as exc:
                metrics.CATALOG_ERRORS.labels(loop=self.name).inc()
                logger.warning(
                    "timer.catalog_unavailable", extra={"timer": self.name, "error": str(exc)}
                )


class TimerCatalog(Protocol):
    def master_heartbeat(self, properties: Mapping[str, str]) -> None: ...

    def expire_leases(self) -> list[ExpiredAttempt]: ...

    def cleanup_completed_jobs(self, minutes_to_keep: int = 60) -> CleanupResult: ...


def master_properties(heartbeat_interval_ms: int) -> dict[str, str]:
    hostname = socket.gethostname()
    try:
        address = socket.gethostbyname(hostname)
    except OSError:
        address = ""
    return {
        "MACHINE_NAME": hostname,
        "MACHINE_IP": address,
        "MASTER_HEARTBEAT_INTERVALINMS": str(heartbeat_interval_ms),
        "IS_SCALEOUT_ENABLED": "TRUE",
    }


def master_heartbeat(
    catalog: TimerCatalog, properties: Mapping[str, str], clock: metrics.HeartbeatClock
) -> None:
    catalog.master_heartbeat(properties)
    clock.beat()


_EXPIRY_LABEL = {
    TaskState.PENDING: "requeued",
    TaskState.ENDED_UNEXPECTEDLY: "ended",
    TaskState.CANCELED: "canceled",
}


class HeartbeatWatch:
    """Whether the master has been hearing heartbeats long enough to judge leases.

    A lease lapses when the master hears nothing from the worker; while the master's own
    heartbeat consumer is down (a broker restart, the master just started) it hears
    nothing from anyone, and expiring then would end healthy executions. So the sweep
    waits until the consumer has been connected for ``grace_s``: time enough for every
    live worker's next heartbeat to arrive and renew its leases."""

    def __init__(
        self,
        connected_since: Callable[[], float | None],
        grace_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connected_since = connected_since
        self._grace_s = grace_s
        self._clock = clock

    def ready(self) -> bool:
        since = self._connected_since()
        return since is not None and self._clock() - since >= self._grace_s


def deal_with_expired_tasks(
    catalog: TimerCatalog, on_requeued: Callable[[], None], watch: HeartbeatWatch | None = None
) -> None:
    if watch is not None and not watch.ready():
        logger.info("timer.expiry_deferred", extra={"reason": "not hearing heartbeats long enough"})
        return
    expired = catalog.expire_leases()
    for attempt in expired:
        outcome = _EXPIRY_LABEL.get(attempt.new_state, attempt.new_state.name.lower())
        metrics.LEASES_EXPIRED.labels(outcome=outcome).inc()
        _count_package_end(attempt)
        logger.info(
            "timer.lease_expired",
            extra={
                "task_id": str(attempt.task_id),
                "attempt": attempt.attempt,
                "execution_id": attempt.execution_id,
                "worker": attempt.worker_id,
                "outcome": outcome,
            },
        )
    if any(a.new_state is TaskState.PENDING for a in expired):
        requeued = sum(a.new_state is TaskState.PENDING for a in expired)
        metrics.ATTEMPTS_REQUEUED.labels(reason="lease_expired").inc(requeued)
        on_requeued()


def _count_package_end(attempt: ExpiredAttempt) -> None:
    """The per-package counts of an expiry: the attempt (``expired``, whether or not it had
    started: its catalog row says so too), and the execution when this ended it."""
    project, package = attempt.project_name, attempt.package_name
    metrics.attempt_ended(project, package, "expired")
    status = attempt.execution_status
    if status is not None and status.is_terminal:
        metrics.execution_ended(project, package, status)


def cleanup_completed_jobs(catalog: TimerCatalog, minutes_to_keep: int) -> None:
    result = catalog.cleanup_completed_jobs(minutes_to_keep)
    if result.tasks_moved:
        logger.info(
            "timer.cleanup",
            extra={"tasks_moved": result.tasks_moved, "jobs_moved": result.jobs_moved},
        )
