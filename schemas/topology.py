"""The RabbitMQ topology as data: every exchange, queue, routing key and route, in one place.

No I/O here and no pika: :mod:`dispatcher.broker.topology` declares these on a channel,
and :mod:`schemas.export` writes them as an AsyncAPI document for workers in other
languages. Workers have no configure permission: the master (or provisioning) declares
their queues, and a worker only consumes them.

Every queue that holds work has a dead-letter exchange, an explicit delivery limit
(RabbitMQ's docs: give every quorum queue a dead-letter configuration) and a bound that
refuses new publishes when full, which every publisher of it retries. The dead-letter
queue is bounded too and keeps the newest. The heartbeat queue is bounded,
dropping the oldest report (a heartbeat is only worth its latest value) without
dead-lettering it. The wake queue holds at most one nudge. Every queue is a quorum queue,
so a cluster that loses one node of three loses no queue: a classic queue lives on one
node, and while that node is down it cannot even be declared.

Every publish is mandatory and confirmed, with ``content_type`` :data:`CONTENT_TYPE`, the
body's ``message_id`` and ``type`` copied into the properties of the same name, and
``user_id`` set to the publisher's RabbitMQ login (RabbitMQ refuses any other, so it names
the sender). :func:`routes` says, per message type, which queue it travels to, in which
direction, and whether it is persistent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from pydantic import BaseModel

from schemas.messages import (
    AgentHeartbeat,
    DispatchWake,
    ProjectArchive,
    ProjectFetch,
    ReadMarker,
    TaskAssign,
    TaskCancel,
    TaskFinished,
    TaskLog,
    TaskProgress,
    TaskRefused,
    TaskStarted,
)

TASKS_EXCHANGE: Final = "scaleout.tasks"
CONTROL_EXCHANGE: Final = "scaleout.control"
STATUS_EXCHANGE: Final = "scaleout.status"
HEARTBEAT_EXCHANGE: Final = "scaleout.heartbeat"
DEAD_LETTER_EXCHANGE: Final = "scaleout.dlx"
DEAD_QUEUE: Final = "scaleout.dead"
STATUS_QUEUE: Final = "scaleout.master.status"
FETCH_QUEUE: Final = "scaleout.master.fetch"
WAKE_QUEUE: Final = "scaleout.master.wake"
HEARTBEAT_QUEUE: Final = "scaleout.master.heartbeat"
STATUS_ROUTING_KEY: Final = "status"
FETCH_ROUTING_KEY: Final = "fetch"
WAKE_ROUTING_KEY: Final = "wake"
HEARTBEAT_ROUTING_KEY: Final = "heartbeat"
TASK_DELIVERY_LIMIT: Final = 10
STATUS_DELIVERY_LIMIT: Final = 20
HEARTBEAT_QUEUE_MAX_LENGTH: Final = 10_000
DEAD_QUEUE_MAX_LENGTH: Final = 10_000
DEAD_QUEUE_MAX_BYTES: Final = 256 * 1024 * 1024
STATUS_QUEUE_MAX_LENGTH: Final = 200_000
"""Reports waiting for the master: minutes of a busy cluster's reports; past it the
workers' outboxes hold them."""
STATUS_QUEUE_MAX_BYTES: Final = 1024 * 1024 * 1024
FETCH_QUEUE_MAX_LENGTH: Final = 1_000
TASK_QUEUE_MAX_LENGTH: Final = 10_000
"""Attempts waiting on one worker: the master publishes only what the worker has room
for, so this is a guard, not a working limit."""
CONTROL_QUEUE_MAX_LENGTH: Final = 1_000
WORKER_QUEUE_MAX_BYTES: Final = 512 * 1024 * 1024
"""A control queue carries project archives (up to 64 MiB in base64 each)."""
"""Enough for every worker's heartbeats over many minutes of a stalled master."""

WORKER_QUEUE_PREFIX: Final = "scaleout.worker."
CONTROL_QUEUE_PREFIX: Final = "scaleout.control."
_WORKER_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""schemas.messages.WorkerId's pattern: a worker id is also a RabbitMQ user name and a
permission regex fragment, so nothing else may reach a queue name."""
WORKER_ID_PATTERN: Final = _WORKER_ID.pattern
WORKER_ID_PARAMETER: Final = "worker_id"
WORKER_ID_PLACEHOLDER: Final = "{" + WORKER_ID_PARAMETER + "}"
"""Stands for the worker id in a per-worker queue's name and routing key (an AsyncAPI
channel parameter); it is no valid id, so it never reaches a real queue name."""
WORKER_QUEUE_TEMPLATE: Final = WORKER_QUEUE_PREFIX + WORKER_ID_PLACEHOLDER
CONTROL_QUEUE_TEMPLATE: Final = CONTROL_QUEUE_PREFIX + WORKER_ID_PLACEHOLDER

CONTENT_TYPE: Final = "application/json"
DELIVERY_MODE_TRANSIENT: Final = 1
DELIVERY_MODE_PERSISTENT: Final = 2
MANDATORY: Final = True
"""Publishes are mandatory: a message no queue takes is returned and reported as failed."""
COPIED_PROPERTIES: Final = ("message_id", "type")
"""AMQP properties a publisher copies from the body's field of the same name."""


