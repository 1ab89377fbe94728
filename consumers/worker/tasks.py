"""The task queue's handler: accept an assignment, run its package, report its end.

One handler thread takes the assignments the broker has delivered (up to ``MaxTaskCount``
at a time): for each it waits for a free slot (``MaxTaskCount``, CPU, free memory), gets the
project, checks the parameters and submits ``task.started``; an assignment is acked, and its
package started, only once its report is confirmed. The reports of one batch share their
confirms (the handler waits for them together, and before it blocks on a slot), so a busy
worker pays one broker round trip per batch, not per task. Each package then runs in a
:class:`TaskRun` thread of its own, which streams the output and reports ``task.finished``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from dispatcher import metrics
from dispatcher.broker import ACK, Delivery, Disposition, Verdict
from dispatcher.broker.topology import STATUS_EXCHANGE, STATUS_ROUTING_KEY
from schemas.messages import (
    DecodeError,
    RunningAttempt,
    TaskAssign,
    TaskFinished,
    TaskOutcome,
    TaskStarted,
    decode,
)
from schemas.states import AttemptKey

from .attempt import Prepared, TaskRun, prepare
from .leases import Leases
from .outbox import Outgoing, Reporter
from .projects import FetchFailed, ProjectStore, ProjectUnavailable
from .resources import LoadMonitor
from .runner import PackageError

if TYPE_CHECKING:
    from .settings import WorkerSettings

logger = logging.getLogger(__name__)

_REQUEUE_PAUSE_S = 2.0
_REMEMBERED = 4096
"""Finished attempts remembered, so a redelivered assignment is acked, not run twice."""


def key_of(message: TaskAssign | RunningAttempt) -> AttemptKey:
    return (message.task_id, message.attempt)


class SlotResult(StrEnum):
    GRANTED = "granted"
    CANCELED = "canceled"
    STOPPING = "stopping"


@dataclass
class _Waiting:
    canceled: bool = False


@dataclass(frozen=True)
class _Starting:
    """An assignment whose ``task.started`` report is submitted, not yet confirmed."""

    index: int
    assign: TaskAssign
    prepared: Prepared
    future: Future[bool]
    sent_at: float
    """When the report was submitted: a confirmed one renews the lease from then."""

    @property
    def key(self) -> AttemptKey:
        return key_of(self.assign)


class Registry:
    """The attempts this worker holds: waiting for a slot, running, recently finished."""

    def __init__(self, max_task_count: int, on_change: Callable[[], None] = lambda: None):
        self._max = max_task_count
        self._cond = threading.Condition()
        self._waiting: dict[AttemptKey, _Waiting] = {}
        self._reserved: set[AttemptKey] = set()
        self._running: dict[AttemptKey, TaskRun] = {}
        self._finished: OrderedDict[AttemptKey, None] = OrderedDict()
        self._canceled_early: OrderedDict[AttemptKey, None] = OrderedDict()
        """Cancels of attempts not seen here yet: an assignment held in the backlog (not
        yet waiting for a slot), or one the cancel overtook."""
        self._on_change = on_change

    def seen(self, key: AttemptKey) -> bool:
        with self._cond:
            return key in self._reserved or key in self._running or key in self._finished

    def try_reserve(self, key: AttemptKey, accepting: Callable[[], bool]) -> bool:
        """Reserve a slot for ``key`` if one is free now (never blocks)."""
        with self._cond:
            if len(self._reserved) < self._max and accepting():
                self._reserved.add(key)
                return True
            return False

    def wait_for_slot(
        self, key: AttemptKey, accepting: Callable[[], bool], stopping: threading.Event
    ) -> SlotResult:
        """Block until a slot is free and the load allows a task; the slot is reserved."""
        waiting = _Waiting()
        with self._cond:
            self._waiting[key] = waiting
            try:
                while True:
                    if waiting.canceled:
                        return SlotResult.CANCELED
                    if stopping.is_set():
                        return SlotResult.STOPPING
                    if len(self._reserved) < self._max and accepting():
                        self._reserved.add(key)
                        return SlotResult.GRANTED
                    self._cond.wait(timeout=0.5)
            finally:
                del self._waiting[key]

    def started(self, key: AttemptKey, run: TaskRun) -> None:
        with self._cond:
            self._running[key] = run
        self._on_change()

    def release(self, key: AttemptKey) -> None:
        """The attempt is over (finished, refused or handed back); its slot is free."""
        with self._cond:
            self._reserved.discard(key)
            self._running.pop(key, None)
            self._finished[key] = None
            while len(self._finished) > _REMEMBERED:
                self._finished.popitem(last=False)
            self._cond.notify_all()
        self._on_change()

    def unreserve(self, key: AttemptKey) -> None:
        """The attempt goes back to the queue; it may come again."""
        with self._cond:
            self._reserved.discard(key)
            self._cond.notify_all()

    def cancel_waiting(self, key: AttemptKey) -> bool:
        with self._cond:
            waiting = self._waiting.get(key)
            if waiting is None:
                return False
            waiting.canceled = True
            self._cond.notify_all()
            return True

    def cancel_unseen(self, key: AttemptKey) -> bool:
        """Remember a cancel of an attempt this worker has not taken yet, so that it is
        not started when its assignment comes; False if the attempt was seen already."""
        with self._cond:
            if key in self._reserved or key in self._running or key in self._finished:
                return False
            self._canceled_early[key] = None
            while len(self._canceled_early) > _REMEMBERED:
                self._canceled_early.popitem(last=False)
            return True

    def take_early_cancel(self, key: AttemptKey) -> bool:
        """Whether a cancel came for ``key`` before its assignment (forgotten once asked)."""
        with self._cond:
            if key not in self._canceled_early:
                return False
            del self._canceled_early[key]
            return True

    def run_of(self, key: AttemptKey) -> TaskRun | None:
        with self._cond:
            return self._running.get(key)

    def runs(self) -> list[TaskRun]:
        with self._cond:
            return list(self._running.values())

    def running_attempts(self) -> tuple[RunningAttempt, ...]:
        with self._cond:
            return tuple(run.attempt_ref for run in self._running.values())

    def held_keys(self) -> frozenset[AttemptKey]:
        """Attempts whose task folder is in use: reserved (being prepared, waiting for
        their started confirm) or running. The retention sweep never removes these."""
        with self._cond:
            return frozenset(self._reserved | self._running.keys())

    def running_project_hashes(self) -> frozenset[str]:
        """The project versions the running attempts use."""
        with self._cond:
            return frozenset(run.project_hash for run in self._running.values())

    def busy(self) -> bool:
        with self._cond:
            return bool(self._reserved or self._running)

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._running, timeout=timeout)


class TaskHandler:
    """The task consumer's handler: one delivery in, one verdict out."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        registry: Registry,
        leases: Leases,
        reporter: Reporter,
        projects: ProjectStore,
        load: LoadMonitor,
        stopping: threading.Event,
        machine_name: str,
        master_user: str,
    ) -> None:
        self._settings = settings
        self._master_user = master_user
        self._registry = registry
        self._leases = leases
        self._reporter = reporter
        self._projects = projects
        self._load = load
        self._stopping = stopping
        self._machine_name = machine_name

    def __call__(self, deliveries: Sequence[Delivery]) -> Sequence[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(deliveries)
        starting: list[_Starting] = []
        try:
            for index, delivery in enumerate(deliveries):
                verdicts[index] = self._take(delivery, index, starting, verdicts)
        finally:
            # Whatever happened above, submitted reports are settled: a confirmed one starts
            # its package, and a redelivery of its assignment is then acked as seen.
            self._settle(starting, verdicts)
        return [ACK if v is None else v for v in verdicts]

    def _take(
        self,
        delivery: Delivery,
        index: int,
        starting: list[_Starting],
        verdicts: list[Verdict | None],
    ) -> Verdict | None:
        """The verdict for one delivery, or None when its started report was submitted
        (:meth:`_settle` gives that verdict)."""
        assign = self._accept(delivery)
        if isinstance(assign, Verdict):
            return assign
        key = key_of(assign)
        if self._registry.seen(key) or any(s.key == key for s in starting):
            logger.info("task.redelivered: %s/%d already accepted; acked", *key)
            return ACK
        refused = self._reserve(delivery, assign, starting, verdicts)
        if refused is not None:
            return refused
        try:
            return self._submit_start(assign, index, starting)
        except BaseException:
            self._registry.unreserve(key)  # the consumer requeues; the slot must not leak
            raise

    def _reserve(
        self,
        delivery: Delivery,
        assign: TaskAssign,
        starting: list[_Starting],
        verdicts: list[Verdict | None],
    ) -> Verdict | None:
        """Reserve a slot for ``assign``, waiting for one if need be; None once reserved,
        else the verdict of an assignment that must not start (canceled, too old, or the
        worker stops)."""
        key = key_of(assign)
        if self._registry.take_early_cancel(key):
            self._finish_unstarted(assign, TaskOutcome.CANCELED, "canceled before it started")
            return ACK
        if not self._registry.try_reserve(key, self._load.accepting):
            self._settle(starting, verdicts)  # start what is confirmed before blocking
            slot = self._registry.wait_for_slot(key, self._load.accepting, self._stopping)
            if slot is SlotResult.STOPPING:
                return Verdict(Disposition.REQUEUE)
            if slot is SlotResult.CANCELED:
                self._finish_unstarted(assign, TaskOutcome.CANCELED, "canceled before it started")
                return ACK
        if self._lapsed(assign, delivery):  # it may have waited behind one that waited
            self._registry.unreserve(key)
            return ACK
        return None

    def _lapsed(self, assign: TaskAssign, delivery: Delivery) -> bool:
        """Whether an assignment is too old to start: its dispatch lease has ended at the
        master, or ends within one TaskHeartbeatInterval (or half the lease, if that is
        shorter, so that a short dispatch lease does not keep every assignment out).

        The master then hands the task to a new attempt (its expiry timer withdraws this
        one), so starting it could run the package twice. The lease's end is estimated as
        in :mod:`~consumers.worker.leases`, from the master's two times and this worker's
        receipt; the delivery is acked and nothing is reported, as the withdrawal needs
        no word from here."""
        received = time.monotonic() if delivery.received_at is None else delivery.received_at
        lease_s = (assign.lease_expires_at - assign.sent_at).total_seconds()
        left = received + lease_s - time.monotonic()
        if left > min(self._settings.task_heartbeat_interval_s, lease_s / 2):
            return False
        metrics.WORKER_ASSIGNMENTS_DROPPED.labels(reason="lease_lapsed").inc()
        logger.warning(
            "task.lease_lapsed: %s/%d waited for a slot past its dispatch lease (%.0f s); "
            "acked unstarted, the master's expiry timer requeues it",
            *key_of(assign),
            lease_s,
            extra={"task_id": str(assign.task_id), "attempt": assign.attempt},
        )
        return True

    def _accept(self, delivery: Delivery) -> TaskAssign | Verdict:
        """The assignment in ``delivery``, or the dead-letter verdict that refuses it."""
        if delivery.user_id != self._master_user:
            return _refuse("forged_sender", f"user_id {delivery.user_id!r} is not the master")
        try:
            message = decode(delivery.body)
        except DecodeError as exc:
            return _refuse(exc.reason.value, exc.detail)
        if not isinstance(message, TaskAssign):
            return _refuse("unexpected_type", f"{message.type} on a task queue")
        if message.worker_id != self._settings.worker_id:
            return _refuse("wrong_worker", f"task for worker {message.worker_id}")
        return message

    def _submit_start(
        self, assign: TaskAssign, index: int, starting: list[_Starting]
    ) -> Verdict | None:
        key = key_of(assign)
        try:
            project = self._projects.get(assign.project_hash)
            prepared = prepare(self._settings, assign, project)
        except FetchFailed as exc:
            logger.warning("task.fetch_failed: %s; requeued", exc)
            return self._requeue(key)
        except (ProjectUnavailable, PackageError, OSError) as exc:
            self._finish_unstarted(assign, TaskOutcome.FAILED, str(exc))
            return ACK
        started = TaskStarted(
            task_id=assign.task_id,
            attempt=assign.attempt,
            execution_id=assign.execution_id,
            worker_id=self._settings.worker_id,
            machine_name=self._machine_name,
        )
        sent_at = time.monotonic()
        future = self._reporter.submit(_status(started), durable=False)
        starting.append(_Starting(index, assign, prepared, future, sent_at))
        return None

    def _settle(self, starting: list[_Starting], verdicts: list[Verdict | None]) -> None:
        """Wait for the started reports in ``starting``: a confirmed one starts its package
        and acks its assignment; an unconfirmed one hands it back. Empties ``starting``."""
        requeued = False
        for item in starting:
            try:
                item.future.result(timeout=self._settings.broker.confirm_timeout_s * 3)
            except (Exception, FutureTimeout) as exc:  # any failure: not accepted
                logger.warning("task.start_unconfirmed: %s/%d requeued (%s)", *item.key, exc)
                self._registry.unreserve(item.key)
                verdicts[item.index] = Verdict(Disposition.REQUEUE)
                requeued = True
                continue
            self._run(item)
            verdicts[item.index] = ACK
        starting.clear()
        if requeued:  # see _requeue: the broker or master may be away for a moment
            self._stopping.wait(_REQUEUE_PAUSE_S)

    def _run(self, item: _Starting) -> None:
        assign, key = item.assign, item.key
        run = TaskRun(self._settings, assign, item.prepared, self._reporter, on_end=self._ended)
        self._leases.hold(key, item.sent_at)
        self._registry.started(key, run)
        run.start()
        logger.debug(
            "task.started: %s/%d %s",
            *key,
            assign.package,
            extra={"task_id": str(assign.task_id), "attempt": assign.attempt},
        )

    def _ended(self, key: AttemptKey) -> None:
        self._leases.forget(key)
        self._registry.release(key)

    def _requeue(self, key: AttemptKey) -> Verdict:
        """Hand the assignment back after a pause: with prefetch 1 it comes straight back,
        and a broker or master that is away for a moment must not burn its delivery limit."""
        self._registry.unreserve(key)
        self._stopping.wait(_REQUEUE_PAUSE_S)
        return Verdict(Disposition.REQUEUE)

    def _finish_unstarted(self, assign: TaskAssign, outcome: TaskOutcome, error: str) -> None:
        """Report an attempt that never ran; the ack waits until the report is confirmed
        or cached on disk."""
        logger.warning(
            "task.refused: %s/%d %s: %s",
            assign.task_id,
            assign.attempt,
            outcome.value,
            error,
            extra={"task_id": str(assign.task_id)},
        )
        finished = TaskFinished(
            task_id=assign.task_id,
            attempt=assign.attempt,
            execution_id=assign.execution_id,
            worker_id=self._settings.worker_id,
            outcome=outcome,
            error=error[-4000:],
        )
        self._reporter.submit(_status(finished)).result()
        self._registry.release(key_of(assign))


def _status(message: TaskStarted | TaskFinished) -> Outgoing:
    return Outgoing(STATUS_EXCHANGE, STATUS_ROUTING_KEY, message)


def _refuse(reason: str, detail: str) -> Verdict:
    logger.warning("task.dead_letter: %s: %s", reason, detail)
    return Verdict(Disposition.DEAD_LETTER, f"{reason}: {detail}")
