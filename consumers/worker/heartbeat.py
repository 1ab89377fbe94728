"""The worker's heartbeat: its own thread and its own broker connection.

Every ``TaskHeartbeatInterval`` while packages run (the master renews their leases), else
every ``AgentHeartbeatInterval``. Nothing else publishes on this connection, so package
output or a slow handler cannot delay it. Each beat the broker confirmed is handed to
``on_confirmed`` with the time it began to be sent: the attempts it listed have their
leases renewed from then on (:mod:`consumers.worker.leases`). When heartbeats keep failing
for ``HeartbeatErrorTolerance`` while packages run, this worker kills them itself (SSIS
does the same); a lease that runs out unrenewed stops its package earlier.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel

from dispatcher import metrics
from dispatcher.broker.topology import HEARTBEAT_EXCHANGE, HEARTBEAT_ROUTING_KEY
from dispatcher.errors import BrokerError
from schemas.messages import AgentHeartbeat

logger = logging.getLogger(__name__)

RETRY_AFTER_FAILURE_S = 2.0
"""A beat that failed is tried again this soon (or at the interval, if shorter). A worker
idle at AgentHeartbeatInterval (60 s) whose first beat found no heartbeat queue yet (its
master still starting) otherwise stayed unseen, and got no task, for a whole minute. A
broker that is down is not hammered: each try already waits out the publisher's own
reconnect budget."""


class HeartbeatPublisher(Protocol):
    def publish(self, exchange: str, routing_key: str, message: BaseModel) -> None: ...
    def close(self) -> None: ...


class Heartbeat:
    def __init__(
        self,
        connect: Callable[[], HeartbeatPublisher],
        snapshot: Callable[[], AgentHeartbeat],
        *,
        agent_interval_s: float,
        task_interval_s: float,
        error_tolerance_s: float,
        on_tolerance_exceeded: Callable[[], None],
        busy: Callable[[], bool] | None = None,
        on_confirmed: Callable[[AgentHeartbeat, float], None] | None = None,
    ) -> None:
        self._connect = connect
        self._snapshot = snapshot
        self._busy = busy or (lambda: bool(snapshot().running))
        """Whether packages run (the interval to use); cheaper than a whole snapshot,
        which samples the load and is taken only when a beat is sent."""
        self._agent_interval_s = agent_interval_s
        self._task_interval_s = task_interval_s
        self._tolerance_s = error_tolerance_s
        self._on_tolerance_exceeded = on_tolerance_exceeded
        self._on_confirmed = on_confirmed or (lambda _beat, _sent_at: None)
        self._publisher: HeartbeatPublisher | None = None
        self._changed = threading.Event()
        self.last_ok = time.monotonic()

    def nudge(self) -> None:
        """The set of running attempts changed: pick the interval again now."""
        self._changed.set()

    def run(self, stop: threading.Event) -> None:
        last_sent = float("-inf")
        failed = False
        try:
            while not stop.is_set():
                interval = self._task_interval_s if self._busy() else self._agent_interval_s
                if failed:
                    interval = min(interval, RETRY_AFTER_FAILURE_S)
                wait = last_sent + interval - time.monotonic()
                if wait > 0:
                    self._changed.wait(min(wait, 1.0))
                    self._changed.clear()
                    continue
                now = time.monotonic()
                if last_sent != float("-inf"):
                    metrics.WORKER_HEARTBEAT_GAP.observe(now - last_sent)
                last_sent = now
                failed = not self._beat(self._snapshot(), sent_at=now)
        finally:
            self._close()

    def _beat(self, beat: AgentHeartbeat, *, sent_at: float) -> bool:
        """Send one beat; whether the broker confirmed it."""
        try:
            if self._publisher is None:
                self._publisher = self._connect()
            self._publisher.publish(HEARTBEAT_EXCHANGE, HEARTBEAT_ROUTING_KEY, beat)
        except BrokerError as exc:
            self._close()
            failing_for = time.monotonic() - self.last_ok
            logger.warning(
                "heartbeat.failed: %s (failing for %.0f s)",
                exc,
                failing_for,
                extra={"failing_for_s": failing_for},
            )
            if beat.running and failing_for >= self._tolerance_s:
                logger.error(
                    "heartbeat.tolerance_exceeded: stopping %d packages", len(beat.running)
                )
                self._on_tolerance_exceeded()
                self.last_ok = time.monotonic()
            return False
        self.last_ok = time.monotonic()
        self._on_confirmed(beat, sent_at)
        return True

    def _close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            try:
                publisher.close()
            except BrokerError:
                logger.debug("heartbeat.close_failed")
