"""Reads for the CLI, tests and metrics: rows become plain records, times aware UTC."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from dispatcher.catalog.engine import Timing, Tx, aware, to_db, utc
from dispatcher.catalog.records import (
    AttemptRow,
    CatalogCounts,
    ExecutionFilter,
    ExecutionRow,
    MessageRow,
    WorkerAgentRow,
)
from dispatcher.catalog.state import in_states
from dispatcher.errors import NotFound
from schemas.states import LEASED_TASK_STATES, ExecutionStatus, TaskState

OPERATION_EXECUTION = 200


def _executions_query(tx: Tx) -> sa.Select[Any]:
    """Executions with their task, which may have moved to tasks_history by cleanup."""
    e, o, t, h = tx.t.executions, tx.t.operations, tx.t.tasks, tx.t.tasks_history

    def task(column: str) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(t.c[column], h.c[column])

    return (
        sa.select(
            e,
            o.c.status,
            o.c.created_time,
            o.c.start_time,
            o.c.end_time,
            o.c.worker_agent_id,
            o.c.executed_count,
            o.c.caller_name,
            o.c.stopped_by_name,
            task("task_id").label("task_id"),
            task("status").label("task_status"),
            task("attempt").label("attempt"),
            task("max_executed_count").label("max_executed_count"),
            task("worker_agent_id").label("holder"),
        )
        .join(o, o.c.operation_id == e.c.execution_id)
        .outerjoin(t, t.c.execution_id == e.c.execution_id)
        .outerjoin(h, h.c.execution_id == e.c.execution_id)
    )


def get_execution(tx: Tx, execution_id: int) -> ExecutionRow:
    query = _executions_query(tx).where(tx.t.executions.c.execution_id == execution_id)
    rows = _execution_rows(tx, tx.conn.execute(query).all())
    if not rows:
        raise NotFound(f"execution {execution_id} does not exist", code=27101)
    return rows[0]


def list_executions(
    tx: Tx,
    status: ExecutionStatus | None,
    limit: int,
    where: ExecutionFilter | None = None,
) -> list[ExecutionRow]:
    """Newest first; ``where`` narrows by folder, project, package and created time."""
    e, o = tx.t.executions, tx.t.operations
    query = _executions_query(tx).order_by(e.c.execution_id.desc()).limit(max(limit, 0))
    if status is not None:
        query = query.where(o.c.status == int(status))
    if where is not None:
        query = query.where(*_filters(tx, where))
    return _execution_rows(tx, tx.conn.execute(query).all())


def _filters(tx: Tx, where: ExecutionFilter) -> list[sa.ColumnElement[bool]]:
    e, o = tx.t.executions, tx.t.operations
    named = [
        (e.c.folder_name, where.folder),
        (e.c.project_name, where.project),
        (e.c.package_name, where.package),
    ]
    clauses = [column == value for column, value in named if value is not None]
    if where.created_after is not None:
        clauses.append(o.c.created_time >= to_db(tx, where.created_after))
    if where.created_before is not None:
        clauses.append(o.c.created_time < to_db(tx, where.created_before))
    return clauses


_Progress = tuple[float | None, str, datetime | None]
_NO_PROGRESS: _Progress = (None, "", None)
"""(percent, message, time) of an attempt that reported no progress."""


def _execution_rows(tx: Tx, rows: Sequence[Any]) -> list[ExecutionRow]:
    allowed = _allowed(tx, [row.execution_id for row in rows])
    errors = _last_errors(tx, [row.task_id for row in rows if row.task_id is not None])
    progress = _progress(tx, {row.task_id: row.attempt for row in rows if row.attempt})
    return [
        _execution_row(row, allowed, errors, progress.get(row.task_id, _NO_PROGRESS))
        for row in rows
    ]


def _execution_row(
    row: Any,
    allowed: dict[int, tuple[str, ...]],
    errors: dict[uuid.UUID, str],
    progress: _Progress,
) -> ExecutionRow:
    return ExecutionRow(
        execution_id=row.execution_id,
        folder_name=row.folder_name,
        project_name=row.project_name,
        package_name=row.package_name,
        project_lsn=row.project_lsn,
        status=ExecutionStatus(row.status),
        created_time=utc(row.created_time),
        start_time=aware(row.start_time),
        end_time=aware(row.end_time),
        worker_agent_id=row.worker_agent_id,
        executed_count=row.executed_count,
        max_executed_count=row.max_executed_count,
        use32bitruntime=bool(row.use32bitruntime),
        runinscaleout=bool(row.runinscaleout),
        useanyworker=bool(row.useanyworker),
        caller_name=row.caller_name,
        stopped_by_name=row.stopped_by_name,
        allowed_workers=allowed.get(row.execution_id, ()),
        reference_id=row.reference_id,
        task_id=row.task_id,
        task_state=None if row.task_status is None else TaskState(row.task_status),
        attempt=row.attempt or 0,
        error=errors.get(row.task_id, ""),
        progress_percent=progress[0],
        progress_message=progress[1],
        progress_time=progress[2],
        holder=row.holder,
    )


def _allowed(tx: Tx, execution_ids: list[int]) -> dict[int, tuple[str, ...]]:
    if not execution_ids:
        return {}
    jobs, members = tx.t.jobs, tx.t.job_worker_agents
    query = (
        sa.select(jobs.c.execution_id, members.c.worker_agent_id)
        .join(members, members.c.job_id == jobs.c.job_id)
        .where(jobs.c.execution_id.in_(execution_ids))
        .order_by(jobs.c.execution_id, members.c.worker_agent_id)
    )
    found: dict[int, list[str]] = {}
    for row in tx.conn.execute(query):
        found.setdefault(row.execution_id, []).append(row.worker_agent_id)
    return {key: tuple(value) for key, value in found.items()}


def _last_errors(tx: Tx, task_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The latest attempt's error per task, live or moved to history."""
    if not task_ids:
        return {}
    found: dict[uuid.UUID, tuple[int, str]] = {}
    for a in (tx.t.task_attempts, tx.t.task_attempts_history):
        query = sa.select(a.c.task_id, a.c.attempt, a.c.error).where(
            a.c.task_id.in_(task_ids), a.c.error.isnot(None)
        )
        for row in tx.conn.execute(query):
            if row.attempt >= found.get(row.task_id, (0, ""))[0]:
                found[row.task_id] = (row.attempt, row.error)
    return {task_id: error for task_id, (_, error) in found.items()}


