"""The latest progress of each attempt: percent, message and when it was stored.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

``task.progress`` only renewed the lease; now the master keeps the latest report of the
current attempt on its ``task_attempts`` row, so ``scaleout executions show`` can say how far
a package has got (SSMS shows SSIS's percent complete the same way). The history table gets
the same columns: cleanup copies attempts there column by column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("task_attempts", "task_attempts_history")
MESSAGE_CHARS = 1024
"""schemas.messages.PROGRESS_MESSAGE_MAX_CHARS at this revision (frozen here)."""


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("progress_percent", sa.Float, nullable=True),
        sa.Column("progress_message", sa.Unicode(MESSAGE_CHARS), nullable=True),
        sa.Column("progress_time", sa.DateTime(timezone=True), nullable=True),
    ]


def _table(name: str) -> tuple[str, str | None]:
    """A table's name and schema on this dialect (SQLite flattens the schema)."""
    if op.get_context().dialect.name == "sqlite":
        return f"internal_{name}", None
    return name, "internal"


def upgrade() -> None:
    for name in TABLES:
        table, schema = _table(name)
        for column in _columns():
            op.add_column(table, column, schema=schema)


def downgrade() -> None:
    for name in TABLES:
        table, schema = _table(name)
        for column in reversed(_columns()):
            op.drop_column(table, column.name, schema=schema)
