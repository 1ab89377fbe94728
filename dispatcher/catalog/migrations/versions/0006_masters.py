"""Several masters: every master instance, and one leader lease with a fencing epoch.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

``internal.masters`` has a row per master instance (``master_id``, its machine, its
metrics port, ``role`` leader or standby, the ``epoch`` it led under, when it started and
was last online, on the database's clock); ``catalog.masters`` shows it beside
``catalog.master_properties``. ``internal.master_lease`` has one row, ``leader``: who holds
the lease, until when, and the ``epoch``, which every takeover raises and every write of
the leader checks in its own transaction (docs/design.md, "Several masters").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID_CHARS = 128
VIEW = (
    "SELECT master_id, machine_name, machine_ip, metrics_port, role, epoch, started_time,"
    " last_online_time FROM {i}masters"
)


def _names() -> tuple[str, str | None, str]:
    """The table prefix, the schema and the view name on this dialect."""
    if op.get_context().dialect.name == "sqlite":
        return "internal_", None, "catalog_masters"
    return "", "internal", "catalog.masters"


def upgrade() -> None:
    prefix, schema, view = _names()
    stamp = sa.DateTime(timezone=True)
    op.create_table(
        f"{prefix}masters",
        sa.Column("master_id", sa.String(ID_CHARS), primary_key=True),
        sa.Column("machine_name", sa.Unicode(256), nullable=False),
        sa.Column("machine_ip", sa.String(64), nullable=False),
        sa.Column("metrics_port", sa.Integer, nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=True),
        sa.Column("started_time", stamp, nullable=False),
        sa.Column("last_online_time", stamp, nullable=False),
        schema=schema,
    )
    lease = op.create_table(
        f"{prefix}master_lease",
        sa.Column("lease_name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(ID_CHARS), nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires_at", stamp, nullable=True),
        sa.Column("acquired_at", stamp, nullable=True),
        schema=schema,
    )
    op.bulk_insert(lease, [{"lease_name": "leader", "epoch": 0}])
    internal = f"{schema}." if schema else prefix
    op.execute(f"CREATE VIEW {view} AS {VIEW.format(i=internal)}")


def downgrade() -> None:
    prefix, schema, view = _names()
    op.execute(f"DROP VIEW {view}")
    op.drop_table(f"{prefix}master_lease", schema=schema)
    op.drop_table(f"{prefix}masters", schema=schema)
