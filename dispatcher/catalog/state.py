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
from functools import cache
from typing import Any

import sqlalchemy as sa

from dispatcher.catalog.engine import Tx, locked
from dispatcher.catalog.tables import Tables
from dispatcher.errors import CatalogError
from schemas.states import (
    TRANSITIONS,
    AttemptKey,
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
    project_name: str = ""
    package_name: str = ""
    """The execution's project and package; loaded only with ``names=True`` (the metrics
    of the reconcile and the lease sweep label ends by them)."""

    @property
    def attempts_left(self) -> bool:
        return self.executed_count < self.max_executed_count


def _task_columns(tx: Tx, *, names: bool = False) -> list[sa.ColumnElement[Any]]:
    return task_columns(tx.t, names=names)


def task_columns(t: Tables, *, names: bool = False) -> list[sa.ColumnElement[Any]]:
    c = t.tasks.c
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
        *(_execution_names(t, c.execution_id) if names else ()),
    ]


def _execution_names(t: Tables, execution_id: sa.ColumnElement[Any]) -> list[sa.ColumnElement[Any]]:
    """The execution's project and package as scalar subqueries, not a join: a locking
    SELECT then locks only the task rows (FOR UPDATE and SQL Server's hint apply to FROM)."""
    e = t.executions
    of_task = e.c.execution_id == execution_id
    return [
        sa.select(e.c.project_name).where(of_task).scalar_subquery(),
        sa.select(e.c.package_name).where(of_task).scalar_subquery(),
    ]


def _row(values: Any) -> TaskRow:
    row = TaskRow(*values)
    row.status = TaskState(row.status)
    return row


def load_tasks(
    tx: Tx, task_ids: Iterable[uuid.UUID], *, lock: bool, names: bool = False
) -> dict[uuid.UUID, TaskRow]:
    """The given tasks, locked in task_id order (so concurrent batches cannot deadlock);
    with ``names``, their execution's project and package too."""
    ids = sorted(set(task_ids))
    if not ids:
        return {}
    query = _load_query(tx.t, names=names, lock=lock)
    return {row.task_id: _row(row) for row in tx.conn.execute(query, {"ids": ids})}


@cache
def _load_query(t: Tables, *, names: bool, lock: bool) -> sa.Select[Any]:
    """Built once: building a statement costs ~150 us of CPU, several times running it.
    The hot statements of this package are kept so (``@cache`` on the tables and shape),
    with everything that varies as parameters."""
    query = (
        sa.select(*task_columns(t, names=names))
        .where(t.tasks.c.task_id.in_(sa.bindparam("ids", expanding=True)))
        .order_by(t.tasks.c.task_id)
    )
    return locked(query, t.tasks) if lock else query


def select_tasks(tx: Tx, *where: sa.ColumnElement[bool], names: bool = False) -> sa.Select[Any]:
    """A SELECT of task rows matching ``where`` (callers add order, limit, locking); with
    ``names``, their execution's project and package too."""
    return sa.select(*_task_columns(tx, names=names)).where(*where)


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


def flag_attempts(tx: Tx, attempts: Iterable[AttemptKey], **flags: bool) -> None:
    """Set bookkeeping ``flags`` (published, cancel_sent) on each ``(task_id, attempt)``
    in one executemany. Fenced by the attempt, not the state: a flag on an attempt that
    has since moved on changes nothing that decides a transition."""
    params = [
        {"b_task": task_id, "b_attempt": attempt, **{f"f_{k}": v for k, v in flags.items()}}
        for task_id, attempt in attempts
    ]
    if not params:
        return
    tx.conn.execute(_flag_statement(tx.t, tuple(sorted(flags))), params)


