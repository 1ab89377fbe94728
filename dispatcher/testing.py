"""In-memory fakes of scaleout's own seams, for unit tests of the master's handlers, the
dispatch loop and the worker's publishers.

This is test support shipped with the package, as procrastinate ships ``testing.py``
(its ``InMemoryConnector``) and httpx its mock transport: code that drives a handler or a
loop imports the fakes from here instead of writing its own. They fake *our* protocols,
never a driver: nothing here stands in for pika, SQLAlchemy or pyodbc, and nothing here
imports them (``dispatcher.broker`` is used only for :class:`Delivery`).

- :class:`FakePublisher`: :class:`dispatcher.broker.Publisher`'s ``publish`` /
  ``publish_batch`` / ``close``; records what the broker would have confirmed, and can
  be told to fail the next N calls with a :mod:`dispatcher.errors` class. Satisfies the
  worker's ``HeartbeatPublisher`` and ``PublisherLike`` too.
- :class:`FakeOutbound`: the master's publishing side (:class:`dispatcher.outbound.Outbound`):
  ``assign``, ``cancel``, ``archive``, ``ensure_worker``, ``wake``.
- :class:`FakeCatalog`: the catalog operations the handlers and the dispatcher call, with
  scriptable outcomes (report outcomes per attempt, workers, held leases, stops, archives).
- :func:`make_delivery`: a :class:`dispatcher.broker.Delivery` from a message or raw bytes,
  with the AMQP ``user_id`` the test chooses (the broker's word on who sent it).

The fakes keep the real side's observable rules where a handler depends on them (e.g. an
unknown worker's heartbeat registers it disabled; a batch publish reports errors per item
rather than raising), and are safe to call from the thread a loop under test runs on.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel

from dispatcher.broker import Delivery
from dispatcher.catalog.records import (
    Assignment,
    CancelOrder,
    HeartbeatResult,
    ReportOutcome,
    ReportResult,
)
from dispatcher.errors import BrokerError, CatalogError, CatalogUnavailable, PublishFailed
from schemas.messages import (
    AgentHeartbeat,
    CancelReason,
    ReadMarker,
    StatusReport,
    TaskAssign,
    TaskFinished,
    TaskRefused,
    TaskStarted,
)
from schemas.states import AttemptKey

__all__ = [
    "ArchiveReply",
    "FakeCatalog",
    "FakeOutbound",
    "FakePublisher",
    "Published",
    "make_assign",
    "make_delivery",
]

_TAGS: Final = itertools.count(1)
"""Delivery tags for :func:`make_delivery`: unique in a test process, as on a channel."""


def make_assign(
    *, lease_s: float = 60.0, sent_at: datetime | None = None, **fields: Any
) -> TaskAssign:
    """A valid ``task.assign`` for worker w1, attempt 1 of a fresh task, its lease
    ``lease_s`` from ``sent_at`` (now); ``fields`` replace any other field."""
    sent = sent_at or datetime.now(UTC)
    values: dict[str, Any] = {
        "task_id": uuid.uuid4(),
        "attempt": 1,
        "execution_id": 1,
        "worker_id": "w1",
        "folder": "F",
        "project": "P",
        "package": "Pkg",
        "project_lsn": 1,
        "project_hash": "a" * 64,
        "sent_at": sent,
        "lease_expires_at": sent + timedelta(seconds=lease_s),
    }
    return TaskAssign(**{**values, **fields})


def make_delivery(
    message: BaseModel | bytes,
    *,
    user_id: str | None,
    exchange: str = "",
    routing_key: str = "",
    message_id: str | None = None,
    redelivered: bool = False,
    delivery_tag: int | None = None,
    headers: Mapping[str, object] | None = None,
) -> Delivery:
    """A delivery as :class:`dispatcher.broker.Consumer` hands it to a handler.

    ``message`` is a model (encoded as the Publisher encodes it: its JSON) or a raw body,
    e.g. bytes that are not a message at all. ``user_id`` is the AMQP user_id property,
    which RabbitMQ guarantees is the sender's login; None is a message without one. A
    model's ``message_id`` becomes the property, as the Publisher sets it, unless given."""
    if isinstance(message, BaseModel):
        body = message.model_dump_json().encode()
        if message_id is None:
            own = getattr(message, "message_id", None)
            message_id = None if own is None else str(own)
    else:
        body = message
    return Delivery(
        body=body,
        exchange=exchange,
        routing_key=routing_key,
        user_id=user_id,
        message_id=message_id,
        redelivered=redelivered,
        delivery_tag=next(_TAGS) if delivery_tag is None else delivery_tag,
        headers=dict(headers or {}),
    )


