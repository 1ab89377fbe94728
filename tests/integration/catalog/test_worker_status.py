"""What the operator reads about workers and waiting executions, on both databases: the
heartbeat's not_accepting and free disk, the last refused message on the claimed worker's
row, the facts of why an execution stays pending, and messages paged in time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from dispatcher.catalog import Catalog
from dispatcher.catalog.leases import SILENT_WORKER
from dispatcher.catalog.migrate import MIGRATIONS
from dispatcher.catalog.records import Refusal
from dispatcher.errors import NotFound
from schemas.messages import LogEntry, TaskLog
from schemas.states import ExecutionStatus, TaskState
from tests.fixtures.catalog import heartbeat, online_worker, started, started_execution


def test_a_heartbeat_stores_why_the_worker_is_not_accepting(catalog: Catalog) -> None:
    """not_accepting and free_disk_mb reach the row; accepting again clears the reason."""
    online_worker(catalog, "w1")
    refusing = heartbeat(
        "w1", accepting=False, not_accepting="free disk 80 MB < 500 MB", free_disk_mb=80
    )

    catalog.record_heartbeat(refusing, "w1")
    full = catalog.get_worker_agent("w1")
    catalog.record_heartbeat(heartbeat("w1", free_disk_mb=9000), "w1")
    freed = catalog.get_worker_agent("w1")

    assert (full.accepting, full.not_accepting, full.free_disk_mb) == (
        False,
        "free disk 80 MB < 500 MB",
        80,
    )
    assert (freed.accepting, freed.not_accepting, freed.free_disk_mb) == (True, "", 9000)


def test_a_lapsed_lease_says_why_its_worker_gets_nothing(catalog_url: str) -> None:
    """The expiry sweep that suspends a worker stores the reason with it."""
    quick = Catalog.open(catalog_url, initial_lease_s=0.0)
    online_worker(quick, "w1")
    started_execution(quick)
    quick.claim_tasks(1)

    [expired] = quick.expire_leases()
    row = quick.get_worker_agent("w1")
    quick.close()

    assert expired.worker_id == "w1"
    assert (row.accepting, row.not_accepting) == (False, SILENT_WORKER)


def test_refusals_keep_the_latest_per_worker_with_its_time(catalog: Catalog) -> None:
    """One write for several workers: each row gets its newest refusal, dated the
    database's now minus its age; an id no row has changes nothing."""
    online_worker(catalog, "w1")
    online_worker(catalog, "w2")
    before = datetime.now(UTC)

    catalog.record_refusals(
        [
            Refusal("w1", "stale", "older", age_s=5.0),
            Refusal("w1", "forged_sender", "agent.heartbeat: body says w1, broker says guest"),
            Refusal("w2", "unknown_task", "task.started of execution 9 attempt 1", age_s=60.0),
            Refusal("ghost", "forged_sender", "nobody"),
        ]
    )
    w1, w2 = catalog.get_worker_agent("w1"), catalog.get_worker_agent("w2")

    assert (w1.last_refusal_reason, w1.last_refusal_detail) == (
        "forged_sender",
        "agent.heartbeat: body says w1, broker says guest",
    )
    assert w2.last_refusal_reason == "unknown_task"
    assert w1.last_refusal_time is not None
    assert w2.last_refusal_time is not None
    assert w1.last_refusal_time - w2.last_refusal_time >= timedelta(seconds=59)
    assert abs(w1.last_refusal_time - before) < timedelta(seconds=30)
    assert [w.worker_agent_id for w in catalog.list_worker_agents()] == ["w1", "w2"]


def test_pending_facts_of_a_restricted_execution(catalog: Catalog) -> None:
    """Only the allowed workers are candidates, as the dispatcher sees them; the master
    never ran, so its last heartbeat is None."""
    online_worker(catalog, "w1")
    catalog.add_worker_agent("w9", is_enabled=True)
    execution_id = started_execution(catalog, useanyworker=False, workers=("w9",))

    facts = catalog.pending_facts(execution_id)

    assert facts.status is ExecutionStatus.PENDING
    assert facts.task_state is TaskState.PENDING
    assert facts.use_any_worker is False
    assert [(w.worker_agent_id, w.is_enabled, w.is_online) for w in facts.candidates] == [
        ("w9", True, False)
    ]
    assert facts.master_last_seen is None
    assert facts.pending_ahead == 0


