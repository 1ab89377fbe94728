"""The wire protocol: every message the master and the workers exchange over RabbitMQ.

Each message is a JSON object with the envelope fields ``type``, ``schema_version``,
``message_id`` and ``sent_at`` beside its own. Models are frozen and forbid unknown
fields; :func:`decode` goes through one discriminated union, so a body is either exactly
one known message or a :class:`DecodeError` that names why (the reason becomes the
dead-letter reason and a metric label, so the set of reasons is closed).

Who sends what (DESIGN.md, wire protocol):

=====================  ===========  =====================================
type                   sender       exchange -> queue
=====================  ===========  =====================================
``task.assign``        master       scaleout.tasks -> scaleout.worker.<id>
``task.cancel``        master       scaleout.control -> scaleout.control.<id>
``project.archive``    master       scaleout.control -> scaleout.control.<id>
``task.started``       worker       scaleout.status -> scaleout.master.status
``task.progress``      worker       scaleout.status -> scaleout.master.status
``task.log``           worker       scaleout.status -> scaleout.master.status
``task.finished``      worker       scaleout.status -> scaleout.master.status
``project.fetch``      worker       scaleout.status -> scaleout.master.fetch
``agent.heartbeat``    worker       scaleout.heartbeat -> scaleout.master.heartbeat
``dispatch.wake``      CLI / API    scaleout.status -> scaleout.master.wake
=====================  ===========  =====================================
"""

from __future__ import annotations

import json
import os
import random
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic.config import JsonDict

SCHEMA_VERSION: Final = 1
MAX_BODY_BYTES: Final = 1024 * 1024
"""Largest body a consumer decodes; project archives have their own, larger bound."""
MAX_ARCHIVE_BODY_BYTES: Final = 64 * 1024 * 1024 + 64 * 1024
"""A project.archive body: the largest archive (``schemas.project.MAX_ARCHIVE_BYTES``, 48
MiB) is exactly 64 MiB in base64, and the JSON envelope around it needs room too (a test
checks the largest archive's message decodes)."""
MAX_TASK_BACKLOG: Final = 1000
"""Bound of a worker's TaskBacklog (heartbeat ``task_backlog``)."""
MAX_RUNNING_PER_HEARTBEAT: Final = 1024
"""Attempts one heartbeat may list: far above any MaxTaskCount, and a bound on what one
message can make the master look up (a longer list is dead-lettered as invalid)."""
PROGRESS_MESSAGE_MAX_CHARS: Final = 1024
"""What the master stores of a ``task.progress`` message (longer ones are cut there)."""

WorkerId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""A worker agent id: SSIS uses a GUID; any short name of these characters works. It is
also the worker's RabbitMQ user (its certificate's CN) and the suffix of its queues."""
ContentHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""SHA-256 of a project archive, lower-case hex."""
Attempt = Annotated[int, Field(ge=1)]
ParameterScalar = str | int | float | bool | None


def _now() -> datetime:
    return datetime.now(UTC)


ENVELOPE_REQUIRED: Final = ("type", "schema_version")
"""Fields :func:`decode` refuses a body without, though the models give them defaults."""


def _require_envelope(schema: JsonDict) -> None:
    """Mark :data:`ENVELOPE_REQUIRED` required in a message's JSON Schema, so a validator
    refuses what decode refuses; ``required`` keeps the order of ``properties``."""
    properties, required = schema.get("properties", {}), schema.get("required", [])
    assert isinstance(properties, dict)
    assert isinstance(required, list)
    wanted = {*ENVELOPE_REQUIRED, *required}
    schema["required"] = [name for name in properties if name in wanted]


_IDS = random.Random()  # noqa: S311 - ids must be unique, not unpredictable
"""Message ids: unique (122 random bits, seeded from os.urandom, reseeded in a forked
child), not secret. ``uuid.uuid4`` reads os.urandom, a system call that lets go of the GIL:
with one per message, each a wait to take it back in a busy master (3 % of its samples)
or worker (9 %). A private generator, so a package that seeds ``random`` cannot repeat
them."""
os.register_at_fork(after_in_child=_IDS.seed)
_V4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_V4_SET = (0x8000 << 48) | (0x4000 << 64)


def _message_id() -> uuid.UUID:
    """A version 4 UUID, as ``uuid.uuid4`` makes (RFC 4122 variant and version bits)."""
    return uuid.UUID(int=(_IDS.getrandbits(128) & _V4_CLEAR) | _V4_SET)


class _Message(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=False, json_schema_extra=_require_envelope
    )

    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: uuid.UUID = Field(default_factory=_message_id)
    sent_at: AwareDatetime = Field(default_factory=_now)


class _AboutAttempt(_Message):
    """A message about one attempt of one task: the fence every catalog write checks."""

    task_id: uuid.UUID
    attempt: Attempt
    execution_id: int


class _FromWorker(_AboutAttempt):
    worker_id: WorkerId


# --- master -> worker ------------------------------------------------------------------


