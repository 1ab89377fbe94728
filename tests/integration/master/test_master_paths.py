"""The master's paths, driven end to end by a scripted worker over the TLS broker.

Each test runs a real MasterService (dispatch loop, reconcilers, timers) on a real catalog
(SQLite file and PostgreSQL) and a fresh RabbitMQ vhost, with intervals shortened so a
lease lapses in seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from dispatcher.broker.topology import STATUS_QUEUE
from dispatcher.catalog import Catalog
from dispatcher.metrics import MASTER
from dispatcher.service import MasterService
from schemas.messages import CancelReason, TaskOutcome
from schemas.states import ExecutionStatus, TaskState
from tests.fixtures.broker import TlsBroker
from tests.fixtures.catalog import deploy_sample
from tests.fixtures.master import (
    ScriptedWorker,
    fast_master_settings,
    running_master,
)
from tests.fixtures.polling import wait_for


@pytest.fixture
def workers(tls_broker: TlsBroker, vhost: str) -> Iterator[dict[str, ScriptedWorker]]:
    scripted = {w: ScriptedWorker(w, tls_broker.settings_for(w, vhost)) for w in ("w1", "w2")}
    yield scripted
    for worker in scripted.values():
        worker.close()


MasterFactory = Callable[..., AbstractContextManager[MasterService]]


@pytest.fixture
def master(tls_broker: TlsBroker, vhost: str, catalog_url: str) -> MasterFactory:
    """``with master(**overrides):`` runs a MasterService with short intervals."""
    broker = tls_broker.settings_for("scaleout-master", vhost)

    def start(**overrides: object) -> AbstractContextManager[MasterService]:
        return running_master(catalog_url, fast_master_settings(broker, **overrides))

    return start


def _enable(catalog: Catalog, *workers: ScriptedWorker) -> None:
    for worker in workers:
        worker.heartbeat()
        wait_for(lambda w=worker: _known(catalog, w.worker_id))
        catalog.enable_worker_agent(worker.worker_id)


def _known(catalog: Catalog, worker_id: str) -> bool:
    return any(w.worker_agent_id == worker_id for w in catalog.list_worker_agents())


def _status(catalog: Catalog, execution_id: int) -> ExecutionStatus:
    return catalog.get_execution(execution_id).status


def _start(catalog: Catalog, *, retry_count: int = 0, workers: tuple[str, ...] = ()) -> int:
    deploy_sample(catalog)
    folder, project, package = "Finance", "Sales", "Load"
    execution_id = catalog.create_execution(folder, project, package, useanyworker=not workers)
    for worker in workers:
        catalog.add_execution_worker(execution_id, worker)
    catalog.start_execution(execution_id, retry_count=retry_count)
    return execution_id


def test_dispatch_started_succeeded(
    catalog: Catalog, master: MasterFactory, workers: dict[str, ScriptedWorker]
) -> None:
    """A started execution reaches a worker, shows running, then succeeded with its logs."""
    w1 = workers["w1"]
    latencies = _sample("scaleout_dispatch_latency_seconds_count")
    with master():
        _enable(catalog, w1)
        execution_id = _start(catalog)
        task = w1.next_task()
        assert (task.execution_id, task.attempt, task.worker_id) == (execution_id, 1, "w1")

        w1.started(task)
        wait_for(lambda: _status(catalog, execution_id) is ExecutionStatus.RUNNING)
        # Observed just after the commit that shows the execution running, so wait for it.
        wait_for(lambda: _sample("scaleout_dispatch_latency_seconds_count") == latencies + 1)
        w1.log(task, "loading", "done")
        w1.finished(task, TaskOutcome.SUCCEEDED)
        wait_for(lambda: _status(catalog, execution_id) is ExecutionStatus.SUCCEEDED)

    row = catalog.get_execution(execution_id)
    assert (row.worker_agent_id, row.executed_count) == ("w1", 1)
    assert row.end_time is not None
    messages = [m.message for m in catalog.execution_messages(execution_id)]
    assert "loading" in messages
    assert "done" in messages


def test_failed_with_retries_left_runs_again_elsewhere(
    catalog: Catalog, master: MasterFactory, workers: dict[str, ScriptedWorker]
) -> None:
    """A failed package with attempts left becomes a new attempt on another worker."""
    w1, w2 = workers["w1"], workers["w2"]
    with master():
        _enable(catalog, w1)
        execution_id = _start(catalog, retry_count=1)
        first = w1.next_task()
        w1.started(first)
        w1.heartbeat(accepting=False)  # w1 is busy now: the retry must go elsewhere
        _enable(catalog, w2)
        w1.finished(first, TaskOutcome.FAILED, exit_code=3, error="boom")

        second = w2.next_task()
        assert (second.task_id, second.attempt) == (first.task_id, 2)
        w2.started(second)
        w2.finished(second, TaskOutcome.SUCCEEDED)
        wait_for(lambda: _status(catalog, execution_id) is ExecutionStatus.SUCCEEDED)

    row = catalog.get_execution(execution_id)
    assert (row.worker_agent_id, row.executed_count) == ("w2", 2)


def test_lease_expiry_makes_a_new_attempt(
    catalog: Catalog, master: MasterFactory, workers: dict[str, ScriptedWorker]
) -> None:
    """A worker that goes silent loses its attempt when the lease lapses; another runs it."""
    w1, w2 = workers["w1"], workers["w2"]
    with master():
        _enable(catalog, w1)
        execution_id = _start(catalog, retry_count=1)
        first = w1.next_task()
        w1.started(first)
        w1.heartbeat([first], lease_interval_s=1.0)  # then silence
        _enable(catalog, w2)

        def w2_gets_it() -> object:
            w2.heartbeat()
            try:
                return w2.next_task(0.5)
            except TimeoutError:
                return None

        second = wait_for(w2_gets_it, timeout_s=15)
        # w1 may look online a little longer than its lease and get an attempt it never
        # starts; that one lapses too, without using up a retry.
        assert second.attempt > first.attempt  # type: ignore[attr-defined]

        w1.finished(first, TaskOutcome.SUCCEEDED)  # the silent worker's late report
        stale = ("scaleout_status_reports_total", {"type": "task.finished", "outcome": "stale"})
        wait_for(lambda: _sample(*stale[:1], **stale[1]) >= 1)
        row = catalog.get_execution(execution_id)
        assert (row.status, row.attempt) == (ExecutionStatus.PENDING, second.attempt)  # type: ignore[attr-defined]


def test_no_attempts_left_ends_unexpectedly(
    catalog: Catalog, master: MasterFactory, workers: dict[str, ScriptedWorker]
) -> None:
    """With no attempts left, a lapsed lease ends the execution with status 6."""
    w1 = workers["w1"]
    with master():
        _enable(catalog, w1)
        execution_id = _start(catalog)
        task = w1.next_task()
        w1.started(task)
        w1.heartbeat([task], lease_interval_s=0.5)
        wait_for(
            lambda: _status(catalog, execution_id) is ExecutionStatus.ENDED_UNEXPECTEDLY,
            timeout_s=15,
        )
    assert catalog.get_execution(execution_id).task_state is TaskState.ENDED_UNEXPECTEDLY


def test_cancel_while_running(
    catalog: Catalog, master: MasterFactory, workers: dict[str, ScriptedWorker]
) -> None:
    """A stop is stored first (stopping), delivered on the control queue, confirmed (canceled)."""
    w1 = workers["w1"]
    with master():
        _enable(catalog, w1)
        execution_id = _start(catalog)
        task = w1.next_task()
        w1.started(task)
        wait_for(lambda: _status(catalog, execution_id) is ExecutionStatus.RUNNING)

        catalog.stop_operation(execution_id)
        assert _status(catalog, execution_id) is ExecutionStatus.STOPPING
        cancel = w1.next_cancel()
        assert (cancel.task_id, cancel.attempt) == (task.task_id, task.attempt)
        assert cancel.reason is CancelReason.STOP_REQUESTED

        w1.finished(task, TaskOutcome.CANCELED, exit_code=-15)
        wait_for(lambda: _status(catalog, execution_id) is ExecutionStatus.CANCELED)


def test_cancel_while_dispatched_withdraws(
    catalog: Catalog, master: MasterFactory, workers: dict[str, ScriptedWorker]
) -> None:
    """A task not yet started is canceled at once and its late `started` is refused."""
    w1 = workers["w1"]
    with master():
        _enable(catalog, w1)
        execution_id = _start(catalog)
        task = w1.next_task()
        catalog.stop_operation(execution_id)
        assert _status(catalog, execution_id) is ExecutionStatus.CANCELED

        w1.started(task)  # too late: the attempt was withdrawn
        w1.heartbeat([task])
        cancel = w1.next_cancel()
        assert cancel.task_id == task.task_id
        assert _status(catalog, execution_id) is ExecutionStatus.CANCELED


def test_cancel_while_worker_offline_survives(
    catalog: Catalog, master: MasterFactory, workers: dict[str, ScriptedWorker]
) -> None:
    """A stop requested while the worker is away reaches it in its next heartbeat's reply."""
    w1 = workers["w1"]
    with master():
        _enable(catalog, w1)
        execution_id = _start(catalog)
        task = w1.next_task()
        w1.started(task)
        w1.heartbeat([task], lease_interval_s=30)
        wait_for(lambda: _status(catalog, execution_id) is ExecutionStatus.RUNNING)
        catalog.stop_operation(execution_id)
        first = w1.next_cancel()  # delivered while "offline": the worker loses it
        assert first.task_id == task.task_id

        w1.heartbeat([task], lease_interval_s=30)  # back, still running the attempt
        again = w1.next_cancel()
        assert (again.task_id, again.attempt) == (task.task_id, task.attempt)
        w1.finished(task, TaskOutcome.CANCELED)
        wait_for(lambda: _status(catalog, execution_id) is ExecutionStatus.CANCELED)


