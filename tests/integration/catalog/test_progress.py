"""task.progress on both databases: the current attempt keeps its latest percent and message,
in the batch that renews its lease; stale, forged and empty reports store nothing."""

from __future__ import annotations

from typing import Any

from dispatcher.catalog import Assignment, Catalog, ReportOutcome
from schemas.messages import PROGRESS_MESSAGE_MAX_CHARS, TaskProgress
from tests.fixtures.catalog import finished, online_worker, started, started_execution


def claim_one(catalog: Catalog, *, retry_count: int = 0) -> Assignment:
    online_worker(catalog, "w1")
    started_execution(catalog, retry_count=retry_count)
    [assignment] = catalog.claim_tasks(1)
    return assignment


def report(a: Assignment, percent: float | None, message: str = "", **about: Any) -> TaskProgress:
    fields: dict[str, Any] = {
        "task_id": a.task_id,
        "attempt": a.attempt,
        "execution_id": a.execution_id,
        "worker_id": a.worker_id,
    }
    return TaskProgress(**(fields | about), percent=percent, message=message)


def stored(catalog: Catalog, a: Assignment) -> tuple[float | None, str, bool]:
    """(percent, message, has a time) on the attempt's row."""
    [row] = [r for r in catalog.execution_attempts(a.execution_id) if r.attempt == a.attempt]
    return row.progress_percent, row.progress_message, row.progress_time is not None


def test_the_current_attempt_keeps_its_latest_progress(catalog: Catalog) -> None:
    """percent, message and time reach the attempt's row and get_execution; a later report,
    in the same batch or the next, replaces them."""
    a = claim_one(catalog)
    catalog.apply_status_reports([(started(a), "w1")])

    results = catalog.apply_status_reports(
        [(report(a, 10, "Reading"), "w1"), (report(a, 42.5, "Loading rows"), "w1")]
    )
    row = catalog.get_execution(a.execution_id)

    assert [r.outcome for r in results] == [ReportOutcome.APPLIED] * 2
    assert (row.progress_percent, row.progress_message) == (42.5, "Loading rows")
    assert row.progress_time is not None
    assert row.progress_time.tzinfo is not None
    assert stored(catalog, a) == (42.5, "Loading rows", True)
    catalog.apply_status_reports([(report(a, None, "Writing totals"), "w1")])
    assert stored(catalog, a) == (None, "Writing totals", True)


def test_progress_of_a_dispatched_attempt_is_kept(catalog: Catalog) -> None:
    """Before its started is applied (lost or late), the holder's progress still counts."""
    a = claim_one(catalog)

    [result] = catalog.apply_status_reports([(report(a, 5), "w1")])

    assert result.outcome is ReportOutcome.APPLIED
    assert stored(catalog, a) == (5.0, "", True)


def test_progress_just_before_finished_in_one_batch_is_kept(catalog: Catalog) -> None:
    """The worker's last progress rides in the batch of its finished: it stays stored."""
    a = claim_one(catalog)

    results = catalog.apply_status_reports(
        [(started(a), "w1"), (report(a, 100, "done"), "w1"), (finished(a), "w1")]
    )

    assert [r.outcome for r in results] == [ReportOutcome.APPLIED] * 3
    assert stored(catalog, a) == (100.0, "done", True)
    assert catalog.get_execution(a.execution_id).progress_percent == 100.0


def test_stale_and_forged_progress_stores_nothing(catalog: Catalog) -> None:
    """A report for a past attempt, from a worker that does not hold it, or after the end
    is refused and leaves every stored value as it was."""
    a = claim_one(catalog, retry_count=1)
    online_worker(catalog, "w2")
    catalog.apply_status_reports([(started(a), "w1"), (report(a, 30, "first try"), "w1")])
    catalog.apply_status_reports([(finished(a, "failed"), "w1")])
    [b] = catalog.claim_tasks(5)
    catalog.apply_status_reports([(started(b), "w1")])

    results = catalog.apply_status_reports(
        [
            (report(a, 99, "late"), "w1"),  # attempt 1 is no longer current
            (report(b, 77, "forged", worker_id="w2"), "w2"),  # w2 does not hold attempt 2
        ]
    )
    catalog.apply_status_reports([(finished(b), "w1")])
    [after_end] = catalog.apply_status_reports([(report(b, 88, "after the end"), "w1")])

    assert [r.outcome for r in results] == [ReportOutcome.STALE, ReportOutcome.NOT_HOLDER]
    assert after_end.outcome is ReportOutcome.STALE
    assert stored(catalog, a) == (30.0, "first try", True)
    assert stored(catalog, b) == (None, "", False)
    row = catalog.get_execution(a.execution_id)
    assert (row.attempt, row.progress_percent, row.progress_time) == (2, None, None)


def test_an_empty_report_renews_but_stores_nothing(catalog: Catalog) -> None:
    """No percent and no message: a keep-alive; the stored values stay."""
    a = claim_one(catalog)
    catalog.apply_status_reports([(report(a, 60, "half"), "w1")])

    [result] = catalog.apply_status_reports([(report(a, None), "w1")])

    assert result.outcome is ReportOutcome.APPLIED
    assert stored(catalog, a) == (60.0, "half", True)


def test_a_long_message_is_cut_to_the_column(catalog: Catalog) -> None:
    """A message past PROGRESS_MESSAGE_MAX_CHARS is stored cut, not refused."""
    a = claim_one(catalog)

    catalog.apply_status_reports([(report(a, 1, "é" * 5000), "w1")])

    assert stored(catalog, a) == (1.0, "é" * PROGRESS_MESSAGE_MAX_CHARS, True)


def test_progress_moves_to_history_with_its_attempt(catalog: Catalog) -> None:
    """After cleanup the execution still shows its last attempt's progress."""
    a = claim_one(catalog)
    catalog.apply_status_reports(
        [(started(a), "w1"), (report(a, 100, "done"), "w1"), (finished(a), "w1")]
    )

    moved = catalog.cleanup_completed_jobs(0)
    row = catalog.get_execution(a.execution_id)

    assert moved.tasks_moved == 1
    assert (row.progress_percent, row.progress_message) == (100.0, "done")