@cache
def _flag_statement(t: Tables, flags: tuple[str, ...]) -> sa.Update:
    tasks = t.tasks
    return (
        sa.update(tasks)
        .where(*by_attempt(tasks))
        .values({flag: sa.bindparam(f"f_{flag}", type_=tasks.c[flag].type) for flag in flags})
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


MoveShape = tuple[TaskEvent, tuple[str, ...], bool, bool]
"""(event, value columns, fenced by worker, fenced by not-cancelled): one statement."""


@dataclass(slots=True)
class _Run:
    """An execution's status as a batch leaves it (one write per execution)."""

    status: ExecutionStatus
    worker_agent_id: str | None
    executed_count: int
    machine_name: str | None = None
    ended: bool = False


class BatchedWrites:
    """Fenced task moves and their companion writes, collected while a batch is decided on
    locked rows and written at the end with one executemany per statement shape.

    The caller holds the lock on every task it moves and has checked each move against
    the state machine on its locked copy, so every fenced UPDATE must hit its row: a miss
    means the catalog changed under the lock, and the whole transaction is aborted rather
    than half applied. An attempt's start and its end can share a batch, so START moves
    are written before the others (no other event can follow another in one batch)."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx
        self._moves: dict[MoveShape, list[dict[str, Any]]] = {}
        self._starts: list[dict[str, Any]] = []
        self._ends: list[dict[str, Any]] = []
        self._runs: dict[int, _Run] = {}

    def move(
        self,
        event: TaskEvent,
        task_id: uuid.UUID,
        attempt: int,
        values: Mapping[str, Any],
        *,
        worker: str | None = None,
        not_cancelled: bool = False,
    ) -> None:
        """Apply ``event`` to one attempt (fenced by its state, and by ``worker``)."""
        shape = (event, tuple(sorted(values)), worker is not None, not_cancelled)
        row = {"b_task": task_id, "b_attempt": attempt, "b_worker": worker}
        row.update({f"v_{column}": value for column, value in values.items()})
        self._moves.setdefault(shape, []).append(row)

    def start_attempt(self, task_id: uuid.UUID, attempt: int, machine_name: str) -> None:
        self._starts.append({"b_task": task_id, "b_attempt": attempt, "b_machine": machine_name})

    def close_attempt(
        self,
        task_id: uuid.UUID,
        attempt: int,
        outcome: str,
        *,
        exit_code: int | None = None,
        error: str | None = None,
    ) -> None:
        """How an attempt ended, unless it already has an outcome."""
        self._ends.append(
            {
                "b_task": task_id,
                "b_attempt": attempt,
                "b_outcome": outcome,
                "b_exit": exit_code,
                "b_error": error,
            }
        )

    def mirror(
        self,
        execution_id: int,
        state: TaskState,
        *,
        cancel_requested: bool,
        worker_agent_id: str | None,
        executed_count: int,
        machine_name: str | None = None,
    ) -> ExecutionStatus:
        """The execution follows its task's new state (see :func:`mirror_execution`)."""
        status = execution_status_for(state, cancel_requested=cancel_requested)
        run = self._runs.get(execution_id)
        kept_machine = run.machine_name if run is not None else None
        self._runs[execution_id] = _Run(
            status,
            worker_agent_id,
            executed_count,
            machine_name or kept_machine,
            ended=status.is_terminal,
        )
        return status

    def write(self) -> None:
        """Everything collected, in dependency order; then the collector is empty."""
        shapes = sorted(self._moves, key=lambda shape: shape[0] is not TaskEvent.START)
        for shape in shapes:
            self._write_moves(shape, self._moves[shape])
        if self._starts:
            self._write_starts()
        if self._ends:
            self._write_ends()
        if self._runs:
            self._write_runs()
        self._moves, self._starts, self._ends, self._runs = {}, [], [], {}

    def _write_moves(self, shape: MoveShape, rows: list[dict[str, Any]]) -> None:
        event = shape[0]
        now = self._tx.now
        for row in rows:
            row["b_now"] = now
        result = self._tx.conn.execute(_move_statement(self._tx.t, shape), rows)
        if self._tx.conn.dialect.supports_sane_multi_rowcount and result.rowcount != len(rows):
            msg = (
                f"{event.value}: {result.rowcount} of {len(rows)} locked tasks moved; "
                "the batch is rolled back"
            )
            raise CatalogError(msg)

    def _write_starts(self) -> None:
        now = self._tx.now
        rows = [{**row, "b_now": now} for row in self._starts]
        self._tx.conn.execute(_start_statement(self._tx.t), rows)

    def _write_ends(self) -> None:
        now = self._tx.now
        rows = [{**row, "b_now": now} for row in self._ends]
        self._tx.conn.execute(_end_statement(self._tx.t), rows)

    def _write_runs(self) -> None:
        now = self._tx.now
        rows = [
            {
                "b_op": execution_id,
                "b_status": int(run.status),
                "b_worker": run.worker_agent_id,
                "b_count": run.executed_count,
                "b_end": now if run.ended else None,
                "b_machine": run.machine_name,
                "b_now": now,
            }
            for execution_id, run in self._runs.items()
        ]
        self._tx.conn.execute(_runs_statement(self._tx.t), rows)


def by_attempt(table: sa.Table) -> list[sa.ColumnElement[bool]]:
    """``task_id = :b_task AND attempt = :b_attempt``: the key every batched write of an
    attempt is fenced by."""
    return [table.c.task_id == sa.bindparam("b_task"), table.c.attempt == sa.bindparam("b_attempt")]


@cache
def _move_statement(t: Tables, shape: MoveShape) -> sa.Update:
    event, columns, by_worker, not_cancelled = shape
    transition = TRANSITIONS[event]
    tasks = t.tasks
    where = [*by_attempt(tasks), among_states(tasks.c.status, transition.sources)]
    if by_worker:
        where.append(tasks.c.worker_agent_id == sa.bindparam("b_worker"))
    if not_cancelled:
        where.append(tasks.c.is_cancelled == sa.false())
    values: dict[str, Any] = {c: sa.bindparam(f"v_{c}", type_=tasks.c[c].type) for c in columns}
    now = sa.bindparam("b_now", type_=tasks.c.last_updated_time.type)
    return (
        sa.update(tasks)
        .where(*where)
        .values(status=int(transition.target), last_updated_time=now, **values)
    )


@cache
def _start_statement(t: Tables) -> sa.Update:
    a = t.task_attempts
    return (
        sa.update(a)
        .where(*by_attempt(a))
        .values(
            started_at=sa.bindparam("b_now", type_=a.c.started_at.type),
            machine_name=sa.bindparam("b_machine"),
        )
    )


@cache
def _end_statement(t: Tables) -> sa.Update:
    a = t.task_attempts
    return (
        sa.update(a)
        .where(*by_attempt(a), a.c.outcome.is_(None))
        .values(
            outcome=sa.bindparam("b_outcome"),
            ended_at=sa.bindparam("b_now", type_=a.c.ended_at.type),
            exit_code=sa.bindparam("b_exit"),
            error=sa.bindparam("b_error"),
        )
    )


@cache
def _runs_statement(t: Tables) -> sa.Update:
    ops = t.operations
    end_type, machine_type = ops.c.end_time.type, ops.c.machine_name.type
    now = sa.bindparam("b_now", type_=ops.c.start_time.type)
    return (
        sa.update(ops)
        .where(ops.c.operation_id == sa.bindparam("b_op"))
        .values(
            status=sa.bindparam("b_status"),
            worker_agent_id=sa.bindparam("b_worker"),
            executed_count=sa.bindparam("b_count"),
            start_time=sa.func.coalesce(ops.c.start_time, now),
            end_time=sa.func.coalesce(sa.bindparam("b_end", type_=end_type), ops.c.end_time),
            machine_name=sa.func.coalesce(
                sa.bindparam("b_machine", type_=machine_type), ops.c.machine_name
            ),
        )
    )
