"""Plain records the catalog returns. No I/O and no SQLAlchemy: callers (the master's
loops, the CLI, tests) depend on these, never on rows or tables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from schemas.messages import CancelReason, ParameterScalar, ParameterValue
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
    NOT_HOLDER = "not_holder"  # the attempt exists, but the sender does not hold it
    UNKNOWN_ATTEMPT = "unknown_attempt"  # the task exists; this attempt was never dispatched
    UNKNOWN_TASK = "unknown_task"
    # ``forged_sender`` (a body naming another worker than its AMQP user_id) is refused by
    # the consumer before the catalog sees it: schemas.messages.DecodeReason.


@dataclass(frozen=True, slots=True)
class ReportResult:
    outcome: ReportOutcome
    task_state: TaskState | None = None
    execution_status: ExecutionStatus | None = None
    retried: bool = False
    """A failed attempt went back to pending for a new attempt."""
    dispatch_latency_s: float | None = None
    """For an applied `started`: seconds since the task became pending (database clock)."""
    project_name: str = ""
    package_name: str = ""
    """The execution's project and package, for the per-package metrics (empty when the
    report names no known task)."""
    run_s: float | None = None
    """For an applied `finished` of an attempt that started: its run time, from `started`
    recorded to now (database clock)."""


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
    execution_status: ExecutionStatus | None = None
    """The execution's status after the expiry (terminal when it ended)."""
    project_name: str = ""
    package_name: str = ""
    """The execution's project and package, for the per-package metrics."""


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
    holder: str | None = None
    """The worker of the task's current attempt, dispatched or later (``worker_agent_id``
    is set only once it started)."""
    reference_id: int | None = None
    """The environment reference it was created with (SSIS ``@reference_id``)."""


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
    accepting: bool = True
    """Its last heartbeat said it takes tasks (and no lease of its lapsed since)."""
    not_accepting: str = ""
    """Why not, in the worker's words (``"free disk 80 MB < 500 MB"``); '' while accepting."""
    free_disk_mb: float | None = None
    last_refusal_reason: str = ""
    """The last message claiming to be this worker that the master refused: a
    ``DecodeReason`` (``forged_sender``) or a ``ReportOutcome`` (``stale``, ...); '' if none."""
    last_refusal_detail: str = ""
    last_refusal_time: datetime | None = None
    task_backlog: int = 0
    """Assignments it holds beyond ``max_task_count`` until a slot frees (its TaskBacklog)."""

    @property
    def capacity(self) -> int:
        """The leased tasks the dispatcher gives it at most (its slot count in the claim)."""
        return self.max_task_count + self.task_backlog


REFUSAL_DETAIL_MAX_CHARS = 256
"""The stored length of a refusal's detail and of a worker's ``not_accepting``."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A message the master refused, recorded on the row of the worker it claims to be."""

    worker_id: str
    reason: str
    detail: str
    age_s: float = 0.0
    """How long before the write it was refused (the master keeps refusals up to a second
    or so in memory); the stored time is the database's now minus this."""


@dataclass(frozen=True, slots=True)
class PendingFacts:
    """What decides whether an execution's task can be dispatched now, read in one
    transaction; :func:`dispatcher.pending.explain` turns it into a sentence."""

    execution_id: int
    status: ExecutionStatus
    task_state: TaskState | None
    attempt: int
    holder: str | None
    """The worker a dispatched attempt was given to."""
    use_any_worker: bool
    candidates: tuple[WorkerAgentRow, ...]
    """The workers it may run on (every registered worker when ``use_any_worker``)."""
    now: datetime
    """The database's clock."""
    master_last_seen: datetime | None = None
    master_heartbeat_interval_s: float | None = None
    pending_ahead: int = 0
    """Pending tasks that came before this one (they are dispatched first)."""


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


class MasterRole(StrEnum):
    LEADER = "leader"
    STANDBY = "standby"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class MasterInstance:
    """What a master says of itself in its heartbeat (``internal.masters``)."""

    master_id: str
    machine_name: str
    machine_ip: str
    metrics_port: int | None
    role: MasterRole
    epoch: int | None


@dataclass(frozen=True, slots=True)
class MasterRow:
    master_id: str
    machine_name: str
    machine_ip: str
    metrics_port: int | None
    role: MasterRole
    epoch: int | None
    started_time: datetime
    last_online_time: datetime
    is_online: bool
    """Its last heartbeat is younger than three of its heartbeat intervals."""
    holds_lease: bool
    """It is the lease's holder and the lease has not lapsed (database clock)."""


@dataclass(frozen=True, slots=True)
class LeaderLease:
    holder: str | None
    epoch: int
    expires_at: datetime | None
    acquired_at: datetime | None
    lapsed: bool


@dataclass(frozen=True, slots=True)
class EnvironmentVariableRow:
    """A variable of an environment; ``value`` is None when it is sensitive (never shown)."""

    name: str
    type: str
    sensitive: bool
    value: ParameterScalar
    description: str = ""


@dataclass(frozen=True, slots=True)
class EnvironmentReferenceRow:
    """A project's reference to an environment: 'R' relative (the environment is in the
    project's folder) or 'A' absolute (``environment_folder_name`` names the folder)."""

    reference_id: int
    folder_name: str
    project_name: str
    reference_type: str
    environment_folder_name: str
    environment_name: str


@dataclass(frozen=True, slots=True)
class EnvironmentRow:
    environment_id: int
    folder_name: str
    name: str
    description: str
    created_time: datetime
    variables: tuple[EnvironmentVariableRow, ...] = ()
    references: tuple[EnvironmentReferenceRow, ...] = ()
    """The references that resolve to this environment."""


@dataclass(frozen=True, slots=True)
class ParameterRow:
    """A declared parameter of a project version, with where its value comes from:
    ``source`` is ``default`` (the manifest's), ``server`` (set_object_parameter_value
    'V'), ``environment`` (a variable, ``referenced_variable_name``) or ``none``. Values
    of sensitive parameters are None (never shown)."""

    object_type: int
    object_name: str
    name: str
    data_type: str
    required: bool
    sensitive: bool
    design_default_value: ParameterScalar
    server_value: ParameterScalar
    source: str
    referenced_variable_name: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class ProjectVersionRow:
    project_lsn: int
    content_hash: str
    created_time: datetime
    current: bool


@dataclass(frozen=True, slots=True)
class PackageRow:
    folder_name: str
    project_name: str
    name: str
    description: str
    project_lsn: int
    parameters: tuple[ParameterRow, ...] = ()


@dataclass(frozen=True, slots=True)
class ProjectRow:
    project_id: int
    folder_name: str
    name: str
    description: str
    project_lsn: int | None
    created_time: datetime
    last_deployed_time: datetime
    packages: tuple[str, ...] = ()
    versions: tuple[ProjectVersionRow, ...] = ()
    parameters: tuple[ParameterRow, ...] = ()
    """The project's own parameters (its packages' are on each PackageRow)."""


@dataclass(frozen=True, slots=True)
class FolderRow:
    folder_id: int
    name: str
    description: str
    created_time: datetime
    projects: int = 0
    environments: int = 0


@dataclass(frozen=True, slots=True)
class ExecutionValueRow:
    """A value an execution runs with; ``value`` is None when it is sensitive."""

    object_type: int
    name: str
    value: ParameterScalar
    sensitive: bool


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    """What ``executions list`` narrows to; None leaves a field open. Times are aware."""

    folder: str | None = None
    project: str | None = None
    package: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
