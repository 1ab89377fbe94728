"""Heartbeats, lease expiry (database clock), stop_operation, drain, cleanup, master heartbeat."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.catalog import Assignment, Catalog, HeartbeatResult, ReportOutcome, leases
from dispatcher.catalog.engine import create, transaction
from dispatcher.errors import NotFound, OperationRefused
from schemas.messages import CancelReason
from schemas.states import ExecutionStatus, TaskState
from tests.fixtures.catalog import (
    finished,
    heartbeat,
    online_worker,
    started,
    started_execution,
    table_counts,
)

LEASE_S = 0.3


@pytest.fixture
def quick(catalog_url: str) -> Iterator[Catalog]:
    """A catalog whose leases are short enough to expire during a test."""
    opened = Catalog.open(catalog_url, initial_lease_s=LEASE_S)
    yield opened
    opened.close()


def running(catalog: Catalog, worker: str = "w1", *, retry_count: int = 0) -> Assignment:
    started_execution(catalog, retry_count=retry_count)
    [assignment] = catalog.claim_tasks(1)
    catalog.apply_status_reports([(started(assignment), worker)])
    return assignment


def about(a: Assignment) -> tuple[uuid.UUID, int, int]:
    return (a.task_id, a.attempt, a.execution_id)


def test_heartbeat_registers_unknown_worker_disabled(catalog: Catalog) -> None:
    """An unknown worker is registered disabled, with what its heartbeat says."""
    hb = heartbeat("w7", machine_name="box", user_account="svc", display_name="Seven")

    first = catalog.record_heartbeat(hb, "w7")
    second = catalog.record_heartbeat(hb, "w7")
    row = catalog.get_worker_agent("w7")

    assert (first.registered, first.is_enabled, second.registered) == (True, False, False)
    assert (row.machine_name, row.user_account, row.display_name) == ("box", "svc", "Seven")
    assert row.is_online
    assert not row.is_enabled


def test_a_heartbeat_saying_why_it_refuses_work_is_recorded(catalog: Catalog) -> None:
    """free_disk_mb and not_accepting are accepted (not stored); accepting false is."""
    hb = heartbeat("w8").model_copy(
        update={
            "free_disk_mb": 80.0,
            "accepting": False,
            "not_accepting": "free disk 80 MB < 500 MB",
        }
    )

    result = catalog.record_heartbeat(hb, "w8")

    assert result.registered
    assert catalog.get_worker_agent("w8").is_online


def test_heartbeat_stores_the_task_backlog(catalog: Catalog) -> None:
    """The worker row keeps the TaskBacklog of the latest heartbeat (0 when it says none)."""
    catalog.record_heartbeat(heartbeat("w9", max_task_count=2, task_backlog=3), "w9")
    stored = catalog.get_worker_agent("w9")
    catalog.record_heartbeat(heartbeat("w9", max_task_count=2), "w9")

    assert (stored.max_task_count, stored.task_backlog) == (2, 3)
    assert catalog.get_worker_agent("w9").task_backlog == 0


def test_heartbeat_renews_leases(quick: Catalog) -> None:
    """Attempts the worker runs get their lease renewed, so they do not expire."""
    online_worker(quick, "w1")
    started_execution(quick)
    [a] = quick.claim_tasks(1)
    time.sleep(LEASE_S + 0.2)

    result = quick.record_heartbeat(heartbeat("w1", about(a)), "w1")

    assert (result.renewed, result.cancels) == (1, ())
    assert quick.expire_leases() == []


def test_heartbeat_answers_stale_attempts_with_cancels(catalog: Catalog) -> None:
    """Unknown tasks, older attempts and other workers' attempts get STALE_ATTEMPT."""
    online_worker(catalog, "w1")
    old = running(catalog, retry_count=1)
    catalog.apply_status_reports([(finished(old, "failed"), "w1")])
    [current] = catalog.claim_tasks(1)
    online_worker(catalog, "w2")
    started_execution(catalog)
    [theirs] = catalog.claim_tasks(1)
    ghost = (uuid.uuid4(), 1, 1)

    result = catalog.record_heartbeat(
        heartbeat("w1", ghost, about(old), about(theirs), about(current)), "w1"
    )

    assert (current.attempt, theirs.worker_id, result.renewed) == (2, "w2", 1)
    assert [(c.task_id, c.attempt, c.reason) for c in result.cancels] == [
        (ghost[0], 1, CancelReason.STALE_ATTEMPT),
        (old.task_id, 1, CancelReason.STALE_ATTEMPT),
        (theirs.task_id, theirs.attempt, CancelReason.STALE_ATTEMPT),
    ]


def test_a_batch_of_heartbeats_is_recorded_in_order(catalog: Catalog) -> None:
    """One transaction for several heartbeats: an unknown worker twice (registered once),
    a known one renewing its lease and told to stop; one result each, in order."""
    online_worker(catalog, "w1")
    a = running(catalog)
    catalog.stop_operation(a.execution_id)

    results = catalog.record_heartbeats(
        [
            (heartbeat("w9", machine_name="nine"), "w9"),
            (heartbeat("w1", about(a)), "w1"),
            (heartbeat("w9", machine_name="nine"), "w9"),
        ]
    )

    assert [r.registered for r in results] == [True, False, False]
    assert [r.is_enabled for r in results] == [False, True, False]
    assert [c.reason for c in results[1].cancels] == [CancelReason.STOP_REQUESTED]
    assert catalog.get_worker_agent("w9").machine_name == "nine"