class _Failures:
    """The next ``calls`` calls fail with ``error`` (``None`` calls: every call until
    healed). Shared by the fakes; callers hold the fake's lock."""

    def __init__(self, default: Callable[[], Exception]) -> None:
        self._default = default
        self._left: int | None = 0
        self._error: Exception | None = None

    def arm(self, calls: int | None, error: Exception | None) -> None:
        if calls is not None and calls < 0:
            msg = "calls must be at least 0 (or None: until healed)"
            raise ValueError(msg)
        self._left = calls
        self._error = error

    def take(self) -> Exception | None:
        """The error this call must fail with, or None; counts the call down."""
        if self._left == 0:
            return None
        if self._left is not None:
            self._left -= 1
        return self._error if self._error is not None else self._default()


# --- the broker ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    """One message the broker confirmed, with what the real Publisher would have set."""

    exchange: str
    routing_key: str
    message: BaseModel
    persistent: bool
    user_id: str | None
    """The publisher's ``user_id`` (its login): what the consumer sees as the sender."""

    @property
    def body(self) -> bytes:
        return self.message.model_dump_json().encode()

    @property
    def message_type(self) -> str | None:
        """The AMQP ``type`` property: the message's ``type`` field."""
        kind = getattr(self.message, "type", None)
        return None if kind is None else str(kind)

    def as_delivery(self, *, redelivered: bool = False) -> Delivery:
        """This message as its consumer would receive it."""
        return make_delivery(
            self.message,
            user_id=self.user_id,
            exchange=self.exchange,
            routing_key=self.routing_key,
            redelivered=redelivered,
        )


class FakePublisher:
    """Stands in for :class:`dispatcher.broker.Publisher` (``publish``, ``publish_batch``,
    ``close``), with every publish confirmed unless told otherwise.

    Failing like the real one: after :meth:`fail_next`, ``publish`` raises the error and
    ``publish_batch`` returns it for every item (the real batch reports per item and does
    not raise). Failed publishes are not recorded: the broker does not have them. After
    :meth:`close` the next publish works again, as the real one reconnects."""

    def __init__(self, *, user_id: str | None = None) -> None:
        self.user_id = user_id
        self.published: list[Published] = []
        """What the broker confirmed, in order."""
        self.calls = 0
        """``publish`` and ``publish_batch`` calls, failed ones included."""
        self.closes = 0
        self._failures = _Failures(lambda: PublishFailed("fake: the broker did not confirm"))
        self._lock = threading.Lock()

    def fail_next(self, calls: int | None = 1, error: BrokerError | None = None) -> None:
        """Fail the next ``calls`` calls (None: every call until :meth:`heal`) with
        ``error``, by default PublishFailed; e.g. BrokerUnavailable for a broker down."""
        with self._lock:
            self._failures.arm(calls, error)

    def heal(self) -> None:
        with self._lock:
            self._failures.arm(0, None)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        message: BaseModel,
        *,
        persistent: bool = True,
    ) -> None:
        with self._lock:
            self.calls += 1
            error = self._failures.take()
            if error is not None:
                raise error
            self.published.append(
                Published(exchange, routing_key, message, persistent, self.user_id)
            )

    def publish_batch(
        self, items: Sequence[tuple[str, str, BaseModel]]
    ) -> list[BrokerError | None]:
        with self._lock:
            self.calls += 1
            error = self._failures.take()
            if error is not None:
                assert isinstance(error, BrokerError)
                return [error] * len(items)
            for exchange, routing_key, message in items:
                self.published.append(Published(exchange, routing_key, message, True, self.user_id))
            return [None] * len(items)

    def close(self) -> None:
        with self._lock:
            self.closes += 1

    def messages(self) -> list[BaseModel]:
        """The confirmed messages alone, in order."""
        with self._lock:
            return [p.message for p in self.published]


@dataclass(frozen=True, slots=True)
class ArchiveReply:
    """One :meth:`FakeOutbound.archive` call: the reply a worker's control queue gets."""

    worker_id: str
    project_hash: str
    archive: bytes | None


