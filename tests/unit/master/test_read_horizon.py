"""Issue 14 on the fakes: a lease is judged only on what the master has read; a refused
report is answered; what one heartbeat can make the master publish is bounded."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

from consumers.master.heartbeat import MAX_CANCELS_PER_HEARTBEAT, HeartbeatHandler
from consumers.master.identity import SenderCheck
from consumers.master.replies import MAX_PER_BATCH, RefusalReplies
from consumers.master.status import StatusHandler
from dispatcher import timers
from dispatcher.broker import ACK
from dispatcher.broker.topology import HEARTBEAT_QUEUE, STATUS_QUEUE
from dispatcher.catalog.records import CleanupResult, ExpiredAttempt, ReportOutcome
from dispatcher.horizon import ReadHorizon
from dispatcher.metrics import MASTER
from dispatcher.testing import FakeCatalog, FakeOutbound, make_delivery
from schemas.messages import (
    AgentHeartbeat,
    ReadMarker,
    RefusalReason,
    RunningAttempt,
    TaskFinished,
    TaskOutcome,
    TaskStarted,
)


def sample(name: str, **labels: str) -> float:
    return MASTER.get_sample_value(name, labels) or 0.0


def finished(attempt: int = 1) -> TaskFinished:
    return TaskFinished(
        task_id=uuid.uuid4(),
        attempt=attempt,
        execution_id=1,
        worker_id="w1",
        outcome=TaskOutcome.SUCCEEDED,
    )


class Handlers:
    """The status and heartbeat handlers wired to one horizon, as the service wires them;
    the horizon's markers are delivered to the handlers only when a test says so."""

    def __init__(self) -> None:
        self.catalog = FakeCatalog()
        self.outbound = FakeOutbound()
        self.published: list[tuple[str, ReadMarker]] = []
        self.horizon = ReadHorizon(self._publish, timeout_s=2.0)
        self.status = StatusHandler(
            self.catalog,
            senders=SenderCheck(),
            replies=RefusalReplies(self.outbound),
            markers_seen=self.horizon.seen,
        )
        self.heartbeat = HeartbeatHandler(
            self.catalog, self.outbound, senders=SenderCheck(), markers_seen=self.horizon.seen
        )
        self.sent = threading.Event()

    def _publish(self, queue: str, marker: ReadMarker) -> None:
        self.published.append((queue, marker))
        if len(self.published) % 2 == 0:
            self.sent.set()

    def deliver_markers(self) -> None:
        for queue, marker in self.published:
            handler = self.status if queue == STATUS_QUEUE else self.heartbeat
            assert handler([make_delivery(marker, user_id="scaleout-master")]) == [ACK]


def test_the_horizon_is_reached_only_when_both_handlers_have_read_their_marker() -> None:
    handlers = Handlers()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(handlers.horizon.reached()))
    waiter.start()
    assert handlers.sent.wait(5)
    _queue, marker = handlers.published[0]
    handlers.status([make_delivery(marker, user_id="scaleout-master")])  # one of two
    assert waiter.is_alive()
    handlers.heartbeat([make_delivery(handlers.published[1][1], user_id="x")])
    waiter.join(5)

    assert result == [True]
    assert {q for q, _ in handlers.published} == {STATUS_QUEUE, HEARTBEAT_QUEUE}


def test_unread_markers_time_out_and_the_sweep_is_deferred() -> None:
    """Nothing reads the markers (a paused consumer, a backlog): no lease is judged."""
    handlers = Handlers()
    handlers.horizon = ReadHorizon(handlers._publish, timeout_s=0.2)
    catalog = _Sweeping()
    deferred = sample("scaleout_expiry_sweeps_total", outcome="deferred_unread")

    timers.deal_with_expired_tasks(catalog, lambda: None, horizon=handlers.horizon)

    assert catalog.swept == []
    assert sample("scaleout_expiry_sweeps_total", outcome="deferred_unread") == deferred + 1


def test_the_sweep_judges_only_leases_that_lapsed_before_it_sent_its_markers() -> None:
    """The cutoff is the database's now read before the markers went out."""
    handlers = Handlers()
    catalog = _Sweeping()
    sweeper = threading.Thread(
        target=timers.deal_with_expired_tasks,
        args=(catalog, lambda: None),
        kwargs={"horizon": handlers.horizon},
    )
    sweeper.start()
    assert handlers.sent.wait(5)
    catalog.clock += timedelta(seconds=30)  # a pause after the markers were sent
    handlers.deliver_markers()
    sweeper.join(5)

    assert catalog.swept == [catalog.start]


