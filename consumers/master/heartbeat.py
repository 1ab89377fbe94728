"""The master's heartbeat reconciler: a worker is alive, here is what it runs.

Each heartbeat updates the worker's row (an unknown worker is registered disabled, as
SSIS does; an enabled one gets its queues declared), renews the leases of the attempts it
runs, and is answered with a cancel for every attempt it must stop: one the catalog has moved past
(stale) or one whose stop was requested. Cancels repeat with every heartbeat until the
worker stops reporting the attempt, so a cancel survives a lost message or a restart; that
is also why one heartbeat is answered with at most :data:`MAX_CANCELS_PER_HEARTBEAT`
cancels (the rest go with the next ones): what one message can make the master publish
is bounded, however many attempts it invents.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from consumers.master.identity import SenderCheck
from consumers.master.refusals import Refusals, discard, forged_detail
from consumers.master.verdicts import dead_letter, decode_as
from dispatcher import metrics
from dispatcher.broker import ACK, Delivery, Verdict
from dispatcher.broker.topology import HEARTBEAT_QUEUE
from dispatcher.catalog.records import CancelOrder, HeartbeatResult
from dispatcher.horizon import ignore_markers
from schemas.messages import AgentHeartbeat, DecodeReason, ReadMarker

logger = logging.getLogger(__name__)

MAX_CANCELS_PER_HEARTBEAT: Final = 64


class HeartbeatSink(Protocol):
    def record_heartbeats(
        self, beats: Sequence[tuple[AgentHeartbeat, str]]
    ) -> list[HeartbeatResult]: ...


class HeartbeatReplies(Protocol):
    def cancel(self, orders: Sequence[CancelOrder]) -> list[bool]: ...

    def ensure_worker(self, worker_id: str) -> None: ...


class HeartbeatHandler:
    """The handler of the ``scaleout.master.heartbeat`` consumer."""

    def __init__(
        self,
        catalog: HeartbeatSink,
        replies: HeartbeatReplies,
        *,
        senders: SenderCheck,
        on_capacity: Callable[[], None] = lambda: None,
        refusals: Refusals | None = None,
        markers_seen: Callable[[str, ReadMarker], None] | None = None,
    ) -> None:
        self._catalog = catalog
        self._replies = replies
        self._senders = senders
        self._on_capacity = on_capacity
        self._refusals = refusals or discard()
        self._markers_seen = markers_seen or ignore_markers()
        self._known: set[str] = set()

    def __call__(self, deliveries: Sequence[Delivery]) -> list[Verdict]:
        """One catalog transaction for the batch's valid heartbeats; acked after it."""
        verdicts: list[Verdict] = []
        accepted: list[tuple[AgentHeartbeat, str]] = []
        markers: list[ReadMarker] = []
        for delivery in deliveries:
            checked = self._check(delivery)
            if isinstance(checked, Verdict):
                verdicts.append(checked)
                continue
            if isinstance(checked, ReadMarker):
                markers.append(checked)
            else:
                accepted.append(checked)
            verdicts.append(ACK)
        if accepted:
            results = self._catalog.record_heartbeats(accepted)
            for (heartbeat, _), result in zip(accepted, results, strict=True):
                self._after(heartbeat, result)
        for marker in markers:  # after the commit of every heartbeat queued before it
            self._markers_seen(HEARTBEAT_QUEUE, marker)
        self._refusals.flush()
        return verdicts

    def _check(self, delivery: Delivery) -> tuple[AgentHeartbeat, str] | ReadMarker | Verdict:
        heartbeat = decode_as(HEARTBEAT_QUEUE, delivery, (AgentHeartbeat, ReadMarker))
        if isinstance(heartbeat, Verdict | ReadMarker):
            return heartbeat
        assert isinstance(heartbeat, AgentHeartbeat)  # narrows the common base
        sender = self._senders.sender(delivery, heartbeat.worker_id)
        if sender is None:
            detail = f"body says {heartbeat.worker_id}, broker says {delivery.user_id}"
            metrics.HEARTBEATS.labels(outcome="forged_sender").inc()
            forged = forged_detail(heartbeat.type, heartbeat.worker_id, delivery.user_id)
            self._refusals.note(heartbeat.worker_id, DecodeReason.FORGED_SENDER.value, forged)
            return dead_letter(HEARTBEAT_QUEUE, delivery, DecodeReason.FORGED_SENDER, detail)
        return heartbeat, sender

    def _after(self, heartbeat: AgentHeartbeat, result: HeartbeatResult) -> None:
        outcome = "registered" if result.registered else "recorded"
        metrics.HEARTBEATS.labels(outcome=outcome).inc()
        if result.is_enabled and heartbeat.worker_id not in self._known:
            # First sight of an enabled worker in this master's life: make sure its queues
            # exist before any dispatch to it (a publish to a missing queue is unroutable).
            # A disabled (e.g. just auto-registered) worker gets none: queues cost the
            # broker, and nothing is sent to it until an operator enables it.
            self._replies.ensure_worker(heartbeat.worker_id)
            self._known.add(heartbeat.worker_id)
        if result.registered:
            logger.info(
                "heartbeat.worker_registered",
                extra={"worker": heartbeat.worker_id, "hint": "enable it to give it tasks"},
            )
        if result.cancels:
            cancels = result.cancels[:MAX_CANCELS_PER_HEARTBEAT]
            if capped := len(result.cancels) - len(cancels):
                metrics.CANCELS_CAPPED.inc(capped)
                logger.warning(
                    "heartbeat.cancels_capped",
                    extra={"worker": heartbeat.worker_id, "sent": len(cancels), "held": capped},
                )
            self._replies.cancel(cancels)
        if result.is_enabled and heartbeat.accepting:
            self._on_capacity()
