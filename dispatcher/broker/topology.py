"""The RabbitMQ topology: every exchange, queue and routing key name, derived in one place.

Only :func:`declare_master_topology` and :func:`declare_worker_queues` do I/O (on a channel
the caller owns). Workers have no configure permission: the master (or provisioning)
declares their queues, and a worker only consumes them.

Every queue that holds work has a dead-letter exchange and an explicit delivery limit
(RabbitMQ's docs: give every quorum queue a dead-letter configuration). The heartbeat
queue is classic and bounded, dropping the oldest report: a heartbeat is only worth its
latest value. The wake queue holds at most one transient nudge and dead-letters nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from pika.adapters.blocking_connection import BlockingChannel

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
"""Enough for every worker's heartbeats over many minutes of a stalled master."""

WORKER_QUEUE_PREFIX: Final = "scaleout.worker."
CONTROL_QUEUE_PREFIX: Final = "scaleout.control."
_WORKER_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""schemas.messages.WorkerId's pattern: a worker id is also a RabbitMQ user name and a
permission regex fragment, so nothing else may reach a queue name."""


def _checked(worker_id: str) -> str:
    if not _WORKER_ID.match(worker_id):
        msg = f"not a valid worker id: {worker_id!r} (letters, digits, _ . -; at most 64)"
        raise ValueError(msg)
    return worker_id


def worker_queue(worker_id: str) -> str:
    """The queue of task assignments for ``worker_id``."""
    return WORKER_QUEUE_PREFIX + _checked(worker_id)


def control_queue(worker_id: str) -> str:
    """The queue of cancels and project archives for ``worker_id``."""
    return CONTROL_QUEUE_PREFIX + _checked(worker_id)


def quorum_arguments(delivery_limit: int) -> dict[str, object]:
    """Arguments of a work queue: replicated, dead-lettered, bounded redeliveries."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-delivery-limit": delivery_limit,
    }


def heartbeat_arguments() -> dict[str, object]:
    return {
        "x-queue-type": "classic",
        "x-max-length": HEARTBEAT_QUEUE_MAX_LENGTH,
        "x-overflow": "drop-head",
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    }


def wake_arguments() -> dict[str, object]:
    return {"x-queue-type": "classic", "x-max-length": 1, "x-overflow": "drop-head"}


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
    status_args = quorum_arguments(STATUS_DELIVERY_LIMIT)
    return (
        # The end of the line: no DLX of its own, quorum so dead letters survive a node loss.
        QueueSpec(DEAD_QUEUE, {"x-queue-type": "quorum"}, DEAD_LETTER_EXCHANGE, ""),
        QueueSpec(STATUS_QUEUE, status_args, STATUS_EXCHANGE, STATUS_ROUTING_KEY),
        QueueSpec(FETCH_QUEUE, status_args, STATUS_EXCHANGE, FETCH_ROUTING_KEY),
        QueueSpec(WAKE_QUEUE, wake_arguments(), STATUS_EXCHANGE, WAKE_ROUTING_KEY),
        QueueSpec(
            HEARTBEAT_QUEUE, heartbeat_arguments(), HEARTBEAT_EXCHANGE, HEARTBEAT_ROUTING_KEY
        ),
    )


def worker_queue_specs(worker_id: str) -> tuple[QueueSpec, QueueSpec]:
    """The worker's task and control queues; the routing key is the worker id."""
    args = quorum_arguments(TASK_DELIVERY_LIMIT)
    return (
        QueueSpec(worker_queue(worker_id), args, TASKS_EXCHANGE, worker_id),
        QueueSpec(control_queue(worker_id), args, CONTROL_EXCHANGE, worker_id),
    )


def _declare(channel: BlockingChannel, spec: QueueSpec) -> None:
    channel.queue_declare(spec.name, durable=True, arguments=spec.arguments)
    channel.queue_bind(spec.name, spec.exchange, routing_key=spec.routing_key)


def declare_master_topology(channel: BlockingChannel) -> None:
    """Every exchange, the master's queues and the dead-letter queue (idempotent)."""
    for name, kind in exchange_specs():
        channel.exchange_declare(name, exchange_type=kind, durable=True)
    for spec in master_queue_specs():
        _declare(channel, spec)


def declare_worker_queues(channel: BlockingChannel, worker_id: str) -> None:
    """The worker's task and control queues and their bindings (idempotent)."""
    for spec in worker_queue_specs(worker_id):
        channel.exchange_declare(spec.exchange, exchange_type="direct", durable=True)
        _declare(channel, spec)
