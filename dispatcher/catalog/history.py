"""cleanup_completed_jobs: finished tasks past retention move to the *_history tables.

Each batch is its own transaction, so a long cleanup never holds locks for long and a
crash halfway leaves every row either moved or untouched. Executions stay.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta

import sqlalchemy as sa

from dispatcher.catalog.engine import Tx, locked
from dispatcher.catalog.records import CleanupResult
from dispatcher.catalog.state import in_states
from schemas.states import TERMINAL_TASK_STATES

BATCH_SIZE = 500


def cleanup_completed_jobs(
    begin: Callable[[], AbstractContextManager[Tx]],
    minutes_to_keep: int,
    batch_size: int = BATCH_SIZE,
) -> CleanupResult:
    """Move terminal tasks unchanged for ``minutes_to_keep`` (and their jobs) to history."""
    tasks_moved = jobs_moved = 0
    while True:
        with begin() as tx:
            tasks, jobs = _move_batch(tx, minutes_to_keep, batch_size)
        tasks_moved, jobs_moved = tasks_moved + tasks, jobs_moved + jobs
        if tasks < batch_size:
            return CleanupResult(tasks_moved, jobs_moved)


def _move_batch(tx: Tx, minutes_to_keep: int, batch_size: int) -> tuple[int, int]:
    tasks = tx.t.tasks
    cutoff = tx.now - timedelta(minutes=minutes_to_keep)
    query = (
        sa.select(tasks.c.task_id, tasks.c.job_id)
        .where(
            in_states(tasks.c.status, TERMINAL_TASK_STATES),
            tasks.c.last_updated_time <= cutoff,
        )
        .order_by(tasks.c.last_updated_time, tasks.c.task_id)
        .limit(batch_size)
    )
    rows = tx.conn.execute(locked(query, tasks, skip_locked=True)).all()
    if not rows:
        return 0, 0
    task_ids = [row.task_id for row in rows]
    _copy_and_delete(tx, tx.t.task_attempts, tx.t.task_attempts_history, task_ids)
    _copy_and_delete(tx, tasks, tx.t.tasks_history, task_ids)
    return len(task_ids), _move_idle_jobs(tx, {row.job_id for row in rows})


def _copy_and_delete(tx: Tx, source: sa.Table, target: sa.Table, task_ids: list[uuid.UUID]) -> None:
    where = source.c.task_id.in_(task_ids)
    columns = [column.name for column in source.c]
    tx.conn.execute(target.insert().from_select(columns, sa.select(*source.c).where(where)))
    tx.conn.execute(sa.delete(source).where(where))


def _move_idle_jobs(tx: Tx, job_ids: set[uuid.UUID]) -> int:
    """Jobs whose every task has moved go to history too."""
    jobs, tasks, members = tx.t.jobs, tx.t.tasks, tx.t.job_worker_agents
    busy = sa.select(tasks.c.task_id).where(tasks.c.job_id == jobs.c.job_id).exists()
    idle_query = sa.select(jobs.c.job_id).where(jobs.c.job_id.in_(sorted(job_ids)), ~busy)
    idle = list(tx.conn.execute(idle_query).scalars())
    if not idle:
        return 0
    where = jobs.c.job_id.in_(idle)
    columns = [column.name for column in jobs.c]
    tx.conn.execute(
        tx.t.jobs_history.insert().from_select(columns, sa.select(*jobs.c).where(where))
    )
    tx.conn.execute(sa.delete(members).where(members.c.job_id.in_(idle)))
    tx.conn.execute(sa.delete(jobs).where(where))
    return len(idle)
