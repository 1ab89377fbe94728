"""apply_status_reports on both databases: effects, retries and every kind of refusal."""

from __future__ import annotations

import time
import uuid

import pytest

from dispatcher.catalog import Assignment, Catalog, ReportOutcome
from dispatcher.catalog.engine import create, transaction
from dispatcher.catalog.state import BatchedWrites
from dispatcher.errors import CatalogError
from schemas.messages import TaskStarted
from schemas.states import ExecutionStatus, TaskEvent, TaskState
from tests.fixtures.catalog import (
    finished,
    log,
    online_worker,
    progress,
    started,
    started_execution,
    table_counts,
)


def claim_one(catalog: Catalog, *, retry_count: int = 0) -> Assignment:
    online_worker(catalog, "w1")
    started_execution(catalog, retry_count=retry_count)
    [assignment] = catalog.claim_tasks(1)
    return assignment


def test_started_then_succeeded(catalog: Catalog) -> None:
    """started -> execution running (2) on the worker; succeeded -> 7 with an end time."""
    a = claim_one(catalog)

    [start] = catalog.apply_status_reports([(started(a), "w1")])
    running = catalog.get_execution(a.execution_id)
    [done] = catalog.apply_status_reports([(finished(a), "w1")])
    ended = catalog.get_execution(a.execution_id)

    assert (start.outcome, start.task_state, start.execution_status) == (
        ReportOutcome.APPLIED,
        TaskState.RUNNING,
        ExecutionStatus.RUNNING,
    )
    assert (running.worker_agent_id, running.executed_count) == ("w1", 1)
    assert running.start_time is not None
    assert (done.outcome, done.execution_status) == (
        ReportOutcome.APPLIED,
        ExecutionStatus.SUCCEEDED,
    )
    assert ended.end_time is not None
    assert ended.task_state is TaskState.SUCCEEDED


def test_failed_with_retries_goes_back_to_pending(catalog: Catalog) -> None:
    """A failure with attempts left requeues the task; the next claim is attempt 2."""
    a = claim_one(catalog, retry_count=1)
    catalog.apply_status_reports([(started(a), "w1")])

    [result] = catalog.apply_status_reports([(finished(a, "failed", error="boom"), "w1")])
    row = catalog.get_execution(a.execution_id)
    [again] = catalog.claim_tasks(5)

    assert (result.retried, result.task_state, result.execution_status) == (
        True,
        TaskState.PENDING,
        ExecutionStatus.PENDING,
    )
    assert (row.status, row.executed_count, row.error) == (ExecutionStatus.PENDING, 1, "boom")
    assert (again.task_id, again.attempt) == (a.task_id, 2)
    assert any(
        m.message == "boom" and m.message_type == 120
        for m in catalog.execution_messages(a.execution_id)
    )


def test_failed_without_retries_fails_the_execution(catalog: Catalog) -> None:
    """With no attempts left a failure ends the execution as failed (4)."""
    a = claim_one(catalog)
    catalog.apply_status_reports([(started(a), "w1")])

    [result] = catalog.apply_status_reports([(finished(a, "failed"), "w1")])

    assert (result.retried, result.execution_status) == (False, ExecutionStatus.FAILED)
    assert catalog.claim_tasks(5) == []


def test_finished_without_started_counts_the_attempt(catalog: Catalog) -> None:
    """A finished report for a dispatched attempt (started was lost) counts it first."""
    a = claim_one(catalog, retry_count=1)

    [first] = catalog.apply_status_reports([(finished(a, "failed"), "w1")])
    b = catalog.claim_tasks(5)[0]
    catalog.apply_status_reports([(started(b), "w1")])
    [second] = catalog.apply_status_reports([(finished(b, "failed"), "w1")])

    assert first.retried
    assert (second.retried, second.execution_status) == (False, ExecutionStatus.FAILED)
    assert catalog.get_execution(a.execution_id).executed_count == 2


def test_an_end_carries_the_package_names_and_the_run_time(catalog: Catalog) -> None:
    """An applied finished names the execution's project and package (the per-package
    metrics' labels) and the attempt's run time since its started report was recorded;
    none when the started report was lost, and none on a refused report."""
    a = claim_one(catalog, retry_count=1)
    catalog.apply_status_reports([(started(a), "w1")])
    time.sleep(0.05)
    [done] = catalog.apply_status_reports([(finished(a, "failed"), "w1")])
    b = catalog.claim_tasks(5)[0]
    [lost_start, again] = catalog.apply_status_reports(
        [(finished(b, "failed"), "w1"), (finished(b, "failed"), "w1")]
    )

    assert (done.project_name, done.package_name) == (a.project, a.package)
    assert done.run_s is not None
    assert 0.04 <= done.run_s < 60
    assert (lost_start.project_name, lost_start.run_s) == (a.project, None)
    assert lost_start.execution_status is ExecutionStatus.FAILED
    assert (again.outcome, again.project_name) == (ReportOutcome.DUPLICATE, "")


