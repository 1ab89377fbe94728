"""Indexes for two lookups the dispatcher makes on every pass.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

``pending_cancels`` (tasks by is_cancelled, cancel_sent) and the claim's allowed-workers
read (jobs by execution_id) scanned every task and job ever run, so dispatch slowed down
as history grew: 100,000 finished executions added ~9 ms to each claim (the benchmark's
history ratio).
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


INDEXES = {
    "cancels": ("tasks", ["is_cancelled", "cancel_sent"]),
    "execution": ("jobs", ["execution_id"]),
}


def _table(name: str) -> tuple[str, str | None]:
    """A table's name and schema on this dialect (SQLite flattens the schema)."""
    if op.get_context().dialect.name == "sqlite":
        return f"internal_{name}", None
    return name, "internal"


def upgrade() -> None:
    for suffix, (name, columns) in INDEXES.items():
        table, schema = _table(name)
        op.create_index(f"ix_{table}_{suffix}", table, columns, schema=schema)


def downgrade() -> None:
    for suffix, (name, _columns) in INDEXES.items():
        table, schema = _table(name)
        op.drop_index(f"ix_{table}_{suffix}", table_name=table, schema=schema)