class FakeOutbound:
    """Stands in for :class:`dispatcher.outbound.Outbound`, the master's publishing side:
    what the dispatcher (``assign``, ``cancel``) and the handlers (``cancel``,
    ``archive``, ``ensure_worker``) publish, recorded at that level.

    ``refuse`` holds task ids whose publishes the broker never confirms (``assign`` and
    ``cancel`` return False for them). Failing like the real one: after :meth:`fail_next`,
    ``assign`` and ``cancel`` return all False (the real one logs the BrokerError), while
    ``archive``, ``ensure_worker`` and ``wake`` raise it."""

    def __init__(self, *, refuse: Iterable[uuid.UUID] = ()) -> None:
        self.keepalives = 0
        self.refuse: set[uuid.UUID] = set(refuse)
        self.assigned: list[Assignment] = []
        """Confirmed assignments, in order."""
        self.cancels: list[CancelOrder] = []
        """Confirmed cancels, in order."""
        self.archives: list[ArchiveReply] = []
        self.ensured: list[str] = []
        """Workers whose queues were declared, one entry per call."""
        self.wakes: list[int | None] = []
        self.refusals: list[tuple[str, TaskRefused]] = []
        """Confirmed ``task.refused`` replies: (worker, message)."""
        self.markers: list[tuple[str, ReadMarker]] = []
        """Read markers published: (queue, marker)."""
        self._failures = _Failures(lambda: PublishFailed("fake: the broker did not confirm"))
        self._lock = threading.Lock()

    def keepalive(self) -> None:
        """Nothing to keep up; counted so a test can see the loops call it."""
        with self._lock:
            self.keepalives += 1

    def fail_next(self, calls: int | None = 1, error: BrokerError | None = None) -> None:
        """Fail the next ``calls`` calls of any method (None: until :meth:`heal`)."""
        with self._lock:
            self._failures.arm(calls, error)

    def heal(self) -> None:
        with self._lock:
            self._failures.arm(0, None)

    def assign(self, assignments: Sequence[Assignment]) -> list[bool]:
        with self._lock:
            if not assignments:
                return []  # the real one publishes nothing, so nothing can fail
            if self._failures.take() is not None:
                return [False] * len(assignments)
            confirmed = [a.task_id not in self.refuse for a in assignments]
            self.assigned += [a for a, ok in zip(assignments, confirmed, strict=True) if ok]
            return confirmed

    def cancel(self, orders: Sequence[CancelOrder]) -> list[bool]:
        with self._lock:
            if not orders:
                return []
            if self._failures.take() is not None:
                return [False] * len(orders)
            sent = [o.task_id not in self.refuse for o in orders]
            self.cancels += [o for o, ok in zip(orders, sent, strict=True) if ok]
            return sent

    def archive(self, worker_id: str, project_hash: str, archive: bytes | None) -> None:
        with self._lock:
            self._raise_if_failing()
            self.archives.append(ArchiveReply(worker_id, project_hash, archive))

    def ensure_worker(self, worker_id: str) -> None:
        with self._lock:
            self._raise_if_failing()
            self.ensured.append(worker_id)

    def wake(self, execution_id: int | None = None) -> None:
        with self._lock:
            self._raise_if_failing()
            self.wakes.append(execution_id)

    def report_refused(
        self, refusals: Sequence[TaskRefused], worker_ids: Sequence[str]
    ) -> list[bool]:
        with self._lock:
            if self._failures.take() is not None:
                return [False] * len(refusals)
            self.refusals += list(zip(worker_ids, refusals, strict=True))
            return [True] * len(refusals)

    def read_marker(self, queue: str, marker: ReadMarker) -> None:
        with self._lock:
            self._raise_if_failing()
            self.markers.append((queue, marker))

    def _raise_if_failing(self) -> None:
        error = self._failures.take()
        if error is not None:
            raise error


# --- the catalog --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Held:
    worker_id: str
    execution_id: int


