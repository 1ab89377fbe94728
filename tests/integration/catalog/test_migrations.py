"""Catalog.init (Alembic from code), the SSIS-named views, and driver error translation."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from dispatcher.catalog import Catalog, ReportOutcome
from dispatcher.catalog.engine import create, transaction
from dispatcher.catalog.migrate import MIGRATIONS, version_table_options
from dispatcher.catalog.migrations import schema_0001
from dispatcher.catalog.tables import tables_for
from dispatcher.errors import (
    CatalogNotInitialised,
    CatalogUnavailable,
    MissingDriver,
    OperationRefused,
)
from schemas.messages import TaskProgress
from schemas.states import ExecutionStatus, TaskState
from tests.fixtures.catalog import (
    create_database,
    deploy_sample,
    drop_database,
    online_worker,
    pg_url,
    started_execution,
)


def run_python(script: str) -> str:
    """``script``'s stdout, run by a fresh interpreter from the repository's root."""
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[3],
    ).stdout


def view(engine: sa.Engine, name: str) -> str:
    return f"catalog_{name}" if engine.dialect.name == "sqlite" else f"catalog.{name}"


def test_init_is_idempotent_and_reports_the_revision(catalog: Catalog) -> None:
    """init on a migrated catalog changes nothing and the revision is the head."""
    catalog.init()

    assert catalog.schema_revision() == "0007"


def test_fresh_database_is_not_initialised(tmp_path: Path) -> None:
    """Before init the revision is None and operations say to run `scaleout catalog init`."""
    path = tmp_path / "new.sqlite3"
    fresh = Catalog.open(f"sqlite:///{path}")

    assert fresh.schema_revision() is None
    with pytest.raises(CatalogNotInitialised) as info:
        fresh.create_folder("Finance")
    assert "scaleout catalog init" in info.value.hint
    assert f"{path} does not exist" in str(info.value)
    assert not path.exists()  # reading a missing catalog does not create it
    fresh.init()
    assert fresh.schema_revision() == "0007"
    fresh.close()


def test_fresh_postgresql_database_is_not_initialised(pg_template: str) -> None:
    """On PostgreSQL too, a missing schema is CatalogNotInitialised, then init creates it."""
    name = "scaleout_test_uninitialised"
    create_database(name)
    fresh = Catalog.open(pg_url(name))
    try:
        with pytest.raises(CatalogNotInitialised):
            fresh.list_worker_agents()
        fresh.init()
        assert fresh.schema_revision() == "0007"
    finally:
        fresh.close()
        drop_database(name)


def test_migrated_schema_matches_the_tables(catalog_url: str) -> None:
    """A migrated database has exactly the tables, columns and indexes of tables.py."""
    engine = sa.create_engine(catalog_url)
    tables = tables_for(engine.dialect.name)

    def include(_obj: Any, name: str | None, kind: str, *_args: Any) -> bool:
        if kind == "schema":
            return name == "internal"
        return not (kind == "table" and name is not None and name.endswith("alembic_version"))

    with engine.connect() as conn:
        options = {"include_schemas": True, "include_name": include}
        options.update(version_table_options(engine.dialect.name))
        diff = compare_metadata(MigrationContext.configure(conn, opts=options), tables.metadata)
    engine.dispose()

    assert diff == []


def test_a_0001_catalog_upgrades_in_place(tmp_path: Path) -> None:
    """A catalog made at revision 0001 (with an execution in it) upgrades to the head: the
    lookup indexes appear and the execution is still there."""
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    old = Catalog.open(url)
    execution_id = legacy_started_execution(old, url)
    assert old.schema_revision() == "0001"
    old.init()
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        indexes = {
            ix["name"]
            for t in ("internal_tasks", "internal_jobs")
            for ix in inspector.get_indexes(t)
        }
    engine.dispose()

    assert old.schema_revision() == "0007"
    assert {"ix_internal_tasks_cancels", "ix_internal_jobs_execution"} <= indexes
    assert old.get_execution(execution_id).execution_id == execution_id
    old.close()


def legacy_started_execution(catalog: Catalog, url: str) -> int:
    """A started execution written as the code of an older revision wrote it (its
    operation, execution, job and pending task): create_execution now reads the columns
    of revision 0005, which an old catalog lacks. The project is deployed normally."""
    deploy_sample(catalog)
    engine = sa.create_engine(url)
    t = tables_for(engine.dialect.name)
    now = datetime.now(UTC)
    now = now.replace(tzinfo=None) if engine.dialect.name == "sqlite" else now
    job_id = uuid.uuid4()
    with engine.begin() as conn:
        project = conn.execute(sa.select(t.projects)).one()
        operation = conn.execute(
            sa.insert(t.operations).values(
                operation_type=200, created_time=now, object_type=20,
                object_id=project.project_id, object_name="Sales",
                status=int(ExecutionStatus.PENDING), executed_count=0, machine_name="",
            )
        )  # fmt: skip
        execution_id = int(operation.inserted_primary_key[0])
        conn.execute(
            sa.insert(t.executions).values(
                execution_id=execution_id, folder_name="Finance", project_name="Sales",
                package_name="Load", project_lsn=project.object_version_lsn,
                use32bitruntime=False, runinscaleout=True, useanyworker=True, job_id=job_id,
            )
        )  # fmt: skip
        conn.execute(
            sa.insert(t.jobs).values(
                job_id=job_id, execution_id=execution_id, job_type=1, use_any_worker=True,
                is_cancelled=False, created_time=now, last_updated_time=now,
            )
        )  # fmt: skip
        conn.execute(
            sa.insert(t.tasks).values(
                task_id=uuid.uuid4(), job_id=job_id, execution_id=execution_id, task_type=0,
                status=int(TaskState.PENDING), attempt=0, executed_count=0,
                max_executed_count=1, ready_for_dispatch_time=now, is_cancelled=False,
                cancel_sent=False, published=False, created_time=now, last_updated_time=now,
            )
        )  # fmt: skip
    engine.dispose()
    return execution_id


def online_at_an_old_revision(engine: sa.Engine, worker_id: str) -> None:
    """An enabled, online worker on a catalog at an older revision: a heartbeat (or
    add_worker_agent) would write the columns of later revisions, so the row is written
    with the tables of revision 0001."""
    workers = schema_0001.build(flat=engine.dialect.name == "sqlite").worker_agents
    now = _stamp(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(workers).values(
                worker_agent_id=worker_id, is_enabled=True, last_online_time=now,
                created_time=now,
            )
        )  # fmt: skip


def legacy_dispatch(engine: sa.Engine, execution_id: int, worker_id: str) -> TaskProgress:
    """Dispatch the execution's pending task to ``worker_id`` as an older revision's claim
    did (claim_tasks now reads the columns of revision 0007); the worker's progress report
    for that attempt."""
    t = schema_0001.build(flat=engine.dialect.name == "sqlite")
    now = _stamp(engine)
    with engine.begin() as conn:
        task_id = conn.execute(
            sa.select(t.tasks.c.task_id).where(t.tasks.c.execution_id == execution_id)
        ).scalar_one()
        conn.execute(
            sa.update(t.tasks)
            .where(t.tasks.c.task_id == task_id)
            .values(
                status=int(TaskState.DISPATCHED), attempt=1, worker_agent_id=worker_id,
                last_pickup_time=now, expires_at=now + timedelta(seconds=300),
                published=False, last_updated_time=now,
            )
        )  # fmt: skip
        conn.execute(
            sa.insert(t.task_attempts).values(
                task_id=task_id, attempt=1, worker_agent_id=worker_id, dispatched_at=now
            )
        )
    return TaskProgress(
        task_id=task_id, attempt=1, execution_id=execution_id, worker_id=worker_id, percent=50
    )


def _stamp(engine: sa.Engine) -> datetime:
    """Now, as this dialect stores a timestamp (naive UTC on SQLite)."""
    now = datetime.now(UTC)
    return now.replace(tzinfo=None) if engine.dialect.name == "sqlite" else now


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database's URL: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.sqlite3'}"
        return
    name = f"scaleout_test_old_{uuid.uuid4().hex[:10]}"
    create_database(name)
    try:
        yield pg_url(name)
    finally:
        drop_database(name)


def test_a_0002_catalog_upgrades_to_attempt_progress(empty_url: str) -> None:
    """A catalog at 0002 with a running attempt gets the progress columns (on the attempts
    and their history); the attempt is kept and then stores a progress report."""
    engine = sa.create_engine(empty_url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
    old = Catalog.open(empty_url)
    online_at_an_old_revision(engine, "w1")
    execution_id = legacy_started_execution(old, empty_url)
    report = legacy_dispatch(engine, execution_id, "w1")
    assert old.schema_revision() == "0002"

    old.init()
    tables = tables_for(engine.dialect.name)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        schema = None if engine.dialect.name == "sqlite" else "internal"
        columns = {
            name: {c["name"] for c in inspector.get_columns(name, schema=schema)}
            for name in (tables.task_attempts.name, tables.task_attempts_history.name)
        }
    engine.dispose()
    [result] = old.apply_status_reports([(report, "w1")])

    assert old.schema_revision() == "0007"
    progress_columns = {"progress_percent", "progress_message", "progress_time"}
    assert all(progress_columns <= names for names in columns.values())
    assert result.outcome is ReportOutcome.APPLIED
    assert old.get_execution(execution_id).progress_percent == 50
    old.close()


def test_a_0006_catalog_gets_the_task_backlog_and_loses_it_on_downgrade(empty_url: str) -> None:
    """A worker of a catalog at 0006 has a TaskBacklog of 0 after the upgrade (its
    capacity is unchanged), and the downgrade to 0006 drops the column again."""
    engine = sa.create_engine(empty_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0006")
    online_at_an_old_revision(engine, "w1")
    old = Catalog.open(empty_url)

    old.init()
    upgraded = old.get_worker_agent("w1")
    old.close()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0006")
    table = tables_for(engine.dialect.name).worker_agents
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns(table.name, table.schema)}
    engine.dispose()

    assert (upgraded.max_task_count, upgraded.task_backlog) == (10, 0)
    assert "max_task_count" in columns
    assert "task_backlog" not in columns


def test_views_use_ssis_names(catalog: Catalog, catalog_url: str) -> None:
    """catalog.worker_agents, executions and master_properties read like SSISDB's."""
    online_worker(catalog, "w1", machine_name="box")
    execution_id = started_execution(catalog)
    engine = sa.create_engine(catalog_url)
    with engine.connect() as conn:
        worker = conn.execute(sa.text(f"SELECT * FROM {view(engine, 'worker_agents')}")).one()
        execution = conn.execute(
            sa.text(f"SELECT status, executed_count FROM {view(engine, 'executions')}")
        ).one()
        names = [
            row[0]
            for row in conn.execute(
                sa.text(f"SELECT property_name FROM {view(engine, 'master_properties')}")
            )
        ]
        for name in (
            "folders",
            "projects",
            "packages",
            "operations",
            "operation_messages",
            "event_messages",
        ):
            conn.execute(sa.text(f"SELECT * FROM {view(engine, name)}")).all()
    engine.dispose()

    assert list(worker._mapping) == [
        "WorkerAgentId",
        "IsEnabled",
        "DisplayName",
        "Description",
        "MachineName",
        "Tags",
        "UserAccount",
        "LastOnlineTime",
    ]
    assert (worker.WorkerAgentId, worker.MachineName) == ("w1", "box")
    assert tuple(execution) == (5, 0)
    assert execution_id > 0
    assert "IS_SCALEOUT_ENABLED" in names


