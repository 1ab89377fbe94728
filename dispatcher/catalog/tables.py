"""The SSISDB catalog's tables, as SQLAlchemy Core, for all three dialects.

Names follow SSISDB. On PostgreSQL and SQL Server the tables live in the ``internal``
schema and users read the ``catalog`` schema's views; SQLite has no schemas, so the names
are flattened with a prefix:

=====================================  =====================================
PostgreSQL / SQL Server                SQLite
=====================================  =====================================
``internal.<table>``                   ``internal_<table>``
``catalog.<view>``                     ``catalog_<view>``
``internal.alembic_version``           ``internal_alembic_version``
=====================================  =====================================

Tables: folders, projects, object_versions (one row per deployed project version; its
``object_version_lsn`` is the project_lsn), packages, object_parameters, operations
(``operation_id`` is the ``execution_id`` of an execution; type 200 execution, 101 deploy,
202 stop), executions, execution_parameter_values, jobs, job_worker_agents (the workers an
execution allows), tasks, task_attempts, worker_agents, master_properties,
catalog_properties, operation_messages (master messages and the workers' log lines, which
``catalog.event_messages`` shows), and tasks_history / jobs_history /
task_attempts_history. Views: catalog.folders, projects, packages, operations,
executions, worker_agents, master_properties, operation_messages, event_messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sqlalchemy as sa
from sqlalchemy.dialects import mssql
from sqlalchemy.schema import SchemaItem

from dispatcher.catalog.records import REFUSAL_DETAIL_MAX_CHARS
from schemas.messages import PROGRESS_MESSAGE_MAX_CHARS

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""A 64-bit identity; SQLite only autoincrements an INTEGER primary key."""
Stamp = sa.DateTime(timezone=True)
"""timestamptz on PostgreSQL, DATETIMEOFFSET on SQL Server, UTC text on SQLite."""
WorkerId = sa.String(64)
Name = sa.Unicode(128)
LongText = sa.UnicodeText().with_variant(mssql.NVARCHAR(), "mssql")
"""NVARCHAR(max) on SQL Server (its TEXT/NTEXT types are deprecated)."""
Blob = sa.LargeBinary().with_variant(
    mssql.VARBINARY("max"),  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
    "mssql",
)
SCHEMAS = ("internal", "catalog")
MASTER_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class Tables:
    """Every table of one naming flavour (schemas, or flattened for SQLite)."""

    metadata: sa.MetaData
    flat: bool
    folders: sa.Table
    projects: sa.Table
    object_versions: sa.Table
    packages: sa.Table
    object_parameters: sa.Table
    operations: sa.Table
    executions: sa.Table
    execution_parameter_values: sa.Table
    jobs: sa.Table
    job_worker_agents: sa.Table
    tasks: sa.Table
    task_attempts: sa.Table
    worker_agents: sa.Table
    master_properties: sa.Table
    masters: sa.Table
    master_lease: sa.Table
    catalog_properties: sa.Table
    operation_messages: sa.Table
    tasks_history: sa.Table
    jobs_history: sa.Table
    task_attempts_history: sa.Table
    environments: sa.Table
    environment_variables: sa.Table
    environment_references: sa.Table


class _Namer:
    def __init__(self, metadata: sa.MetaData, *, flat: bool) -> None:
        self.metadata = metadata
        self.flat = flat

    def table(self, name: str, *items: SchemaItem) -> sa.Table:
        if self.flat:
            return sa.Table(f"internal_{name}", self.metadata, *items)
        return sa.Table(name, self.metadata, *items, schema="internal")

    def fk(self, table: str, column: str, ondelete: str | None = None) -> sa.ForeignKey:
        target = f"internal_{table}.{column}" if self.flat else f"internal.{table}.{column}"
        return sa.ForeignKey(target, ondelete=ondelete)


