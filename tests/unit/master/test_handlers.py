"""The master's handlers on the in-memory fakes of :mod:`dispatcher.testing`: what each
verdict is, what reaches the catalog, what is published back and what is counted."""

from __future__ import annotations

import uuid

import pytest

from consumers.master.fetch import FetchHandler
from consumers.master.heartbeat import HeartbeatHandler
from consumers.master.identity import SenderCheck
from consumers.master.status import StatusHandler
from consumers.master.wake import WakeHandler
from dispatcher.broker import ACK, Disposition, Verdict
from dispatcher.broker.topology import FETCH_QUEUE, HEARTBEAT_QUEUE, STATUS_QUEUE
from dispatcher.catalog.records import CancelOrder, ReportOutcome
from dispatcher.errors import CatalogUnavailable, PublishFailed
from dispatcher.metrics import MASTER
from dispatcher.testing import (
    ArchiveReply,
    FakeCatalog,
    FakeOutbound,
    FakePublisher,
    make_delivery,
)
from schemas.messages import (
    MAX_BODY_BYTES,
    AgentHeartbeat,
    CancelReason,
    DecodeReason,
    DispatchWake,
    ProjectFetch,
    RunningAttempt,
    TaskFinished,
    TaskOutcome,
    TaskStarted,
)

HASH = "b" * 64