class FakeCatalog:
    """The catalog operations the master's handlers and the dispatcher call, in memory.

    What it models, as :class:`dispatcher.catalog.Catalog` does:

    - **status reports** (``apply_status_reports``): the result scripted for the report's
      ``(task_id, attempt)`` with :meth:`script_report`; else ``duplicate`` for a
      ``task.started`` or ``task.finished`` already applied for that attempt; else
      ``applied``. An applied ``task.finished`` releases the attempt's lease.
    - **heartbeats** (``record_heartbeats``): an unknown worker is registered, disabled
      (``registered=True, is_enabled=False``); a running attempt the sender holds is
      renewed, or cancelled with ``stop_requested`` after :meth:`request_stop`; one it
      does not hold is cancelled as ``stale_attempt``.
    - **archives** (``project_archive``): by SHA-256 of the content; None when unknown.
    - **dispatch** (``claim_tasks``, ``mark_published``, ``unpublished_assignments``,
      ``pending_cancels``, ``mark_cancels_sent``): pending assignments are claimed up to
      the limit, oldest first, and their worker then holds them; flags are recorded per
      transaction; a claimed attempt never flagged is unpublished once ``older_than_s``
      has passed on ``clock``.

    Every operation is one "transaction": :meth:`fail_next` makes the next ones raise
    (CatalogUnavailable by default) before changing anything.
    """

    def __init__(
        self,
        *,
        pending: Iterable[Assignment] = (),
        workers: Mapping[str, bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workers: dict[str, bool] = dict(workers or {})
        """Known workers: id -> is_enabled."""
        self.pending: list[Assignment] = list(pending)
        self.report_batches: list[list[tuple[StatusReport, str]]] = []
        """One entry per ``apply_status_reports`` transaction: (report, verified sender)."""
        self.heartbeat_batches: list[list[tuple[AgentHeartbeat, str]]] = []
        self.archive_requests: list[str] = []
        self.claims: list[list[AttemptKey]] = []
        """The attempts each ``claim_tasks`` flagged published in its transaction."""
        self.marks: list[list[AttemptKey]] = []
        """The attempts each ``mark_published`` flagged."""
        self.flagged: list[AttemptKey] = []
        """Every flag in order, whichever transaction did it; a key flagged twice appears
        twice."""
        self.cancels_sent: list[CancelOrder] = []
        self._clock = clock
        self._scripted: dict[AttemptKey, ReportResult] = {}
        self._applied: set[tuple[AttemptKey, str]] = set()
        self._held: dict[AttemptKey, _Held] = {}
        self._claimed: dict[AttemptKey, tuple[Assignment, float]] = {}
        self._stops: dict[AttemptKey, None] = {}  # insertion-ordered set
        self._sent: set[AttemptKey] = set()
        self._archives: dict[str, bytes] = {}
        self._failures = _Failures(lambda: CatalogUnavailable("fake: the catalog is down"))
        self._lock = threading.Lock()

    # --- scripting ----------------------------------------------------------------------

    def fail_next(self, calls: int | None = 1, error: CatalogError | None = None) -> None:
        """Fail the next ``calls`` operations (None: until :meth:`heal`)."""
        with self._lock:
            self._failures.arm(calls, error)

    def heal(self) -> None:
        with self._lock:
            self._failures.arm(0, None)

    def script_report(
        self, task_id: uuid.UUID, attempt: int, result: ReportOutcome | ReportResult
    ) -> None:
        """Every report about ``(task_id, attempt)`` gets ``result`` from now on."""
        scripted = result if isinstance(result, ReportResult) else ReportResult(result)
        with self._lock:
            self._scripted[(task_id, attempt)] = scripted

    def add_worker(self, worker_id: str, *, enabled: bool = True) -> None:
        with self._lock:
            self.workers[worker_id] = enabled

    def hold(self, task_id: uuid.UUID, attempt: int, worker_id: str, execution_id: int = 1) -> None:
        """``worker_id`` holds the attempt's lease (as after the attempt's claim)."""
        with self._lock:
            self._held[(task_id, attempt)] = _Held(worker_id, execution_id)

    def request_stop(self, task_id: uuid.UUID, attempt: int) -> None:
        """As ``catalog.stop_operation``: the holder must stop the attempt."""
        with self._lock:
            self._stops[(task_id, attempt)] = None

    def add_archive(self, data: bytes) -> str:
        """Store a project archive; returns its content hash."""
        content_hash = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._archives[content_hash] = data
        return content_hash

    def add_pending(self, *assignments: Assignment) -> None:
        with self._lock:
            self.pending += assignments

    @property
    def reports(self) -> list[tuple[StatusReport, str]]:
        """Every report applied, over all transactions."""
        with self._lock:
            return [item for batch in self.report_batches for item in batch]

    @property
    def heartbeats(self) -> list[tuple[AgentHeartbeat, str]]:
        with self._lock:
            return [item for batch in self.heartbeat_batches for item in batch]

    def holder(self, task_id: uuid.UUID, attempt: int) -> str | None:
        """The worker holding the attempt's lease, if any."""
        with self._lock:
            held = self._held.get((task_id, attempt))
            return None if held is None else held.worker_id

    # --- consumers.master.status.ReportSink ---------------------------------------------

    def apply_status_reports(
        self, reports: Sequence[tuple[StatusReport, str]]
    ) -> list[ReportResult]:
        with self._lock:
            self._begin()
            self.report_batches.append(list(reports))
            return [self._apply(report) for report, _ in reports]

    def _apply(self, report: StatusReport) -> ReportResult:
        key = (report.task_id, report.attempt)
        terminal = isinstance(report, TaskStarted | TaskFinished)
        result = self._scripted.get(key)
        if result is None:
            repeated = terminal and (key, report.type) in self._applied
            result = ReportResult(ReportOutcome.DUPLICATE if repeated else ReportOutcome.APPLIED)
        if result.outcome is ReportOutcome.APPLIED:
            if terminal:
                self._applied.add((key, report.type))
            if isinstance(report, TaskFinished):
                self._held.pop(key, None)
        return result

    # --- consumers.master.heartbeat.HeartbeatSink ---------------------------------------

    def record_heartbeats(
        self, beats: Sequence[tuple[AgentHeartbeat, str]]
    ) -> list[HeartbeatResult]:
        with self._lock:
            self._begin()
            self.heartbeat_batches.append(list(beats))
            return [self._record(beat, sender) for beat, sender in beats]

    def _record(self, beat: AgentHeartbeat, sender: str) -> HeartbeatResult:
        registered = sender not in self.workers
        if registered:
            self.workers[sender] = False  # as SSIS does: known, but given nothing yet
        renewed, cancels = 0, []
        for running in beat.running:
            key = (running.task_id, running.attempt)
            held = self._held.get(key)
            if held is None or held.worker_id != sender:
                reason: CancelReason | None = CancelReason.STALE_ATTEMPT
            elif key in self._stops:
                reason = CancelReason.STOP_REQUESTED
            else:
                reason = None
            if reason is None:
                renewed += 1
            else:
                order = CancelOrder(
                    running.task_id, running.attempt, running.execution_id, sender, reason
                )
                cancels.append(order)
        return HeartbeatResult(registered, self.workers[sender], renewed, tuple(cancels))

    # --- consumers.master.fetch.ArchiveSource -------------------------------------------

    def project_archive(self, content_hash: str) -> bytes | None:
        with self._lock:
            self._begin()
            self.archive_requests.append(content_hash)
            return self._archives.get(content_hash)

    # --- dispatcher.dispatch.DispatchCatalog --------------------------------------------

    def claim_tasks(self, limit: int, published: Sequence[AttemptKey] = ()) -> list[Assignment]:
        with self._lock:
            self._begin()
            self.claims.append(list(published))
            self.flagged += published
            claimed, self.pending = self.pending[:limit], self.pending[limit:]
            now = self._clock()
            for a in claimed:
                key = (a.task_id, a.attempt)
                self._claimed[key] = (a, now)
                self._held[key] = _Held(a.worker_id, a.execution_id)
            return claimed

    def mark_published(self, attempts: Sequence[AttemptKey]) -> None:
        with self._lock:
            self._begin()
            self.marks.append(list(attempts))
            self.flagged += attempts

    def unpublished_assignments(self, older_than_s: float) -> list[Assignment]:
        with self._lock:
            self._begin()
            flagged, cutoff = set(self.flagged), self._clock() - older_than_s
            return [
                a for key, (a, at) in self._claimed.items() if key not in flagged and at <= cutoff
            ]

    def pending_cancels(self) -> list[CancelOrder]:
        with self._lock:
            self._begin()
            orders = []
            for key in self._stops:
                held = self._held.get(key)
                if held is not None and key not in self._sent:
                    task_id, attempt = key
                    orders.append(
                        CancelOrder(
                            task_id,
                            attempt,
                            held.execution_id,
                            held.worker_id,
                            CancelReason.STOP_REQUESTED,
                        )
                    )
            return orders

    def mark_cancels_sent(self, orders: Sequence[CancelOrder]) -> None:
        with self._lock:
            self._begin()
            self.cancels_sent += orders
            self._sent |= {(o.task_id, o.attempt) for o in orders}

    def _begin(self) -> None:
        error = self._failures.take()
        if error is not None:
            raise error


if TYPE_CHECKING:  # mypy checks that each fake satisfies every protocol it stands in for
    from consumers.master.fetch import ArchiveReplies, ArchiveSource
    from consumers.master.heartbeat import HeartbeatReplies, HeartbeatSink
    from consumers.master.status import ReportSink
    from consumers.worker.heartbeat import HeartbeatPublisher
    from consumers.worker.outbox import PublisherLike
    from dispatcher.dispatch import DispatchCatalog, DispatchPublisher

    def _conforms(publisher: FakePublisher, outbound: FakeOutbound, catalog: FakeCatalog) -> None:
        _heartbeat_publisher: HeartbeatPublisher = publisher
        _reporter_publisher: PublisherLike = publisher
        _dispatch_publisher: DispatchPublisher = outbound
        _heartbeat_replies: HeartbeatReplies = outbound
        _archive_replies: ArchiveReplies = outbound
        _report_sink: ReportSink = catalog
        _heartbeat_sink: HeartbeatSink = catalog
        _archive_source: ArchiveSource = catalog
        _dispatch_catalog: DispatchCatalog = catalog