def test_unreachable_postgresql_is_unavailable() -> None:
    """A server that does not answer -> CatalogUnavailable, the password redacted."""
    closed = Catalog.open(
        "postgresql+psycopg://scaleout:hunter2@127.0.0.1:1/ssisdb", connection_timeout_s=2
    )

    with pytest.raises(CatalogUnavailable) as info:
        closed.list_worker_agents()
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)
    closed.close()


@pytest.mark.parametrize("url", ["oracle://u@h/db", "postgresql+nodriver://u@h/db", "nonsense"])
def test_unknown_dialect_or_driver_is_missing_driver(url: str) -> None:
    """An unsupported database or an unknown driver -> MissingDriver with a hint."""
    with pytest.raises(MissingDriver) as info:
        Catalog.open(url)

    assert info.value.hint


def test_pyodbc_is_imported_only_for_odbc_urls(tmp_path: Path) -> None:
    """Opening a SQLite or PostgreSQL catalog never imports pyodbc; an mssql URL does."""
    script = (
        "import sys\n"
        "from dispatcher.catalog import Catalog\n"
        f"Catalog.open('sqlite:///{tmp_path / 'x.sqlite3'}').schema_revision()\n"
        "Catalog.open('postgresql+psycopg://u@127.0.0.1/db')\n"
        "before = 'pyodbc' in sys.modules\n"
        "Catalog.open('mssql+pyodbc://u:p@h/db?driver=ODBC+Driver+18+for+SQL+Server')\n"
        "print(before, 'pyodbc' in sys.modules)\n"
    )
    out = run_python(script)

    assert out.split() == ["False", "True"]


