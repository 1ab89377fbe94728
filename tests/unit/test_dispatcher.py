"""The dispatch loop's bookkeeping, on the in-memory catalog and outbound of
:mod:`dispatcher.testing`: which attempts are flagged published, and in which transaction."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

from dispatcher.catalog.records import Assignment
from dispatcher.dispatch import Dispatcher
from dispatcher.testing import FakeCatalog, FakeOutbound
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


def dispatcher(catalog: FakeCatalog, outbound: FakeOutbound) -> Dispatcher:
    return Dispatcher(catalog, outbound, batch_size=2, poll_interval_s=0.05, republish_after_s=10.0)


def key(a: Assignment) -> AttemptKey:
    return (a.task_id, a.attempt)


def test_a_busy_dispatcher_flags_attempts_in_the_next_claim() -> None:
    """When a wake is already due, the confirmed attempts ride in the next claim's
    transaction instead of a commit of their own."""
    first = assignment()
    catalog = FakeCatalog(pending=[first])
    d = dispatcher(catalog, FakeOutbound())
    d.wake.set()  # e.g. a finished report freed a slot meanwhile

    assert d.run_once() == 1
    assert catalog.marks == []
    d.wake.clear()
    d.run_once()

    assert catalog.claims[1] == [key(first)]
    assert catalog.marks == []


def test_an_idle_dispatcher_flags_attempts_at_the_end_of_its_pass() -> None:
    """No next pass due: the confirmed attempts are flagged before the pass ends, so the
    republish check never sees them as unconfirmed."""
    only = assignment()
    catalog = FakeCatalog(pending=[only])
    d = dispatcher(catalog, FakeOutbound())

    assert d.run_once() == 1

    assert catalog.claims == [[]]
    assert catalog.marks == [[key(only)]]


def test_a_full_batch_flags_its_attempts_in_the_following_claim() -> None:
    """A full batch claims again in the same pass, and that claim flags the first."""
    batch = [assignment(), assignment()]
    catalog = FakeCatalog(pending=batch)
    d = dispatcher(catalog, FakeOutbound())

    assert d.run_once() == 2

    assert catalog.claims == [[], [key(a) for a in batch]]
    assert catalog.marks == []


def test_an_unconfirmed_publish_is_never_flagged() -> None:
    """Only confirmed attempts are flagged; the other stays the outbox's to republish."""
    kept, lost = assignment(), assignment()
    catalog = FakeCatalog(pending=[kept, lost])
    d = dispatcher(catalog, FakeOutbound(refuse={lost.task_id}))

    d.run_once()
    d.run_once()

    assert catalog.flagged == [key(kept)]


def test_stopping_flags_what_is_left() -> None:
    """A stop right after a publish still flags the confirmed attempt."""
    first = assignment()
    catalog = FakeCatalog(pending=[first])
    d = dispatcher(catalog, FakeOutbound())
    stop = threading.Event()
    d.wake.set()
    thread = threading.Thread(target=d.run, args=(stop,))
    thread.start()
    stop.set()
    d.wake.set()
    thread.join(5)

    assert catalog.flagged == [key(first)]
