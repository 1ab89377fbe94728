"""Alembic, run from code: ``Catalog.init`` upgrades to head; no alembic.ini is needed.

The scripts live in ``dispatcher/catalog/migrations``; the version table is
``internal.alembic_version`` (``internal_alembic_version`` on SQLite).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"


def version_table_options(dialect_name: str) -> dict[str, Any]:
    """Where the version table lives for this dialect."""
    if dialect_name == "sqlite":
        return {"version_table": f"internal_{VERSION_TABLE}"}
    return {"version_table": VERSION_TABLE, "version_table_schema": "internal"}


def _config(**attributes: Any) -> Config:
    config = Config(output_buffer=attributes.pop("output_buffer", None))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes.update(attributes)
    return config


def upgrade(connection: Connection) -> None:
    """Upgrade the catalog behind ``connection`` to the newest revision (idempotent)."""
    command.upgrade(_config(connection=connection), "head")


def current_revision(connection: Connection) -> str | None:
    """The catalog's revision, or None when it was never initialised."""
    options = version_table_options(connection.dialect.name)
    context = MigrationContext.configure(connection, opts=options)
    return context.get_current_revision()


def render_sql(dialect_name: str) -> str:
    """The upgrade to head as SQL text for ``dialect_name`` (Alembic's offline mode)."""
    buffer = io.StringIO()
    command.upgrade(_config(dialect_name=dialect_name, output_buffer=buffer), "head", sql=True)
    return buffer.getvalue()
