"""Alembic environment for the catalog, run programmatically by ``Catalog.init``.

Online, the caller passes an open connection in ``config.attributes["connection"]``.
Offline (``--sql``), ``config.attributes["dialect_name"]`` names the dialect to render.
The version table lives in the ``internal`` schema (``internal_alembic_version`` on SQLite).
"""

from __future__ import annotations

from alembic import context

from dispatcher.catalog.migrate import version_table_options


def _schema_statements(dialect_name: str) -> list[str]:
    if dialect_name == "postgresql":
        return [f"CREATE SCHEMA IF NOT EXISTS {name}" for name in ("internal", "catalog")]
    if dialect_name == "mssql":
        return [
            f"IF SCHEMA_ID(N'{name}') IS NULL EXEC('CREATE SCHEMA {name}')"
            for name in ("internal", "catalog")
        ]
    return []


def _run(dialect_name: str) -> None:
    with context.begin_transaction():
        # The schemas must exist before Alembic creates its version table in one.
        for statement in _schema_statements(dialect_name):
            context.execute(statement)
        context.run_migrations()


def run() -> None:
    config = context.config
    if context.is_offline_mode():
        dialect_name = str(config.attributes["dialect_name"])
        context.configure(
            dialect_name=dialect_name,
            literal_binds=True,
            **version_table_options(dialect_name),
        )
        _run(dialect_name)
        return
    connection = config.attributes["connection"]
    context.configure(connection=connection, **version_table_options(connection.dialect.name))
    _run(connection.dialect.name)


run()