def _progress(tx: Tx, current: dict[uuid.UUID, int]) -> dict[uuid.UUID, _Progress]:
    """The latest progress of each task's current attempt, live or moved to history."""
    if not current:
        return {}
    found: dict[uuid.UUID, _Progress] = {}
    for a in (tx.t.task_attempts, tx.t.task_attempts_history):
        query = sa.select(
            a.c.task_id,
            a.c.attempt,
            a.c.progress_percent,
            a.c.progress_message,
            a.c.progress_time,
        ).where(a.c.task_id.in_(sorted(current)), a.c.progress_time.isnot(None))
        for row in tx.conn.execute(query):
            if row.attempt == current[row.task_id]:
                found[row.task_id] = (
                    row.progress_percent,
                    row.progress_message or "",
                    aware(row.progress_time),
                )
    return found


def _workers_query(tx: Tx) -> sa.Select[Any]:
    w, t = tx.t.worker_agents, tx.t.tasks
    held = (
        sa.select(t.c.worker_agent_id, sa.func.count().label("held"))
        .where(in_states(t.c.status, LEASED_TASK_STATES))
        .group_by(t.c.worker_agent_id)
        .subquery()
    )
    return (
        sa.select(w, sa.func.coalesce(held.c.held, 0).label("held"))
        .outerjoin(held, held.c.worker_agent_id == w.c.worker_agent_id)
        .order_by(w.c.worker_agent_id)
    )


def _worker_rows(tx: Tx, timing: Timing, rows: Iterable[Any]) -> list[WorkerAgentRow]:
    online_since = utc(tx.now - timedelta(seconds=timing.worker_offline_after_s))
    return [
        WorkerAgentRow(
            worker_agent_id=row.worker_agent_id,
            is_enabled=bool(row.is_enabled),
            display_name=row.display_name,
            description=row.description,
            machine_name=row.machine_name,
            tags=row.tags,
            user_account=row.user_account,
            last_online_time=aware(row.last_online_time),
            is_online=row.last_online_time is not None
            and utc(row.last_online_time) >= online_since,
            running_tasks=int(row.held),
            max_task_count=row.max_task_count,
            cpu_percent=row.cpu_percent,
            free_memory_mb=row.free_memory_mb,
            accepting=bool(row.accepting),
            not_accepting=row.not_accepting or "",
            free_disk_mb=row.free_disk_mb,
            last_refusal_reason=row.last_refusal_reason or "",
            last_refusal_detail=row.last_refusal_detail or "",
            last_refusal_time=aware(row.last_refusal_time),
            task_backlog=row.task_backlog,
        )
        for row in rows
    ]


def get_worker_agent(tx: Tx, timing: Timing, worker_agent_id: str) -> WorkerAgentRow:
    w = tx.t.worker_agents
    rows = tx.conn.execute(_workers_query(tx).where(w.c.worker_agent_id == worker_agent_id))
    found = _worker_rows(tx, timing, rows)
    if not found:
        raise NotFound(f"worker agent {worker_agent_id!r} does not exist", code=27243)
    return found[0]


def list_worker_agents(
    tx: Tx, timing: Timing, only: Sequence[str] | None = None
) -> list[WorkerAgentRow]:
    """Every worker agent, in id order; only those named in ``only`` when given."""
    query = _workers_query(tx)
    if only is not None:
        query = query.where(tx.t.worker_agents.c.worker_agent_id.in_(sorted(only)))
    return _worker_rows(tx, timing, tx.conn.execute(query))


