"""Leases and cancels: worker heartbeats, expiry with the database's clock, stop_operation.

A lease is ``tasks.expires_at``: set at dispatch (``initial_lease_s``), renewed by the
worker's task progress and agent heartbeats (its ``lease_interval_s``), and swept by
:func:`expire_leases`. A stop is stored first (``is_cancelled``) and delivered until the
worker confirms it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from dispatcher.catalog.engine import Tx, locked
from dispatcher.catalog.records import CancelOrder, ExpiredAttempt, HeartbeatResult
from dispatcher.catalog.state import (
    TaskRow,
    add_message,
    close_attempt,
    fetch_rows,
    flag_attempts,
    in_states,
    load_tasks,
    mirror_execution,
    move_task,
    requeue_values,
    select_tasks,
    set_operation,
)
from dispatcher.errors import NotFound, OperationRefused
from schemas.messages import AgentHeartbeat, CancelReason, RunningAttempt
from schemas.states import LEASED_TASK_STATES, TRANSITIONS, ExecutionStatus, TaskEvent, TaskState

logger = logging.getLogger(__name__)
OPERATION_EXECUTION, OPERATION_STOP = 200, 202
WARNING_MESSAGE = 110


def record_heartbeat(tx: Tx, heartbeat: AgentHeartbeat, sender: str) -> HeartbeatResult:
    """Register or refresh the worker, renew its running leases, list what it must stop."""
    registered = _register(tx, heartbeat, sender)
    _refresh(tx, heartbeat, sender)
    rows = load_tasks(tx, (r.task_id for r in heartbeat.running), lock=True)
    renewed, cancels = 0, []
    for running in heartbeat.running:
        reason = _renew(tx, rows.get(running.task_id), running, sender, heartbeat.lease_interval_s)
        if reason is None:
            renewed += 1
        else:
            cancels.append(_order(running, sender, reason))
    workers = tx.t.worker_agents
    enabled = tx.conn.execute(
        sa.select(workers.c.is_enabled).where(workers.c.worker_agent_id == sender)
    ).scalar_one()
    return HeartbeatResult(registered, bool(enabled), renewed, tuple(cancels))


def _register(tx: Tx, heartbeat: AgentHeartbeat, sender: str) -> bool:
    """Insert an unknown worker, disabled, as SSIS does; True when it was unknown."""
    workers = tx.t.worker_agents
    query = sa.select(workers.c.worker_agent_id).where(workers.c.worker_agent_id == sender)
    if tx.conn.execute(locked(query, workers)).first() is not None:
        return False
    insert = sa.insert(workers).values(
        worker_agent_id=sender,
        is_enabled=False,
        display_name=heartbeat.display_name[:256],
        created_time=tx.now,
    )
    try:
        with tx.conn.begin_nested():
            tx.conn.execute(insert)
    except sa_exc.IntegrityError:
        return False  # a concurrent heartbeat of the same worker registered it first
    logger.info("catalog.worker_registered", extra={"worker_id": sender})
    return True


def _refresh(tx: Tx, heartbeat: AgentHeartbeat, sender: str) -> None:
    workers = tx.t.worker_agents
    tx.conn.execute(
        sa.update(workers)
        .where(workers.c.worker_agent_id == sender)
        .values(
            last_online_time=tx.now,
            machine_name=heartbeat.machine_name[:256],
            user_account=heartbeat.user_account[:256],
            max_task_count=heartbeat.max_task_count,
            task_backlog=heartbeat.task_backlog,
            cpu_percent=heartbeat.cpu_percent,
            free_memory_mb=heartbeat.free_memory_mb,
            accepting=heartbeat.accepting,
            not_accepting="" if heartbeat.accepting else heartbeat.not_accepting[:256],
            free_disk_mb=heartbeat.free_disk_mb or None,
            lease_interval_s=heartbeat.lease_interval_s,
        )
    )


def _renew(
    tx: Tx, row: TaskRow | None, running: RunningAttempt, sender: str, lease_s: float
) -> CancelReason | None:
    """Renew the lease of an attempt the sender holds; else the reason it must stop."""
    held = (
        row is not None
        and row.attempt == running.attempt
        and row.worker_agent_id == sender
        and row.status.holds_lease
    )
    if row is None or not held:
        return CancelReason.STALE_ATTEMPT
    if row.is_cancelled:
        return CancelReason.STOP_REQUESTED
    tasks = tx.t.tasks
    tx.conn.execute(
        sa.update(tasks)
        .where(
            tasks.c.task_id == row.task_id,
            tasks.c.attempt == row.attempt,
            tasks.c.worker_agent_id == sender,
            in_states(tasks.c.status, LEASED_TASK_STATES),
        )
        .values(expires_at=tx.now + timedelta(seconds=lease_s))
    )
    return None


def _order(running: RunningAttempt, worker: str, reason: CancelReason) -> CancelOrder:
    return CancelOrder(running.task_id, running.attempt, running.execution_id, worker, reason)


def pending_cancels(tx: Tx) -> list[CancelOrder]:
    """Stops stored but not yet sent to the worker holding the attempt."""
    tasks = tx.t.tasks
    query = (
        sa.select(tasks.c.task_id, tasks.c.attempt, tasks.c.execution_id, tasks.c.worker_agent_id)
        .where(
            tasks.c.is_cancelled == sa.true(),
            tasks.c.cancel_sent == sa.false(),
            tasks.c.worker_agent_id.isnot(None),
        )
        .order_by(tasks.c.last_updated_time, tasks.c.task_id)
    )
    return [
        CancelOrder(
            r.task_id, r.attempt, r.execution_id, r.worker_agent_id, CancelReason.STOP_REQUESTED
        )
        for r in tx.conn.execute(query)
    ]


def mark_cancels_sent(tx: Tx, orders: Sequence[CancelOrder]) -> None:
    """Flag the attempts whose cancel the broker confirmed, so it is not sent again."""
    flag_attempts(tx, ((o.task_id, o.attempt) for o in orders), cancel_sent=True)


def _expiry_event(row: TaskRow) -> TaskEvent:
    if row.is_cancelled:
        return TaskEvent.CANCEL
    if row.status is TaskState.DISPATCHED:
        return TaskEvent.WITHDRAW  # never started: no attempt was consumed
    return TaskEvent.EXPIRE_RETRY if row.attempts_left else TaskEvent.EXPIRE_END


def _expiry_values(tx: Tx, event: TaskEvent) -> dict[str, Any]:
    if event in (TaskEvent.WITHDRAW, TaskEvent.EXPIRE_RETRY):
        return requeue_values(tx)
    return {"expires_at": None, "cancel_sent": True}


def expire_leases(tx: Tx, as_of: datetime | None = None) -> list[ExpiredAttempt]:
    """Requeue, end (status 6) or cancel every attempt whose lease lapsed by ``as_of``
    (the database's clock; now if None): the sweep passes the moment up to which it knows
    it has read every report and heartbeat (dispatcher.horizon)."""
    tasks = tx.t.tasks
    cutoff = tx.now if as_of is None else min(tx.now, as_of)
    query = select_tasks(
        tx, in_states(tasks.c.status, LEASED_TASK_STATES), tasks.c.expires_at <= cutoff, names=True
    ).order_by(tasks.c.task_id)
    rows = fetch_rows(tx, locked(query, tasks, skip_locked=True))
    expired = [attempt for row in rows if (attempt := _expire(tx, row, cutoff)) is not None]
    _suspend_silent_workers(tx, {a.worker_id for a in expired if a.worker_id})
    return expired


def _suspend_silent_workers(tx: Tx, worker_ids: set[str]) -> None:
    """A worker whose lease lapsed gets no new task until it speaks again.

    It may still look online (the offline threshold is longer than a lease) while being
    dead or frozen; without this its requeued task would go straight back to it and wait
    out another lease. Its next heartbeat reports ``accepting`` again."""
    if not worker_ids:
        return
    workers = tx.t.worker_agents
    tx.conn.execute(
        sa.update(workers)
        .where(workers.c.worker_agent_id.in_(sorted(worker_ids)))
        .values(accepting=False, not_accepting=SILENT_WORKER)
    )


SILENT_WORKER = "a lease of its lapsed: it gets tasks again after its next heartbeat"
"""The ``not_accepting`` the expiry sweep stores on a worker it suspends."""


def _expire(tx: Tx, row: TaskRow, cutoff: datetime) -> ExpiredAttempt | None:
    event = _expiry_event(row)
    still_expired = tx.t.tasks.c.expires_at <= cutoff
    values = _expiry_values(tx, event)
    if not move_task(tx, event, row.task_id, row.attempt, values, still_expired):
        return None
    target = TRANSITIONS[event].target
    close_attempt(tx, row.task_id, row.attempt, "expired")
    status = mirror_execution(tx, row.execution_id, target, cancel_requested=row.is_cancelled)
    text = f"attempt {row.attempt} on worker {row.worker_agent_id}: lease expired ({event})"
    add_message(
        tx, row.execution_id, WARNING_MESSAGE, text, task_id=row.task_id, attempt=row.attempt
    )
    logger.warning(
        "catalog.lease_expired",
        extra={
            "task_id": str(row.task_id),
            "attempt": row.attempt,
            "worker_id": row.worker_agent_id,
            "new_state": target.name.lower(),
        },
    )
    return ExpiredAttempt(
        row.task_id,
        row.attempt,
        row.execution_id,
        row.worker_agent_id,
        target,
        execution_status=status,
        project_name=row.project_name,
        package_name=row.package_name,
    )


def stop_operation(tx: Tx, operation_id: int, stopped_by: str | None) -> None:
    """SSIS's stop_operation for an execution in Scale Out."""
    # Lock the task before the operation row, the order status reports use: no deadlock.
    tasks = tx.t.tasks
    query = locked(select_tasks(tx, tasks.c.execution_id == operation_id), tasks)
    rows = fetch_rows(tx, query)
    status = _stoppable_status(tx, operation_id)
    if status is ExecutionStatus.STOPPING:
        return  # a second stop while the first is being delivered changes nothing
    if not rows:
        raise OperationRefused(f"execution {operation_id} has no task to stop")
    row = rows[0]
    if row.status is TaskState.RUNNING:
        _request_cancel(tx, row, stopped_by)
    else:
        _cancel_now(tx, row, stopped_by)
    jobs = tx.t.jobs
    tx.conn.execute(
        sa.update(jobs).where(jobs.c.execution_id == operation_id).values(is_cancelled=True)
    )
    _record_stop(tx, operation_id, stopped_by)
    logger.info(
        "catalog.stop_requested",
        extra={"execution_id": operation_id, "task_state": row.status.name.lower()},
    )


def _stoppable_status(tx: Tx, operation_id: int) -> ExecutionStatus:
    ops = tx.t.operations
    query = sa.select(ops.c.operation_type, ops.c.status).where(ops.c.operation_id == operation_id)
    op = tx.conn.execute(locked(query, ops)).one_or_none()
    if op is None:
        raise NotFound(f"operation {operation_id} does not exist", code=27101)
    if op.operation_type != OPERATION_EXECUTION:
        raise OperationRefused(
            f"operation {operation_id} is not an execution; it cannot be stopped"
        )
    status = ExecutionStatus(op.status)
    if status is ExecutionStatus.CREATED or status.is_terminal:
        msg = f"execution {operation_id} is {status.label}; only a pending or running one stops"
        raise OperationRefused(msg)
    return status


def _cancel_now(tx: Tx, row: TaskRow, stopped_by: str | None) -> None:
    """A task not started yet is canceled at once; a dispatched one still gets a cancel."""
    values = {"is_cancelled": True, "cancel_sent": row.worker_agent_id is None, "expires_at": None}
    if not move_task(tx, TaskEvent.CANCEL, row.task_id, row.attempt, values):
        raise OperationRefused(f"execution {row.execution_id} changed state; try again")
    if row.status is TaskState.DISPATCHED:
        close_attempt(tx, row.task_id, row.attempt, "canceled")
    mirror_execution(
        tx,
        row.execution_id,
        TaskState.CANCELED,
        cancel_requested=True,
        values={"stopped_by_name": stopped_by},
    )


def _request_cancel(tx: Tx, row: TaskRow, stopped_by: str | None) -> None:
    """A running task is asked to stop; its worker's `finished canceled` ends it."""
    tasks = tx.t.tasks
    tx.conn.execute(
        sa.update(tasks)
        .where(tasks.c.task_id == row.task_id, tasks.c.attempt == row.attempt)
        .values(is_cancelled=True, cancel_sent=False, last_updated_time=tx.now)
    )
    set_operation(tx, row.execution_id, ExecutionStatus.STOPPING, stopped_by_name=stopped_by)


def _record_stop(tx: Tx, execution_id: int, stopped_by: str | None) -> None:
    tx.conn.execute(
        sa.insert(tx.t.operations).values(
            operation_type=OPERATION_STOP,
            created_time=tx.now,
            object_type=50,
            object_id=execution_id,
            object_name=str(execution_id),
            status=int(ExecutionStatus.SUCCEEDED),
            start_time=tx.now,
            end_time=tx.now,
            caller_name=stopped_by,
            executed_count=0,
        )
    )