def checked_worker_id(worker_id: str) -> str:
    """``worker_id`` if it may name a RabbitMQ user and queue, else ValueError saying why."""
    if not _WORKER_ID.match(worker_id):
        msg = (
            f"not a valid worker id: {worker_id!r} (a letter or digit first, then letters, "
            "digits, _ . -; at most 64)"
        )
        raise ValueError(msg)
    return worker_id


def worker_queue(worker_id: str) -> str:
    """The queue of task assignments for ``worker_id``."""
    return WORKER_QUEUE_PREFIX + checked_worker_id(worker_id)


def control_queue(worker_id: str) -> str:
    """The queue of cancels and project archives for ``worker_id``."""
    return CONTROL_QUEUE_PREFIX + checked_worker_id(worker_id)


def quorum_arguments(delivery_limit: int) -> dict[str, object]:
    """Arguments of a work queue: replicated, dead-lettered, bounded redeliveries."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-delivery-limit": delivery_limit,
    }


def heartbeat_arguments() -> dict[str, object]:
    """Bounded, dropping the oldest, and dead-lettering nothing: a heartbeat is only worth
    its latest value, and a flood dead-lettered would push real dead letters out of the
    bounded dead-letter queue. The master counts and logs a heartbeat it refuses. Quorum,
    as every queue: a lease is renewed only through this queue, so it must outlive a
    node."""
    return {
        "x-queue-type": "quorum",
        "x-max-length": HEARTBEAT_QUEUE_MAX_LENGTH,
        "x-overflow": "drop-head",
        "x-single-active-consumer": True,
    }


def dead_letter_arguments() -> dict[str, object]:
    """The end of the line, bounded: the newest dead letters are kept (the oldest dropped),
    so a flood costs the broker at most :data:`DEAD_QUEUE_MAX_LENGTH` messages or
    :data:`DEAD_QUEUE_MAX_BYTES`. No DLX of its own; quorum so dead letters survive a
    node loss."""
    return {
        "x-queue-type": "quorum",
        "x-max-length": DEAD_QUEUE_MAX_LENGTH,
        "x-max-length-bytes": DEAD_QUEUE_MAX_BYTES,
        "x-overflow": "drop-head",
    }


def bounded(arguments: dict[str, object], max_length: int, max_bytes: int) -> dict[str, object]:
    """``arguments`` with a bound that refuses new publishes when full (``reject-publish``):
    the publisher's confirm is a nack, and every publisher of these queues retries (the
    worker's outbox, the dispatcher's unpublished attempts, cancels not marked sent)."""
    return {
        **arguments,
        "x-max-length": max_length,
        "x-max-length-bytes": max_bytes,
        "x-overflow": "reject-publish",
    }


def wake_arguments() -> dict[str, object]:
    return {"x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "drop-head"}


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One queue, its arguments and its one binding."""

    name: str
    arguments: dict[str, object]
    exchange: str
    routing_key: str


def exchange_specs() -> tuple[tuple[str, str], ...]:
    """(name, type) of every exchange."""
    direct = (TASKS_EXCHANGE, CONTROL_EXCHANGE, STATUS_EXCHANGE, HEARTBEAT_EXCHANGE)
    return (*((name, "direct") for name in direct), (DEAD_LETTER_EXCHANGE, "fanout"))


def master_queue_specs() -> tuple[QueueSpec, ...]:
    """The dead-letter queue and the master's queues."""
    work = quorum_arguments(STATUS_DELIVERY_LIMIT)
    # One reader at a time, in order, however many masters consume: the expiry sweep's
    # read markers (dispatcher.horizon) prove something only about the one reader.
    single = {**work, "x-single-active-consumer": True}
    status_args = bounded(single, STATUS_QUEUE_MAX_LENGTH, STATUS_QUEUE_MAX_BYTES)
    fetch_args = bounded(work, FETCH_QUEUE_MAX_LENGTH, STATUS_QUEUE_MAX_BYTES)
    return (
        QueueSpec(DEAD_QUEUE, dead_letter_arguments(), DEAD_LETTER_EXCHANGE, ""),
        QueueSpec(STATUS_QUEUE, status_args, STATUS_EXCHANGE, STATUS_ROUTING_KEY),
        QueueSpec(FETCH_QUEUE, fetch_args, STATUS_EXCHANGE, FETCH_ROUTING_KEY),
        QueueSpec(WAKE_QUEUE, wake_arguments(), STATUS_EXCHANGE, WAKE_ROUTING_KEY),
        QueueSpec(
            HEARTBEAT_QUEUE, heartbeat_arguments(), HEARTBEAT_EXCHANGE, HEARTBEAT_ROUTING_KEY
        ),
    )