class Wakes:
    """Counts calls of the ``on_capacity`` / wake callback."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def sample(name: str, **labels: str) -> float:
    return MASTER.get_sample_value(name, labels) or 0.0


def dead_letters(queue: str, reason: str) -> float:
    return sample("scaleout_dead_letters_total", queue=queue, reason=reason)


def all_dead_letters(queue: str) -> float:
    return sum(dead_letters(queue, reason.value) for reason in DecodeReason)


def reports_counted(kind: str, outcome: ReportOutcome) -> float:
    return sample("scaleout_status_reports_total", type=kind, outcome=outcome.value)


def heartbeats_counted(outcome: str) -> float:
    return sample("scaleout_agent_heartbeats_total", outcome=outcome)


def finished(task_id: uuid.UUID | None = None, *, worker: str = "w1") -> TaskFinished:
    return TaskFinished(
        task_id=task_id or uuid.uuid4(),
        attempt=1,
        execution_id=1,
        worker_id=worker,
        outcome=TaskOutcome.SUCCEEDED,
    )


def started(task_id: uuid.UUID | None = None, *, worker: str = "w1") -> TaskStarted:
    return TaskStarted(task_id=task_id or uuid.uuid4(), attempt=1, execution_id=1, worker_id=worker)


def status_handler(catalog: FakeCatalog, wakes: Wakes | None = None) -> StatusHandler:
    return StatusHandler(catalog, senders=SenderCheck(), on_capacity=wakes or Wakes())


def heartbeat_handler(
    catalog: FakeCatalog, outbound: FakeOutbound, wakes: Wakes | None = None
) -> HeartbeatHandler:
    return HeartbeatHandler(catalog, outbound, senders=SenderCheck(), on_capacity=wakes or Wakes())


# --- status -------------------------------------------------------------------------------


def test_a_report_naming_another_worker_than_its_user_id_is_dead_lettered_as_forged() -> None:
    """The body says w1, the broker says w2: dead-lettered, counted, never applied."""
    catalog = FakeCatalog()
    before = dead_letters(STATUS_QUEUE, "forged_sender")

    verdicts = status_handler(catalog)([make_delivery(started(worker="w1"), user_id="w2")])

    assert verdicts == [Verdict(Disposition.DEAD_LETTER, "forged_sender")]
    assert dead_letters(STATUS_QUEUE, "forged_sender") == before + 1
    assert catalog.report_batches == []


def test_a_report_without_a_user_id_is_dead_lettered_as_forged() -> None:
    """In user_id mode a message the broker did not stamp has no verified sender."""
    catalog = FakeCatalog()

    verdicts = status_handler(catalog)([make_delivery(started(), user_id=None)])

    assert verdicts == [Verdict(Disposition.DEAD_LETTER, "forged_sender")]
    assert catalog.report_batches == []


REFUSED_OUTCOMES = [
    ReportOutcome.STALE,
    ReportOutcome.NOT_HOLDER,
    ReportOutcome.UNKNOWN_ATTEMPT,
    ReportOutcome.UNKNOWN_TASK,
]


@pytest.mark.parametrize("outcome", REFUSED_OUTCOMES)
def test_a_report_the_catalog_refuses_is_acked_and_counted_with_its_outcome(
    outcome: ReportOutcome,
) -> None:
    """Refused by the catalog's fence: acked (a redelivery would change nothing), not
    dead-lettered, counted under that outcome, and it frees no capacity."""
    report = finished()
    catalog = FakeCatalog()
    catalog.script_report(report.task_id, report.attempt, outcome)
    wakes = Wakes()
    counted, dead = reports_counted("task.finished", outcome), all_dead_letters(STATUS_QUEUE)

    verdicts = status_handler(catalog, wakes)([make_delivery(report, user_id="w1")])

    assert verdicts == [ACK]
    assert catalog.reports == [(report, "w1")]
    assert reports_counted("task.finished", outcome) == counted + 1
    assert all_dead_letters(STATUS_QUEUE) == dead
    assert wakes.count == 0


def test_applied_finished_reports_wake_the_dispatcher_once_per_batch() -> None:
    """A finished attempt frees a worker slot: the dispatcher is woken, once for the batch."""
    catalog, wakes = FakeCatalog(), Wakes()
    before = reports_counted("task.finished", ReportOutcome.APPLIED)
    batch = [make_delivery(finished(), user_id="w1") for _ in range(2)]

    verdicts = status_handler(catalog, wakes)(batch)

    assert verdicts == [ACK, ACK]
    assert wakes.count == 1
    assert reports_counted("task.finished", ReportOutcome.APPLIED) == before + 2


def test_an_applied_started_report_frees_no_capacity() -> None:
    catalog, wakes = FakeCatalog(), Wakes()

    verdicts = status_handler(catalog, wakes)([make_delivery(started(), user_id="w1")])

    assert verdicts == [ACK]
    assert len(catalog.reports) == 1
    assert wakes.count == 0


def test_a_redelivered_finished_report_is_a_duplicate_and_wakes_nobody() -> None:
    """The second copy of a finished report is acked as a duplicate: no second wake."""
    catalog, wakes = FakeCatalog(), Wakes()
    handler = status_handler(catalog, wakes)
    report = finished()
    handler([make_delivery(report, user_id="w1")])
    duplicates = reports_counted("task.finished", ReportOutcome.DUPLICATE)

    verdicts = handler([make_delivery(report, user_id="w1", redelivered=True)])

    assert verdicts == [ACK]
    assert wakes.count == 1
    assert reports_counted("task.finished", ReportOutcome.DUPLICATE) == duplicates + 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", DecodeReason.MALFORMED_JSON),
        (b"\xff\xfe", DecodeReason.MALFORMED_JSON),
        (b"[1, 2]", DecodeReason.NOT_AN_OBJECT),
        (b'{"type": "task.exploded", "schema_version": 1}', DecodeReason.UNKNOWN_TYPE),
        (b'{"type": "task.started", "schema_version": 99}', DecodeReason.SCHEMA_VERSION),
        (b'{"type": "task.started", "schema_version": 1}', DecodeReason.INVALID),
        (b" " * (MAX_BODY_BYTES + 1), DecodeReason.OVERSIZED),
        (AgentHeartbeat(worker_id="w1").model_dump_json().encode(), DecodeReason.UNEXPECTED_TYPE),
    ],
)
def test_an_undecodable_status_body_is_dead_lettered_with_its_decode_reason(
    body: bytes, reason: DecodeReason
) -> None:
    catalog = FakeCatalog()
    before = dead_letters(STATUS_QUEUE, reason.value)

    verdicts = status_handler(catalog)([make_delivery(body, user_id="w1")])

    assert verdicts == [Verdict(Disposition.DEAD_LETTER, reason.value)]
    assert dead_letters(STATUS_QUEUE, reason.value) == before + 1
    assert catalog.report_batches == []


def test_a_mixed_batch_gets_its_verdicts_in_delivery_order_and_one_transaction() -> None:
    catalog = FakeCatalog()
    good_1, good_2 = started(), finished()
    batch = [
        make_delivery(good_1, user_id="w1"),
        make_delivery(b"garbage", user_id="w1"),
        make_delivery(started(worker="w1"), user_id="w2"),
        make_delivery(good_2, user_id="w1"),
    ]

    verdicts = status_handler(catalog)(batch)

    assert verdicts == [
        ACK,
        Verdict(Disposition.DEAD_LETTER, "malformed_json"),
        Verdict(Disposition.DEAD_LETTER, "forged_sender"),
        ACK,
    ]
    assert catalog.report_batches == [[(good_1, "w1"), (good_2, "w1")]]


def test_a_catalog_outage_propagates_so_the_consumer_requeues_the_batch() -> None:
    """The handler does not swallow it: the Consumer requeues a batch whose handler raised."""
    catalog = FakeCatalog()
    catalog.fail_next()

    with pytest.raises(CatalogUnavailable):
        status_handler(catalog)([make_delivery(finished(), user_id="w1")])


def test_shared_user_mode_takes_the_sender_from_the_body() -> None:
    catalog = FakeCatalog()
    handler = StatusHandler(catalog, senders=SenderCheck("shared_user"))
    report = started(worker="w7")

    verdicts = handler([make_delivery(report, user_id="scaleout")])

    assert verdicts == [ACK]
    assert catalog.reports == [(report, "w7")]


# --- heartbeat ----------------------------------------------------------------------------


def test_an_unknown_workers_heartbeat_registers_it_disabled_without_queues_or_a_wake() -> None:
    """Registered disabled, as SSIS does: no queues are declared for it and no dispatch
    pass runs, since nothing is sent to it until an operator enables it."""
    catalog, outbound, wakes = FakeCatalog(), FakeOutbound(), Wakes()
    before = heartbeats_counted("registered")

    verdicts = heartbeat_handler(catalog, outbound, wakes)(
        [make_delivery(AgentHeartbeat(worker_id="w9"), user_id="w9")]
    )

    assert verdicts == [ACK]
    assert catalog.workers == {"w9": False}
    assert outbound.ensured == []
    assert wakes.count == 0
    assert heartbeats_counted("registered") == before + 1


def test_an_enabled_workers_queues_are_declared_at_its_first_heartbeat_only() -> None:
    catalog, outbound, wakes = FakeCatalog(workers={"w1": True}), FakeOutbound(), Wakes()
    handler = heartbeat_handler(catalog, outbound, wakes)
    before = heartbeats_counted("recorded")

    for _ in range(2):
        assert handler([make_delivery(AgentHeartbeat(worker_id="w1"), user_id="w1")]) == [ACK]

    assert outbound.ensured == ["w1"]
    assert wakes.count == 2  # enabled and accepting: each beat may mean room
    assert heartbeats_counted("recorded") == before + 2


def test_a_heartbeat_that_accepts_no_work_does_not_wake_the_dispatcher() -> None:
    catalog, outbound, wakes = FakeCatalog(workers={"w1": True}), FakeOutbound(), Wakes()
    beat = AgentHeartbeat(worker_id="w1", accepting=False)

    heartbeat_handler(catalog, outbound, wakes)([make_delivery(beat, user_id="w1")])

    assert wakes.count == 0


def test_a_heartbeat_saying_why_it_refuses_work_is_taken() -> None:
    """The worker's free_disk_mb and not_accepting decode on the master's queue."""
    catalog, outbound, wakes = FakeCatalog(workers={"w1": True}), FakeOutbound(), Wakes()
    beat = AgentHeartbeat(
        worker_id="w1", free_disk_mb=80, accepting=False, not_accepting="free disk 80 MB < 500 MB"
    )

    verdicts = heartbeat_handler(catalog, outbound, wakes)([make_delivery(beat, user_id="w1")])

    assert verdicts == [ACK]
    assert [b.not_accepting for b, _ in catalog.heartbeats] == ["free disk 80 MB < 500 MB"]
    assert wakes.count == 0


@pytest.mark.parametrize(
    ("holder", "stop", "reasons"),
    [
        ("w1", False, []),
        ("w1", True, [CancelReason.STOP_REQUESTED]),
        ("w2", False, [CancelReason.STALE_ATTEMPT]),
        (None, False, [CancelReason.STALE_ATTEMPT]),
    ],
)
def test_a_heartbeat_is_answered_with_a_cancel_for_each_attempt_it_must_stop(
    holder: str | None, stop: bool, reasons: list[CancelReason]
) -> None:
    """An attempt it holds is renewed; one it holds but must stop, or one it does not hold
    (another worker's, or none's), is cancelled with that reason."""
    task_id = uuid.uuid4()
    catalog, outbound = FakeCatalog(workers={"w1": True}), FakeOutbound()
    if holder is not None:
        catalog.hold(task_id, 1, holder, execution_id=5)
    if stop:
        catalog.request_stop(task_id, 1)
    beat = AgentHeartbeat(
        worker_id="w1", running=(RunningAttempt(task_id=task_id, attempt=1, execution_id=5),)
    )

    verdicts = heartbeat_handler(catalog, outbound)([make_delivery(beat, user_id="w1")])

    assert verdicts == [ACK]
    assert outbound.cancels == [CancelOrder(task_id, 1, 5, "w1", reason) for reason in reasons]


def test_a_forged_heartbeat_is_dead_lettered_and_never_recorded() -> None:
    catalog, outbound = FakeCatalog(), FakeOutbound()
    counted = heartbeats_counted("forged_sender")
    dead = dead_letters(HEARTBEAT_QUEUE, "forged_sender")

    verdicts = heartbeat_handler(catalog, outbound)(
        [make_delivery(AgentHeartbeat(worker_id="w1"), user_id="w2")]
    )

    assert verdicts == [Verdict(Disposition.DEAD_LETTER, "forged_sender")]
    assert heartbeats_counted("forged_sender") == counted + 1
    assert dead_letters(HEARTBEAT_QUEUE, "forged_sender") == dead + 1
    assert catalog.heartbeat_batches == []
    assert catalog.workers == {}


def test_a_heartbeat_a_worker_published_reaches_the_handler_with_its_login_as_sender() -> None:
    """Round trip through the fakes: the publisher's user_id is what the handler verifies."""
    publisher = FakePublisher(user_id="w3")
    publisher.publish("scaleout.heartbeat", "heartbeat", AgentHeartbeat(worker_id="w3"))
    catalog = FakeCatalog()

    verdicts = heartbeat_handler(catalog, FakeOutbound())(
        [p.as_delivery() for p in publisher.published]
    )

    assert verdicts == [ACK]
    assert [sender for _, sender in catalog.heartbeats] == ["w3"]