def test_started_and_finished_in_one_batch_have_a_run_time(catalog: Catalog) -> None:
    """The started report written at the end of the batch still times the finished one."""
    a = claim_one(catalog)

    [_, done] = catalog.apply_status_reports([(started(a), "w1"), (finished(a), "w1")])

    assert done.run_s is not None
    assert 0 <= done.run_s < 60


def test_stale_reports_change_nothing(catalog: Catalog, catalog_url: str) -> None:
    """Reports for an older attempt, or after the task ended, are STALE and write nothing."""
    a = claim_one(catalog, retry_count=1)
    catalog.apply_status_reports([(started(a), "w1")])
    catalog.apply_status_reports([(finished(a, "failed"), "w1")])
    b = catalog.claim_tasks(5)[0]
    catalog.apply_status_reports([(started(b), "w1"), (finished(b), "w1")])
    before = table_counts(catalog_url)

    results = catalog.apply_status_reports(
        [(finished(a), "w1"), (progress(a), "w1"), (started(b), "w1"), (progress(b), "w1")]
    )

    assert [r.outcome for r in results] == [ReportOutcome.STALE] * 4
    assert table_counts(catalog_url) == before
    assert catalog.get_execution(a.execution_id).status is ExecutionStatus.SUCCEEDED


def test_not_holder_unknown_attempt_and_unknown_task(catalog: Catalog) -> None:
    """A report from another worker is NOT_HOLDER; an attempt never dispatched is
    UNKNOWN_ATTEMPT; an unknown task is UNKNOWN_TASK. None is counted as forged: that
    label is the consumer's, for a body that names another worker than its sender."""
    a = claim_one(catalog)
    online_worker(catalog, "w2")
    ghost = TaskStarted(task_id=uuid.uuid4(), attempt=1, execution_id=1, worker_id="w1")
    future = started(a).model_copy(update={"attempt": a.attempt + 5})

    results = catalog.apply_status_reports(
        [
            (started(a, worker="w2"), "w2"),
            (started(a), "w2"),
            (log(a, 1), "w2"),
            (ghost, "w1"),
            (future, "w1"),
        ]
    )

    assert [r.outcome for r in results] == [
        ReportOutcome.NOT_HOLDER,
        ReportOutcome.NOT_HOLDER,
        ReportOutcome.NOT_HOLDER,
        ReportOutcome.UNKNOWN_TASK,
        ReportOutcome.UNKNOWN_ATTEMPT,
    ]
    assert catalog.get_execution(a.execution_id).task_state is TaskState.DISPATCHED


def test_duplicates_are_harmless(catalog: Catalog) -> None:
    """The same started or finished report twice -> DUPLICATE, counted once."""
    a = claim_one(catalog)

    results = catalog.apply_status_reports(
        [(started(a), "w1"), (started(a), "w1"), (finished(a), "w1"), (finished(a), "w1")]
    )

    assert [r.outcome for r in results] == [
        ReportOutcome.APPLIED,
        ReportOutcome.DUPLICATE,
        ReportOutcome.APPLIED,
        ReportOutcome.DUPLICATE,
    ]
    assert catalog.get_execution(a.execution_id).executed_count == 1


def test_progress_renews_the_lease(catalog_url: str) -> None:
    """A progress report moves an expired-looking lease to now + the worker's interval."""
    quick = Catalog.open(catalog_url, initial_lease_s=0.2)
    a = claim_one(quick)
    time.sleep(0.5)

    [result] = quick.apply_status_reports([(progress(a), "w1")])

    assert result.outcome is ReportOutcome.APPLIED
    assert quick.expire_leases() == []
    quick.close()


def test_logs_are_deduplicated(catalog: Catalog) -> None:
    """Log lines are stored once per (task, attempt, seq), also across batches."""
    a = claim_one(catalog)
    catalog.apply_status_reports([(started(a), "w1")])

    results = catalog.apply_status_reports([(log(a, 0, 1), "w1"), (log(a, 1, 2), "w1")])
    again = catalog.apply_status_reports([(log(a, 0, 1, 2), "w1")])
    lines = [m for m in catalog.execution_messages(a.execution_id) if m.attempt == 1 and m.source]

    assert [r.outcome for r in results] == [ReportOutcome.APPLIED, ReportOutcome.APPLIED]
    assert [r.outcome for r in again] == [ReportOutcome.DUPLICATE]
    assert [m.message for m in lines] == ["line 0", "line 1", "line 2"]
    assert catalog.execution_messages(a.execution_id, after_id=lines[0].message_id, limit=1) == [
        lines[1]
    ]


def test_logs_of_a_past_attempt_are_accepted(catalog: Catalog) -> None:
    """Logs are history: a late line from the worker of an older attempt is stored."""
    a = claim_one(catalog, retry_count=1)
    catalog.apply_status_reports([(started(a), "w1"), (finished(a, "failed"), "w1")])
    catalog.claim_tasks(5)

    [result] = catalog.apply_status_reports([(log(a, 7), "w1")])

    assert result.outcome is ReportOutcome.APPLIED


