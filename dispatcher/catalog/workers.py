"""Worker agents (Scale Out Manager's procedures), catalog and master properties."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from dispatcher.catalog.engine import Tx, locked, utc
from dispatcher.catalog.records import REFUSAL_DETAIL_MAX_CHARS, Refusal
from dispatcher.catalog.state import (
    close_attempt,
    fetch_rows,
    in_states,
    move_task,
    requeue_values,
    select_tasks,
)
from dispatcher.errors import NotFound, OperationRefused
from schemas.states import LEASED_TASK_STATES, TRANSITIONS, TaskEvent
from schemas.topology import checked_worker_id

logger = logging.getLogger(__name__)

WORKER_PROPERTIES = {"DisplayName": "display_name", "Description": "description", "Tags": "tags"}
CATALOG_PROPERTIES = {
    "DEFAULT_EXECUTION_MODE": {"0", "1"},
    "SERVER_LOGGING_LEVEL": {"0", "1", "2", "3", "4", "100"},
    "OPERATION_CLEANUP_ENABLED": {"TRUE", "FALSE"},
    "VERSION_CLEANUP_ENABLED": {"TRUE", "FALSE"},
    "RETENTION_WINDOW": None,
    "MAX_PROJECT_VERSIONS": None,
    "SERVER_CUSTOMIZED_LOGGING_LEVEL": None,
}


@dataclass(frozen=True, slots=True)
class NewAgent:
    worker_agent_id: str
    display_name: str
    description: str
    is_enabled: bool
    max_task_count: int


def require_worker(tx: Tx, worker_agent_id: str) -> None:
    workers = tx.t.worker_agents
    query = sa.select(workers.c.worker_agent_id).where(workers.c.worker_agent_id == worker_agent_id)
    if tx.conn.execute(query).scalar_one_or_none() is None:
        raise NotFound(f"worker agent {worker_agent_id!r} does not exist", code=27243)


def add_worker_agent(tx: Tx, agent: NewAgent) -> None:
    # The id becomes a RabbitMQ user, a queue name and a permission pattern: refuse what
    # cannot be one here, before anything is written, not at the first declare.
    try:
        checked_worker_id(agent.worker_agent_id)
    except ValueError as exc:
        hint = "a worker id is also its RabbitMQ user and queue name, e.g. w1 or etl-host-1"
        raise OperationRefused(str(exc), hint=hint, code=27100) from None
    if agent.max_task_count < 0:
        raise OperationRefused("max_task_count must be 0 or more", code=27101)
    workers = tx.t.worker_agents
    exists = sa.select(workers.c.worker_agent_id).where(
        workers.c.worker_agent_id == agent.worker_agent_id
    )
    if tx.conn.execute(exists).first() is not None:
        raise OperationRefused(f"worker agent {agent.worker_agent_id!r} already exists")
    tx.conn.execute(
        sa.insert(workers).values(
            worker_agent_id=agent.worker_agent_id,
            is_enabled=agent.is_enabled,
            display_name=agent.display_name,
            description=agent.description,
            max_task_count=agent.max_task_count,
            created_time=tx.now,
        )
    )


def _update_worker(tx: Tx, worker_agent_id: str, **values: object) -> None:
    workers = tx.t.worker_agents
    result = tx.conn.execute(
        sa.update(workers).where(workers.c.worker_agent_id == worker_agent_id).values(**values)
    )
    if result.rowcount != 1:
        raise NotFound(f"worker agent {worker_agent_id!r} does not exist", code=27243)


def set_enabled(tx: Tx, worker_agent_id: str, *, enabled: bool) -> None:
    _update_worker(tx, worker_agent_id, is_enabled=enabled)


def disable_worker_agent(tx: Tx, worker_agent_id: str) -> int:
    """Disable and drain: dispatched, not started attempts go back to pending."""
    set_enabled(tx, worker_agent_id, enabled=False)
    tasks = tx.t.tasks
    sources = TRANSITIONS[TaskEvent.WITHDRAW].sources
    held = select_tasks(
        tx, tasks.c.worker_agent_id == worker_agent_id, in_states(tasks.c.status, sources)
    )
    withdrawn = 0
    for row in fetch_rows(tx, locked(held.order_by(tasks.c.task_id), tasks)):
        fence = tasks.c.worker_agent_id == worker_agent_id
        if move_task(tx, TaskEvent.WITHDRAW, row.task_id, row.attempt, requeue_values(tx), fence):
            close_attempt(tx, row.task_id, row.attempt, "withdrawn")
            withdrawn += 1
    logger.info(
        "catalog.worker_drained", extra={"worker_id": worker_agent_id, "withdrawn": withdrawn}
    )
    return withdrawn


def set_property(tx: Tx, worker_agent_id: str, property_name: str, value: str) -> None:
    column = WORKER_PROPERTIES.get(property_name)
    if column is None:
        names = ", ".join(WORKER_PROPERTIES)
        msg = f"unknown worker agent property {property_name!r}; use one of {names}"
        raise OperationRefused(msg, code=27101)
    if column == "display_name" and len(value) > 256:
        raise OperationRefused("DisplayName is at most 256 characters", code=27101)
    _update_worker(tx, worker_agent_id, **{column: value})


def delete_worker_agent(tx: Tx, worker_agent_id: str) -> None:
    require_worker(tx, worker_agent_id)
    tasks = tx.t.tasks
    leased = sa.select(sa.func.count()).where(
        tasks.c.worker_agent_id == worker_agent_id, in_states(tasks.c.status, LEASED_TASK_STATES)
    )
    count = tx.conn.execute(leased).scalar_one()
    if count:
        msg = f"worker agent {worker_agent_id!r} holds {count} leased task(s)"
        hint = "disable it first and wait for its tasks to finish"
        raise OperationRefused(msg, hint=hint)
    workers = tx.t.worker_agents
    tx.conn.execute(sa.delete(workers).where(workers.c.worker_agent_id == worker_agent_id))


def record_refusals(tx: Tx, refusals: Sequence[Refusal]) -> None:
    """Store each worker's latest refusal on its row (one executemany, in worker order so
    concurrent writers lock alike); a worker id no row has changes nothing."""
    latest: dict[str, Refusal] = {}
    for refusal in refusals:
        kept = latest.get(refusal.worker_id)
        if kept is None or refusal.age_s <= kept.age_s:
            latest[refusal.worker_id] = refusal
    if not latest:
        return
    workers = tx.t.worker_agents
    statement = (
        sa.update(workers)
        .where(workers.c.worker_agent_id == sa.bindparam("w_id"))
        .values(
            last_refusal_reason=sa.bindparam("w_reason"),
            last_refusal_detail=sa.bindparam("w_detail"),
            last_refusal_time=sa.bindparam("w_time"),
        )
    )
    tx.conn.execute(
        statement,
        [
            {
                "w_id": worker_id,
                "w_reason": refusal.reason[:32],
                "w_detail": refusal.detail[:REFUSAL_DETAIL_MAX_CHARS],
                "w_time": tx.now - timedelta(seconds=max(refusal.age_s, 0.0)),
            }
            for worker_id, refusal in sorted(latest.items())
        ],
    )


def configure_catalog(tx: Tx, property_name: str, property_value: str) -> None:
    if property_name not in CATALOG_PROPERTIES:
        raise OperationRefused(f"unknown catalog property {property_name!r}", code=27101)
    allowed = CATALOG_PROPERTIES[property_name]
    if allowed is not None and property_value not in allowed:
        msg = f"{property_name} takes one of {sorted(allowed)}, not {property_value!r}"
        raise OperationRefused(msg, code=27101)
    upsert_properties(tx, tx.t.catalog_properties, {property_name: property_value})


def master_heartbeat(tx: Tx, properties: Mapping[str, str]) -> None:
    """LAST_ONLINE_TIME = the database's now (ISO 8601 UTC), plus the given properties."""
    stamp = utc(tx.now).isoformat(timespec="milliseconds")
    upsert_properties(tx, tx.t.master_properties, {**properties, "LAST_ONLINE_TIME": stamp})


def upsert_properties(tx: Tx, table: sa.Table, values: Mapping[str, str]) -> None:
    """Update the names that exist, insert the others: two statements, any dialect."""
    names = sorted(values)
    query = sa.select(table.c.property_name).where(table.c.property_name.in_(names))
    present = set(tx.conn.execute(query).scalars())
    for name in sorted(present):
        tx.conn.execute(
            sa.update(table)
            .where(table.c.property_name == name)
            .values(property_value=values[name])
        )
    missing = [{"property_name": n, "property_value": values[n]} for n in names if n not in present]
    if missing:
        tx.conn.execute(sa.insert(table), missing)
