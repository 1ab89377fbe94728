"""Why the worker stopped a package: the bounded ``reason`` of
``scaleout_worker_attempts_stopped_total``, and the ``reason`` field of ``task.stopping``."""

from __future__ import annotations

from enum import StrEnum

from dispatcher import metrics


class StopCause(StrEnum):
    CANCELED = "canceled"
    """A ``task.cancel`` from the master (a stop request, or an attempt it moved past)."""
    REFUSED = "refused"
    """A ``task.refused``: the master did not record a report of the attempt, because the
    catalog holds it for another worker or for none."""
    LEASE_LOST = "lease_lost"
    """The lease ran out with no renewal confirmed: the master may have given the task to
    another worker (see :mod:`consumers.worker.leases`)."""
    HEARTBEAT_TOLERANCE = "heartbeat_tolerance"
    """Heartbeats failed for ``HeartbeatErrorTolerance`` (the outer bound)."""
    SHUTDOWN = "shutdown"
    """The worker shut down before the package ended (after ``shutdown_grace_s``)."""


def count_stop(cause: StopCause) -> None:
    metrics.WORKER_ATTEMPTS_STOPPED.labels(reason=cause.value).inc()


for _cause in StopCause:  # every reason is exported from the start, at 0, so rates work
    metrics.WORKER_ATTEMPTS_STOPPED.labels(reason=_cause.value)
