"""SQL Server: the migration renders for mssql, every statement the catalog issues compiles
for mssql, and (when SCALEOUT_TEST_MSSQL_URL is set) the operations run on a live server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql
from sqlalchemy.sql import ClauseElement

from dispatcher.catalog import Catalog
from dispatcher.catalog.migrate import render_sql
from tests.fixtures.catalog import exercise_catalog

MSSQL_URL = os.environ.get("SCALEOUT_TEST_MSSQL_URL", "")


@pytest.fixture
def recorded() -> Iterator[list[ClauseElement]]:
    """Every ClauseElement any engine executes while the test runs."""
    statements: list[ClauseElement] = []

    def record(_conn: Any, element: Any, *_args: Any) -> None:
        if isinstance(element, ClauseElement):
            statements.append(element)

    sa.event.listen(sa.engine.Engine, "before_execute", record)
    yield statements
    sa.event.remove(sa.engine.Engine, "before_execute", record)


def test_migration_renders_for_mssql() -> None:
    """Alembic's offline mode renders the whole upgrade as T-SQL in the two schemas."""
    script = render_sql("mssql")

    assert "IF SCHEMA_ID(N'internal') IS NULL EXEC('CREATE SCHEMA internal')" in script
    assert "CREATE TABLE internal.alembic_version" in script
    assert "CREATE TABLE internal.tasks" in script
    assert "DATETIMEOFFSET" in script
    assert "NVARCHAR(max)" in script
    assert " TEXT" not in script  # deprecated on SQL Server
    assert "UNIQUEIDENTIFIER" in script
    assert "WHERE seq IS NOT NULL" in script  # filtered unique index for log lines
    assert "CREATE VIEW catalog.worker_agents" in script
    assert "INSERT INTO internal.catalog_properties" in script
    assert "ALTER TABLE internal.task_attempts ADD progress_message NVARCHAR(1024) NULL" in script
    assert "ALTER TABLE internal.worker_agents ADD last_refusal_time DATETIMEOFFSET NULL" in script
    assert "CREATE INDEX ix_operation_messages_time ON internal.operation_messages" in script
    assert (
        "ALTER TABLE internal.worker_agents ADD task_backlog INTEGER NOT NULL DEFAULT '0'" in script
    )


def test_every_catalog_statement_compiles_for_mssql(
    tmp_path: Any, recorded: list[ClauseElement]
) -> None:
    """Each statement issued by the operations (run on SQLite) also compiles for SQL Server."""
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'ssisdb.sqlite3'}")
    catalog.init()
    recorded.clear()
    exercise_catalog(catalog)
    catalog.close()
    dialect = mssql.dialect()  # type: ignore[no-untyped-call]

    compiled = [str(statement.compile(dialect=dialect)) for statement in recorded]

    # SQLite's flattened names appear here; the constructs are what must compile.
    assert len(compiled) > 100
    assert any("FROM internal_tasks WITH (UPDLOCK, ROWLOCK, READPAST)" in sql for sql in compiled)
    assert any(sql.startswith("UPDATE internal_tasks SET") for sql in compiled)


@pytest.mark.mssql
@pytest.mark.skipif(not MSSQL_URL, reason="SCALEOUT_TEST_MSSQL_URL is not set (no live SQL Server)")
def test_operations_on_live_sql_server() -> None:
    """With a live SQL Server, init and every operation run through pyodbc."""
    catalog = Catalog.open(MSSQL_URL)
    catalog.init()
    catalog.init()

    exercise_catalog(catalog, suffix=uuid.uuid4().hex[:8])

    assert catalog.schema_revision() == "0007"
    catalog.close()