def test_heartbeat_repeats_stop_requests(catalog: Catalog) -> None:
    """A running attempt whose stop was requested is answered with STOP_REQUESTED."""
    online_worker(catalog, "w1")
    a = running(catalog)
    catalog.stop_operation(a.execution_id)

    result = catalog.record_heartbeat(heartbeat("w1", about(a)), "w1")

    assert [(c.task_id, c.attempt, c.reason) for c in result.cancels] == [
        (a.task_id, a.attempt, CancelReason.STOP_REQUESTED)
    ]


def test_expired_dispatch_goes_back_without_using_an_attempt(quick: Catalog) -> None:
    """A dispatched, never started attempt that expires returns to pending, count unchanged."""
    online_worker(quick, "w1")
    started_execution(quick)
    [a] = quick.claim_tasks(1)
    time.sleep(LEASE_S + 0.2)

    [expired] = quick.expire_leases()
    row = quick.get_execution(a.execution_id)
    assert quick.claim_tasks(1) == []  # w1 lost a lease: nothing until it speaks again
    online_worker(quick, "w1")
    [again] = quick.claim_tasks(1)

    assert (expired.task_id, expired.new_state, expired.worker_id) == (
        a.task_id,
        TaskState.PENDING,
        "w1",
    )
    assert (row.status, row.executed_count) == (ExecutionStatus.PENDING, 0)
    assert again.attempt == 2


def test_expired_running_attempt_retries_or_ends(quick: Catalog) -> None:
    """A running attempt that expires retries while attempts remain, else ends with 6."""
    online_worker(quick, "w1", lease_interval_s=LEASE_S)
    a = running(quick, retry_count=1)
    time.sleep(LEASE_S + 0.2)
    [first] = quick.expire_leases()
    online_worker(quick, "w1", lease_interval_s=LEASE_S)  # it speaks again after the lapse
    b = quick.claim_tasks(1)[0]
    quick.apply_status_reports([(started(b), "w1")])
    time.sleep(LEASE_S + 0.2)
    [second] = quick.expire_leases()
    row = quick.get_execution(a.execution_id)

    assert (first.new_state, first.execution_status) == (TaskState.PENDING, ExecutionStatus.PENDING)
    assert second.new_state is TaskState.ENDED_UNEXPECTEDLY
    assert second.execution_status is ExecutionStatus.ENDED_UNEXPECTEDLY
    assert (second.project_name, second.package_name) == (a.project, a.package)  # metrics labels
    assert (row.status, row.executed_count) == (ExecutionStatus.ENDED_UNEXPECTEDLY, 2)
    assert row.end_time is not None
    [late] = quick.apply_status_reports([(finished(b), "w1")])
    assert late.outcome is ReportOutcome.STALE


def test_expired_stop_request_cancels(quick: Catalog) -> None:
    """A stop that the worker never confirmed ends as canceled (3) when the lease lapses."""
    online_worker(quick, "w1", lease_interval_s=LEASE_S)
    a = running(quick)
    quick.stop_operation(a.execution_id)
    time.sleep(LEASE_S + 0.2)

    [expired] = quick.expire_leases()

    assert expired.new_state is TaskState.CANCELED
    assert quick.get_execution(a.execution_id).status is ExecutionStatus.CANCELED


def test_stop_pending_execution_cancels_now(catalog: Catalog) -> None:
    """A pending task is canceled at once (3) and nothing has to be delivered."""
    execution_id = started_execution(catalog)

    catalog.stop_operation(execution_id, stopped_by="ann")

    row = catalog.get_execution(execution_id)
    assert (row.status, row.task_state, row.stopped_by_name) == (
        ExecutionStatus.CANCELED,
        TaskState.CANCELED,
        "ann",
    )
    assert row.end_time is not None
    assert catalog.pending_cancels() == []


def test_stop_dispatched_execution_cancels_and_queues_a_cancel(catalog: Catalog) -> None:
    """A dispatched task is canceled now and a cancel is queued until marked sent."""
    online_worker(catalog, "w1")
    started_execution(catalog)
    [a] = catalog.claim_tasks(1)

    catalog.stop_operation(a.execution_id)
    orders = catalog.pending_cancels()
    catalog.mark_cancels_sent(orders)

    assert catalog.get_execution(a.execution_id).status is ExecutionStatus.CANCELED
    assert [(o.task_id, o.attempt, o.worker_id) for o in orders] == [(a.task_id, 1, "w1")]
    assert catalog.pending_cancels() == []
    [late] = catalog.apply_status_reports([(started(a), "w1")])
    assert late.outcome is ReportOutcome.STALE