def execution_messages(tx: Tx, execution_id: int, after_id: int, limit: int) -> list[MessageRow]:
    """Messages in the order they were stored (by id): the cursor of a follower."""
    m = tx.t.operation_messages
    query = (
        sa.select(m)
        .where(m.c.operation_id == execution_id, m.c.operation_message_id > after_id)
        .order_by(m.c.operation_message_id)
        .limit(max(limit, 0))
    )
    return [_message_row(row) for row in tx.conn.execute(query)]


MessageKey = tuple[datetime, int]
"""(message_time, message_id): the order of ``executions logs``."""


def execution_messages_by_time(
    tx: Tx, execution_id: int, after: MessageKey | None, up_to_id: int | None, limit: int
) -> list[MessageRow]:
    """One page of messages in time order, then by id, after the key ``after``; only ids up
    to ``up_to_id`` (a snapshot's last id) when given. A range read of the time index."""
    m = tx.t.operation_messages
    query = sa.select(m).where(m.c.operation_id == execution_id)
    if after is not None:
        moment, message_id = to_db(tx, after[0]), after[1]
        query = query.where(
            sa.or_(
                m.c.message_time > moment,
                sa.and_(m.c.message_time == moment, m.c.operation_message_id > message_id),
            )
        )
    if up_to_id is not None:
        query = query.where(m.c.operation_message_id <= up_to_id)
    query = query.order_by(m.c.message_time, m.c.operation_message_id).limit(max(limit, 0))
    return [_message_row(row) for row in tx.conn.execute(query)]


def last_message_id(tx: Tx, execution_id: int) -> int:
    """The newest message id of the execution; 0 when it has none."""
    m = tx.t.operation_messages
    query = sa.select(sa.func.max(m.c.operation_message_id)).where(m.c.operation_id == execution_id)
    return int(tx.conn.execute(query).scalar_one_or_none() or 0)


def _message_row(row: Any) -> MessageRow:
    return MessageRow(
        message_id=row.operation_message_id,
        operation_id=row.operation_id,
        message_time=utc(row.message_time),
        message_type=row.message_type,
        message_source_type=row.message_source_type,
        message=row.message,
        attempt=row.attempt,
        source=row.message_source_name or "",
    )


def master_properties(tx: Tx) -> dict[str, str]:
    p = tx.t.master_properties
    rows = tx.conn.execute(sa.select(p.c.property_name, p.c.property_value))
    return {row.property_name: row.property_value for row in rows}


def project_archive(tx: Tx, content_hash: str) -> bytes | None:
    v = tx.t.object_versions
    query = sa.select(v.c.object_data).where(v.c.content_hash == content_hash).limit(1)
    data = tx.conn.execute(query).scalar_one_or_none()
    return None if data is None else bytes(data)


def counts(tx: Tx, timing: Timing) -> CatalogCounts:
    o, w, t = tx.t.operations, tx.t.worker_agents, tx.t.tasks
    by_status = (
        sa.select(o.c.status, sa.func.count().label("n"))
        .where(o.c.operation_type == OPERATION_EXECUTION)
        .group_by(o.c.status)
    )
    online_since = tx.now - timedelta(seconds=timing.worker_offline_after_s)
    enabled = sa.select(sa.func.count()).where(w.c.is_enabled == sa.true())
    online = sa.select(sa.func.count()).where(w.c.last_online_time >= online_since)
    oldest = sa.select(sa.func.min(t.c.ready_for_dispatch_time)).where(
        t.c.status == int(TaskState.PENDING)
    )
    oldest_time = tx.conn.execute(oldest).scalar_one_or_none()
    age = 0.0 if oldest_time is None else (utc(tx.now) - utc(oldest_time)).total_seconds()
    return CatalogCounts(
        executions_by_status={
            ExecutionStatus(row.status): int(row.n) for row in tx.conn.execute(by_status)
        },
        workers_enabled=int(tx.conn.execute(enabled).scalar_one()),
        workers_online=int(tx.conn.execute(online).scalar_one()),
        oldest_pending_age_s=max(age, 0.0),
    )


def execution_attempts(tx: Tx, execution_id: int) -> list[AttemptRow]:
    """Every attempt of the execution's task, oldest first, history included."""
    task_ids = {
        row.task_id
        for table in (tx.t.tasks, tx.t.tasks_history)
        for row in tx.conn.execute(
            sa.select(table.c.task_id).where(table.c.execution_id == execution_id)
        )
    }
    if not task_ids:
        return []
    attempts = [
        row
        for table in (tx.t.task_attempts, tx.t.task_attempts_history)
        for row in tx.conn.execute(sa.select(table).where(table.c.task_id.in_(task_ids)))
    ]
    return [
        AttemptRow(
            task_id=row.task_id,
            attempt=row.attempt,
            worker_agent_id=row.worker_agent_id,
            dispatched_at=utc(row.dispatched_at),
            started_at=aware(row.started_at),
            ended_at=aware(row.ended_at),
            outcome=row.outcome,
            exit_code=row.exit_code,
            error=row.error,
            progress_percent=row.progress_percent,
            progress_message=row.progress_message or "",
            progress_time=aware(row.progress_time),
        )
        for row in sorted(attempts, key=lambda r: r.attempt)
    ]