def _catalog_objects(n: _Namer) -> dict[str, sa.Table]:
    folders = n.table(
        "folders",
        sa.Column("folder_id", BigId, primary_key=True),
        sa.Column("name", Name, nullable=False, unique=True),
        sa.Column("description", LongText, nullable=False, default=""),
        sa.Column("created_time", Stamp, nullable=False),
    )
    projects = n.table(
        "projects",
        sa.Column("project_id", BigId, primary_key=True),
        sa.Column("folder_id", BigId, n.fk("folders", "folder_id"), nullable=False),
        sa.Column("name", Name, nullable=False),
        sa.Column("description", LongText, nullable=False, default=""),
        sa.Column("object_version_lsn", sa.BigInteger, nullable=True),
        sa.Column("created_time", Stamp, nullable=False),
        sa.Column("last_deployed_time", Stamp, nullable=False),
        sa.UniqueConstraint("folder_id", "name"),
    )
    object_versions = n.table(
        "object_versions",
        sa.Column("object_version_lsn", BigId, primary_key=True),
        sa.Column("object_id", BigId, n.fk("projects", "project_id"), nullable=False),
        sa.Column("object_type", sa.SmallInteger, nullable=False, default=20),
        sa.Column("content_hash", sa.String(64), nullable=False, index=True),
        sa.Column("object_data", Blob, nullable=False),
        sa.Column("manifest", LongText, nullable=False),
        sa.Column("created_time", Stamp, nullable=False),
    )
    packages = n.table(
        "packages",
        sa.Column("package_id", BigId, primary_key=True),
        sa.Column(
            "project_version_lsn",
            BigId,
            n.fk("object_versions", "object_version_lsn"),
            nullable=False,
        ),
        sa.Column("project_id", BigId, nullable=False),
        sa.Column("name", sa.Unicode(260), nullable=False),
        sa.Column("description", LongText, nullable=False, default=""),
        sa.Column("entry_point", sa.Boolean, nullable=False, default=True),
        sa.UniqueConstraint("project_version_lsn", "name"),
    )
    object_parameters = n.table(
        "object_parameters",
        sa.Column("parameter_id", BigId, primary_key=True),
        sa.Column(
            "project_version_lsn",
            BigId,
            n.fk("object_versions", "object_version_lsn"),
            nullable=False,
        ),
        sa.Column("project_id", BigId, nullable=False),
        sa.Column("object_type", sa.SmallInteger, nullable=False),
        sa.Column("object_name", sa.Unicode(260), nullable=False),
        sa.Column("parameter_name", Name, nullable=False),
        sa.Column("data_type", sa.Unicode(16), nullable=False),
        sa.Column("required", sa.Boolean, nullable=False),
        sa.Column("sensitive", sa.Boolean, nullable=False),
        sa.Column("default_value", LongText, nullable=True),  # the manifest's (JSON)
        sa.Column("description", LongText, nullable=False, default=""),
        # Revision 0005, set_object_parameter_value: 'V' with server_value (JSON, sealed
        # when sensitive) or 'R' with the environment variable's name. Server defaults,
        # so a deploy writes none of them.
        sa.Column("value_type", sa.String(1), nullable=False, server_default="V"),
        sa.Column("value_set", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("server_value", LongText, nullable=True),
        sa.Column("referenced_variable_name", Name, nullable=True),
        sa.UniqueConstraint("project_version_lsn", "object_type", "object_name", "parameter_name"),
    )
    return {
        "folders": folders,
        "projects": projects,
        "object_versions": object_versions,
        "packages": packages,
        "object_parameters": object_parameters,
    }


def _operations(n: _Namer) -> dict[str, sa.Table]:
    operations = n.table(
        "operations",
        sa.Column("operation_id", BigId, primary_key=True),
        sa.Column("operation_type", sa.SmallInteger, nullable=False),
        sa.Column("created_time", Stamp, nullable=False),
        sa.Column("object_type", sa.SmallInteger, nullable=True),
        sa.Column("object_id", sa.BigInteger, nullable=True),
        sa.Column("object_name", sa.Unicode(260), nullable=True),
        sa.Column("status", sa.Integer, nullable=False, index=True),
        sa.Column("start_time", Stamp, nullable=True),
        sa.Column("end_time", Stamp, nullable=True),
        sa.Column("caller_name", Name, nullable=True),
        sa.Column("stopped_by_name", Name, nullable=True),
        sa.Column("server_name", Name, nullable=True),
        sa.Column("machine_name", Name, nullable=True),
        sa.Column("worker_agent_id", WorkerId, nullable=True),
        sa.Column("executed_count", sa.Integer, nullable=False, default=0),
    )
    executions = n.table(
        "executions",
        sa.Column("execution_id", BigId, n.fk("operations", "operation_id"), primary_key=True),
        sa.Column("folder_name", Name, nullable=False),
        sa.Column("project_name", Name, nullable=False),
        sa.Column("package_name", sa.Unicode(260), nullable=False),
        sa.Column("reference_id", sa.BigInteger, nullable=True),
        sa.Column("project_lsn", sa.BigInteger, nullable=False),
        sa.Column("use32bitruntime", sa.Boolean, nullable=False),
        sa.Column("runinscaleout", sa.Boolean, nullable=False),
        sa.Column("useanyworker", sa.Boolean, nullable=False),
        # A plain column, as in SSIS: the job moves to history, the execution stays.
        sa.Column("job_id", sa.Uuid, nullable=True),
    )
    values = n.table(
        "execution_parameter_values",
        sa.Column("execution_id", BigId, n.fk("executions", "execution_id"), primary_key=True),
        sa.Column("object_type", sa.SmallInteger, primary_key=True),
        sa.Column("parameter_name", Name, primary_key=True),
        sa.Column("parameter_value", LongText, nullable=False),
        sa.Column("sensitive", sa.Boolean, nullable=False),
    )
    return {
        "operations": operations,
        "executions": executions,
        "execution_parameter_values": values,
    }


def _job_columns(n: _Namer) -> list[SchemaItem]:
    return [
        sa.Column("job_id", sa.Uuid, primary_key=True),
        sa.Column("execution_id", sa.BigInteger, nullable=False),
        sa.Column("job_type", sa.Integer, nullable=False, default=1),
        sa.Column("use_any_worker", sa.Boolean, nullable=False),
        sa.Column("is_cancelled", sa.Boolean, nullable=False, default=False),
        sa.Column("creator", Name, nullable=True),
        sa.Column("created_time", Stamp, nullable=False),
        sa.Column("last_updated_time", Stamp, nullable=False),
    ]


def _task_columns(n: _Namer, *, history: bool) -> list[SchemaItem]:
    job_fk = [] if history else [n.fk("jobs", "job_id", ondelete="CASCADE")]
    return [
        sa.Column("task_id", sa.Uuid, primary_key=True),
        sa.Column("job_id", sa.Uuid, *job_fk, nullable=False),
        sa.Column("execution_id", sa.BigInteger, nullable=False, index=True),
        sa.Column("task_type", sa.Integer, nullable=False, default=0),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, default=0),
        sa.Column("executed_count", sa.Integer, nullable=False, default=0),
        sa.Column("max_executed_count", sa.Integer, nullable=False),
        sa.Column("worker_agent_id", WorkerId, nullable=True),
        sa.Column("expires_at", Stamp, nullable=True),
        sa.Column("last_pickup_time", Stamp, nullable=True),
        sa.Column("ready_for_dispatch_time", Stamp, nullable=True),
        sa.Column("is_cancelled", sa.Boolean, nullable=False, default=False),
        sa.Column("cancel_sent", sa.Boolean, nullable=False, default=False),
        sa.Column("published", sa.Boolean, nullable=False, default=False),
        sa.Column("created_time", Stamp, nullable=False),
        sa.Column("last_updated_time", Stamp, nullable=False),
    ]


