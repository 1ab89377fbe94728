"""The dispatch loop's bookkeeping, on in-memory fakes of the catalog and the publisher:
which attempts are flagged published, and in which transaction."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from dispatcher.catalog.records import Assignment, CancelOrder
from dispatcher.dispatch import Dispatcher
from schemas.states import AttemptKey


def assignment() -> Assignment:
    return Assignment(
        task_id=uuid.uuid4(),
        attempt=1,
        execution_id=1,
        worker_id="w1",
        folder="F",
        project="P",
        package="Load",
        project_lsn=1,
        project_hash="a" * 64,
        parameters=(),
        use32bitruntime=False,
        max_attempts=1,
        lease_expires_at=datetime.now(UTC),
    )


class FakeCatalog:
    """Hands out the queued batches; records every transaction that flags attempts."""

    def __init__(self, *batches: list[Assignment]) -> None:
        self.batches = list(batches)
        self.claims: list[list[AttemptKey]] = []
        self.marks: list[list[AttemptKey]] = []

    def claim_tasks(self, limit: int, published: Sequence[AttemptKey] = ()) -> list[Assignment]:
        self.claims.append(list(published))
        return self.batches.pop(0)[:limit] if self.batches else []

    def mark_published(self, attempts: Sequence[AttemptKey]) -> None:
        self.marks.append(list(attempts))

    def unpublished_assignments(self, older_than_s: float) -> list[Assignment]:
        return []

    def pending_cancels(self) -> list[CancelOrder]:
        return []

    def mark_cancels_sent(self, orders: Sequence[CancelOrder]) -> None:
        raise AssertionError("no cancels here")

    def flagged(self) -> list[AttemptKey]:
        return [key for batch in self.claims + self.marks for key in batch]


class FakePublisher:
    """Confirms every assignment except those in ``refuse``."""

    def __init__(self, refuse: set[uuid.UUID] | None = None) -> None:
        self.refuse = refuse or set()

    def assign(self, assignments: Sequence[Assignment]) -> list[bool]:
        return [a.task_id not in self.refuse for a in assignments]

    def cancel(self, orders: Sequence[CancelOrder]) -> list[bool]:
        return [True for _ in orders]


def dispatcher(catalog: FakeCatalog, publisher: FakePublisher) -> Dispatcher:
    return Dispatcher(
        catalog, publisher, batch_size=2, poll_interval_s=0.05, republish_after_s=10.0
    )


def key(a: Assignment) -> AttemptKey:
    return (a.task_id, a.attempt)


def test_a_busy_dispatcher_flags_attempts_in_the_next_claim() -> None:
    """When a wake is already due, the confirmed attempts ride in the next claim's
    transaction instead of a commit of their own."""
    first = [assignment()]
    catalog = FakeCatalog(first, [])
    d = dispatcher(catalog, FakePublisher())
    d.wake.set()  # e.g. a finished report freed a slot meanwhile

    assert d.run_once() == 1
    assert catalog.marks == []
    d.wake.clear()
    d.run_once()

    assert catalog.claims[1] == [key(first[0])]
    assert catalog.marks == []


def test_an_idle_dispatcher_flags_attempts_at_the_end_of_its_pass() -> None:
    """No next pass due: the confirmed attempts are flagged before the pass ends, so the
    republish check never sees them as unconfirmed."""
    only = assignment()
    catalog = FakeCatalog([only])
    d = dispatcher(catalog, FakePublisher())

    assert d.run_once() == 1

    assert catalog.claims == [[]]
    assert catalog.marks == [[key(only)]]


def test_a_full_batch_flags_its_attempts_in_the_following_claim() -> None:
    """A full batch claims again in the same pass, and that claim flags the first."""
    batch = [assignment(), assignment()]
    catalog = FakeCatalog(batch, [])
    d = dispatcher(catalog, FakePublisher())

    assert d.run_once() == 2

    assert catalog.claims == [[], [key(a) for a in batch]]
    assert catalog.marks == []


def test_an_unconfirmed_publish_is_never_flagged() -> None:
    """Only confirmed attempts are flagged; the other stays the outbox's to republish."""
    kept, lost = assignment(), assignment()
    catalog = FakeCatalog([kept, lost], [])
    d = dispatcher(catalog, FakePublisher(refuse={lost.task_id}))

    d.run_once()
    d.run_once()

    assert catalog.flagged() == [key(kept)]


def test_stopping_flags_what_is_left() -> None:
    """A stop right after a publish still flags the confirmed attempt."""
    first = [assignment()]
    catalog = FakeCatalog(first)
    d = dispatcher(catalog, FakePublisher())
    stop = threading.Event()
    d.wake.set()
    thread = threading.Thread(target=d.run, args=(stop,))
    thread.start()
    stop.set()
    d.wake.set()
    thread.join(5)

    assert catalog.flagged() == [key(first[0])]
