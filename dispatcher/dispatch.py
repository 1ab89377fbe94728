"""The dispatch loop: pending tasks -> attempts in the catalog -> confirmed publishes.

Order matters for "nothing lost, nothing run twice": the attempt (its number, worker and
lease) is committed first, then published with a confirm, then marked published (in the
next claim's transaction when one follows at once, else straight away). A crash in
between leaves an unpublished attempt that a later pass publishes again (the dispatched
rows are the outbox); a worker that gets the same attempt twice reports it twice, and the
catalog's attempt fence makes the second report a duplicate.

The loop sleeps on an event that a ``dispatch.wake`` message, a requeue or a heartbeat
from a worker with room sets, and polls as a safety net so that a task row written by
plain SQL is dispatched too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from dispatcher import metrics
from dispatcher.catalog.records import Assignment, CancelOrder
from dispatcher.errors import CatalogUnavailable
from schemas.states import AttemptKey

logger = logging.getLogger(__name__)

HOUSEKEEPING_EVERY_S = 0.2
"""The republish check and the cancel delivery run at most this often: a busy master is
woken for every status batch, and two queries each time were a tenth of its CPU, while a
cancel or a republish 0.2 s later changes nothing that matters."""


class DispatchCatalog(Protocol):
    def claim_tasks(self, limit: int, published: Sequence[AttemptKey] = ()) -> list[Assignment]: ...

    def mark_published(self, attempts: Sequence[AttemptKey]) -> None: ...

    def unpublished_assignments(self, older_than_s: float) -> list[Assignment]: ...

    def pending_cancels(self) -> list[CancelOrder]: ...

    def mark_cancels_sent(self, orders: Sequence[CancelOrder]) -> None: ...


class DispatchPublisher(Protocol):
    def assign(self, assignments: Sequence[Assignment]) -> list[bool]: ...

    def cancel(self, orders: Sequence[CancelOrder]) -> list[bool]: ...

    def keepalive(self) -> None: ...


class Dispatcher:
    def __init__(
        self,
        catalog: DispatchCatalog,
        publisher: DispatchPublisher,
        *,
        batch_size: int,
        poll_interval_s: float,
        republish_after_s: float,
    ) -> None:
        self._catalog = catalog
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._republish_after_s = republish_after_s
        self._unmarked: list[AttemptKey] = []
        """Confirmed attempts not yet flagged published: the next claim flags them in its
        own transaction (one commit less per pass), or the pass's end does when idle."""
        self.wake = threading.Event()
        self._housekeeping_due = 0.0
        self._housekeeping_skipped = False
        """``time.monotonic()`` from which the next pass republishes and cancels."""

    def run(self, stop: threading.Event) -> None:
        """Dispatch until ``stop`` is set. A catalog outage is waited out, not fatal."""
        while not stop.is_set():
            self.wake.wait(self._next_wait())
            self.wake.clear()
            if stop.is_set():
                break
            self._publisher.keepalive()  # an idle poll publishes nothing to keep it up
            try:
                self.run_once()
            except CatalogUnavailable as exc:
                metrics.CATALOG_ERRORS.labels(loop="dispatch").inc()
                logger.warning("dispatch.catalog_unavailable", extra={"error": str(exc)})
                stop.wait(self._poll_interval_s)
        try:
            self._mark_unmarked()
        except CatalogUnavailable:
            logger.warning("dispatch.unmarked_on_stop", extra={"count": len(self._unmarked)})

    def run_once(self) -> int:
        """One pass: claim and publish until nothing is claimable; republish the outbox;
        deliver pending cancels. Returns the number of attempts confirmed."""
        confirmed = 0
        while True:
            claimed = self._catalog.claim_tasks(self._batch_size, self._unmarked)
            self._unmarked = []  # flagged in that claim's transaction
            confirmed += self._publish(claimed)
            if len(claimed) < self._batch_size:
                break
        if not self.wake.is_set():  # no next pass due at once: flag the rest now
            self._mark_unmarked()
        now = time.monotonic()
        self._housekeeping_skipped = now < self._housekeeping_due
        if self._housekeeping_skipped:
            return confirmed
        self._housekeeping_due = now + HOUSEKEEPING_EVERY_S
        stale = self._catalog.unpublished_assignments(self._republish_after_s)
        if stale:
            metrics.REPUBLISHED.inc(len(stale))
            logger.info("dispatch.republishing", extra={"count": len(stale)})
            confirmed += self._publish(stale)
            self._mark_unmarked()
        self._deliver_cancels()
        return confirmed

    def _next_wait(self) -> float:
        """Until the next poll, or sooner when the last pass skipped its housekeeping."""
        if not self._housekeeping_skipped:
            return self._poll_interval_s
        due = self._housekeeping_due - time.monotonic()
        return min(self._poll_interval_s, max(due, 0.0))

    def _mark_unmarked(self) -> None:
        if self._unmarked:
            self._catalog.mark_published(self._unmarked)
            self._unmarked = []

    def _publish(self, assignments: list[Assignment]) -> int:
        if not assignments:
            return 0
        confirmed = [
            a for a, ok in zip(assignments, self._publisher.assign(assignments), strict=True) if ok
        ]
        if confirmed:
            self._unmarked += [(a.task_id, a.attempt) for a in confirmed]
            metrics.TASKS_DISPATCHED.inc(len(confirmed))
        for a in confirmed:
            logger.debug(
                "dispatch.published",
                extra={"task_id": str(a.task_id), "attempt": a.attempt, "worker": a.worker_id},
            )
        return len(confirmed)

    def _deliver_cancels(self) -> None:
        orders = self._catalog.pending_cancels()
        if not orders:
            return
        sent = [o for o, ok in zip(orders, self._publisher.cancel(orders), strict=True) if ok]
        if sent:
            self._catalog.mark_cancels_sent(sent)
