"""Everything the master publishes, over one confirmed Publisher per thread.

pika connections are confined to their thread, so each loop that publishes (the
dispatcher, the heartbeat and fetch consumers' handler threads) lazily gets its own
Publisher here. Every publish waits for the broker's confirm before the caller relies on
it: the dispatcher marks an attempt published only then.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Sequence

from pydantic import BaseModel

from dispatcher import metrics
from dispatcher.broker import Channel, Publisher, login_user, topology
from dispatcher.catalog.records import Assignment, CancelOrder
from dispatcher.errors import BrokerError
from dispatcher.settings import BrokerSettings
from schemas.messages import (
    DispatchWake,
    ProjectArchive,
    ReadMarker,
    TaskAssign,
    TaskCancel,
    TaskRefused,
)

logger = logging.getLogger(__name__)

_MARKER_ROUTES = {
    topology.STATUS_QUEUE: (topology.STATUS_EXCHANGE, topology.STATUS_ROUTING_KEY),
    topology.HEARTBEAT_QUEUE: (topology.HEARTBEAT_EXCHANGE, topology.HEARTBEAT_ROUTING_KEY),
}


def to_message(assignment: Assignment) -> TaskAssign:
    return TaskAssign(
        task_id=assignment.task_id,
        attempt=assignment.attempt,
        execution_id=assignment.execution_id,
        worker_id=assignment.worker_id,
        folder=assignment.folder,
        project=assignment.project,
        package=assignment.package,
        project_lsn=assignment.project_lsn,
        project_hash=assignment.project_hash,
        parameters=assignment.parameters,
        use32bitruntime=assignment.use32bitruntime,
        max_attempts=assignment.max_attempts,
        lease_expires_at=assignment.lease_expires_at,
    )


def publish_wake(publisher: Publisher, execution_id: int | None = None) -> None:
    """Nudge the master's dispatcher. Transient: a wake lost in a broker restart costs at
    most one dispatch poll, so it is not worth a disk write."""
    message = DispatchWake(execution_id=execution_id)
    publisher.publish(
        topology.STATUS_EXCHANGE, topology.WAKE_ROUTING_KEY, message, persistent=False
    )


def declare_worker(
    publisher: Publisher, worker_id: str, *, with_master_topology: bool = False
) -> None:
    """Declare a worker's task and control queues, now and after every reconnect.

    ``with_master_topology`` also declares the exchanges and the dead-letter queue the
    worker's queues point at: for a caller whose publisher does not already declare them
    on connect (the operator's API, when no master has run yet)."""

    def declare(channel: Channel) -> None:
        if with_master_topology:
            topology.declare_master_topology(channel)
        topology.declare_worker_queues(channel, worker_id)

    publisher.declare(declare)


class Outbound:
    """The master's publishing side; safe to share between threads."""

    def __init__(self, settings: BrokerSettings, *, name: str = "master") -> None:
        self._settings = settings
        self._name = name
        self._user = login_user(settings)
        self._local = threading.local()
        self._all: list[Publisher] = []
        self._lock = threading.Lock()

    def _publisher(self) -> Publisher:
        publisher: Publisher | None = getattr(self._local, "publisher", None)
        if publisher is None:
            label = f"{self._name}:{threading.current_thread().name}"
            publisher = Publisher(
                self._settings,
                name=label,
                user_id=self._user,
                declare=topology.declare_master_topology,
            )
            self._local.publisher = publisher
            with self._lock:
                self._all.append(publisher)
        return publisher

    def keepalive(self) -> None:
        """Keep this thread's idle connection alive (see :meth:`Publisher.keepalive`); a
        thread that never published has none."""
        publisher: Publisher | None = getattr(self._local, "publisher", None)
        if publisher is not None:
            publisher.keepalive()

    def assign(self, assignments: Sequence[Assignment]) -> list[bool]:
        """Publish each attempt to its worker's queue; True where the broker confirmed."""
        items = [(topology.TASKS_EXCHANGE, a.worker_id, to_message(a)) for a in assignments]
        return self._batch(items, "assign")

    def cancel(self, orders: Sequence[CancelOrder]) -> list[bool]:
        items = [
            (
                topology.CONTROL_EXCHANGE,
                o.worker_id,
                TaskCancel(
                    task_id=o.task_id,
                    attempt=o.attempt,
                    execution_id=o.execution_id,
                    reason=o.reason,
                ),
            )
            for o in orders
        ]
        sent = self._batch(items, "cancel")
        for order, ok in zip(orders, sent, strict=True):
            if ok:
                metrics.CANCELS_SENT.labels(reason=order.reason.value).inc()
        return sent

    def archive(self, worker_id: str, project_hash: str, archive: bytes | None) -> None:
        reply = ProjectArchive(
            project_hash=project_hash,
            found=archive is not None,
            archive_b64=base64.b64encode(archive).decode() if archive else "",
        )
        self._publisher().publish(topology.CONTROL_EXCHANGE, worker_id, reply)

    def ensure_worker(self, worker_id: str) -> None:
        """Declare a worker's task and control queues (workers may not declare them)."""
        declare_worker(self._publisher(), worker_id)

    def wake(self, execution_id: int | None = None) -> None:
        publish_wake(self._publisher(), execution_id)

    def report_refused(
        self, refusals: Sequence[TaskRefused], worker_ids: Sequence[str]
    ) -> list[bool]:
        """Tell each worker which of its reports the master did not record."""
        items = [
            (topology.CONTROL_EXCHANGE, worker, refusal)
            for refusal, worker in zip(refusals, worker_ids, strict=True)
        ]
        return self._batch(items, "refusal")

    def read_marker(self, queue: str, marker: ReadMarker) -> None:
        """Put this master's marker into one of its own queues (dispatcher.horizon)."""
        exchange, routing_key = _MARKER_ROUTES[queue]
        self._publisher().publish(exchange, routing_key, marker, persistent=False)

    def _batch(self, items: Sequence[tuple[str, str, BaseModel]], what: str) -> list[bool]:
        if not items:
            return []
        started = time.perf_counter()
        try:
            errors = self._publisher().publish_batch(items)
        except BrokerError as exc:
            logger.warning("outbound.publish_failed", extra={"what": what, "error": str(exc)})
            return [False] * len(items)
        metrics.PUBLISH_CONFIRM_SECONDS.observe(time.perf_counter() - started)
        for (_, routing_key, _), error in zip(items, errors, strict=True):
            if error is not None:
                logger.warning(
                    "outbound.not_confirmed",
                    extra={"what": what, "worker": routing_key, "error": str(error)},
                )
        return [error is None for error in errors]

    def close(self) -> None:
        with self._lock:
            publishers, self._all = self._all, []
        for publisher in publishers:
            try:
                publisher.close()
            except BrokerError:
                logger.debug("outbound.close_failed", exc_info=True)