# --- fetch --------------------------------------------------------------------------------


def test_a_fetch_is_answered_with_the_archive_to_the_verified_sender() -> None:
    catalog, outbound = FakeCatalog(), FakeOutbound()
    content_hash = catalog.add_archive(b"PK\x03\x04 a project")
    fetch = ProjectFetch(worker_id="w1", project_hash=content_hash)

    verdicts = FetchHandler(catalog, outbound, senders=SenderCheck())(
        [make_delivery(fetch, user_id="w1")]
    )

    assert verdicts == [ACK]
    assert outbound.archives == [ArchiveReply("w1", content_hash, b"PK\x03\x04 a project")]


def test_a_fetch_for_an_unknown_hash_is_answered_with_none() -> None:
    """The worker is told the archive is not there, rather than left to time out."""
    catalog, outbound = FakeCatalog(), FakeOutbound()
    fetch = ProjectFetch(worker_id="w1", project_hash=HASH)

    verdicts = FetchHandler(catalog, outbound, senders=SenderCheck())(
        [make_delivery(fetch, user_id="w1")]
    )

    assert verdicts == [ACK]
    assert outbound.archives == [ArchiveReply("w1", HASH, None)]


def test_a_forged_fetch_is_dead_lettered_and_neither_read_nor_answered() -> None:
    catalog, outbound = FakeCatalog(), FakeOutbound()
    catalog.add_archive(b"secret project")
    before = dead_letters(FETCH_QUEUE, "forged_sender")
    fetch = ProjectFetch(worker_id="w1", project_hash=HASH)

    verdicts = FetchHandler(catalog, outbound, senders=SenderCheck())(
        [make_delivery(fetch, user_id="w2")]
    )

    assert verdicts == [Verdict(Disposition.DEAD_LETTER, "forged_sender")]
    assert dead_letters(FETCH_QUEUE, "forged_sender") == before + 1
    assert catalog.archive_requests == []
    assert outbound.archives == []


def test_a_fetch_whose_reply_cannot_be_published_raises_so_it_is_requeued() -> None:
    catalog, outbound = FakeCatalog(), FakeOutbound()
    outbound.fail_next()
    fetch = ProjectFetch(worker_id="w1", project_hash=HASH)

    with pytest.raises(PublishFailed):
        FetchHandler(catalog, outbound, senders=SenderCheck())([make_delivery(fetch, user_id="w1")])


# --- wake ---------------------------------------------------------------------------------


def test_the_wake_handler_acks_every_delivery_and_wakes_once() -> None:
    """Any body is a wake, even one that is not a message; a batch is one dispatch pass."""
    wakes = Wakes()
    batch = [
        make_delivery(DispatchWake(execution_id=1), user_id="operator"),
        make_delivery(b"not even json", user_id=None),
        make_delivery(DispatchWake(), user_id="master"),
    ]

    verdicts = WakeHandler(wakes)(batch)

    assert verdicts == [ACK, ACK, ACK]
    assert wakes.count == 1
