"""The master's three timers, with SSIS's names and defaults:

- ``MasterHeartbeatIntervalInMs`` (30 s): write LAST_ONLINE_TIME and the other
  master_properties, so operators (and a standby master) see this one is alive.
- ``DealWithExpiredTasksIntervalInMs`` (5 min): attempts whose lease lapsed go back to
  pending for a new attempt, or end the execution (status 6) when none are left; judged
  only once this master has read what its workers sent before the sweep.
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
from datetime import datetime
from typing import Protocol

from dispatcher import metrics
from dispatcher.catalog.records import CleanupResult, ExpiredAttempt
from dispatcher.errors import CatalogUnavailable
from schemas.states import TaskState

logger = logging.getLogger(__name__)


KEEPALIVE_S = 5.0
"""How often a waiting timer services its thread's broker connection, if it has one."""


@dataclass(frozen=True, slots=True)
class Timer:
    name: str
    interval_s: float
    tick: Callable[[], None]
    keepalive: Callable[[], None] | None = None
    """Services this thread's idle publisher (the expiry sweep publishes read markers)."""

    def run(self, stop: threading.Event) -> None:
        while self._wait(stop):
            try:
                self.tick()
            except CatalogUnavailable as exc:
                metrics.CATALOG_ERRORS.labels(loop=self.name).inc()
                logger.warning(
                    "timer.catalog_unavailable", extra={"timer": self.name, "error": str(exc)}
                )

    def _wait(self, stop: threading.Event) -> bool:
        """Wait one interval, servicing the connection meanwhile; False once stopped."""
        due = time.monotonic() + self.interval_s
        while (left := due - time.monotonic()) > 0:
            if stop.wait(min(left, KEEPALIVE_S)):
                return False
            if self.keepalive is not None:
                self.keepalive()
        return not stop.is_set()


class TimerCatalog(Protocol):
    def master_heartbeat(self, properties: Mapping[str, str]) -> None: ...

    def expire_leases(self, as_of: datetime | None = None) -> list[ExpiredAttempt]: ...

    def database_now(self) -> datetime: ...

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


class Horizon(Protocol):
    def reached(self) -> bool: ...


def deal_with_expired_tasks(
    catalog: TimerCatalog,
    on_requeued: Callable[[], None],
    watch: HeartbeatWatch | None = None,
    horizon: Horizon | None = None,
) -> None:
    """One sweep, judged only on what this master has read (dispatcher.horizon)."""
    if watch is not None and not watch.ready():
        _deferred("listening", "not hearing heartbeats long enough")
        return
    as_of = catalog.database_now()  # before the markers: see dispatcher.horizon
    if horizon is not None and not horizon.reached():
        _deferred("unread", "reports or heartbeats queued before the sweep are not read yet")
        return
    metrics.EXPIRY_SWEEPS.labels(outcome="swept").inc()
    expired = catalog.expire_leases(as_of)
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


def _deferred(outcome: str, reason: str) -> None:
    metrics.EXPIRY_SWEEPS.labels(outcome=f"deferred_{outcome}").inc()
    logger.info("timer.expiry_deferred", extra={"reason": reason})


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
