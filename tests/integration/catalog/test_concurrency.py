"""Concurrency: two OS processes (spawn) racing on the same tasks (PostgreSQL; claims on
SQLite too)."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from dispatcher.catalog import Catalog
from dispatcher.errors import OperationRefused
from schemas.messages import TaskFinished, TaskOutcome
from schemas.states import ExecutionStatus
from tests.fixtures.catalog import online_worker, started, started_execution

TASKS = 40
Claim = tuple[str, int, str]
About = tuple[str, int, int, str]


def _claim_until_empty(url: str) -> list[Claim]:
    """Child process: claim in small batches until nothing is left."""
    catalog = Catalog.open(url)
    claims: list[Claim] = []
    empty_rounds = 0
    while empty_rounds < 3:
        batch = catalog.claim_tasks(3)
        empty_rounds = 0 if batch else empty_rounds + 1
        claims += [(str(a.task_id), a.attempt, a.worker_id) for a in batch]
    catalog.close()
    return claims


def _finish_each(url: str, attempts: list[About], outcome: str) -> list[str]:
    """Child process: report one attempt's end per transaction, as fast as it can."""
    catalog = Catalog.open(url)
    results = []
    for task_id, attempt, execution_id, worker in attempts:
        report = TaskFinished(
            task_id=uuid.UUID(task_id),
            attempt=attempt,
            execution_id=execution_id,
            worker_id=worker,
            outcome=TaskOutcome(outcome),
        )
        [result] = catalog.apply_status_reports([(report, worker)])
        results.append(result.outcome.value)
    catalog.close()
    return results


class ChildFailed(str):
    """What a child process raised, as text (exceptions from drivers may not pickle)."""

    __slots__ = ()


def _child(
    barrier: Any, results: Any, index: int, job: Callable[..., object], args: tuple[Any, ...]
) -> None:
    barrier.wait(timeout=60)  # both processes are up and imported: start together
    try:
        results.put((index, job(*args)))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put((index, ChildFailed(f"{type(exc).__name__}: {exc}")))


def _race(*jobs: tuple[Callable[..., object], tuple[Any, ...]]) -> list[Any]:
    """Run each (job, args) in its own spawned process, released at the same moment."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(jobs)), context.Queue()
    processes = [
        context.Process(target=_child, args=(barrier, results, index, job, args))
        for index, (job, args) in enumerate(jobs)
    ]
    for process in processes:
        process.start()
    outputs = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=30)
    failures = [out for out in outputs.values() if isinstance(out, ChildFailed)]
    assert not failures, failures
    return [outputs[index] for index in range(len(jobs))]


def test_two_processes_never_claim_the_same_task(catalog_url: str) -> None:
    """Two dispatchers claiming at once: every task is claimed exactly once, as attempt 1.

    On SQLite too: BEGIN IMMEDIATE makes the second writer wait instead of failing.
    """
    catalog = Catalog.open(catalog_url)
    for worker in ("w1", "w2", "w3"):
        online_worker(catalog, worker, max_task_count=TASKS)
    for _ in range(TASKS):
        started_execution(catalog)
    catalog.close()

    first, second = _race(
        (_claim_until_empty, (catalog_url,)), (_claim_until_empty, (catalog_url,))
    )
    claims = first + second

    per_task = Counter(task_id for task_id, _, _ in claims)
    assert len(per_task) == TASKS
    assert set(per_task.values()) == {1}
    assert {attempt for _, attempt, _ in claims} == {1}


def test_racing_reports_for_two_attempts_keep_the_newer(pg_catalog_url: str) -> None:
    """An old attempt's late `succeeded` racing the new attempt's `failed`: the newer wins."""
    quick = Catalog.open(pg_catalog_url, initial_lease_s=0.2)
    online_worker(quick, "w1", lease_interval_s=0.2)
    ids = [started_execution(quick, retry_count=1) for _ in range(10)]
    old = quick.claim_tasks(len(ids))
    quick.apply_status_reports([(started(a), "w1") for a in old])
    time.sleep(0.5)
    assert len(quick.expire_leases()) == len(ids)
    quick.disable_worker_agent("w1")
    online_worker(quick, "w2")
    new = quick.claim_tasks(len(ids))
    quick.apply_status_reports([(started(a), "w2") for a in new])
    quick.close()

    def about(assignments: list) -> list[About]:  # type: ignore[type-arg]
        return [(str(a.task_id), a.attempt, a.execution_id, a.worker_id) for a in assignments]

    late_results, current_results = _race(
        (_finish_each, (pg_catalog_url, about(old), "succeeded")),
        (_finish_each, (pg_catalog_url, about(new), "failed")),
    )

    check = Catalog.open(pg_catalog_url)
    rows = [check.get_execution(execution_id) for execution_id in ids]
    check.close()
    assert {a.attempt for a in new} == {2}
    assert set(late_results) == {"stale"}
    assert set(current_results) == {"applied"}
    assert {(row.status, row.attempt, row.executed_count) for row in rows} == {
        (ExecutionStatus.FAILED, 2, 2)
    }


def _stop_each(url: str, execution_ids: list[int]) -> list[str]:
    """Child process: stop each execution; a finished one refuses."""
    catalog = Catalog.open(url)
    results = []
    for execution_id in execution_ids:
        try:
            catalog.stop_operation(execution_id, stopped_by="ops")
            results.append("stopping")
        except OperationRefused:
            results.append("refused")
    catalog.close()
    return results


def test_stop_racing_finished_reports_neither_deadlocks_nor_loses_the_outcome(
    pg_catalog_url: str,
) -> None:
    """stop_operation and `finished succeeded` on the same tasks at once: all succeed."""
    catalog = Catalog.open(pg_catalog_url)
    online_worker(catalog, "w1", max_task_count=50)
    ids = [started_execution(catalog) for _ in range(15)]
    running = catalog.claim_tasks(len(ids))
    catalog.apply_status_reports([(started(a), "w1") for a in running])
    about = [(str(a.task_id), a.attempt, a.execution_id, a.worker_id) for a in running]

    stops, finishes = _race(
        (_stop_each, (pg_catalog_url, ids)),
        (_finish_each, (pg_catalog_url, about, "succeeded")),
    )
    statuses = {catalog.get_execution(execution_id).status for execution_id in ids}
    catalog.close()

    assert set(stops) <= {"stopping", "refused"}
    assert set(finishes) == {"applied"}
    assert statuses == {ExecutionStatus.SUCCEEDED}
