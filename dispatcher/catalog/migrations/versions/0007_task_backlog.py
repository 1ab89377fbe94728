"""A worker's TaskBacklog: the assignments it takes beyond its MaxTaskCount.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-16

A worker may hold ``task_backlog`` assignments beyond its MaxTaskCount until a slot frees,
so a task that ends is followed at once by the next, without waiting for the master's next
claim. Its heartbeat says how many; the master keeps that on the worker row and gives the
worker up to ``max_task_count + task_backlog`` leased tasks (MaxTaskCount still bounds what
the worker runs). The column is NOT NULL with a server default of 0, so existing workers
(and a worker too old to report one) keep exactly their former capacity.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMN = "task_backlog"


def _table(name: str) -> tuple[str, str | None]:
    """A table's name and schema on this dialect (SQLite flattens the schema)."""
    if op.get_context().dialect.name == "sqlite":
        return f"internal_{name}", None
    return name, "internal"


def upgrade() -> None:
    table, schema = _table("worker_agents")
    column = sa.Column(COLUMN, sa.Integer, nullable=False, server_default="0")
    op.add_column(table, column, schema=schema)


def downgrade() -> None:
    # SQLite (3.35+) drops a column in place: no view, index or constraint names it.
    # SQL Server refuses to drop a column while its (generated-name) DEFAULT constraint
    # exists, so that constraint is dropped first.
    table, schema = _table("worker_agents")
    op.drop_column(table, COLUMN, schema=schema, mssql_drop_default=True)
