"""Fenced task writes and execution-status mirroring, shared by every operation.

A task moves only through :data:`schemas.states.TRANSITIONS`: :func:`move_task` issues
``UPDATE ... WHERE task_id = :t AND attempt = :a AND status IN (sources)`` and reports
whether the row moved; zero rows means the write was stale and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from dispatcher.catalog.engine import Tx, locked
from schemas.states import (
    TRANSITIONS,
    ExecutionStatus,
    TaskEvent,
    TaskState,
    execution_status_for,
)


@dataclass(slots=True)
class TaskRow:
    """The fields of ``internal.tasks`` the master's decisions read."""

    task_id: uuid.UUID
    execution_id: int
    status: TaskState
    attempt: int
    executed_count: int
    max_executed_count: int
    worker_agent_id: str | None
    is_cancelled: bool
    expires_at: datetime | None
    ready_for_dispatch_time: datetime | None = None

    @property
    def attempts_left(self) -> bool:
        return self.executed_count < self.max_executed_count


def _task_columns(tx: Tx) -> list[sa.ColumnElement[Any]]:
    c = tx.t.tasks.c
    return [
        c.task_id,
        c.execution_id,
        c.status,
        c.attempt,
        c.executed_count,
        c.max_executed_count,
        c.worker_agent_id,
        c.is_cancelled,
        c.expires_at,
        c.ready_for_dispatch_time,
    ]


def _row(values: Any) -> TaskRow:
    row = TaskRow(*values)
    row.status = TaskState(row.status)
    return row


def load_tasks(tx: Tx, task_ids: Iterable[uuid.UUID], *, lock: bool) -> dict[uuid.UUID, TaskRow]:
    """The given tasks, locked in task_id order (so concurrent batches cannot deadlock)."""
    ids = sorted(set(task_ids))
    if not ids:
        return {}
    query = sa.select(*_task_columns(tx)).where(tx.t.tasks.c.task_id.in_(ids))
    query = query.order_by(tx.t.tasks.c.task_id)
    if lock:
        query = locked(query, tx.t.tasks)
    return {row.task_id: _row(row) for row in tx.conn.execute(query)}


def select_tasks(tx: Tx, *where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """A SELECT of task rows matching ``where`` (callers add order, limit, locking)."""
    return sa.select(*_task_columns(tx)).where(*where)


def fetch_rows(tx: Tx, query: sa.Select[Any]) -> list[TaskRow]:
    return [_row(row) for row in tx.conn.execute(query)]


def in_states(column: sa.ColumnElement[Any], states: Iterable[TaskState]) -> sa.ColumnElement[bool]:
    return column.in_(sorted(int(s) for s in states))


def among_states(
    column: sa.ColumnElement[Any], states: Iterable[TaskState]
) -> sa.ColumnElement[bool]:
    """``column IN (states)`` as ORs of equalities: usable in an executemany, where an
    expanding IN is not."""
    return sa.or_(*(column == int(s) for s in sorted(states)))


def move_task(
    tx: Tx,
    event: TaskEvent,
    task_id: uuid.UUID,
    attempt: int,
    values: Mapping[str, Any] | None = None,
    *where: sa.ColumnElement[bool],
) -> bool:
    """Apply ``event`` to one attempt of one task if it is still in a source state."""
    transition = TRANSITIONS[event]
    tasks = tx.t.tasks
    statement = (
        sa.update(tasks)
        .where(
            tasks.c.task_id == task_id,
            tasks.c.attempt == attempt,
            in_states(tasks.c.status, transition.sources),
            *where,
        )
        .values(status=int(transition.target), last_updated_time=tx.now, **(values or {}))
    )
    return bool(tx.conn.execute(statement).rowcount == 1)


def mirror_execution(
    tx: Tx,
    execution_id: int,
    state: TaskState,
    *,
    cancel_requested: bool,
    values: Mapping[str, Any] | None = None,
) -> ExecutionStatus:
    """Set the execution's status from its task's new state; terminal ones get end_time."""
    status = execution_status_for(state, cancel_requested=cancel_requested)
    extra = dict(values or {})
    if status.is_terminal:
        extra.setdefault("end_time", tx.now)
    set_operation(tx, execution_id, status, **extra)
    return status


def set_operation(tx: Tx, operation_id: int, status: ExecutionStatus, **values: Any) -> None:
    ops = tx.t.operations
    tx.conn.execute(
        sa.update(ops)
        .where(ops.c.operation_id == operation_id)
        .values(status=int(status), **values)
    )


def close_attempt(tx: Tx, task_id: uuid.UUID, attempt: int, outcome: str, **values: Any) -> None:
    """Record how an attempt ended, unless it already has an outcome."""
    attempts = tx.t.task_attempts
    tx.conn.execute(
        sa.update(attempts)
        .where(
            attempts.c.task_id == task_id,
            attempts.c.attempt == attempt,
            attempts.c.outcome.is_(None),
        )
        .values(outcome=outcome, ended_at=tx.now, **values)
    )


def requeue_values(tx: Tx) -> dict[str, Any]:
    """Columns that return a task to the pending queue for a new attempt by anyone."""
    return {
        "worker_agent_id": None,
        "expires_at": None,
        "ready_for_dispatch_time": tx.now,
        "published": False,
    }


def add_message(tx: Tx, operation_id: int, message_type: int, message: str, **context: Any) -> None:
    """An operation message from the master (source type 10: entry APIs)."""
    tx.conn.execute(
        sa.insert(tx.t.operation_messages).values(
            operation_id=operation_id,
            message_time=tx.now,
            message_type=message_type,
            message_source_type=context.pop("message_source_type", 10),
            message=message,
            **context,
        )
    )
