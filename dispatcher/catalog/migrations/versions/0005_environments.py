"""SSIS environments: environments of a folder, their typed (and sensitive) variables,
projects' references to them, and server values of parameters, literal or referenced.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``catalog.create_environment``, ``create_environment_variable``,
``create_environment_reference`` and ``set_object_parameter_value`` (``value_type`` 'V' a
literal, 'R' the name of an environment variable) let one project run against DEV, TEST
and PROD values: ``create_execution @reference_id`` resolves them. ``object_parameters``
gains SSIS's ``value_type``, ``value_set`` and ``referenced_variable_name``, and
``server_value`` (a literal set on the server; ``default_value`` stays the manifest's,
which ``catalog.object_parameters`` shows as SSIS's ``design_default_value``). References name their environment (and, absolute ones, its
folder) as SSIS's do. Views with SSIS's names show them; a sensitive variable's value is
NULL in ``catalog.environment_variables``, as in SSISDB.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mssql

from dispatcher.catalog.migrations import procedures_0005, tsql_0005

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NAME = sa.Unicode(128)
STAMP = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _long_text() -> sa.types.TypeEngine[str]:
    return sa.UnicodeText().with_variant(mssql.NVARCHAR(), "mssql")


def _names() -> tuple[str, str, str | None]:
    """(internal prefix, catalog prefix, schema) on this dialect (SQLite flattens)."""
    if op.get_context().dialect.name == "sqlite":
        return "internal_", "catalog_", None
    return "internal.", "catalog.", "internal"


def _table(name: str) -> str:
    return f"internal_{name}" if op.get_context().dialect.name == "sqlite" else name


def _fk(table: str, column: str) -> str:
    internal, _, _ = _names()
    return f"{internal}{table}.{column}"


def _parameter_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("value_type", sa.String(1), nullable=False, server_default="V"),
        sa.Column("value_set", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("server_value", _long_text(), nullable=True),
        sa.Column("referenced_variable_name", NAME, nullable=True),
    ]


def _true() -> str:
    return "true" if op.get_context().dialect.name == "postgresql" else "1"


VIEWS = {
    "environments": (
        "SELECT e.environment_id, e.environment_name AS name, e.folder_id, e.description,"
        " e.created_time FROM {i}environments e"
    ),
    "environment_variables": (
        "SELECT variable_id, environment_id, name, description, type, sensitive,"
        " CASE WHEN sensitive = {true} THEN NULL ELSE value END AS value"
        " FROM {i}environment_variables"
    ),
    "environment_references": (
        "SELECT reference_id, project_id, reference_type, environment_folder_name,"
        " environment_name, created_time FROM {i}environment_references"
    ),
    "object_parameters": (
        "SELECT parameter_id, project_id, object_type, object_name, parameter_name,"
        " data_type, required, sensitive, description, default_value AS design_default_value,"
        " CASE WHEN sensitive = {true} THEN NULL ELSE COALESCE(server_value, default_value)"
        " END AS default_value,"
        " value_type, value_set, referenced_variable_name, project_version_lsn"
        " FROM {i}object_parameters"
    ),
}


def upgrade() -> None:
    internal, catalog, schema = _names()
    parameters = _table("object_parameters")
    for column in _parameter_columns():
        op.add_column(parameters, column, schema=schema)
    op.create_table(
        _table("environments"),
        sa.Column("environment_id", ID, primary_key=True),
        sa.Column("folder_id", ID, sa.ForeignKey(_fk("folders", "folder_id")), nullable=False),
        sa.Column("environment_name", NAME, nullable=False),
        sa.Column("description", _long_text(), nullable=False),
        sa.Column("created_time", STAMP, nullable=False),
        sa.UniqueConstraint("folder_id", "environment_name"),
        schema=schema,
    )
    op.create_table(
        _table("environment_variables"),
        sa.Column("variable_id", ID, primary_key=True),
        sa.Column(
            "environment_id",
            ID,
            sa.ForeignKey(_fk("environments", "environment_id"), ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", NAME, nullable=False),
        sa.Column("description", _long_text(), nullable=False),
        sa.Column("type", sa.Unicode(16), nullable=False),
        sa.Column("sensitive", sa.Boolean, nullable=False),
        sa.Column("value", _long_text(), nullable=True),
        sa.UniqueConstraint("environment_id", "name"),
        schema=schema,
    )
    op.create_table(
        _table("environment_references"),
        sa.Column("reference_id", ID, primary_key=True),
        sa.Column("project_id", ID, sa.ForeignKey(_fk("projects", "project_id")), nullable=False),
        sa.Column("reference_type", sa.String(1), nullable=False),
        sa.Column("environment_folder_name", NAME, nullable=True),
        sa.Column("environment_name", NAME, nullable=False),
        sa.Column("created_time", STAMP, nullable=False),
        schema=schema,
    )
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {catalog}{name} AS {select.format(i=internal, true=_true())}")
    for statement in _procedures()[0]:
        op.execute(statement)


def _procedures() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """SSIS's procedures callable from SQL (created, dropped) on this dialect: PL/pgSQL
    functions on PostgreSQL, T-SQL procedures on SQL Server, none on SQLite."""
    name = op.get_context().dialect.name
    if name == "postgresql":
        return procedures_0005.POSTGRESQL, procedures_0005.POSTGRESQL_DROPS
    if name == "mssql":
        return tsql_0005.PROCEDURES, tsql_0005.DROPS
    return (), ()


def downgrade() -> None:
    for statement in _procedures()[1]:
        op.execute(statement)
    _internal, catalog, schema = _names()
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW {catalog}{name}")
    for name in ("environment_references", "environment_variables", "environments"):
        op.drop_table(_table(name), schema=schema)
    parameters = _table("object_parameters")
    for column in reversed(_parameter_columns()):
        op.drop_column(parameters, column.name, schema=schema)
