"""An index for the dispatcher's pending-cancel lookup.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

``pending_cancels`` runs on every dispatch pass; without this index it scanned every task
ever run, so dispatch slowed down as history grew (the benchmark's history ratio).
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _tasks() -> tuple[str, str | None]:
    """The tasks table's name and schema on this dialect (SQLite flattens the schema)."""
    if op.get_context().dialect.name == "sqlite":
        return "internal_tasks", None
    return "tasks", "internal"


def upgrade() -> None:
    table, schema = _tasks()
    op.create_index(f"ix_{table}_cancels", table, ["is_cancelled", "cancel_sent"], schema=schema)


def downgrade() -> None:
    table, schema = _tasks()
    op.drop_index(f"ix_{table}_cancels", table_name=table, schema=schema)