def test_unopenable_sqlite_file_is_unavailable() -> None:
    """A SQLite path that cannot be opened -> CatalogUnavailable, not a driver traceback;
    init cannot create it either, and says to check the folder."""
    missing = Catalog.open("sqlite:////nonexistent-dir/ssisdb.sqlite3")

    with pytest.raises(CatalogUnavailable, match="unable to open database file"):
        missing.list_worker_agents()
    with pytest.raises(CatalogUnavailable, match="cannot create the catalog file") as created:
        missing.init()
    assert "folder exists" in created.value.hint
    missing.close()


def test_integrity_error_becomes_operation_refused(catalog_url: str) -> None:
    """A constraint the database enforces (a race past a pre-check) surfaces as OperationRefused."""
    engine = create(catalog_url, connection_timeout_s=5)
    row = {"name": "Finance", "description": "", "created_time": datetime.now(UTC)}

    with pytest.raises(OperationRefused, match="refused the change"), transaction(engine) as tx:
        tx.conn.execute(sa.insert(tx.t.folders), [row, row])
    with transaction(engine, read_only=True) as tx:
        count = tx.conn.execute(sa.select(sa.func.count()).select_from(tx.t.folders)).scalar()
    engine.dispose()

    assert count == 0


def test_missing_pyodbc_is_missing_driver_with_install_hint() -> None:
    """Without an importable pyodbc, an mssql URL -> MissingDriver naming what to install."""
    script = (
        "import sys\n"
        "sys.modules['pyodbc'] = None  # as on a machine without pyodbc/libodbc\n"
        "from dispatcher.catalog import Catalog\n"
        "from dispatcher.errors import MissingDriver\n"
        "try:\n"
        "    Catalog.open('mssql+pyodbc://u:secret@h/db?driver=ODBC+Driver+18+for+SQL+Server')\n"
        "except MissingDriver as exc:\n"
        "    print(exc.hint)\n"
        "    print(exc)\n"
    )
    out = run_python(script)

    assert "apt-get install unixodbc" in out
    assert "tdsodbc" in out
    assert "secret" not in out
