"""``task.refused``: telling a worker which of its reports the master did not record.

The broker confirms a report the moment its queue has it, so without a reply a worker
whose report the catalog refuses (a stale attempt, one another worker holds, one never
dispatched) believes it recorded and keeps running an attempt nobody waits for. The
master answers each refused report's sender on its control queue.

What one message can make the master send is bounded: one reply per attempt in
:data:`REPEAT_S` (a worker retrying a refused report gets one answer, not one per retry),
at most :data:`MAX_PER_BATCH` per batch, and the memory of what was answered holds at
most :data:`MAX_REMEMBERED` attempts. What the bounds hold back is counted.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from dispatcher import metrics
from dispatcher.catalog.records import ReportOutcome
from schemas.messages import RefusalReason, StatusReport, TaskRefused

logger = logging.getLogger(__name__)

REPEAT_S: Final = 30.0
MAX_PER_BATCH: Final = 100
MAX_REMEMBERED: Final = 10_000

REASONS: Final = {
    ReportOutcome.STALE: RefusalReason.STALE,
    ReportOutcome.NOT_HOLDER: RefusalReason.NOT_HOLDER,
    ReportOutcome.UNKNOWN_ATTEMPT: RefusalReason.UNKNOWN_ATTEMPT,
    ReportOutcome.UNKNOWN_TASK: RefusalReason.UNKNOWN_TASK,
}
"""The catalog outcomes a worker is told of; applied and duplicate reports need no word."""


class RefusalSender(Protocol):
    def report_refused(
        self, refusals: Sequence[TaskRefused], worker_ids: Sequence[str]
    ) -> list[bool]: ...


class RefusalReplies:
    """Collects one batch's refused reports and sends the replies the bounds allow."""

    def __init__(
        self,
        sender: RefusalSender,
        *,
        repeat_s: float = REPEAT_S,
        max_per_batch: int = MAX_PER_BATCH,
        max_remembered: int = MAX_REMEMBERED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sender = sender
        self._repeat_s = repeat_s
        self._max_per_batch = max_per_batch
        self._max_remembered = max_remembered
        self._clock = clock
        self._answered: OrderedDict[tuple[str, uuid.UUID, int], float] = OrderedDict()

    def send(self, refused: Sequence[tuple[StatusReport, str, ReportOutcome]]) -> None:
        """Reply to each ``(report, sender, outcome)`` the bounds allow; no raise."""
        now = self._clock()
        replies: list[TaskRefused] = []
        workers: list[str] = []
        for report, sender, outcome in refused:
            reason = REASONS.get(outcome)
            if reason is None:
                continue
            if len(replies) >= self._max_per_batch or self._answered_lately(
                (sender, report.task_id, report.attempt), now
            ):
                metrics.REFUSALS_SENT.labels(outcome="suppressed").inc()
                continue
            replies.append(_reply(report, reason))
            workers.append(sender)
        if replies:
            self._publish(replies, workers)

    def _answered_lately(self, key: tuple[str, uuid.UUID, int], now: float) -> bool:
        last = self._answered.get(key)
        if last is not None and now - last < self._repeat_s:
            return True
        self._answered[key] = now
        self._answered.move_to_end(key)
        while len(self._answered) > self._max_remembered:
            self._answered.popitem(last=False)
        return False

    def _publish(self, replies: list[TaskRefused], workers: list[str]) -> None:
        sent = self._sender.report_refused(replies, workers)
        # A failed one (an unknown sender has no control queue) is not retried before
        # REPEAT_S either: the worker's own retry of its report asks again.
        for ok in sent:
            metrics.REFUSALS_SENT.labels(outcome="sent" if ok else "failed").inc()


def _reply(report: StatusReport, reason: RefusalReason) -> TaskRefused:
    return TaskRefused(
        task_id=report.task_id,
        attempt=report.attempt,
        execution_id=report.execution_id,
        report_type=report.type,
        reason=reason,
    )