def test_a_marker_nobody_waits_for_is_acked_and_counted_foreign() -> None:
    handlers = Handlers()
    before = sample("scaleout_read_markers_total", outcome="foreign")
    stray = ReadMarker(master="elsewhere:1", token=uuid.uuid4())

    verdicts = handlers.status([make_delivery(stray, user_id="w1")])

    assert verdicts == [ACK]
    assert sample("scaleout_read_markers_total", outcome="foreign") == before + 1
    assert handlers.catalog.report_batches == []


def test_a_marker_is_seen_only_after_the_reports_before_it_are_applied() -> None:
    """Reports and the marker in one batch: the marker counts once the batch committed."""
    handlers = Handlers()
    order: list[str] = []
    apply = handlers.catalog.apply_status_reports

    def recording(reports: object) -> object:
        order.append("applied")
        return apply(reports)  # type: ignore[arg-type]

    handlers.catalog.apply_status_reports = recording  # type: ignore[method-assign]
    token_seen = handlers.horizon.seen

    def seen(queue: str, marker: ReadMarker) -> None:
        order.append("seen")
        token_seen(queue, marker)

    status = StatusHandler(handlers.catalog, senders=SenderCheck(), markers_seen=seen)
    marker = ReadMarker(master="m", token=uuid.uuid4())
    status([make_delivery(finished(), user_id="w1"), make_delivery(marker, user_id="m")])

    assert order == ["applied", "seen"]


def test_a_refused_report_is_answered_to_its_sender_once_per_attempt() -> None:
    handlers = Handlers()
    report = finished()
    handlers.catalog.script_report(report.task_id, report.attempt, ReportOutcome.NOT_HOLDER)
    progress = TaskStarted(task_id=report.task_id, attempt=1, execution_id=1, worker_id="w1")
    handlers.catalog.script_report(report.task_id, report.attempt, ReportOutcome.NOT_HOLDER)

    handlers.status([make_delivery(report, user_id="w1")])
    handlers.status([make_delivery(progress, user_id="w1")])  # the same attempt again

    [(worker, reply)] = handlers.outbound.refusals
    assert worker == "w1"
    assert (reply.task_id, reply.attempt, reply.report_type) == (
        report.task_id,
        1,
        "task.finished",
    )
    assert reply.reason is RefusalReason.NOT_HOLDER


def test_applied_and_duplicate_reports_get_no_reply() -> None:
    handlers = Handlers()
    report = finished()

    handlers.status([make_delivery(report, user_id="w1")])
    handlers.status([make_delivery(report, user_id="w1")])

    assert handlers.outbound.refusals == []


def test_replies_to_a_flood_of_refused_reports_are_bounded_per_batch() -> None:
    handlers = Handlers()
    reports = [finished() for _ in range(MAX_PER_BATCH + 50)]
    for report in reports:
        handlers.catalog.script_report(report.task_id, report.attempt, ReportOutcome.UNKNOWN_TASK)
    suppressed = sample("scaleout_refusals_sent_total", outcome="suppressed")

    handlers.status([make_delivery(r, user_id="w1") for r in reports])

    assert len(handlers.outbound.refusals) == MAX_PER_BATCH
    assert sample("scaleout_refusals_sent_total", outcome="suppressed") == suppressed + 50


def test_one_heartbeat_inventing_attempts_gets_a_bounded_number_of_cancels() -> None:
    """10,000 invented running attempts (the fault run's 0.9 MB heartbeat) would be 10,000
    cancels; the schema caps the list at 1,024 and the handler the cancels at 64."""
    handlers = Handlers()
    handlers.catalog.add_worker("w1", enabled=True)
    running = tuple(
        RunningAttempt(task_id=uuid.uuid4(), attempt=1, execution_id=1) for _ in range(1000)
    )
    capped = sample("scaleout_cancels_capped_total")

    beat = AgentHeartbeat(worker_id="w1", running=running)
    handlers.heartbeat([make_delivery(beat, user_id="w1")])

    assert len(handlers.outbound.cancels) == MAX_CANCELS_PER_HEARTBEAT
    assert sample("scaleout_cancels_capped_total") == capped + 1000 - MAX_CANCELS_PER_HEARTBEAT


class _Sweeping:
    """A TimerCatalog with a settable database clock that records each sweep's cutoff."""

    def __init__(self) -> None:
        self.start = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
        self.clock = self.start
        self.swept: list[datetime | None] = []

    def master_heartbeat(self, properties: object) -> None: ...

    def database_now(self) -> datetime:
        return self.clock

    def expire_leases(self, as_of: datetime | None = None) -> list[ExpiredAttempt]:
        self.swept.append(as_of)
        return []

    def cleanup_completed_jobs(self, minutes_to_keep: int = 60) -> CleanupResult:
        raise NotImplementedError
