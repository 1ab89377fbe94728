"""claim_tasks and the outbox (mark_published / unpublished_assignments) on both databases."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.catalog import Catalog
from schemas.project import content_hash
from schemas.states import ExecutionStatus, TaskState
from tests.fixtures.catalog import heartbeat, online_worker, project_archive, started_execution


def test_claim_builds_the_assignment(catalog: Catalog) -> None:
    """A claimed task becomes attempt 1 on the worker, with what the worker needs to run it."""
    online_worker(catalog, "w1")
    execution_id = started_execution(catalog, retry_count=1)

    [assignment] = catalog.claim_tasks(10)

    assert (assignment.execution_id, assignment.worker_id, assignment.attempt) == (
        execution_id,
        "w1",
        1,
    )
    assert (assignment.folder, assignment.project, assignment.package) == (
        "Finance",
        "Sales",
        "Load",
    )
    assert assignment.project_hash == content_hash(project_archive("Sales"))
    assert assignment.max_attempts == 2
    lease_left = assignment.lease_expires_at - datetime.now(UTC)
    assert timedelta(seconds=200) < lease_left < timedelta(seconds=400)
    row = catalog.get_execution(execution_id)
    assert (row.task_state, row.status) == (TaskState.DISPATCHED, ExecutionStatus.PENDING)
    assert catalog.claim_tasks(10) == []


def test_no_eligible_worker_leaves_the_task_pending(catalog: Catalog) -> None:
    """A disabled worker gets nothing; the execution stays pending (5)."""
    catalog.record_heartbeat(heartbeat("w1"), "w1")
    execution_id = started_execution(catalog)

    assert catalog.claim_tasks(10) == []
    assert catalog.get_execution(execution_id).status is ExecutionStatus.PENDING


def test_worker_not_accepting_gets_nothing(catalog: Catalog) -> None:
    """A worker whose heartbeat says it is not accepting (CPU/memory) gets no task."""
    online_worker(catalog, "w1", accepting=False)
    started_execution(catalog)

    assert catalog.claim_tasks(10) == []


def test_offline_worker_gets_nothing(catalog: Catalog, catalog_url: str) -> None:
    """A worker whose last heartbeat is older than the offline threshold gets no task."""
    impatient = Catalog.open(catalog_url, worker_offline_after_s=0.2)
    online_worker(impatient, "w1")
    started_execution(impatient)
    time.sleep(0.5)

    assert impatient.claim_tasks(10) == []
    assert not impatient.get_worker_agent("w1").is_online
    impatient.close()


def test_claim_respects_max_task_count(catalog: Catalog) -> None:
    """A worker is never given more leased tasks than its MaxTaskCount."""
    online_worker(catalog, "w1", max_task_count=2)
    ids = [started_execution(catalog) for _ in range(3)]

    first = catalog.claim_tasks(10)
    second = catalog.claim_tasks(10)

    assert [a.execution_id for a in first] == ids[:2]
    assert second == []
    assert catalog.get_worker_agent("w1").running_tasks == 2


@pytest.mark.parametrize(("task_backlog", "given"), [(1, 3), (0, 2)])
def test_claim_fills_max_task_count_and_the_task_backlog(
    catalog: Catalog, task_backlog: int, given: int
) -> None:
    """A worker is given up to MaxTaskCount + TaskBacklog leased tasks, no more: it holds
    the backlog until a slot frees."""
    online_worker(catalog, "w1", max_task_count=2, task_backlog=task_backlog)
    ids = [started_execution(catalog) for _ in range(4)]

    first = catalog.claim_tasks(10)
    second = catalog.claim_tasks(10)

    assert [a.execution_id for a in first] == ids[:given]
    assert second == []
    assert catalog.get_worker_agent("w1").running_tasks == given


def test_claim_is_oldest_first(catalog: Catalog) -> None:
    """With a limit, the task pending longest goes first."""
    online_worker(catalog, "w1")
    ids = [started_execution(catalog) for _ in range(3)]

    claimed = [a.execution_id for a in catalog.claim_tasks(1) + catalog.claim_tasks(5)]

    assert claimed == ids


def test_claim_spreads_over_free_slots(catalog: Catalog) -> None:
    """Each task goes to the eligible worker with the most free slots."""
    online_worker(catalog, "w1", max_task_count=4)
    online_worker(catalog, "w2", max_task_count=4)
    for _ in range(4):
        started_execution(catalog)

    per_worker = Counter(a.worker_id for a in catalog.claim_tasks(10))

    assert per_worker == {"w1": 2, "w2": 2}


def test_claim_respects_allowed_workers(catalog: Catalog) -> None:
    """An execution limited to w2 goes to w2 only, even when w1 is freer."""
    online_worker(catalog, "w1", max_task_count=10)
    online_worker(catalog, "w2", max_task_count=1)
    online_worker(catalog, "w3", max_task_count=10)
    execution_id = started_execution(catalog, useanyworker=False, workers=("w2",))

    [assignment] = catalog.claim_tasks(10)

    assert (assignment.execution_id, assignment.worker_id) == (execution_id, "w2")


def test_tasks_only_a_busy_worker_may_run_do_not_block_those_behind(catalog: Catalog) -> None:
    """The claim reads pending tasks a page (the free slots) at a time: a head of tasks
    waiting for a full worker is read past, up to the claim's limit, and each task is
    placed once."""
    online_worker(catalog, "w1", max_task_count=2)
    online_worker(catalog, "w2", max_task_count=1)
    held = started_execution(catalog, useanyworker=False, workers=("w2",))
    [busy] = catalog.claim_tasks(10)
    for _ in range(3):
        started_execution(catalog, useanyworker=False, workers=("w2",))
    anyone = [started_execution(catalog) for _ in range(2)]

    too_short = catalog.claim_tasks(3)  # the limit bounds what one claim reads
    claimed = catalog.claim_tasks(10)

    assert (busy.execution_id, busy.worker_id) == (held, "w2")
    assert too_short == []
    assert [(a.execution_id, a.worker_id) for a in claimed] == [(i, "w1") for i in anyone]
    assert catalog.claim_tasks(10) == []


def test_allowed_worker_disabled_leaves_task_pending(catalog: Catalog) -> None:
    """If the only allowed worker is disabled, the task waits even though others are free."""
    online_worker(catalog, "w1")
    online_worker(catalog, "w2")
    started_execution(catalog, useanyworker=False, workers=("w2",))
    catalog.disable_worker_agent("w2")

    assert catalog.claim_tasks(10) == []


def test_outbox_republishes_unconfirmed_attempts(catalog: Catalog) -> None:
    """A dispatched attempt is returned again until its publish is marked confirmed."""
    online_worker(catalog, "w1")
    started_execution(catalog)
    [assignment] = catalog.claim_tasks(10)

    assert catalog.unpublished_assignments(older_than_s=3600) == []
    assert catalog.unpublished_assignments(older_than_s=0) == [assignment]
    catalog.mark_published([(assignment.task_id, assignment.attempt)])
    assert catalog.unpublished_assignments(older_than_s=0) == []


def test_mark_published_ignores_older_attempts(catalog: Catalog) -> None:
    """Confirming an older attempt's publish does not mark the current attempt published."""
    online_worker(catalog, "w1")
    started_execution(catalog)
    [assignment] = catalog.claim_tasks(10)

    catalog.mark_published([(assignment.task_id, assignment.attempt + 5)])

    assert catalog.unpublished_assignments(older_than_s=0) == [assignment]