def test_stop_running_execution_is_stopping_until_confirmed(catalog: Catalog) -> None:
    """A running task is asked to stop (8); a second stop is a no-op."""
    online_worker(catalog, "w1")
    a = running(catalog)

    catalog.stop_operation(a.execution_id)
    catalog.stop_operation(a.execution_id)

    assert catalog.get_execution(a.execution_id).status is ExecutionStatus.STOPPING
    assert [o.reason for o in catalog.pending_cancels()] == [CancelReason.STOP_REQUESTED]


def test_stop_refusals(catalog: Catalog) -> None:
    """Created or finished executions, other operations and unknown ids cannot be stopped."""
    online_worker(catalog, "w1")
    a = running(catalog)
    catalog.apply_status_reports([(finished(a), "w1")])
    created = catalog.create_execution("Finance", "Sales", "Load")

    with pytest.raises(OperationRefused, match="succeeded"):
        catalog.stop_operation(a.execution_id)
    with pytest.raises(OperationRefused, match="created"):
        catalog.stop_operation(created)
    with pytest.raises(OperationRefused, match="not an execution"):
        catalog.stop_operation(1)  # the deploy operation
    with pytest.raises(NotFound):
        catalog.stop_operation(999)


def test_disable_drains_the_worker(catalog: Catalog) -> None:
    """Disabling returns dispatched tasks to pending; running ones keep their lease."""
    online_worker(catalog, "w1")
    busy = running(catalog)
    started_execution(catalog)
    [queued] = catalog.claim_tasks(1)

    catalog.disable_worker_agent("w1")
    online_worker(catalog, "w2")
    [moved] = catalog.claim_tasks(5)
    beat = catalog.record_heartbeat(heartbeat("w1", about(busy)), "w1")

    assert (moved.task_id, moved.worker_id, moved.attempt) == (queued.task_id, "w2", 2)
    assert catalog.get_execution(busy.execution_id).task_state is TaskState.RUNNING
    assert (beat.is_enabled, beat.renewed) == (False, 1)


def test_cleanup_moves_finished_tasks_to_history(catalog: Catalog, catalog_url: str) -> None:
    """Finished tasks past retention move to history; executions stay readable."""
    online_worker(catalog, "w1")
    a = running(catalog)
    catalog.apply_status_reports([(finished(a), "w1")])
    started_execution(catalog)

    kept = catalog.cleanup_completed_jobs(minutes_to_keep=60)
    moved = catalog.cleanup_completed_jobs(minutes_to_keep=0)
    counts = {name.split("internal_")[-1]: n for name, n in table_counts(catalog_url).items()}

    assert (kept.tasks_moved, moved.tasks_moved, moved.jobs_moved) == (0, 1, 1)
    assert (counts["tasks"], counts["tasks_history"], counts["task_attempts_history"]) == (1, 1, 1)
    assert counts["jobs_history"] == 1
    row = catalog.get_execution(a.execution_id)
    assert (row.status, row.task_id, row.task_state, row.attempt) == (
        ExecutionStatus.SUCCEEDED,
        a.task_id,
        TaskState.SUCCEEDED,
        1,
    )


def test_master_heartbeat_writes_last_online_time(catalog: Catalog) -> None:
    """LAST_ONLINE_TIME is the database's now in ISO 8601; other properties are upserted."""
    catalog.master_heartbeat({"MACHINE_NAME": "m1"})
    catalog.master_heartbeat({"MACHINE_NAME": "m2"})

    properties = catalog.master_properties()
    stamp = datetime.fromisoformat(properties["LAST_ONLINE_TIME"])
    assert properties["MACHINE_NAME"] == "m2"
    assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=5)


def test_counts_for_metrics(catalog: Catalog) -> None:
    """counts() reports executions by status and enabled/online workers."""
    online_worker(catalog, "w1")
    catalog.record_heartbeat(heartbeat("w2"), "w2")
    started_execution(catalog)

    counts = catalog.counts()

    assert counts.executions_by_status == {ExecutionStatus.PENDING: 1}
    assert (counts.workers_enabled, counts.workers_online) == (1, 2)
    assert counts.oldest_pending_age_s >= 0


def test_first_heartbeats_racing_register_the_worker_once(pg_catalog_url: str) -> None:
    """Two first heartbeats of one worker at once: one registers it, the other just
    refreshes it (no error from the losing insert)."""
    engine = create(pg_catalog_url, connection_timeout_s=5)
    catalog = Catalog.open(pg_catalog_url)
    outcome: list[object] = []
    with transaction(engine) as tx:
        assert leases.record_heartbeat(tx, heartbeat("w5"), "w5").registered
        racer = threading.Thread(
            target=lambda: outcome.append(catalog.record_heartbeat(heartbeat("w5"), "w5"))
        )
        racer.start()
        time.sleep(0.5)  # the racer's insert now waits on this transaction's row
    racer.join(timeout=30)
    catalog.close()
    engine.dispose()

    [result] = outcome
    assert isinstance(result, HeartbeatResult)
    assert (result.registered, result.is_enabled) == (False, False)
