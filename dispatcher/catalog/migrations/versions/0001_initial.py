"""The initial SSISDB catalog: internal tables, catalog views, default properties.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

The tables come from ``migrations/schema_0001.py``, a frozen copy of ``tables.py`` at this
revision; a later change to ``tables.py`` needs a new revision with ``op.*`` operations
(a test compares a migrated database with ``tables.py``, so they cannot drift apart).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dispatcher.catalog.migrations.schema_0001 import build

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

CATALOG_PROPERTIES = {
    "DEFAULT_EXECUTION_MODE": "1",
    "IS_SCALEOUT_ENABLED": "TRUE",
    "SCHEMA_VERSION": "1",
    "SERVER_LOGGING_LEVEL": "1",
    "OPERATION_CLEANUP_ENABLED": "TRUE",
    "RETENTION_WINDOW": "365",
    "MAX_PROJECT_VERSIONS": "10",
}
MASTER_PROPERTIES = {"IS_SCALEOUT_ENABLED": "TRUE"}

# {i} is the internal prefix ("internal." or "internal_"); one SELECT per catalog view.
VIEWS = {
    "folders": "SELECT folder_id, name, description, created_time FROM {i}folders",
    "projects": (
        "SELECT project_id, folder_id, name, description, object_version_lsn,"
        " created_time, last_deployed_time FROM {i}projects"
    ),
    "packages": (
        "SELECT package_id, project_id, project_version_lsn, name, description, entry_point"
        " FROM {i}packages"
    ),
    "operations": (
        "SELECT operation_id, operation_type, created_time, object_type, object_id,"
        " object_name, status, start_time, end_time, caller_name, stopped_by_name,"
        " server_name, machine_name, worker_agent_id, executed_count FROM {i}operations"
    ),
    "executions": (
        "SELECT e.execution_id, e.folder_name, e.project_name, e.package_name,"
        " e.reference_id, e.project_lsn, e.use32bitruntime, o.operation_type,"
        " o.created_time, o.object_type, o.object_id, o.status, o.start_time, o.end_time,"
        " o.caller_name, o.stopped_by_name, o.server_name, o.machine_name,"
        " o.worker_agent_id, o.executed_count, e.job_id"
        " FROM {i}executions e JOIN {i}operations o ON o.operation_id = e.execution_id"
    ),
    "worker_agents": (
        'SELECT worker_agent_id AS "WorkerAgentId", is_enabled AS "IsEnabled",'
        ' display_name AS "DisplayName", description AS "Description",'
        ' machine_name AS "MachineName", tags AS "Tags", user_account AS "UserAccount",'
        ' last_online_time AS "LastOnlineTime" FROM {i}worker_agents'
    ),
    "master_properties": "SELECT property_name, property_value FROM {i}master_properties",
    "operation_messages": (
        "SELECT operation_message_id, operation_id, message_time, message_type,"
        " message_source_type, message FROM {i}operation_messages"
    ),
    "event_messages": (
        "SELECT operation_message_id AS event_message_id, operation_id, message_time,"
        " message_type, message_source_type, message, package_name, message_source_name,"
        " task_id, attempt, seq FROM {i}operation_messages WHERE seq IS NOT NULL"
    ),
}


def _prefixes() -> tuple[str, str, bool]:
    flat = op.get_context().dialect.name == "sqlite"
    return ("internal_", "catalog_", flat) if flat else ("internal.", "catalog.", flat)


def upgrade() -> None:
    internal, catalog, flat = _prefixes()
    tables = build(flat=flat)
    for table in tables.metadata.sorted_tables:
        op.execute(sa.schema.CreateTable(table))
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            op.execute(sa.schema.CreateIndex(index))
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {catalog}{name} AS {select.format(i=internal)}")
    rows = [{"property_name": k, "property_value": v} for k, v in CATALOG_PROPERTIES.items()]
    op.bulk_insert(tables.catalog_properties, rows)
    rows = [{"property_name": k, "property_value": v} for k, v in MASTER_PROPERTIES.items()]
    op.bulk_insert(tables.master_properties, rows)


def downgrade() -> None:
    _internal, catalog, flat = _prefixes()
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW {catalog}{name}")
    for table in reversed(build(flat=flat).metadata.sorted_tables):
        op.execute(sa.schema.DropTable(table))