def test_pending_facts_count_what_is_ahead_and_who_holds_a_dispatch(catalog: Catalog) -> None:
    """Every worker is a candidate of an any-worker execution; older pending tasks are
    ahead of it; once dispatched, the holder and attempt are named; the master's heartbeat
    time and interval are read from its properties."""
    catalog.add_worker_agent("w1", is_enabled=False)
    first = started_execution(catalog)
    second = started_execution(catalog)
    catalog.master_heartbeat({"MASTER_HEARTBEAT_INTERVALINMS": "2000"})

    waiting = catalog.pending_facts(second)
    online_worker(catalog, "w1")
    catalog.claim_tasks(1)
    dispatched = catalog.pending_facts(first)

    assert [w.worker_agent_id for w in waiting.candidates] == ["w1"]
    assert waiting.pending_ahead == 1
    assert waiting.master_heartbeat_interval_s == 2.0
    assert waiting.master_last_seen is not None
    assert abs(waiting.now - waiting.master_last_seen) < timedelta(seconds=30)
    assert (dispatched.task_state, dispatched.holder, dispatched.attempt) == (
        TaskState.DISPATCHED,
        "w1",
        1,
    )


def _log(catalog: Catalog, times: list[datetime], message_type: int = 70) -> int:
    """An execution whose worker logged one line per time, in that order (seq 0, 1, ...)."""
    online_worker(catalog, "w1")
    execution_id = started_execution(catalog)
    [a] = catalog.claim_tasks(1)
    entries = tuple(
        LogEntry(seq=i, time=t, message=f"line {i}", message_type=message_type)
        for i, t in enumerate(times)
    )
    report = TaskLog(
        task_id=a.task_id,
        attempt=a.attempt,
        execution_id=a.execution_id,
        worker_id="w1",
        entries=entries,
    )
    catalog.apply_status_reports([(started(a), "w1"), (report, "w1")])
    return execution_id


def test_messages_page_in_time_order_up_to_a_snapshot(catalog: Catalog) -> None:
    """Lines stored in one order but stamped in another come back by time, then id, a page
    at a time after a (time, id) key; up_to_id leaves out what came later."""
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    tie = base + timedelta(seconds=1)
    execution_id = _log(catalog, [base + timedelta(seconds=5), tie, tie, base])
    last = catalog.last_message_id(execution_id)

    pages, after = [], None
    while page := catalog.execution_messages_by_time(
        execution_id, after=after, up_to_id=last, limit=2
    ):
        pages.append([m.message for m in page])
        after = (page[-1].message_time, page[-1].message_id)
    snapshot = catalog.execution_messages_by_time(execution_id, up_to_id=last - 1)

    assert pages == [["line 3", "line 1"], ["line 2", "line 0"]]
    assert [m.message for m in snapshot] == ["line 1", "line 2", "line 0"]
    assert last == max(m.message_id for m in catalog.execution_messages(execution_id))
    assert catalog.last_message_id(execution_id + 1000) == 0


def test_a_0003_catalog_upgrades_to_worker_status(tmp_path: Path) -> None:
    """A catalog at 0003 with a worker gets the worker-status columns and the messages'
    time index; the worker row is kept and then stores a refusal."""
    url = f"sqlite:///{tmp_path}/old.sqlite3"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
        conn.execute(
            sa.text(
                "INSERT INTO internal_worker_agents (worker_agent_id, is_enabled, display_name,"
                " description, machine_name, tags, user_account, max_task_count, accepting,"
                " lease_interval_s, created_time) VALUES ('w1', 1, '', '', '', '', '', 4, 1,"
                " 60.0, '2026-01-01 00:00:00.000000')"
            )
        )
    old = Catalog.open(url)
    assert old.schema_revision() == "0003"

    old.init()
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        columns = {c["name"] for c in inspector.get_columns("internal_worker_agents")}
        indexes = {ix["name"] for ix in inspector.get_indexes("internal_operation_messages")}
    engine.dispose()
    old.record_refusals([Refusal("w1", "forged_sender", "detail")])

    assert old.schema_revision() == "0007"
    assert {"not_accepting", "free_disk_mb", "last_refusal_reason"} <= columns
    assert "ix_internal_operation_messages_time" in indexes
    assert old.get_worker_agent("w1").last_refusal_reason == "forged_sender"
    old.close()


def test_unknown_execution_has_no_pending_facts(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        catalog.pending_facts(424242)
