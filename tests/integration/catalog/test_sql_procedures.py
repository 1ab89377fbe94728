"""SSIS's procedures callable from SQL: the PL/pgSQL functions in PostgreSQL's ``catalog``
schema do what the Python catalog does (a plain SQL client, no scaleout code, drives
them), refuse what it refuses with nothing written, and what they start the dispatcher
claims. The T-SQL procedures for SQL Server are rendered and checked as text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from dispatcher.api import ScaleOut
from dispatcher.catalog import Catalog
from dispatcher.catalog.migrate import MIGRATIONS, render_sql
from dispatcher.catalog.tables import tables_for
from dispatcher.keys import Keyring
from schemas.states import ExecutionStatus
from tests.fixtures.catalog import (
    deploy_sample,
    online_worker,
    pg_catalog_url,
    pg_template,
    project_archive,
    started,
    table_counts,
)

__all__ = ["pg_catalog_url", "pg_template"]

PACKAGES = [
    {
        "name": "Load",
        "entry": {"argv": ["{python}", "load.py"]},
        "parameters": [
            {"name": "Rows", "type": "int", "default": 10},
            {"name": "Rate", "type": "float", "required": True},
            {"name": "On", "type": "bool"},
            {"name": "Label", "type": "string"},
            {"name": "ApiKey", "type": "string", "sensitive": True},
        ],
    }
]


@pytest.fixture
def catalog(pg_catalog_url: str) -> Iterator[Catalog]:
    opened = Catalog.open(pg_catalog_url, keyring=Keyring.generate())
    opened.deploy_project("Finance", "Sales", project_archive("Sales", packages=PACKAGES))
    online_worker(opened, "w1")
    yield opened
    opened.close()


@pytest.fixture
def sql(pg_catalog_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain psycopg connection, as a SQL client or pg_cron has (autocommit: each
    statement is its own transaction, as each procedure call is)."""
    url = pg_catalog_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def call(sql: psycopg.Connection[Any], statement: str, *args: object) -> Any:
    row = sql.execute(statement, args).fetchone()
    return None if row is None else row[0]


def test_create_set_start_from_sql_then_the_dispatcher_claims_it(
    catalog: Catalog, sql: psycopg.Connection[Any]
) -> None:
    execution_id = call(
        sql, "SELECT catalog.create_execution('Finance', 'Sales', 'Load', useanyworker => false)"
    )
    values = [
        (30, "Rate", " 2.5 "),
        (30, "On", "YES"),
        (30, "Label", 'a "b"'),
        (30, "Rows", "007"),
        (50, "LOGGING_LEVEL", "3"),
    ]
    statement = "SELECT catalog.set_execution_parameter_value(%s, %s::smallint, %s, %s)"
    for object_type, name, value in values:
        call(sql, statement, execution_id, object_type, name, value)
    call(sql, "SELECT catalog.add_execution_worker(%s, 'w1')", execution_id)
    call(sql, "SELECT catalog.add_execution_worker(%s, 'w1')", execution_id)
    call(sql, "SELECT catalog.start_execution(%s, retry_count => 2)", execution_id)

    [assignment] = catalog.claim_tasks(5)
    row = catalog.get_execution(execution_id)

    assert assignment.execution_id == execution_id
    assert assignment.max_attempts == 3
    assert {(p.object_type, p.name): p.value for p in assignment.parameters} == {
        (30, "Rate"): 2.5,
        (30, "On"): True,
        (30, "Label"): 'a "b"',
        (30, "Rows"): 7,
        (50, "LOGGING_LEVEL"): 3,
    }
    assert row.allowed_workers == ("w1",)
    assert row.caller_name == "postgres"


def test_a_reference_resolves_from_sql_and_a_sealed_value_stays_sealed(
    catalog: Catalog, sql: psycopg.Connection[Any], pg_catalog_url: str
) -> None:
    so = ScaleOut(catalog)
    so.create_environment("Finance", "PROD")
    so.create_environment_variable("Finance", "PROD", "Key", "string", True, "sql-secret-9")
    so.create_environment_variable("Finance", "PROD", "Rate", "float", False, 4.5)
    so.set_object_parameter_value(30, "Finance", "Sales", "ApiKey", "Key", "Load", "R")
    so.set_object_parameter_value(30, "Finance", "Sales", "Rate", "Rate", "Load", "R")
    reference = so.create_environment_reference("Finance", "Sales", "PROD", "R")

    execution_id = call(
        sql, "SELECT catalog.create_execution('Finance', 'Sales', 'Load', %s)", reference
    )
    call(sql, "SELECT catalog.start_execution(%s)", execution_id)
    [assignment] = catalog.claim_tasks(5)

    values = {p.name: p.value for p in assignment.parameters}
    assert (values["ApiKey"], values["Rate"], values["Rows"]) == ("sql-secret-9", 4.5, 10)
    dump = sql.execute("SELECT parameter_value FROM internal.execution_parameter_values").fetchall()
    assert not [v for (v,) in dump if "sql-secret-9" in v]