def test_disable_drains(
    catalog: Catalog, master: MasterFactory, workers: dict[str, ScriptedWorker]
) -> None:
    """Disabling a worker sends its not-started task elsewhere and lets the running one end."""
    w1, w2 = workers["w1"], workers["w2"]
    with master():
        _enable(catalog, w1)
        running_id = _start(catalog)
        running = w1.next_task()
        w1.started(running)
        waiting_id = _start(catalog)
        waiting = w1.next_task()
        wait_for(lambda: _status(catalog, running_id) is ExecutionStatus.RUNNING)

        catalog.disable_worker_agent("w1")
        _enable(catalog, w2)
        moved = w2.next_task()
        assert (moved.execution_id, moved.attempt) == (waiting_id, waiting.attempt + 1)

        w1.heartbeat([running])
        w1.finished(running, TaskOutcome.SUCCEEDED)
        wait_for(lambda: _status(catalog, running_id) is ExecutionStatus.SUCCEEDED)
        assert w1.no_task_for(1.0)


def test_restricted_execution_waits_for_its_worker(
    catalog: Catalog, master: MasterFactory, workers: dict[str, ScriptedWorker]
) -> None:
    """An execution allowed only on an offline worker stays pending, then runs there."""
    w1, w2 = workers["w1"], workers["w2"]
    with master():
        _enable(catalog, w1, w2)
        catalog.disable_worker_agent("w2")  # known, but not eligible yet
        execution_id = _start(catalog, workers=("w2",))
        assert w1.no_task_for(1.5)
        assert _status(catalog, execution_id) is ExecutionStatus.PENDING

        catalog.enable_worker_agent("w2")
        w2.heartbeat()
        task = w2.next_task()
        assert task.execution_id == execution_id


