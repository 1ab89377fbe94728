"""The task handler takes a batch of assignments: their started reports share one wait for
confirms, each package starts only once its own report is confirmed, and an unconfirmed or
repeated assignment is handed back or acked without running twice."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path

import pytest

from consumers.worker.leases import Leases
from consumers.worker.outbox import Outgoing
from consumers.worker.projects import Project
from consumers.worker.resources import LoadMonitor
from consumers.worker.settings import WorkerSettings
from consumers.worker.tasks import Registry, TaskHandler
from dispatcher import metrics
from dispatcher.broker import ACK, Delivery, Disposition, Verdict
from dispatcher.errors import BrokerUnavailable
from dispatcher.testing import make_assign
from schemas.messages import TaskAssign, TaskFinished, TaskOutcome, TaskStarted, encode
from schemas.project import ProjectManifest
from tests.fixtures.polling import wait_for

BENCH = Path(__file__).resolve().parents[3] / "examples" / "bench"
HASH = "a" * 64


class HeldReporter:
    """Holds every ``task.started`` future for the test to settle; confirms the rest."""

    def __init__(self) -> None:
        self.started: list[tuple[TaskStarted, Future[bool]]] = []
        self.finished: list[TaskFinished] = []
        self.lock = threading.Lock()

    def submit(self, item: Outgoing, *, durable: bool = True) -> Future[bool]:
        future: Future[bool] = Future()
        with self.lock:
            if isinstance(item.message, TaskStarted):
                self.started.append((item.message, future))
                return future
            if isinstance(item.message, TaskFinished):
                self.finished.append(item.message)
        future.set_result(True)
        return future


class OneProject:
    def __init__(self) -> None:
        manifest = ProjectManifest.model_validate(json.loads((BENCH / "manifest.json").read_text()))
        self.project = Project(HASH, BENCH, manifest)

    def get(self, project_hash: str) -> Project:
        assert project_hash == HASH
        return self.project


def assignment(worker: str = "w1", *, lease_s: float = 60.0) -> TaskAssign:
    return make_assign(
        worker_id=worker,
        folder="Bench",
        project="Bench",
        package="Noop",
        project_hash=HASH,
        lease_s=lease_s,
    )


def delivery(message: TaskAssign, tag: int) -> Delivery:
    return Delivery(
        body=encode(message),
        exchange="scaleout.tasks",
        routing_key=message.worker_id,
        user_id="scaleout-master",
        message_id=str(uuid.uuid4()),
        redelivered=False,
        delivery_tag=tag,
        headers={},
    )


@pytest.fixture
def parts(tmp_path: Path) -> tuple[TaskHandler, HeldReporter, Registry]:
    settings = WorkerSettings.model_validate(
        {
            "worker_id": "w1",
            "runner_mode": "inprocess",
            "tasks_root_folder": tmp_path / "tasks",
            "max_task_count": 4,
        }
    )
    reporter, registry = HeldReporter(), Registry(settings.max_task_count)
    handler = TaskHandler(
        settings,
        registry=registry,
        leases=Leases(settings.lease_interval_s, settings.task_heartbeat_interval_s),
        reporter=reporter,  # type: ignore[arg-type]  # the Reporter's submit, held
        projects=OneProject(),  # type: ignore[arg-type]  # a ProjectStore with one project
        load=LoadMonitor(max_cpu=100, min_memory_mb=0),
        stopping=threading.Event(),
        machine_name="box",
        master_user="scaleout-master",
    )
    return handler, reporter, registry


def run_in_thread(
    handler: TaskHandler, batch: list[Delivery]
) -> tuple[threading.Thread, list[Verdict]]:
    verdicts: list[Verdict] = []
    thread = threading.Thread(target=lambda: verdicts.extend(handler(batch)), daemon=True)
    thread.start()
    return thread, verdicts


def test_a_batch_submits_every_started_report_before_waiting(
    parts: tuple[TaskHandler, HeldReporter, Registry],
) -> None:
    """Three assignments: three started reports are out before any is confirmed, and no
    package starts until its own report is."""
    handler, reporter, registry = parts
    messages = [assignment() for _ in range(3)]
    thread, verdicts = run_in_thread(handler, [delivery(m, i) for i, m in enumerate(messages)])
    wait_for(lambda: len(reporter.started) == 3)
    assert registry.runs() == []
    for _, future in reporter.started:
        future.set_result(True)
    thread.join(5)
    assert verdicts == [ACK, ACK, ACK]
    wait_for(lambda: len(reporter.finished) == 3)
    assert {f.task_id for f in reporter.finished} == {m.task_id for m in messages}


def test_an_unconfirmed_start_is_handed_back_and_frees_its_slot(
    parts: tuple[TaskHandler, HeldReporter, Registry],
) -> None:
    """The broker refuses one of two started reports: that assignment is requeued (it may
    come again and then runs), the other runs; nothing holds a slot it does not use."""
    handler, reporter, registry = parts
    first, second = assignment(), assignment()
    thread, verdicts = run_in_thread(handler, [delivery(first, 1), delivery(second, 2)])
    wait_for(lambda: len(reporter.started) == 2)
    reporter.started[0][1].set_exception(BrokerUnavailable("broker went away"))
    reporter.started[1][1].set_result(True)
    thread.join(10)
    assert [v.disposition for v in verdicts] == [Disposition.REQUEUE, Disposition.ACK]
    wait_for(lambda: len(reporter.finished) == 1)
    assert reporter.finished[0].task_id == second.task_id
    assert not registry.seen((first.task_id, first.attempt))
    wait_for(lambda: not registry.busy())


def test_a_repeated_assignment_in_one_batch_runs_once(
    parts: tuple[TaskHandler, HeldReporter, Registry],
) -> None:
    """The same attempt twice in a batch (a redelivery): one started report, both acked."""
    handler, reporter, _ = parts
    message = assignment()
    thread, verdicts = run_in_thread(handler, [delivery(message, 1), delivery(message, 2)])
    wait_for(lambda: len(reporter.started) == 1)
    reporter.started[0][1].set_result(True)
    thread.join(5)
    assert verdicts == [ACK, ACK]
    wait_for(lambda: len(reporter.finished) == 1)
    assert len(reporter.started) == 1


def test_a_full_worker_starts_what_it_has_before_waiting_for_a_slot(
    parts: tuple[TaskHandler, HeldReporter, Registry],
) -> None:
    """MaxTaskCount 4 and 5 assignments: the first four are started (their reports settled)
    before the handler waits for a slot for the fifth, which runs when one ends."""
    handler, reporter, _ = parts
    messages = [assignment() for _ in range(5)]
    thread, verdicts = run_in_thread(handler, [delivery(m, i) for i, m in enumerate(messages)])
    wait_for(lambda: len(reporter.started) == 4)
    for _, future in reporter.started[:4]:
        future.set_result(True)
    wait_for(lambda: len(reporter.started) == 5)  # a no-op package ended, freeing a slot
    reporter.started[4][1].set_result(True)
    thread.join(5)
    assert verdicts == [ACK] * 5
    wait_for(lambda: len(reporter.finished) == 5)


def dropped(reason: str) -> float:
    labels = {"reason": reason}
    return metrics.WORKER.get_sample_value("scaleout_worker_assignments_dropped_total", labels) or 0


def test_an_assignment_held_past_its_dispatch_lease_is_acked_unstarted(
    parts: tuple[TaskHandler, HeldReporter, Registry],
) -> None:
    """Two assignments with a 300 s dispatch lease: one received 295 s ago (it waited in
    the backlog; less than one TaskHeartbeatInterval of its lease is left), one just now.
    The old one is acked without a started report, counted; only the new one runs, since
    the master's expiry timer gives the old task to a new attempt."""
    handler, reporter, registry = parts
    old, new = assignment(lease_s=300), assignment(lease_s=300)
    aged = dataclasses.replace(delivery(old, 1), received_at=time.monotonic() - 295)
    before = dropped("lease_lapsed")
    thread, verdicts = run_in_thread(handler, [aged, delivery(new, 2)])
    wait_for(lambda: len(reporter.started) == 1)
    reporter.started[0][1].set_result(True)
    thread.join(5)
    assert verdicts == [ACK, ACK]
    assert [s.task_id for s, _ in reporter.started] == [new.task_id]
    wait_for(lambda: len(reporter.finished) == 1)
    assert reporter.finished[0].task_id == new.task_id
    assert dropped("lease_lapsed") == before + 1
    assert not registry.seen((old.task_id, old.attempt))  # a redelivery is judged again


def test_a_cancel_that_comes_before_its_assignment_keeps_it_from_starting(
    parts: tuple[TaskHandler, HeldReporter, Registry],
) -> None:
    """A cancel for an attempt the worker has not taken yet (held in the backlog, or
    overtaken on the way) is remembered: the assignment is reported canceled and never
    started. A cancel of an attempt that already ended here is not remembered."""
    handler, reporter, registry = parts
    message = assignment()
    assert registry.cancel_unseen((message.task_id, message.attempt))
    assert handler([delivery(message, 1)]) == [ACK]
    assert reporter.started == []
    assert [(f.task_id, f.outcome) for f in reporter.finished] == [
        (message.task_id, TaskOutcome.CANCELED)
    ]
    assert not registry.cancel_unseen((message.task_id, message.attempt))