def test_stop_and_drain_from_sql(catalog: Catalog, sql: psycopg.Connection[Any]) -> None:
    pending = call(sql, "SELECT catalog.create_execution('Finance', 'Sales', 'Load')")
    call(
        sql, "SELECT catalog.set_execution_parameter_value(%s, 30::smallint, 'Rate', '1')", pending
    )
    call(sql, "SELECT catalog.start_execution(%s)", pending)
    call(sql, "SELECT catalog.stop_operation(%s)", pending)
    assert catalog.get_execution(pending).status is ExecutionStatus.CANCELED

    running = ScaleOut(catalog).run("Finance", "Sales", "Load", parameters={"Rate": 1}).execution_id
    dispatched = (
        ScaleOut(catalog).run("Finance", "Sales", "Load", parameters={"Rate": 1}).execution_id
    )
    claimed = {a.execution_id: a for a in catalog.claim_tasks(5)}
    catalog.apply_status_reports([(started(claimed[running]), "w1")])
    call(sql, "SELECT catalog.stop_operation(%s)", running)
    call(sql, "SELECT catalog.stop_operation(%s)", running)  # a second stop changes nothing
    call(sql, "SELECT catalog.disable_worker_agent('w1')")

    assert catalog.get_execution(running).status is ExecutionStatus.STOPPING
    assert [o.execution_id for o in catalog.pending_cancels()] == [running]
    assert catalog.get_execution(dispatched).status is ExecutionStatus.PENDING
    assert catalog.get_execution(dispatched).holder is None
    assert not catalog.get_worker_agent("w1").is_enabled
    call(sql, "SELECT catalog.enable_worker_agent('w1')")
    assert catalog.get_worker_agent("w1").is_enabled
    assert [a.execution_id for a in catalog.claim_tasks(5)] == [dispatched]