def test_started_while_stop_requested_shows_stopping(catalog: Catalog) -> None:
    """A worker that confirms a canceled attempt moves the execution to canceled (3)."""
    a = claim_one(catalog)
    catalog.apply_status_reports([(started(a), "w1")])
    catalog.stop_operation(a.execution_id, stopped_by="ann")

    assert catalog.get_execution(a.execution_id).status is ExecutionStatus.STOPPING
    [result] = catalog.apply_status_reports([(finished(a, "canceled"), "w1")])

    assert result.execution_status is ExecutionStatus.CANCELED
    row = catalog.get_execution(a.execution_id)
    assert (row.status, row.stopped_by_name) == (ExecutionStatus.CANCELED, "ann")
    assert catalog.pending_cancels() == []


def test_mixed_batch_is_applied_in_order(catalog: Catalog) -> None:
    """started, progress, logs and finished in one batch end succeeded, with no lease left."""
    a = claim_one(catalog)

    results = catalog.apply_status_reports(
        [
            (started(a), "w1"),
            (progress(a), "w1"),
            (log(a, 0), "w1"),
            (finished(a), "w1"),
            (progress(a), "w1"),
        ]
    )

    assert [r.outcome for r in results] == [ReportOutcome.APPLIED] * 4 + [ReportOutcome.STALE]
    assert catalog.get_execution(a.execution_id).status is ExecutionStatus.SUCCEEDED
    assert catalog.expire_leases() == []
    assert catalog.get_worker_agent("w1").running_tasks == 0


def test_one_batch_over_several_executions_lands_each(catalog: Catalog) -> None:
    """Reports of three executions interleaved in one batch (a finish before another's
    start): each execution and attempt ends as its own reports say."""
    online_worker(catalog, "w1")
    ids = [started_execution(catalog) for _ in range(3)]
    by_execution = {a.execution_id: a for a in catalog.claim_tasks(3)}
    a, b, c = (by_execution[i] for i in ids)

    results = catalog.apply_status_reports(
        [(finished(b), "w1"), (started(a), "w1"), (started(c), "w1"), (finished(a), "w1")]
    )

    assert [r.outcome for r in results] == [ReportOutcome.APPLIED] * 4
    assert [catalog.get_execution(i).status for i in ids] == [
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.RUNNING,
    ]
    assert [catalog.get_execution(i).executed_count for i in ids] == [1, 1, 1]
    [attempt_a] = catalog.execution_attempts(a.execution_id)
    [attempt_b] = catalog.execution_attempts(b.execution_id)
    [attempt_c] = catalog.execution_attempts(c.execution_id)
    assert (attempt_a.started_at is not None, attempt_a.outcome) == (True, "succeeded")
    assert (attempt_b.started_at, attempt_b.outcome) == (None, "succeeded")
    assert (attempt_c.started_at is not None, attempt_c.outcome) == (True, None)
    assert catalog.get_worker_agent("w1").running_tasks == 1


def test_a_move_that_misses_its_locked_row_rolls_the_batch_back(
    catalog: Catalog, catalog_url: str
) -> None:
    """BatchedWrites' guard: a fenced move that finds its task elsewhere than the batch
    decided aborts the whole transaction; nothing written before it in the batch stays."""
    a = claim_one(catalog)
    engine = create(catalog_url, connection_timeout_s=5)

    def write_a_wrong_batch() -> None:
        with transaction(engine) as tx:
            writes = BatchedWrites(tx)
            writes.start_attempt(a.task_id, a.attempt, "m-w1")
            writes.move(TaskEvent.START, a.task_id, a.attempt, {}, worker="w2")  # w1 holds it
            writes.write()

    with pytest.raises(CatalogError, match="0 of 1 locked tasks moved"):
        write_a_wrong_batch()
    engine.dispose()

    [attempt] = catalog.execution_attempts(a.execution_id)
    assert attempt.started_at is None
    assert catalog.get_execution(a.execution_id).status is ExecutionStatus.PENDING


def test_a_finished_report_stores_the_lines_it_carries(catalog: Catalog) -> None:
    """A task.finished with its last lines stores them like a task.log: once, even when
    the report comes twice or repeats lines a task.log brought; a forged one stores none."""
    a = claim_one(catalog)
    catalog.apply_status_reports([(started(a), "w1"), (log(a, 0), "w1")])
    report = finished(a).model_copy(update={"entries": log(a, 0, 1, 2).entries})

    forgery = finished(a, worker="w2").model_copy(update={"entries": log(a, 5).entries})
    forged = catalog.apply_status_reports([(forgery, "w2")])
    results = catalog.apply_status_reports([(report, "w1")])
    again = catalog.apply_status_reports([(report, "w1")])
    lines = [m for m in catalog.execution_messages(a.execution_id) if m.attempt == 1 and m.source]

    assert [r.outcome for r in forged] == [ReportOutcome.NOT_HOLDER]
    assert [r.outcome for r in results + again] == [
        ReportOutcome.APPLIED,
        ReportOutcome.DUPLICATE,
    ]
    assert [m.message for m in lines] == ["line 0", "line 1", "line 2"]
    assert catalog.get_execution(a.execution_id).status is ExecutionStatus.SUCCEEDED