def _attempt_columns(n: _Namer, *, history: bool) -> list[SchemaItem]:
    task_fk = [] if history else [n.fk("tasks", "task_id", ondelete="CASCADE")]
    return [
        sa.Column("task_id", sa.Uuid, *task_fk, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("worker_agent_id", WorkerId, nullable=False),
        sa.Column("machine_name", Name, nullable=True),
        sa.Column("dispatched_at", Stamp, nullable=False),
        sa.Column("started_at", Stamp, nullable=True),
        sa.Column("ended_at", Stamp, nullable=True),
        sa.Column("outcome", sa.Unicode(32), nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("error", LongText, nullable=True),
        # 0003: the latest task.progress of the attempt (percent, message, when stored).
        sa.Column("progress_percent", sa.Float, nullable=True),
        sa.Column("progress_message", sa.Unicode(PROGRESS_MESSAGE_MAX_CHARS), nullable=True),
        sa.Column("progress_time", Stamp, nullable=True),
    ]


def _tasks(n: _Namer) -> dict[str, sa.Table]:
    jobs = n.table("jobs", *_job_columns(n))
    sa.Index(f"ix_{jobs.name}_execution", jobs.c.execution_id)  # 0002
    job_workers = n.table(
        "job_worker_agents",
        sa.Column("job_id", sa.Uuid, n.fk("jobs", "job_id", ondelete="CASCADE"), primary_key=True),
        sa.Column(
            "worker_agent_id",
            WorkerId,
            n.fk("worker_agents", "worker_agent_id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    tasks = n.table("tasks", *_task_columns(n, history=False))
    sa.Index(f"ix_{tasks.name}_dispatch", tasks.c.status, tasks.c.ready_for_dispatch_time)
    sa.Index(f"ix_{tasks.name}_worker", tasks.c.worker_agent_id, tasks.c.status)
    sa.Index(f"ix_{tasks.name}_expires", tasks.c.expires_at)
    sa.Index(f"ix_{tasks.name}_cancels", tasks.c.is_cancelled, tasks.c.cancel_sent)  # 0002
    attempts = n.table("task_attempts", *_attempt_columns(n, history=False))
    return {
        "jobs": jobs,
        "job_worker_agents": job_workers,
        "tasks": tasks,
        "task_attempts": attempts,
        "jobs_history": n.table("jobs_history", *_job_columns(n)),
        "tasks_history": n.table("tasks_history", *_task_columns(n, history=True)),
        "task_attempts_history": n.table(
            "task_attempts_history", *_attempt_columns(n, history=True)
        ),
    }


def _agents_and_properties(n: _Namer) -> dict[str, sa.Table]:
    workers = n.table(
        "worker_agents",
        sa.Column("worker_agent_id", WorkerId, primary_key=True),
        sa.Column("is_enabled", sa.Boolean, nullable=False, default=False),
        sa.Column("display_name", sa.Unicode(256), nullable=False, default=""),
        sa.Column("description", LongText, nullable=False, default=""),
        sa.Column("machine_name", sa.Unicode(256), nullable=False, default=""),
        sa.Column("tags", LongText, nullable=False, default=""),
        sa.Column("user_account", sa.Unicode(256), nullable=False, default=""),
        sa.Column("last_online_time", Stamp, nullable=True),
        sa.Column("max_task_count", sa.Integer, nullable=False, default=10),
        # Revision 0007: the assignments it holds beyond max_task_count (its TaskBacklog);
        # the server default keeps the capacity of rows written before it.
        sa.Column("task_backlog", sa.Integer, nullable=False, default=0, server_default="0"),
        sa.Column("cpu_percent", sa.Float, nullable=True),
        sa.Column("free_memory_mb", sa.Float, nullable=True),
        sa.Column("accepting", sa.Boolean, nullable=False, default=True),
        sa.Column("lease_interval_s", sa.Float, nullable=False, default=60.0),
        sa.Column("created_time", Stamp, nullable=False),
        # Revision 0004: why its last heartbeat said it is not accepting (NULL or '' while
        # accepting), its free disk, and the last message claiming to be it that the
        # master refused (forged_sender, stale, unknown_task), on the database's clock.
        sa.Column("not_accepting", sa.Unicode(REFUSAL_DETAIL_MAX_CHARS), nullable=True),
        sa.Column("free_disk_mb", sa.Float, nullable=True),
        sa.Column("last_refusal_reason", sa.Unicode(32), nullable=True),
        sa.Column("last_refusal_detail", sa.Unicode(REFUSAL_DETAIL_MAX_CHARS), nullable=True),
        sa.Column("last_refusal_time", Stamp, nullable=True),
    )
    master = n.table(
        "master_properties",
        sa.Column("property_name", sa.Unicode(256), primary_key=True),
        sa.Column("property_value", LongText, nullable=False),
    )
    # Revision 0006: every master instance, and the one leader lease with its fencing epoch.
    masters = n.table(
        "masters",
        sa.Column("master_id", sa.String(MASTER_ID_CHARS), primary_key=True),
        sa.Column("machine_name", sa.Unicode(256), nullable=False, default=""),
        sa.Column("machine_ip", sa.String(64), nullable=False, default=""),
        sa.Column("metrics_port", sa.Integer, nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=True),
        sa.Column("started_time", Stamp, nullable=False),
        sa.Column("last_online_time", Stamp, nullable=False),
    )
    lease = n.table(
        "master_lease",
        sa.Column("lease_name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(MASTER_ID_CHARS), nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires_at", Stamp, nullable=True),
        sa.Column("acquired_at", Stamp, nullable=True),
    )
    catalog = n.table(
        "catalog_properties",
        sa.Column("property_name", sa.Unicode(255), primary_key=True),
        sa.Column("property_value", sa.Unicode(255), nullable=False),
    )
    messages = n.table(
        "operation_messages",
        sa.Column("operation_message_id", BigId, primary_key=True),
        sa.Column(
            "operation_id", BigId, n.fk("operations", "operation_id"), nullable=False, index=True
        ),
        sa.Column("message_time", Stamp, nullable=False),
        sa.Column("message_type", sa.SmallInteger, nullable=False),
        sa.Column("message_source_type", sa.SmallInteger, nullable=False),
        sa.Column("message", LongText, nullable=False),
        # Event context of a worker's log line; NULL for the master's own messages.
        sa.Column("task_id", sa.Uuid, nullable=True),
        sa.Column("attempt", sa.Integer, nullable=True),
        sa.Column("seq", sa.Integer, nullable=True),
        sa.Column("message_source_name", sa.String(64), nullable=True),
        sa.Column("package_name", sa.Unicode(260), nullable=True),
    )
    sa.Index(  # revision 0004: an execution's messages in time order, page by page
        f"ix_{messages.name}_time",
        messages.c.operation_id,
        messages.c.message_time,
        messages.c.operation_message_id,
    )
    seq_present = messages.c.seq.isnot(None)
    sa.Index(
        f"ux_{messages.name}_line",
        messages.c.task_id,
        messages.c.attempt,
        messages.c.seq,
        unique=True,
        # SQL Server allows one NULL in a unique index unless it is filtered.
        mssql_where=seq_present,
        postgresql_where=seq_present,
        sqlite_where=seq_present,
    )
    return {
        "worker_agents": workers,
        "master_properties": master,
        "masters": masters,
        "master_lease": lease,
        "catalog_properties": catalog,
        "operation_messages": messages,
    }


def _environments(n: _Namer) -> dict[str, sa.Table]:
    """Revision 0005: SSIS environments, their variables, and projects' references."""
    environments = n.table(
        "environments",
        sa.Column("environment_id", BigId, primary_key=True),
        sa.Column("folder_id", BigId, n.fk("folders", "folder_id"), nullable=False),
        sa.Column("environment_name", Name, nullable=False),
        sa.Column("description", LongText, nullable=False, default=""),
        sa.Column("created_time", Stamp, nullable=False),
        sa.UniqueConstraint("folder_id", "environment_name"),
    )
    variables = n.table(
        "environment_variables",
        sa.Column("variable_id", BigId, primary_key=True),
        sa.Column(
            "environment_id",
            BigId,
            n.fk("environments", "environment_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", Name, nullable=False),
        sa.Column("description", LongText, nullable=False, default=""),
        sa.Column("type", sa.Unicode(16), nullable=False),
        sa.Column("sensitive", sa.Boolean, nullable=False),
        sa.Column("value", LongText, nullable=True),  # JSON; sealed when sensitive
        sa.UniqueConstraint("environment_id", "name"),
    )
    references = n.table(
        "environment_references",
        sa.Column("reference_id", BigId, primary_key=True),
        sa.Column("project_id", BigId, n.fk("projects", "project_id"), nullable=False),
        sa.Column("reference_type", sa.String(1), nullable=False),  # R relative, A absolute
        # As SSIS, by name: a reference outlives a deleted environment and finds a new one.
        sa.Column("environment_folder_name", Name, nullable=True),
        sa.Column("environment_name", Name, nullable=False),
        sa.Column("created_time", Stamp, nullable=False),
    )
    return {
        "environments": environments,
        "environment_variables": variables,
        "environment_references": references,
    }


def build(*, flat: bool) -> Tables:
    """All tables in a fresh MetaData: in schemas, or flattened for SQLite."""
    namer = _Namer(sa.MetaData(), flat=flat)
    parts = {
        **_catalog_objects(namer),
        **_operations(namer),
        **_agents_and_properties(namer),
        **_tasks(namer),
        **_environments(namer),
    }
    return Tables(metadata=namer.metadata, flat=flat, **parts)


@cache
def tables_for(dialect_name: str) -> Tables:
    """The tables for a dialect: flattened on SQLite, in schemas elsewhere."""
    return build(flat=dialect_name == "sqlite")