SET = "set_execution_parameter_value"
CREATE = "create_execution"
REFUSALS = {
    "unknown folder": (CREATE, "'Nope', 'Sales', 'Load'", "folder 'Nope' does not exist"),
    "unknown project": (CREATE, "'Finance', 'Nope', 'Load'", "project 'Nope'"),
    "unknown package": (CREATE, "'Finance', 'Sales', 'Nope'", "package 'Nope'"),
    "unknown reference": (CREATE, "'Finance', 'Sales', 'Load', 99", "reference 99 does not"),
    "not in scale out": (
        CREATE,
        "'Finance', 'Sales', 'Load', runinscaleout => false",
        "Scale Out only",
    ),
    "wrong type": (SET, "{e}, 30::smallint, 'Rows', 'many'", "Rows takes a int, not 'many'"),
    "not a float": (SET, "{e}, 30::smallint, 'Rate', 'fast'", "takes a float"),
    "not a bool": (SET, "{e}, 30::smallint, 'On', 'maybe'", "takes a bool"),
    "undeclared": (SET, "{e}, 20::smallint, 'Rows', '1'", "is not declared"),
    "object type": (SET, "{e}, 40::smallint, 'Rows', '1'", "object_type must be"),
    "sensitive": (SET, "{e}, 30::smallint, 'ApiKey', 'x'", "which the database does not hold"),
    "unknown execution": (SET, "999, 30::smallint, 'Rows', '1'", "execution 999 does not exist"),
    "any worker": ("add_execution_worker", "{e}, 'w1'", "already allows any worker"),
    "missing required": ("start_execution", "{e}", "lacks required parameters: Rate"),
    "negative retries": ("start_execution", "{e}, -1", "retry_count must be 0 or more"),
    "stop a created one": ("stop_operation", "{e}", "only a pending or running one stops"),
    "stop unknown": ("stop_operation", "999", "operation 999 does not exist"),
    "enable unknown": ("enable_worker_agent", "'ghost'", "worker agent 'ghost' does not exist"),
    "disable unknown": ("disable_worker_agent", "'ghost'", "worker agent 'ghost' does not"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_refusal_writes_nothing(
    catalog: Catalog, sql: psycopg.Connection[Any], pg_catalog_url: str, case: str
) -> None:
    execution_id = catalog.create_execution("Finance", "Sales", "Load")
    function, arguments, said = REFUSALS[case]
    before = table_counts(pg_catalog_url)

    with pytest.raises(psycopg.Error, match=re.escape(said)):
        sql.execute(f"SELECT catalog.{function}({arguments.format(e=execution_id)})")

    assert table_counts(pg_catalog_url) == before


def test_an_unknown_worker_and_a_started_execution_are_refused(
    catalog: Catalog, sql: psycopg.Connection[Any], pg_catalog_url: str
) -> None:
    chosen = catalog.create_execution("Finance", "Sales", "Load", useanyworker=False)
    begun = ScaleOut(catalog).run("Finance", "Sales", "Load", parameters={"Rate": 1}).execution_id
    before = table_counts(pg_catalog_url)

    with pytest.raises(psycopg.Error, match="worker agent 'ghost' does not exist"):
        sql.execute("SELECT catalog.add_execution_worker(%s, 'ghost')", (chosen,))
    with pytest.raises(psycopg.Error, match="already started"):
        sql.execute("SELECT catalog.start_execution(%s)", (begun,))

    assert table_counts(pg_catalog_url) == before
    deploy_sample(catalog, folder="Other")


TSQL_PARAMETERS = {
    "create_execution": ["@folder_name", "@project_name", "@package_name", "@reference_id",
                         "@use32bitruntime", "@runinscaleout", "@useanyworker",
                         "@execution_id BIGINT OUTPUT"],
    "set_execution_parameter_value": ["@execution_id", "@object_type", "@parameter_name",
                                      "@parameter_value SQL_VARIANT"],
    "add_execution_worker": ["@execution_id", "@workeragent_id"],
    "start_execution": ["@execution_id", "@retry_count INT = 0"],
    "stop_operation": ["@operation_id"],
    "enable_worker_agent": ["@WorkerAgentId"],
    "disable_worker_agent": ["@WorkerAgentId"],
}  # fmt: skip


def _procedures(script: str) -> dict[str, str]:
    parts = re.split(r"(?=CREATE OR ALTER PROCEDURE catalog\.)", script)
    found = {}
    for part in parts[1:]:
        name = re.match(r"CREATE OR ALTER PROCEDURE catalog\.(\w+)", part)
        assert name is not None
        found[name[1]] = part.split("\nGO", 1)[0]
    return found


def test_the_tsql_procedures_render_with_ssis_parameters() -> None:
    """Each procedure is its own batch with SSIS's parameters; blocks balance; every
    table it names exists; refusals roll back, then THROW."""
    script = render_sql("mssql")
    procedures = _procedures(script)
    tables = {t.name for t in tables_for("mssql").metadata.sorted_tables}

    assert sorted(procedures) == sorted(TSQL_PARAMETERS)
    for name, text in procedures.items():
        head = text.split("\nAS\n", 1)[0]
        assert all(p in head for p in TSQL_PARAMETERS[name]), name
        opened = len(re.findall(r"\bBEGIN\b(?! TRANSACTION)", text)) + len(
            re.findall(r"\bCASE\b", text)
        )
        assert opened == len(re.findall(r"\bEND\b", text)), name
        assert set(re.findall(r"internal\.(\w+)", text)) <= tables, name
        assert "SET XACT_ABORT ON" in text
        assert text.count("BEGIN TRANSACTION") == 1
        assert text.count("THROW 50000") == text.count("ROLLBACK;")
    assert "GO" in script.split("CREATE OR ALTER PROCEDURE catalog.create_execution", 1)[1]


PROCS = (
    "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE n.nspname IN ('catalog', 'internal')"
)


def test_the_postgresql_functions_are_dropped_by_the_downgrade(pg_catalog_url: str) -> None:
    """The migration's downgrade removes what it created (the functions included)."""
    engine = sa.create_engine(pg_catalog_url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
        left = conn.execute(sa.text(PROCS)).scalar_one()
        command.upgrade(config, "head")
        back = conn.execute(sa.text(PROCS)).scalar_one()
    engine.dispose()

    assert left == 0
    assert back == 8  # seven procedures and the value coercion they share
