"""The worker's lease bookkeeping on an injected clock: the assignment sets a deadline, a
confirmed started report may shorten it, a confirmed heartbeat extends it, a failed one
does not, and a deadline passed by the margin names the attempt once."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path

from consumers.worker.attempt import TaskRun, prepare
from consumers.worker.heartbeat import Heartbeat
from consumers.worker.leases import Leases, LeaseWatch, LostLease
from consumers.worker.outbox import Outgoing
from consumers.worker.projects import Project
from consumers.worker.settings import WorkerSettings
from consumers.worker.stops import StopCause
from dispatcher.errors import BrokerUnavailable
from dispatcher.metrics import WORKER
from dispatcher.testing import FakePublisher, make_assign
from schemas.messages import AgentHeartbeat, RunningAttempt, TaskAssign, TaskFinished, TaskOutcome
from schemas.project import ProjectManifest
from schemas.states import AttemptKey
from tests.fixtures.polling import wait_for

LEASE_S, MARGIN_S = 60.0, 10.0


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def assign(*, remaining_s: float, sent_at: datetime | None = None) -> TaskAssign:
    return make_assign(lease_s=remaining_s, sent_at=sent_at)


def key() -> AttemptKey:
    return (uuid.uuid4(), 1)


def held(clock: Clock, k: AttemptKey) -> Leases:
    leases = Leases(LEASE_S, MARGIN_S, clock)
    leases.hold(k, started_sent_at=clock.now)
    return leases


def test_the_started_report_sets_the_lease_to_its_send_time_plus_the_lease_interval() -> None:
    """The master sets the lease to its now + LeaseInterval when it applies task.started,
    and it applies every confirmed report before it judges a lease (its read horizon), or
    refuses it with a task.refused: whatever the dispatch lease was, the attempt's lease
    runs from its started report (the chaos suite's 5 s initial lease lapsed during a
    broker restart right after a start, and the worker stopped a package the master
    still held)."""
    clock, k = Clock(), key()
    leases = held(clock, k)
    assert leases.deadline(k) == clock.now + LEASE_S


def test_a_confirmed_beat_extends_to_its_send_time_plus_its_lease() -> None:
    clock, k = Clock(), key()
    leases = held(clock, k)
    leases.renewed([k], sent_at=clock.now + 30, lease_s=45)
    assert leases.deadline(k) == clock.now + 75


def test_an_older_beat_confirmed_late_never_shortens_the_deadline() -> None:
    clock, k = Clock(), key()
    leases = held(clock, k)
    leases.renewed([k], sent_at=clock.now + 30, lease_s=LEASE_S)
    leases.renewed([k], sent_at=clock.now + 10, lease_s=LEASE_S)
    assert leases.deadline(k) == clock.now + 30 + LEASE_S


def test_a_beat_extends_only_the_attempts_it_listed() -> None:
    clock, listed, unlisted = Clock(), key(), key()
    leases = held(clock, listed)
    leases.hold(unlisted, started_sent_at=clock.now)
    leases.renewed([listed, key()], sent_at=clock.now + 30, lease_s=LEASE_S)
    assert leases.deadline(listed) == clock.now + 30 + LEASE_S
    assert leases.deadline(unlisted) == clock.now + LEASE_S


def test_lost_only_after_the_deadline_plus_the_margin_and_only_once() -> None:
    clock, k = Clock(), key()
    leases = held(clock, k)
    start = clock.now
    clock.now = start + LEASE_S + MARGIN_S - 0.001
    assert leases.lost() == []
    clock.now = start + LEASE_S + MARGIN_S
    assert leases.lost() == [LostLease(k, start + LEASE_S, last_renewal=start)]
    assert leases.lost() == []


def test_a_beat_after_the_loss_does_not_revive_the_lease() -> None:
    """The package is being stopped: a renewal that arrives now changes nothing."""
    clock, k = Clock(), key()
    leases = held(clock, k)
    clock.now += LEASE_S + MARGIN_S
    assert leases.lost()
    leases.renewed([k], sent_at=clock.now, lease_s=LEASE_S)
    assert leases.deadline(k) == clock.now - MARGIN_S


def test_a_forgotten_attempt_is_never_lost() -> None:
    clock, k = Clock(), key()
    leases = held(clock, k)
    leases.forget(k)
    clock.now += 10 * LEASE_S
    assert leases.lost() == []
    assert leases.next_check_in() == float("inf")


def test_the_next_check_is_the_earliest_deadline_plus_the_margin() -> None:
    clock, k = Clock(), key()
    leases = held(clock, k)
    assert leases.next_check_in() == LEASE_S + MARGIN_S
    clock.now += LEASE_S + MARGIN_S + 5
    assert leases.next_check_in() == 0.0


def test_the_watch_hands_each_lost_lease_to_its_callback() -> None:
    clock, k = Clock(), key()
    leases = held(clock, k)
    lost: list[LostLease] = []
    stop = threading.Event()
    thread = threading.Thread(target=LeaseWatch(leases, lost.append).run, args=(stop,))
    thread.start()
    try:
        time.sleep(0.2)
        assert lost == []
        clock.now += LEASE_S + MARGIN_S
        wait_for(lambda: lost, 5, "the lost lease")
        time.sleep(0.2)
        assert [x.key for x in lost] == [k]
    finally:
        stop.set()
        thread.join(5)


# -- through the heartbeat loop, on dispatcher.testing's publisher -------------------------


def run_heartbeat(publisher: FakePublisher, leases: Leases, k: AttemptKey) -> threading.Event:
    running = (RunningAttempt(task_id=k[0], attempt=k[1], execution_id=1),)
    heartbeat = Heartbeat(
        lambda: publisher,
        lambda: AgentHeartbeat(worker_id="w1", running=running, lease_interval_s=LEASE_S),
        agent_interval_s=60,
        task_interval_s=0.05,
        error_tolerance_s=600,
        on_tolerance_exceeded=lambda: None,
        on_confirmed=leases.beat_confirmed,
    )
    stop = threading.Event()
    threading.Thread(target=heartbeat.run, args=(stop,), daemon=True).start()
    return stop


def test_failed_heartbeats_extend_nothing_and_confirmed_ones_do() -> None:
    """While the broker refuses every beat the deadline stays where the started report put
    it; the first confirmed beat moves it to (the time that beat was begun + its lease)."""
    publisher = FakePublisher()
    publisher.fail_next(None, BrokerUnavailable("down"))
    k = key()
    leases = Leases(LEASE_S, MARGIN_S)
    began = time.monotonic()
    leases.hold(k, started_sent_at=began)
    stop = run_heartbeat(publisher, leases, k)
    try:
        wait_for(lambda: publisher.calls >= 5, 5, "failing beats")
        assert leases.deadline(k) == began + LEASE_S
        healed = time.monotonic()
        publisher.heal()
        wait_for(lambda: publisher.published, 5, "a confirmed beat")
        deadline = leases.deadline(k)
        assert deadline is not None
        # sent at most one interval before the heal (its try may have begun then)
        assert healed - 0.05 - 0.01 <= deadline - LEASE_S <= time.monotonic()
    finally:
        stop.set()


# -- the stop itself: the path a cancel takes, counted by its cause ------------------------


class Finished:
    """Confirms every report; keeps the finished ones."""

    def __init__(self) -> None:
        self.finished: list[TaskFinished] = []

    def submit(self, item: Outgoing, *, durable: bool = True) -> Future[bool]:
        if isinstance(item.message, TaskFinished):
            self.finished.append(item.message)
        future: Future[bool] = Future()
        future.set_result(True)
        return future


def stopped(reason: str) -> float:
    labels = {"reason": reason}
    return WORKER.get_sample_value("scaleout_worker_attempts_stopped_total", labels) or 0.0


def test_a_lost_lease_stops_the_package_once_reported_failed_and_counted(tmp_path: Path) -> None:
    """TaskRun.stop with the lease_lost cause kills the package and reports it failed with
    the given error; a second stop (a cancel arriving too) changes nothing and counts
    nothing. Every reason is exported from the start."""
    exported = "scaleout_worker_attempts_stopped_total"
    assert all(
        WORKER.get_sample_value(exported, {"reason": c.value}) is not None for c in StopCause
    )
    root = tmp_path / "project"
    root.mkdir()
    (root / "wait.py").write_text("import time\nprint('waiting', flush=True)\ntime.sleep(60)\n")
    manifest = {
        "format": 1,
        "name": "P",
        "packages": [{"name": "Wait", "entry": {"argv": ["{python}", "wait.py"]}}],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    project = Project("c" * 64, root, ProjectManifest.model_validate(manifest))
    settings = WorkerSettings.model_validate(
        {"worker_id": "w1", "tasks_root_folder": tmp_path / "tasks", "kill_grace_s": 1}
    )
    assignment = assign(remaining_s=60).model_copy(
        update={"project_hash": "c" * 64, "package": "Wait"}
    )
    reporter, ended = Finished(), threading.Event()
    run = TaskRun(
        settings,
        assignment,
        prepare(settings, assignment, project),
        reporter,  # type: ignore[arg-type]  # a Reporter's submit, confirmed at once
        on_end=lambda _key: ended.set(),
    )
    before_lost, before_canceled = stopped("lease_lost"), stopped("canceled")
    run.start()
    time.sleep(0.5)
    assert run.stop(TaskOutcome.FAILED, "lease lost: test", cause=StopCause.LEASE_LOST)
    assert not run.stop(TaskOutcome.CANCELED, "canceled by the master", cause=StopCause.CANCELED)
    assert ended.wait(30), "the package was not stopped"
    (finished,) = reporter.finished
    assert (finished.outcome, finished.error) == (TaskOutcome.FAILED, "lease lost: test")
    assert stopped("lease_lost") - before_lost == 1
    assert stopped("canceled") == before_canceled
