"""The read horizon: proof that the master has read what its workers sent before a moment.

A lease lapses when the master hears nothing from the worker holding it. "Hears nothing"
must mean the worker sent nothing, not that the master has not read it: a master that
was paused (SIGSTOP, a VM freeze, a long catalog lock) resumes with heartbeats and
``task.finished`` reports waiting unread in its own queues, and judging leases then
ends live work. So before each expiry sweep the master publishes a :class:`ReadMarker`
into its status and heartbeat queues and waits until its own handlers have read it, after
the catalog committed whatever came before it in the queue. A queue delivers in order,
so everything queued before the marker has been applied by then.

The sweep then judges only leases that lapsed before it sent the markers (``as_of``, the
database's clock): a pause after the markers came back leaves newer news unread, but a
live worker's lease, renewed by a heartbeat it sent before the markers, ends after
``as_of`` (its lease is longer than its heartbeat interval).

If the markers do not come back in time (a backlog, a broker outage, a marker dropped
from the bounded heartbeat queue), the sweep is deferred: deferring is always safe.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Final

from dispatcher import metrics
from dispatcher.errors import BrokerError
from schemas.messages import ReadMarker
from schemas.topology import HEARTBEAT_QUEUE, STATUS_QUEUE

logger = logging.getLogger(__name__)

MARKED_QUEUES: Final = (STATUS_QUEUE, HEARTBEAT_QUEUE)
"""The queues whose unread messages could renew or end a lease."""
DEFAULT_TIMEOUT_S: Final = 30.0


def master_instance() -> str:
    """This master process's name in its markers (host and pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


class ReadHorizon:
    """Sends markers and waits for the handlers to report them read. Thread-safe: the
    expiry timer calls :meth:`reached`, the status and heartbeat handlers :meth:`seen`."""

    def __init__(
        self,
        publish: Callable[[str, ReadMarker], None],
        *,
        master: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        queues: tuple[str, ...] = MARKED_QUEUES,
        stop: threading.Event | None = None,
    ) -> None:
        self._publish = publish
        self._stop = stop
        self._master = master or master_instance()
        self._timeout_s = timeout_s
        self._queues = queues
        self._cond = threading.Condition()
        self._unread: dict[uuid.UUID, set[str]] = {}

    def reached(self) -> bool:
        """Mark every queue and wait until each marker was read; False on a timeout, a
        failed publish or the service stopping."""
        token = uuid.uuid4()
        with self._cond:
            self._unread[token] = set(self._queues)
        try:
            return self._mark(token) and self._wait(token)
        finally:
            with self._cond:
                self._unread.pop(token, None)

    def _mark(self, token: uuid.UUID) -> bool:
        marker = ReadMarker(master=self._master, token=token)
        for queue in self._queues:
            try:
                self._publish(queue, marker)
            except BrokerError as exc:
                metrics.READ_MARKERS.labels(outcome="not_sent").inc()
                logger.warning("horizon.marker_not_sent", extra={"queue": queue, "error": str(exc)})
                return False
        return True

    def _wait(self, token: uuid.UUID) -> bool:
        deadline = time.monotonic() + self._timeout_s
        with self._cond:
            while self._unread.get(token):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._stop is not None and self._stop.is_set()):
                    metrics.READ_MARKERS.labels(outcome="timed_out").inc()
                    logger.warning(
                        "horizon.markers_unread",
                        extra={
                            "queues": sorted(self._unread.get(token, ())),
                            "waited_s": self._timeout_s,
                        },
                    )
                    return False
                self._cond.wait(min(remaining, 0.5))
        metrics.READ_MARKERS.labels(outcome="read").inc()
        return True

    def seen(self, queue: str, marker: ReadMarker) -> None:
        """A handler read ``marker`` from ``queue``, after committing what preceded it."""
        with self._cond:
            unread = self._unread.get(marker.token)
            if unread is None:
                # Another master's, or an earlier life's of this one, or a timed-out wait's.
                metrics.READ_MARKERS.labels(outcome="foreign").inc()
                return
            unread.discard(queue)
            self._cond.notify_all()


def ignore_markers() -> Callable[[str, ReadMarker], None]:
    """A ``seen`` for handlers built without a horizon (tests, tools)."""

    def seen(_queue: str, _marker: ReadMarker) -> None:
        metrics.READ_MARKERS.labels(outcome="foreign").inc()

    return seen
