"""The per-package metrics: an end the master applies (a worker's task.finished through the
status handler, or the lease sweep) is counted under the catalog's project and package
names, and a finished attempt's run time is observed; nothing else is."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from consumers.master.identity import SenderCheck
from consumers.master.status import StatusHandler
from dispatcher import timers
from dispatcher.catalog.records import CleanupResult, ExpiredAttempt, ReportOutcome, ReportResult
from dispatcher.metrics import MASTER
from dispatcher.testing import FakeCatalog, make_delivery
from schemas.messages import TaskFinished, TaskOutcome
from schemas.states import ExecutionStatus, TaskState

ENDED = "scaleout_package_executions_ended_total"
ATTEMPTS = "scaleout_package_attempts_ended_total"
SECONDS = "scaleout_package_attempt_duration_seconds"


@pytest.fixture
def project() -> str:
    """A project name of this test's own: the counters are process-wide."""
    return f"Sales-{uuid.uuid4().hex[:8]}"


def value(name: str, **labels: str) -> float | None:
    return MASTER.get_sample_value(name, labels)


def finish(
    result: ReportResult, outcome: TaskOutcome = TaskOutcome.FAILED
) -> tuple[TaskFinished, FakeCatalog]:
    """Apply one task.finished from w1 whose catalog result is ``result``."""
    report = TaskFinished(
        task_id=uuid.uuid4(), attempt=1, execution_id=7, worker_id="w1", outcome=outcome
    )
    catalog = FakeCatalog()
    catalog.script_report(report.task_id, report.attempt, result)
    StatusHandler(catalog, senders=SenderCheck())([make_delivery(report, user_id="w1")])
    return report, catalog


def ended(
    project: str, status: ExecutionStatus, *, run_s: float | None = 12.5, retried: bool = False
) -> ReportResult:
    task_state = TaskState.PENDING if retried else TaskState.FAILED
    return ReportResult(
        ReportOutcome.APPLIED,
        task_state,
        status,
        retried,
        project_name=project,
        package_name="LoadSales.dtsx",
        run_s=run_s,
    )


def test_a_failed_execution_is_counted_by_project_package_and_status(project: str) -> None:
    """The execution, its attempt and the attempt's run time, under the catalog's names;
    the package's other statuses and outcomes are exported from 0 (so increase() sees them
    from their first)."""
    finish(ended(project, ExecutionStatus.FAILED))

    names = {"project": project, "package": "LoadSales.dtsx"}
    assert value(ENDED, **names, status="failed") == 1
    assert value(ENDED, **names, status="succeeded") == 0
    assert value(ENDED, **names, status="ended_unexpectedly") == 0
    assert value(ATTEMPTS, **names, outcome="failed") == 1
    assert value(ATTEMPTS, **names, outcome="expired") == 0
    assert value(f"{SECONDS}_count", **names) == 1
    assert value(f"{SECONDS}_sum", **names) == 12.5
    assert value(f"{SECONDS}_bucket", **names, le="30.0") == 1
    assert value(f"{SECONDS}_bucket", **names, le="10.0") == 0


def test_a_retried_failure_counts_the_attempt_not_the_execution(project: str) -> None:
    """Attempts left: the execution goes back to pending, so it has not ended."""
    finish(ended(project, ExecutionStatus.PENDING, retried=True))

    names = {"project": project, "package": "LoadSales.dtsx"}
    assert value(ATTEMPTS, **names, outcome="failed") == 1
    assert value(ENDED, **names, status="failed") is None


def test_an_attempt_whose_started_was_lost_is_counted_without_a_run_time(project: str) -> None:
    finish(ended(project, ExecutionStatus.SUCCEEDED, run_s=None), TaskOutcome.SUCCEEDED)

    names = {"project": project, "package": "LoadSales.dtsx"}
    assert value(ENDED, **names, status="succeeded") == 1
    assert value(ATTEMPTS, **names, outcome="succeeded") == 1
    assert value(f"{SECONDS}_count", **names) is None


@pytest.mark.parametrize("outcome", [ReportOutcome.STALE, ReportOutcome.DUPLICATE])
def test_a_report_that_changed_nothing_counts_nothing(project: str, outcome: ReportOutcome) -> None:
    result = ReportResult(outcome, project_name=project, package_name="LoadSales.dtsx")
    finish(result)

    assert value(ATTEMPTS, project=project, package="LoadSales.dtsx", outcome="failed") is None


class _Expiring:
    """A TimerCatalog whose sweep returns the given expiries."""

    def __init__(self, *expired: ExpiredAttempt) -> None:
        self._expired = list(expired)

    def master_heartbeat(self, properties: object) -> None: ...

    def expire_leases(self, as_of: datetime | None = None) -> list[ExpiredAttempt]:
        return self._expired

    def database_now(self) -> datetime:
        return datetime.now(UTC)

    def cleanup_completed_jobs(self, minutes_to_keep: int = 60) -> CleanupResult:
        raise NotImplementedError


def expiry(project: str, state: TaskState, status: ExecutionStatus) -> ExpiredAttempt:
    return ExpiredAttempt(
        uuid.uuid4(), 2, 7, "w1", state, status, project_name=project, package_name="Nightly"
    )


def test_the_lease_sweep_counts_expired_attempts_and_ended_executions(project: str) -> None:
    """A requeue counts the attempt only; an attempt with none left ends the execution
    `ended_unexpectedly`, the snake_case name every status label uses."""
    catalog = _Expiring(
        expiry(project, TaskState.PENDING, ExecutionStatus.PENDING),
        expiry(project, TaskState.ENDED_UNEXPECTEDLY, ExecutionStatus.ENDED_UNEXPECTEDLY),
    )

    timers.deal_with_expired_tasks(catalog, lambda: None)

    names = {"project": project, "package": "Nightly"}
    assert value(ATTEMPTS, **names, outcome="expired") == 2
    assert value(ENDED, **names, status="ended_unexpectedly") == 1
    assert value(ENDED, **names, status="failed") == 0
    assert value(f"{SECONDS}_count", **names) is None  # a lapse is no run time