class ParameterValue(BaseModel):
    """One execution parameter value (``catalog.execution_parameter_values``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    object_type: Literal[20, 30, 50] = 30
    """20 project, 30 package, 50 system (SSIS's object types)."""
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    value: ParameterScalar
    sensitive: bool = False


class TaskAssign(_AboutAttempt):
    """The master hands one attempt of a task to one worker."""

    type: Literal["task.assign"] = "task.assign"
    worker_id: WorkerId
    folder: str
    project: str
    package: str
    project_lsn: int
    project_hash: ContentHash
    parameters: tuple[ParameterValue, ...] = ()
    use32bitruntime: bool = False
    max_attempts: Attempt = 1
    lease_expires_at: AwareDatetime


class CancelReason(StrEnum):
    STOP_REQUESTED = "stop_requested"  # catalog.stop_operation
    STALE_ATTEMPT = "stale_attempt"  # the worker runs an attempt the catalog has moved past
    WORKER_DISABLED = "worker_disabled"


class TaskCancel(_AboutAttempt):
    """Stop this attempt: on the worker's control queue, and again in heartbeat replies."""

    type: Literal["task.cancel"] = "task.cancel"
    reason: CancelReason


class RefusalReason(StrEnum):
    """Why the master refused a worker's report (``task.refused``)."""

    STALE = "stale"  # an older attempt, or a state the task has moved past
    NOT_HOLDER = "not_holder"  # the attempt exists but another worker holds it
    UNKNOWN_ATTEMPT = "unknown_attempt"  # the task exists, this attempt was never dispatched
    UNKNOWN_TASK = "unknown_task"


class TaskRefused(_AboutAttempt):
    """The master refused a report about this attempt: the worker must not believe it was
    recorded, and must stop the attempt if it still runs it (the catalog holds it for
    someone else, or for no one). On the worker's control queue; at most one per attempt
    and reason in a while, however many reports are refused."""

    type: Literal["task.refused"] = "task.refused"
    report_type: Annotated[str, StringConstraints(max_length=32)]
    reason: RefusalReason


class ProjectArchive(_Message):
    """The master's answer to :class:`ProjectFetch`: the archive, base64 in JSON."""

    type: Literal["project.archive"] = "project.archive"
    project_hash: ContentHash
    found: bool
    archive_b64: str = ""


# --- worker -> master ------------------------------------------------------------------


class TaskStarted(_FromWorker):
    """The worker accepted the attempt; it acks the task message once this is confirmed."""

    type: Literal["task.started"] = "task.started"
    machine_name: str = ""
    pid: int | None = None


class TaskProgress(_FromWorker):
    type: Literal["task.progress"] = "task.progress"
    percent: Annotated[float, Field(ge=0, le=100)] | None = None
    message: str = ""


class LogEntry(BaseModel):
    """One line of package output, as an SSIS event message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: Annotated[int, Field(ge=0)]
    """Position in the attempt's log: with ``(task_id, attempt)`` it makes a line unique,
    so a batch sent twice is stored once."""
    time: AwareDatetime
    message_type: int = 70
    """SSIS ``message_type``: 70 information, 110 warning, 120 error, 60 progress."""
    source: Literal["stdout", "stderr", "agent"] = "stdout"
    message: Annotated[str, StringConstraints(max_length=8192)]


class TaskLog(_FromWorker):
    type: Literal["task.log"] = "task.log"
    entries: Annotated[tuple[LogEntry, ...], Field(min_length=1, max_length=1000)]


class TaskOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class TaskFinished(_FromWorker):
    type: Literal["task.finished"] = "task.finished"
    outcome: TaskOutcome
    exit_code: int | None = None
    error: Annotated[str, StringConstraints(max_length=4096)] = ""
    duration_s: Annotated[float, Field(ge=0)] = 0.0
    entries: Annotated[tuple[LogEntry, ...], Field(max_length=1000)] = ()
    """The attempt's last log lines, stored as a ``task.log`` with the same entries would
    be: a short package's whole log then travels with its outcome, in one message."""


class RunningAttempt(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: uuid.UUID
    attempt: Attempt
    execution_id: int


class AgentHeartbeat(_Message):
    """The worker's periodic report: it is alive, what it runs, how loaded it is.

    The master renews the leases of ``running`` attempts and answers any stale one with a
    :class:`TaskCancel`.
    """

    type: Literal["agent.heartbeat"] = "agent.heartbeat"
    worker_id: WorkerId
    machine_name: str = ""
    user_account: str = ""
    display_name: str = ""
    running: Annotated[tuple[RunningAttempt, ...], Field(max_length=MAX_RUNNING_PER_HEARTBEAT)] = ()
    max_task_count: Annotated[int, Field(ge=0)] = 10
    task_backlog: Annotated[int, Field(ge=0, le=MAX_TASK_BACKLOG)] = 0
    """The worker's TaskBacklog: assignments it takes beyond MaxTaskCount and holds until a
    slot frees. MaxTaskCount still bounds what runs."""
    cpu_percent: Annotated[float, Field(ge=0)] = 0.0
    free_memory_mb: Annotated[float, Field(ge=0)] = 0.0
    free_disk_mb: Annotated[float, Field(ge=0)] = 0.0
    """Free space of the filesystem holding the worker's TasksRootFolder; 0 if unknown."""
    accepting: bool = True
    """False while CPU, memory or disk is past TaskRequestMaxCPU / TaskRequestMinMemory /
    TaskRequestMinDiskSpace, or while the worker shuts down."""
    not_accepting: Annotated[str, Field(max_length=256)] = ""
    """Why ``accepting`` is false, for operators (e.g. ``"free disk 80 MB < 500 MB"``);
    empty while accepting. Informational: the master decides on ``accepting`` only."""
    lease_interval_s: Annotated[float, Field(gt=0, le=86400)] = 60.0
    """The worker's LeaseInterval: the master renews each running attempt's lease to the
    database's now plus this."""


class ProjectFetch(_Message):
    """A worker asks for a project archive by content hash; the answer comes on its
    control queue."""

    type: Literal["project.fetch"] = "project.fetch"
    worker_id: WorkerId
    project_hash: ContentHash


class ReadMarker(_Message):
    """A master's marker in its own status and heartbeat queues. A queue delivers in
    order, so once the master has handled its marker it has read every report and
    heartbeat queued before it: only then does it judge leases (docs/design.md, "A lease is
    judged only on what the master has read"). Only the master that sent it knows its
    ``token``; any other is acked and counted."""

    type: Literal["master.read_marker"] = "master.read_marker"
    master: Annotated[str, StringConstraints(max_length=128)]
    token: uuid.UUID


class DispatchWake(_Message):
    """Someone started an execution: the master's dispatcher should look now rather than
    at its next poll. Carries nothing the master relies on; losing one costs one poll."""

    type: Literal["dispatch.wake"] = "dispatch.wake"
    execution_id: int | None = None


Message = Annotated[
    TaskAssign
    | TaskCancel
    | TaskRefused
    | ProjectArchive
    | TaskStarted
    | TaskProgress
    | TaskLog
    | TaskFinished
    | AgentHeartbeat
    | ProjectFetch
    | ReadMarker
    | DispatchWake,
    Field(discriminator="type"),
]
StatusReport = TaskStarted | TaskProgress | TaskLog | TaskFinished

MESSAGE_TYPES: Final[tuple[type[_Message], ...]] = (
    TaskAssign,
    TaskCancel,
    TaskRefused,
    ProjectArchive,
    TaskStarted,
    TaskProgress,
    TaskLog,
    TaskFinished,
    AgentHeartbeat,
    ProjectFetch,
    ReadMarker,
    DispatchWake,
)
_ADAPTER: Final = TypeAdapter[Message](Message)
_KNOWN_TYPES: Final = frozenset(m.model_fields["type"].default for m in MESSAGE_TYPES)


class DecodeReason(StrEnum):
    """Why a body was refused; a closed set, used as a log field and a metric label."""

    OVERSIZED = "oversized"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    SCHEMA_VERSION = "schema_version"
    INVALID = "invalid"
    UNEXPECTED_TYPE = "unexpected_type"
    FORGED_SENDER = "forged_sender"


class DecodeError(ValueError):
    """A body that is not a valid message; ``reason`` says which check refused it."""

    def __init__(self, reason: DecodeReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def encode(message: _Message) -> bytes:
    """The JSON body of ``message``."""
    return message.model_dump_json().encode()


def decode(body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> Message:
    """Parse and validate one body; raise :class:`DecodeError` with the reason otherwise."""
    if len(body) > max_bytes:
        raise DecodeError(DecodeReason.OVERSIZED, f"{len(body)} bytes > {max_bytes}")
    try:
        raw: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(DecodeReason.MALFORMED_JSON, str(exc)) from None
    if not isinstance(raw, dict):
        raise DecodeError(DecodeReason.NOT_AN_OBJECT, type(raw).__name__)
    kind = raw.get("type")
    # A hostile body may carry any JSON value here; only a string can name a type (and a
    # list or object would not even hash for the set lookup).
    if not isinstance(kind, str) or kind not in _KNOWN_TYPES:
        raise DecodeError(DecodeReason.UNKNOWN_TYPE, repr(kind)[:80])
    if raw.get("schema_version") != SCHEMA_VERSION:
        version = repr(raw.get("schema_version"))[:20]
        raise DecodeError(
            DecodeReason.SCHEMA_VERSION, f"{version}, this side speaks {SCHEMA_VERSION}"
        )
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise DecodeError(DecodeReason.INVALID, _summarise(exc)) from None


def _summarise(exc: ValidationError) -> str:
    """A one-line description of the first few errors; never echoes input values, which
    may hold sensitive parameters."""
    parts = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:3]]
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every message, keyed by its ``type``; for workers in other languages."""
    return {m.model_fields["type"].default: m.model_json_schema() for m in MESSAGE_TYPES}