def worker_queue_specs(worker_id: str) -> tuple[QueueSpec, QueueSpec]:
    """The worker's task and control queues; the routing key is the worker id."""
    return _worker_specs(checked_worker_id(worker_id))


def worker_queue_templates() -> tuple[QueueSpec, QueueSpec]:
    """:func:`worker_queue_specs` with :data:`WORKER_ID_PLACEHOLDER` for the worker id."""
    return _worker_specs(WORKER_ID_PLACEHOLDER)


def _worker_specs(worker_id: str) -> tuple[QueueSpec, QueueSpec]:
    work = quorum_arguments(TASK_DELIVERY_LIMIT)
    tasks = bounded(work, TASK_QUEUE_MAX_LENGTH, WORKER_QUEUE_MAX_BYTES)
    control = bounded(work, CONTROL_QUEUE_MAX_LENGTH, WORKER_QUEUE_MAX_BYTES)
    return (
        QueueSpec(WORKER_QUEUE_PREFIX + worker_id, tasks, TASKS_EXCHANGE, worker_id),
        QueueSpec(CONTROL_QUEUE_PREFIX + worker_id, control, CONTROL_EXCHANGE, worker_id),
    )


def queue_templates() -> tuple[QueueSpec, ...]:
    """Every queue: the master's, then the per-worker ones with the id as a placeholder."""
    return (*master_queue_specs(), *worker_queue_templates())


class Direction(StrEnum):
    """Who publishes a message and who consumes it."""

    MASTER_TO_WORKER = "master->worker"
    WORKER_TO_MASTER = "worker->master"
    MASTER_TO_MASTER = "master->master"
    """``master.read_marker``: a master's marker in its own queues."""
    CLIENT_TO_MASTER = "client->master"
    """``dispatch.wake``: the operator's CLI or API nudging the master's dispatcher."""


@dataclass(frozen=True, slots=True)
class Route:
    """One message type: the queue it travels to, who sends it, how it is published."""

    message_type: str
    queue: str
    """A name from :func:`queue_templates` (per-worker ones with the placeholder)."""
    direction: Direction
    delivery_mode: int = DELIVERY_MODE_PERSISTENT

    @property
    def user_id_checked(self) -> bool:
        """Whether the consumer refuses the message unless its ``user_id`` is the expected
        sender: the master's user on a worker, the body's ``worker_id`` on the master."""
        # A wake carries no facts, so its consumer takes it from anyone; a marker's proof
        # is its token, which only the master that sent it knows.
        return self.direction in (Direction.MASTER_TO_WORKER, Direction.WORKER_TO_MASTER)


def _type(model: type[BaseModel]) -> str:
    return str(model.model_fields["type"].default)


def routes() -> tuple[Route, ...]:
    """Every message type's route, in the order of ``schemas.messages.MESSAGE_TYPES``."""
    to_worker, to_master = Direction.MASTER_TO_WORKER, Direction.WORKER_TO_MASTER
    reports = (TaskStarted, TaskProgress, TaskLog, TaskFinished)
    return (
        Route(_type(TaskAssign), WORKER_QUEUE_TEMPLATE, to_worker),
        Route(_type(TaskCancel), CONTROL_QUEUE_TEMPLATE, to_worker),
        Route(_type(TaskRefused), CONTROL_QUEUE_TEMPLATE, to_worker),
        Route(_type(ProjectArchive), CONTROL_QUEUE_TEMPLATE, to_worker),
        *(Route(_type(report), STATUS_QUEUE, to_master) for report in reports),
        Route(_type(AgentHeartbeat), HEARTBEAT_QUEUE, to_master),
        Route(_type(ProjectFetch), FETCH_QUEUE, to_master),
        # Transient: a marker lost in a broker restart only defers one expiry sweep.
        *(
            Route(_type(ReadMarker), queue, Direction.MASTER_TO_MASTER, DELIVERY_MODE_TRANSIENT)
            for queue in (STATUS_QUEUE, HEARTBEAT_QUEUE)
        ),
        # Losing a wake costs one dispatch poll, so it is not worth a disk write.
        Route(_type(DispatchWake), WAKE_QUEUE, Direction.CLIENT_TO_MASTER, DELIVERY_MODE_TRANSIENT),
    )
