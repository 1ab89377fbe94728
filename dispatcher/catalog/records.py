"""Plain records the catalog returns. No I/O and no SQLAlchemy: callers (the master's
loops, the CLI, tests) depend on these, never on rows or tables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from schemas.messages import CancelReason, ParameterValue
from schemas.states import ExecutionStatus, TaskState


@dataclass(frozen=True, slots=True)
class DeployResult:
    folder_name: str
    project_name: str
    project_lsn: int
    content_hash: str
    created: bool
    """False when the same content was already the project's current version."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """One attempt the dispatcher claimed and must publish to ``worker_id``'s queue."""

    task_id: uuid.UUID
    attempt: int
    execution_id: int
    worker_id: str
    folder: str
    project: str
    package: str
    project_lsn: int
    project_hash: str
    parameters: tuple[ParameterValue, ...]
    use32bitruntime: bool
    max_attempts: int
    lease_expires_at: datetime


class ReportOutcome(StrEnum):
    """What became of one status report; ``applied`` is the only one that changed rows."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # the same attempt already reached this state: harmless
    STALE = "stale"  # an older attempt, or a state the task has moved past
    FORGED_SENDER = "forged_sender"  # the sender is not the worker holding the attempt
    UNKNOWN_TASK = "unknown_task"


@dataclass(frozen=True, slots=True)
class ReportResult:
    outcome: ReportOutcome
    task_state: TaskState | None = None
    execution_status: ExecutionStatus | None = None
    retried: bool = False
    """A failed attempt went back to pending for a new attempt."""
    dispatch_latency_s: float | None = None
    """For an applied `started`: seconds since the task became pending (database clock)."""


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """A cancel the master must deliver to ``worker_id`` (control queue or heartbeat reply)."""

    task_id: uuid.UUID
    attempt: int
    execution_id: int
    worker_id: str
    reason: CancelReason


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    registered: bool
    """The worker was unknown and is now registered, disabled (as SSIS does)."""
    is_enabled: bool
    renewed: int
    """Leases renewed for attempts the worker says it runs."""
    cancels: tuple[CancelOrder, ...] = ()
    """Attempts the worker runs that it must stop: stale, or a stop was requested."""


@dataclass(frozen=True, slots=True)
class ExpiredAttempt:
    task_id: uuid.UUID
    attempt: int
    execution_id: int
    worker_id: str | None
    new_state: TaskState
    """PENDING (requeued), ENDED_UNEXPECTEDLY (no attempts left) or CANCELED."""


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    execution_id: int
    folder_name: str
    project_name: str
    package_name: str
    project_lsn: int | None
    status: ExecutionStatus
    created_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    worker_agent_id: str | None
    executed_count: int
    max_executed_count: int | None
    use32bitruntime: bool
    runinscaleout: bool
    useanyworker: bool
    caller_name: str | None = None
    stopped_by_name: str | None = None
    allowed_workers: tuple[str, ...] = ()
    task_id: uuid.UUID | None = None
    task_state: TaskState | None = None
    attempt: int = 0
    error: str = ""
    progress_percent: float | None = None
    """The current attempt's latest ``task.progress`` (None: no percent reported)."""
    progress_message: str = ""
    progress_time: datetime | None = None
    """When the master stored that report (database clock); None: no progress yet."""


@dataclass(frozen=True, slots=True)
class WorkerAgentRow:
    worker_agent_id: str
    is_enabled: bool
    display_name: str
    description: str
    machine_name: str
    tags: str
    user_account: str
    last_online_time: datetime | None
    is_online: bool
    running_tasks: int
    max_task_count: int
    cpu_percent: float | None = None
    free_memory_mb: float | None = None


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A row of ``catalog.operation_messages`` / ``event_messages``."""

    message_id: int
    operation_id: int
    message_time: datetime
    message_type: int
    message_source_type: int
    message: str
    attempt: int | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One attempt of an execution's task: who ran it, when, and how it ended."""

    task_id: uuid.UUID
    attempt: int
    worker_agent_id: str
    dispatched_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str | None
    exit_code: int | None
    error: str | None
    progress_percent: float | None = None
    progress_message: str = ""
    progress_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class CleanupResult:
    tasks_moved: int
    jobs_moved: int


@dataclass(frozen=True, slots=True)
class CatalogCounts:
    """Figures the metrics endpoint exports, read in one query pass."""

    executions_by_status: dict[ExecutionStatus, int] = field(default_factory=dict)
    workers_enabled: int = 0
    workers_online: int = 0
    oldest_pending_age_s: float = 0.0
