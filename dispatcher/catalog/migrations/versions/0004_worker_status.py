"""What a worker last said about itself, the last of its messages the master refused, and
an index to read an execution's messages in time order.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09

A worker's heartbeat carries why it is not accepting tasks (``not_accepting``: CPU, memory,
disk, shutting down) and its free disk; the master used both to decide nothing and stored
neither, so ``--wait`` could not say why an execution stays pending. Now the worker row
keeps them, beside the last refusal of a message claiming to come from that worker
(``last_refusal_reason``: ``forged_sender``, ``stale``, ``unknown_task``; a short detail;
when, on the database's clock), which ``scaleout workers list`` shows.

``scaleout executions logs`` pages an execution's messages by (time, id); the index on
(operation_id, message_time, operation_message_id) keeps each page a range read.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

REASON_CHARS = 32
DETAIL_CHARS = 256
"""records.REFUSAL_DETAIL_MAX_CHARS and the heartbeat's not_accepting at this revision."""


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("not_accepting", sa.Unicode(DETAIL_CHARS), nullable=True),
        sa.Column("free_disk_mb", sa.Float, nullable=True),
        sa.Column("last_refusal_reason", sa.Unicode(REASON_CHARS), nullable=True),
        sa.Column("last_refusal_detail", sa.Unicode(DETAIL_CHARS), nullable=True),
        sa.Column("last_refusal_time", sa.DateTime(timezone=True), nullable=True),
    ]


MESSAGE_INDEX = ("time", ["operation_id", "message_time", "operation_message_id"])


def _table(name: str) -> tuple[str, str | None]:
    """A table's name and schema on this dialect (SQLite flattens the schema)."""
    if op.get_context().dialect.name == "sqlite":
        return f"internal_{name}", None
    return name, "internal"


def upgrade() -> None:
    table, schema = _table("worker_agents")
    for column in _columns():
        op.add_column(table, column, schema=schema)
    messages, schema = _table("operation_messages")
    suffix, columns = MESSAGE_INDEX
    op.create_index(f"ix_{messages}_{suffix}", messages, columns, schema=schema)


def downgrade() -> None:
    messages, schema = _table("operation_messages")
    op.drop_index(f"ix_{messages}_{MESSAGE_INDEX[0]}", table_name=messages, schema=schema)
    table, schema = _table("worker_agents")
    for column in reversed(_columns()):
        op.drop_column(table, column.name, schema=schema)
