"""Dispatch: claim pending tasks for eligible workers; the dispatched rows are the outbox.

``claim_tasks`` runs in one transaction: it locks the oldest pending tasks (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL, ``UPDLOCK, READPAST`` on SQL Server, ``BEGIN IMMEDIATE`` on
SQLite), spreads them over the eligible workers (most free slots first) and moves them with fenced
DISPATCH updates (one executemany), so two masters can never both win one task.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from functools import cache, lru_cache
from typing import Any

import sqlalchemy as sa

from dispatcher.catalog.engine import Timing, Tx, locked, utc
from dispatcher.catalog.records import Assignment
from dispatcher.catalog.sensitive import unopenable
from dispatcher.catalog.state import (
    BatchedWrites,
    TaskRow,
    fetch_rows,
    flag_attempts,
    in_states,
    task_columns,
)
from dispatcher.catalog.tables import Tables
from dispatcher.keys import Keyring, is_sealed
from schemas.messages import ParameterValue
from schemas.states import LEASED_TASK_STATES, TaskEvent, TaskState

logger = logging.getLogger(__name__)
_REPORTED: set[int] = set()
"""Executions whose missing key was logged: once each, not at every dispatch poll."""

AllowedWorkers = frozenset[str] | None
"""The workers an execution allows; None means any worker (useanyworker=1)."""


def claim_tasks(tx: Tx, timing: Timing, limit: int, keys: Keyring) -> list[Assignment]:
    """Claim up to ``limit`` pending tasks, oldest first, for eligible workers. A task
    whose sensitive values this master cannot decrypt stays pending (and is logged).

    The free slots are read first, and pending tasks are read a page at a time, a page
    no larger than the slots still free: under load few slots are free at each pass,
    and reading (and locking) ``limit`` tasks to place a handful was most of the claim's
    cost. A task no free worker may run (its allowed workers are busy) does not block
    those behind it: the next page is read, up to ``limit`` tasks in all."""
    if limit <= 0:
        return []
    slots = _free_slots(tx, timing)
    claimed: list[tuple[TaskRow, str]] = []
    writes = BatchedWrites(tx)
    seen: set[uuid.UUID] = set()
    scanned = 0
    while scanned < limit and (free := sum(slots.values())) > 0:
        page = min(limit - scanned, free)
        rows = _pending(tx, page, scanned)
        scanned += page
        # Rows locked by another transaction are skipped, so a page can shift when such
        # a lock is released; a task is still placed once only.
        fresh = [row for row in rows if row.task_id not in seen]
        seen.update(row.task_id for row in rows)
        claimed.extend(_place(tx, timing, keys, fresh, slots, writes))
        if len(rows) < page:
            break  # no more pending tasks
    if not claimed:
        return []
    writes.write()
    tx.conn.execute(
        sa.insert(tx.t.task_attempts),
        [
            {
                "task_id": row.task_id,
                "attempt": row.attempt + 1,
                "worker_agent_id": worker,
                "dispatched_at": tx.now,
            }
            for row, worker in claimed
        ],
    )
    return assignments(tx, keys, [row.task_id for row, _ in claimed])


def _place(  # noqa: PLR0917  # one page of the claim, with the claim's state
    tx: Tx,
    timing: Timing,
    keys: Keyring,
    rows: list[TaskRow],
    slots: dict[str, int],
    writes: BatchedWrites,
) -> list[tuple[TaskRow, str]]:
    """The tasks of ``rows`` given a worker (its slot taken, its move collected)."""
    rows = _openable(tx, keys, rows)
    allowed = _allowed_workers(tx, {row.execution_id for row in rows}) if rows else {}
    placed = []
    for row in rows:
        worker = _pick(slots, allowed.get(row.execution_id))
        if worker is not None:
            values = _dispatch_values(tx, timing, row, worker)
            writes.move(TaskEvent.DISPATCH, row.task_id, row.attempt, values, not_cancelled=True)
            slots[worker] -= 1
            placed.append((row, worker))
    return placed


def _openable(tx: Tx, keys: Keyring, rows: list[TaskRow]) -> list[TaskRow]:
    locked_out = unopenable(tx, keys, [row.execution_id for row in rows])
    for execution_id, key_id in locked_out.items():
        if execution_id in _REPORTED:
            continue
        _REPORTED.add(execution_id)
        logger.error(
            "dispatch.key_missing",
            extra={"execution_id": execution_id, "key_id": key_id, "keys": keys.source},
        )
    return [row for row in rows if row.execution_id not in locked_out]


def _pending(tx: Tx, limit: int, offset: int) -> list[TaskRow]:
    return fetch_rows(tx, _pending_query(tx.t, limit, offset))


@lru_cache(maxsize=256)
def _pending_query(t: Tables, limit: int, offset: int) -> sa.Select[Any]:
    """Built once per page (a page is at most the free slots, an offset a sum of
    pages): see state._load_query. The limit stays a literal, which SQL Server's TOP
    and OFFSET ... FETCH want. Moves are written when the claim ends, so a later page
    of the same claim still sees the earlier pages' tasks as pending, at the same
    places."""
    tasks = t.tasks
    query = (
        sa.select(*task_columns(t))
        .where(tasks.c.status == int(TaskState.PENDING), tasks.c.is_cancelled == sa.false())
        .order_by(tasks.c.ready_for_dispatch_time, tasks.c.task_id)
        .limit(limit)
    )
    if offset:
        query = query.offset(offset)
    return locked(query, tasks, skip_locked=True)


def _free_slots(tx: Tx, timing: Timing) -> dict[str, int]:
    """Eligible workers (enabled, online, accepting) and their free task slots."""
    online_since = tx.now - timedelta(seconds=timing.worker_offline_after_s)
    rows = tx.conn.execute(_free_slots_query(tx.t), {"online_since": online_since})
    return {row.worker_agent_id: int(row.free) for row in rows if row.free > 0}


@cache
def _free_slots_query(t: Tables) -> sa.Select[Any]:
    workers, tasks = t.worker_agents, t.tasks
    leased = (
        sa.select(tasks.c.worker_agent_id, sa.func.count().label("held"))
        .where(in_states(tasks.c.status, LEASED_TASK_STATES))
        .group_by(tasks.c.worker_agent_id)
        .subquery()
    )
    online_since = sa.bindparam("online_since", type_=workers.c.last_online_time.type)
    # A worker holds up to its TaskBacklog beyond MaxTaskCount until a slot frees, so its
    # dispatched and running tasks count against both.
    capacity = workers.c.max_task_count + workers.c.task_backlog
    return (
        sa.select(
            workers.c.worker_agent_id,
            (capacity - sa.func.coalesce(leased.c.held, 0)).label("free"),
        )
        .outerjoin(leased, leased.c.worker_agent_id == workers.c.worker_agent_id)
        .where(
            workers.c.is_enabled == sa.true(),
            workers.c.accepting == sa.true(),
            workers.c.last_online_time >= online_since,
        )
    )


def _allowed_workers(tx: Tx, execution_ids: set[int]) -> dict[int, AllowedWorkers]:
    query = _allowed_query(tx.t)
    named: dict[int, set[str]] = {}
    any_worker: set[int] = set()
    for row in tx.conn.execute(query, {"ids": sorted(execution_ids)}):
        if row.use_any_worker:
            any_worker.add(row.execution_id)
        named.setdefault(row.execution_id, set())
        if row.worker_agent_id is not None:
            named[row.execution_id].add(row.worker_agent_id)
    return {
        execution_id: None if execution_id in any_worker else frozenset(workers)
        for execution_id, workers in named.items()
    }


@cache
def _allowed_query(t: Tables) -> sa.Select[Any]:
    jobs, members = t.jobs, t.job_worker_agents
    return (
        sa.select(jobs.c.execution_id, jobs.c.use_any_worker, members.c.worker_agent_id)
        .outerjoin(members, members.c.job_id == jobs.c.job_id)
        .where(jobs.c.execution_id.in_(sa.bindparam("ids", expanding=True)))
    )


def _pick(slots: dict[str, int], allowed: AllowedWorkers) -> str | None:
    """The allowed worker with the most free slots (ties: the smallest id)."""
    candidates = sorted(
        w for w, free in slots.items() if free > 0 and (allowed is None or w in allowed)
    )
    return max(candidates, key=lambda w: slots[w]) if candidates else None


def _dispatch_values(tx: Tx, timing: Timing, row: TaskRow, worker: str) -> dict[str, Any]:
    return {
        "attempt": row.attempt + 1,
        "worker_agent_id": worker,
        "last_pickup_time": tx.now,
        "expires_at": tx.now + timedelta(seconds=timing.initial_lease_s),
        "published": False,
        "cancel_sent": False,
    }


def assignments(tx: Tx, keys: Keyring, task_ids: Sequence[uuid.UUID]) -> list[Assignment]:
    """The assignment messages' content for the current attempts of ``task_ids``, in order.
    The only place sensitive values are decrypted: into the message, which travels to the
    worker over TLS."""
    if not task_ids:
        return []
    rows = {
        row.task_id: row
        for row in tx.conn.execute(_assignment_query(tx.t), {"ids": list(task_ids)})
    }
    parameters = _parameters(tx, keys, {row.execution_id for row in rows.values()})
    return [
        _assignment(rows[t], parameters.get(rows[t].execution_id, ()))
        for t in task_ids
        if t in rows
    ]


@cache
def _assignment_query(t: Tables) -> sa.Select[Any]:
    tasks, e, v = t.tasks, t.executions, t.object_versions
    return (
        sa.select(
            tasks.c.task_id,
            tasks.c.attempt,
            tasks.c.execution_id,
            tasks.c.worker_agent_id,
            tasks.c.max_executed_count,
            tasks.c.expires_at,
            e.c.folder_name,
            e.c.project_name,
            e.c.package_name,
            e.c.project_lsn,
            e.c.use32bitruntime,
            v.c.content_hash,
        )
        .join(e, e.c.execution_id == tasks.c.execution_id)
        .join(v, v.c.object_version_lsn == e.c.project_lsn)
        .where(tasks.c.task_id.in_(sa.bindparam("ids", expanding=True)))
    )


def _assignment(row: Any, parameters: tuple[ParameterValue, ...]) -> Assignment:
    return Assignment(
        task_id=row.task_id,
        attempt=row.attempt,
        execution_id=row.execution_id,
        worker_id=row.worker_agent_id,
        folder=row.folder_name,
        project=row.project_name,
        package=row.package_name,
        project_lsn=row.project_lsn,
        project_hash=row.content_hash,
        parameters=parameters,
        use32bitruntime=bool(row.use32bitruntime),
        max_attempts=row.max_executed_count,
        lease_expires_at=utc(row.expires_at),
    )


def _parameters(
    tx: Tx, keys: Keyring, execution_ids: set[int]
) -> dict[int, tuple[ParameterValue, ...]]:
    found: dict[int, list[ParameterValue]] = {}
    for row in tx.conn.execute(_parameters_query(tx.t), {"ids": sorted(execution_ids)}):
        value = ParameterValue(
            object_type=row.object_type,
            name=row.parameter_name,
            value=json.loads(_plain(keys, row)),
            sensitive=bool(row.sensitive),
        )
        found.setdefault(row.execution_id, []).append(value)
    return {execution_id: tuple(items) for execution_id, items in found.items()}


@cache
def _parameters_query(t: Tables) -> sa.Select[Any]:
    values = t.execution_parameter_values
    return (
        sa.select(values)
        .where(values.c.execution_id.in_(sa.bindparam("ids", expanding=True)))
        .order_by(values.c.execution_id, values.c.object_type, values.c.parameter_name)
    )


def _plain(keys: Keyring, row: Any) -> str:
    if not is_sealed(row.parameter_value):
        return str(row.parameter_value)
    what = f"execution {row.execution_id}'s sensitive parameter {row.parameter_name}"
    return keys.open(row.parameter_value, what=what)


def mark_published(tx: Tx, attempts: Sequence[tuple[uuid.UUID, int]]) -> None:
    """Flag attempts whose publish the broker confirmed (one executemany)."""
    flag_attempts(tx, attempts, published=True)


def unpublished_assignments(tx: Tx, keys: Keyring, older_than_s: float) -> list[Assignment]:
    """Dispatched attempts still unconfirmed after ``older_than_s``: publish them again."""
    tasks = tx.t.tasks
    query = (
        sa.select(tasks.c.task_id)
        .where(
            tasks.c.status == int(TaskState.DISPATCHED),
            tasks.c.published == sa.false(),
            tasks.c.last_pickup_time <= tx.now - timedelta(seconds=older_than_s),
        )
        .order_by(tasks.c.last_pickup_time, tasks.c.task_id)
    )
    return assignments(tx, keys, list(tx.conn.execute(query).scalars()))
