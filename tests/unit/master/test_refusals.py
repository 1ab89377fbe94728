"""Refused messages reach the claimed worker's row cheaply: the handlers note each one,
:class:`Refusals` keeps the latest per worker and writes them at most once a second, in one
call, and a catalog outage keeps them for the next write."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from consumers.master.fetch import FetchHandler
from consumers.master.heartbeat import HeartbeatHandler
from consumers.master.identity import SenderCheck
from consumers.master.refusals import Refusals
from consumers.master.status import StatusHandler
from dispatcher.catalog.records import Refusal, ReportOutcome
from dispatcher.errors import CatalogUnavailable
from dispatcher.testing import FakeCatalog, FakeOutbound, make_delivery
from schemas.messages import AgentHeartbeat, ProjectFetch, TaskFinished, TaskOutcome


class Sink:
    """The catalog's ``record_refusals``, recorded; ``fail`` makes the next write raise."""

    def __init__(self) -> None:
        self.writes: list[list[Refusal]] = []
        self.fail = False

    def record_refusals(self, refusals: Sequence[Refusal]) -> None:
        if self.fail:
            self.fail = False
            raise CatalogUnavailable("the catalog is down")
        self.writes.append(list(refusals))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def finished(worker: str, task_id: uuid.UUID | None = None) -> TaskFinished:
    return TaskFinished(
        task_id=task_id or uuid.uuid4(),
        attempt=1,
        execution_id=7,
        worker_id=worker,
        outcome=TaskOutcome.SUCCEEDED,
    )


def test_a_flood_is_one_write_a_second_with_the_latest_per_worker() -> None:
    sink, clock = Sink(), Clock()
    refusals = Refusals(sink, clock=clock)

    refusals.note("w1", "stale", "first")
    first = refusals.flush()
    for n in range(1000):
        refusals.note("w1", "forged_sender", f"flood {n}")
        refusals.note("w2", "stale", "w2's")
        refusals.flush()
    clock.now += 0.4
    refusals.flush()
    clock.now += 0.7
    written = refusals.flush()

    assert first == 1
    assert written == 2
    assert len(sink.writes) == 2
    assert [(r.worker_id, r.reason, r.detail) for r in sink.writes[1]] == [
        ("w1", "forged_sender", "flood 999"),
        ("w2", "stale", "w2's"),
    ]
    assert [round(r.age_s, 3) for r in sink.writes[1]] == [1.1, 1.1]


def test_a_failed_write_keeps_the_refusals_for_the_next_one() -> None:
    sink, clock = Sink(), Clock()
    refusals = Refusals(sink, clock=clock)
    refusals.note("w1", "stale", "kept")
    sink.fail = True

    assert refusals.flush() == 0
    clock.now += 2
    assert refusals.flush() == 1
    assert [(r.detail, r.age_s) for r in sink.writes[0]] == [("kept", 2.0)]


def test_memory_is_bounded_by_the_number_of_workers() -> None:
    refusals = Refusals(Sink(), max_workers=2)

    for worker in ("a", "b", "c", "a"):
        refusals.note(worker, "forged_sender", "x")

    assert refusals.dropped == 1


def test_the_handlers_note_forged_bodies_on_the_claimed_worker() -> None:
    """A body claiming w1 from login guest, on each of the three queues."""
    sink = Sink()
    refusals = Refusals(sink, interval_s=0.0)
    catalog, outbound = FakeCatalog(), FakeOutbound()
    senders = SenderCheck("user_id")
    status = StatusHandler(catalog, senders=senders, refusals=refusals)
    beats = HeartbeatHandler(catalog, outbound, senders=senders, refusals=refusals)
    fetch = FetchHandler(catalog, outbound, senders=senders, refusals=refusals)

    status([make_delivery(finished("w1"), user_id="guest")])
    beats([make_delivery(AgentHeartbeat(worker_id="w1"), user_id="guest")])
    fetch([make_delivery(ProjectFetch(worker_id="w1", project_hash="a" * 64), user_id="guest")])

    assert [(r.worker_id, r.reason, r.detail) for [r] in sink.writes] == [
        ("w1", "forged_sender", "task.finished: body says w1, broker says guest"),
        ("w1", "forged_sender", "agent.heartbeat: body says w1, broker says guest"),
        ("w1", "forged_sender", "project.fetch: body says w1, broker says guest"),
    ]


def test_reports_the_catalog_refuses_are_noted_on_the_sender() -> None:
    """Stale and not-its-own reports are noted; applied and duplicate ones are not."""
    sink = Sink()
    catalog = FakeCatalog()
    stale, forged = uuid.uuid4(), uuid.uuid4()
    catalog.script_report(stale, 1, ReportOutcome.STALE)
    catalog.script_report(forged, 1, ReportOutcome.NOT_HOLDER)
    handler = StatusHandler(
        catalog, senders=SenderCheck("user_id"), refusals=Refusals(sink, interval_s=0.0)
    )

    handler(
        [
            make_delivery(finished("w1", stale), user_id="w1"),
            make_delivery(finished("w2", forged), user_id="w2"),
            make_delivery(finished("w3"), user_id="w3"),
        ]
    )

    assert [(r.worker_id, r.reason, r.detail) for r in sink.writes[0]] == [
        (
            "w1",
            "stale",
            "task.finished of execution 7 attempt 1: an older attempt, or a state the task "
            "has moved past",
        ),
        ("w2", "not_holder", "task.finished of execution 7 attempt 1: an attempt this "
         "worker does not hold"),
    ]  # fmt: skip