def _sample(name: str, **labels: str) -> float:
    return MASTER.get_sample_value(name, labels) or 0.0


def test_forged_unknown_and_malformed_reports_change_nothing(
    catalog: Catalog, master: MasterFactory, workers: dict[str, ScriptedWorker]
) -> None:
    """Reports from the wrong worker, for unknown tasks, or malformed, are counted and dropped."""
    w1, w2 = workers["w1"], workers["w2"]
    forged = (
        "scaleout_status_reports_total",
        {"type": "task.finished", "outcome": "not_holder"},
    )
    unknown = (
        "scaleout_status_reports_total",
        {"type": "task.finished", "outcome": "unknown_task"},
    )
    malformed = ("scaleout_dead_letters_total", {"queue": STATUS_QUEUE, "reason": "malformed_json"})
    version = ("scaleout_dead_letters_total", {"queue": STATUS_QUEUE, "reason": "schema_version"})
    keys = (forged, unknown, malformed, version)
    before = [_sample(name, **labels) for name, labels in keys]
    with master():
        _enable(catalog, w1, w2)
        catalog.disable_worker_agent("w2")
        execution_id = _start(catalog)
        task = w1.next_task()
        w1.started(task)
        wait_for(lambda: _status(catalog, execution_id) is ExecutionStatus.RUNNING)

        w2.finished(task.model_copy(update={"worker_id": "w2"}), TaskOutcome.SUCCEEDED)
        w2.send_raw(b"{not json")
        w2.send_raw(b'{"type": "task.finished", "schema_version": 99}')
        w1.finished(task.model_copy(update={"task_id": uuid.UUID(int=1)}), TaskOutcome.SUCCEEDED)

        for (name, labels), count in zip(keys, before, strict=True):
            wait_for(lambda n=name, lb=labels, c=count: _sample(n, **lb) == c + 1)
        assert _status(catalog, execution_id) is ExecutionStatus.RUNNING

        w1.finished(task, TaskOutcome.SUCCEEDED)
        wait_for(lambda: _status(catalog, execution_id) is ExecutionStatus.SUCCEEDED)
    assert catalog.get_execution(execution_id).worker_agent_id == "w1"
