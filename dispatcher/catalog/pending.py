"""Why a pending execution is not dispatched: the facts the dispatcher decides on, read in
one transaction (the sentence is :func:`dispatcher.pending.explain`'s)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from dispatcher.catalog import reads
from dispatcher.catalog.engine import Timing, Tx, utc
from dispatcher.catalog.records import ExecutionRow, PendingFacts
from schemas.states import TaskState


def pending_facts(tx: Tx, timing: Timing, execution_id: int) -> PendingFacts:
    """The execution, the workers it may run on as the dispatcher sees them, the master's
    last heartbeat and the pending tasks ahead of it. NotFound for an unknown id."""
    row = reads.get_execution(tx, execution_id)
    only = None if row.useanyworker else row.allowed_workers
    last_seen, interval_s = _master(tx)
    return PendingFacts(
        execution_id=execution_id,
        status=row.status,
        task_state=row.task_state,
        attempt=row.attempt,
        holder=row.holder if row.task_state is TaskState.DISPATCHED else None,
        use_any_worker=row.useanyworker,
        candidates=tuple(reads.list_worker_agents(tx, timing, only)),
        now=utc(tx.now),
        master_last_seen=last_seen,
        master_heartbeat_interval_s=interval_s,
        pending_ahead=_ahead(tx, row),
    )


def _master(tx: Tx) -> tuple[datetime | None, float | None]:
    """The master's LAST_ONLINE_TIME and heartbeat interval, None where never written."""
    properties = reads.master_properties(tx)
    try:
        last_seen: datetime | None = utc(datetime.fromisoformat(properties["LAST_ONLINE_TIME"]))
    except (KeyError, ValueError):
        last_seen = None
    try:
        interval_s = int(properties["MASTER_HEARTBEAT_INTERVALINMS"]) / 1000
    except (KeyError, ValueError):
        interval_s = None
    return last_seen, interval_s


def _ahead(tx: Tx, row: ExecutionRow) -> int:
    """Pending, not cancelled tasks the dispatcher takes before this one (it takes the
    oldest ``ready_for_dispatch_time`` first, then the smallest task id)."""
    if row.task_state is not TaskState.PENDING or row.task_id is None:
        return 0
    tasks = tx.t.tasks
    mine = (
        sa.select(tasks.c.ready_for_dispatch_time)
        .where(tasks.c.task_id == row.task_id)
        .scalar_subquery()
    )
    earlier = sa.or_(
        tasks.c.ready_for_dispatch_time < mine,
        sa.and_(tasks.c.ready_for_dispatch_time == mine, tasks.c.task_id < row.task_id),
    )
    query = sa.select(sa.func.count()).where(
        tasks.c.status == int(TaskState.PENDING), tasks.c.is_cancelled == sa.false(), earlier
    )
    return int(tx.conn.execute(query).scalar_one())
