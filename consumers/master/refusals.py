"""Refused messages, where the operator looks: on the row of the worker they claim to be.

A message the master refuses (a body whose ``worker_id`` is not its AMQP ``user_id``, or a
report the catalog finds stale or not the sender's) is counted and logged where it is
refused. The operator, though, looks at ``scaleout workers list``, so the last refusal
also goes on the claimed worker's row. A flood must not cost a transaction per message:
:class:`Refusals` keeps the latest refusal of each worker in memory and writes them all in
one transaction, at most once per ``interval_s``. The consumers flush after each batch and
the master's heartbeat timer flushes what a last batch left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from dispatcher.catalog.records import Refusal
from dispatcher.errors import CatalogError

logger = logging.getLogger(__name__)

MAX_WORKERS = 1000
"""Workers kept between two writes: forged ids are the sender's choice, memory is not."""


class RefusalSink(Protocol):
    def record_refusals(self, refusals: Sequence[Refusal]) -> None: ...


class Refusals:
    """The latest refusal per claimed worker, written at most once per ``interval_s``."""

    def __init__(
        self,
        sink: RefusalSink | None,
        *,
        interval_s: float = 1.0,
        max_workers: int = MAX_WORKERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._interval_s = interval_s
        self._max_workers = max_workers
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[str, str, float]] = {}
        self._last_write = float("-inf")
        self.dropped = 0
        """Refusals not kept because ``max_workers`` others were waiting."""

    def note(self, worker_id: str, reason: str, detail: str) -> None:
        """Remember a refusal of a message claiming to be ``worker_id``; no I/O."""
        if self._sink is None:
            return
        with self._lock:
            if worker_id not in self._pending and len(self._pending) >= self._max_workers:
                self.dropped += 1
                return
            self._pending[worker_id] = (reason, detail, self._clock())

    def flush(self, *, force: bool = False) -> int:
        """Write what is waiting, unless the last write was under ``interval_s`` ago (or
        ``force``); how many workers' rows were written. A catalog error keeps them for
        the next flush and is logged, never raised: a refusal is worth less than a batch."""
        batch, taken_at = self._take(force=force)
        if not batch or self._sink is None:
            return 0
        try:
            self._sink.record_refusals(batch)
        except CatalogError as exc:
            self._put_back(batch, taken_at)
            logger.warning(
                "refusals.write_failed",
                extra={"workers": len(batch), "error": str(exc), "hint": exc.hint},
            )
            return 0
        return len(batch)

    def _take(self, *, force: bool) -> tuple[list[Refusal], float]:
        with self._lock:
            now = self._clock()
            if not self._pending or (not force and now - self._last_write < self._interval_s):
                return [], now
            self._last_write = now
            batch = [
                Refusal(worker, reason, detail, age_s=now - noted)
                for worker, (reason, detail, noted) in sorted(self._pending.items())
            ]
            self._pending.clear()
            return batch, now

    def _put_back(self, batch: list[Refusal], taken_at: float) -> None:
        with self._lock:
            for refusal in batch:
                if refusal.worker_id not in self._pending:  # a newer one replaces it
                    noted = taken_at - refusal.age_s
                    self._pending[refusal.worker_id] = (refusal.reason, refusal.detail, noted)


def discard() -> Refusals:
    """Refusals that are noted nowhere (handlers built without a catalog to tell)."""
    return Refusals(None)


_WHY = {
    "stale": "an older attempt, or a state the task has moved past",
    "not_holder": "an attempt this worker does not hold",
    "unknown_attempt": "an attempt the master never dispatched",
    "unknown_task": "a task the catalog does not know",
}


def forged_detail(message_type: str, claimed: str, user_id: str | None) -> str:
    """'task.finished: body says w1, broker says guest'."""
    return f"{message_type}: body says {claimed}, broker says {user_id}"


def report_detail(message_type: str, execution_id: int, attempt: int, outcome: str) -> str:
    """'task.finished of execution 42 attempt 1: an older attempt, or ...'."""
    why = _WHY.get(outcome, outcome)
    return f"{message_type} of execution {execution_id} attempt {attempt}: {why}"
