"""Declares the RabbitMQ topology on a channel; the names and shapes are in
:mod:`schemas.topology`, re-exported here so ``topology.X`` keeps working.

Only :func:`declare_master_topology` and :func:`declare_worker_queues` do I/O (on a channel
the caller owns). Workers have no configure permission: the master (or provisioning)
declares their queues, and a worker only consumes them.
"""

from __future__ import annotations

import logging
from typing import Final

import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from schemas.topology import (
    CONTROL_EXCHANGE,
    CONTROL_QUEUE_MAX_LENGTH,
    CONTROL_QUEUE_PREFIX,
    DEAD_LETTER_EXCHANGE,
    DEAD_QUEUE,
    DEAD_QUEUE_MAX_BYTES,
    DEAD_QUEUE_MAX_LENGTH,
    FETCH_QUEUE,
    FETCH_QUEUE_MAX_LENGTH,
    FETCH_ROUTING_KEY,
    HEARTBEAT_EXCHANGE,
    HEARTBEAT_QUEUE,
    HEARTBEAT_QUEUE_MAX_LENGTH,
    HEARTBEAT_ROUTING_KEY,
    STATUS_DELIVERY_LIMIT,
    STATUS_EXCHANGE,
    STATUS_QUEUE,
    STATUS_QUEUE_MAX_BYTES,
    STATUS_QUEUE_MAX_LENGTH,
    STATUS_ROUTING_KEY,
    TASK_DELIVERY_LIMIT,
    TASK_QUEUE_MAX_LENGTH,
    TASKS_EXCHANGE,
    WAKE_QUEUE,
    WAKE_ROUTING_KEY,
    WORKER_QUEUE_MAX_BYTES,
    WORKER_QUEUE_PREFIX,
    QueueSpec,
    bounded,
    control_queue,
    dead_letter_arguments,
    exchange_specs,
    heartbeat_arguments,
    master_queue_specs,
    quorum_arguments,
    wake_arguments,
    worker_queue,
    worker_queue_specs,
)

__all__ = [
    "CONTROL_EXCHANGE",
    "CONTROL_QUEUE_MAX_LENGTH",
    "CONTROL_QUEUE_PREFIX",
    "DEAD_LETTER_EXCHANGE",
    "DEAD_QUEUE",
    "DEAD_QUEUE_MAX_BYTES",
    "DEAD_QUEUE_MAX_LENGTH",
    "FETCH_QUEUE",
    "FETCH_QUEUE_MAX_LENGTH",
    "FETCH_ROUTING_KEY",
    "HEARTBEAT_EXCHANGE",
    "HEARTBEAT_QUEUE",
    "HEARTBEAT_QUEUE_MAX_LENGTH",
    "HEARTBEAT_ROUTING_KEY",
    "STATUS_DELIVERY_LIMIT",
    "STATUS_EXCHANGE",
    "STATUS_QUEUE",
    "STATUS_QUEUE_MAX_BYTES",
    "STATUS_QUEUE_MAX_LENGTH",
    "STATUS_ROUTING_KEY",
    "TASKS_EXCHANGE",
    "TASK_DELIVERY_LIMIT",
    "TASK_QUEUE_MAX_LENGTH",
    "WAKE_QUEUE",
    "WAKE_ROUTING_KEY",
    "WORKER_QUEUE_MAX_BYTES",
    "WORKER_QUEUE_PREFIX",
    "QueueSpec",
    "bounded",
    "control_queue",
    "dead_letter_arguments",
    "declare_master_topology",
    "declare_worker_queues",
    "exchange_specs",
    "heartbeat_arguments",
    "master_queue_specs",
    "quorum_arguments",
    "wake_arguments",
    "worker_queue",
    "worker_queue_specs",
]


logger = logging.getLogger("dispatcher.broker")

_PRECONDITION_FAILED: Final = 406


def _declare(channel: BlockingChannel, spec: QueueSpec) -> None:
    """Declare ``spec`` on a channel of its own: a queue an older version declared with
    other arguments (a bound added since) makes the broker close the channel with 406,
    and RabbitMQ cannot change a queue's arguments. That queue is kept as it is, with a
    warning saying how to take the new arguments; the caller's channel stays usable."""
    connection = channel.connection
    probe = connection.channel()
    try:
        probe.queue_declare(spec.name, durable=True, arguments=spec.arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != _PRECONDITION_FAILED:
            raise
        _keep_older(connection.channel(), spec, exc.reply_text)
    else:
        probe.close()
    channel.queue_bind(spec.name, spec.exchange, routing_key=spec.routing_key)


def _keep_older(channel: BlockingChannel, spec: QueueSpec, reply: str) -> None:
    channel.queue_declare(spec.name, passive=True)
    channel.close()
    logger.warning(
        "topology.queue_arguments_differ: %s",
        spec.name,
        extra={
            "queue": spec.name,
            "broker_says": reply,
            "hint": "the queue was declared by an older scaleout with other arguments; it is "
            "used as it is. To take the new bounds, drain it and delete it "
            f"(rabbitmqctl delete_queue {spec.name}), or apply them with a policy",
        },
    )


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
