"""Bad input on a Consumer: each bad body is dead-lettered to scaleout.dead with its reason
logged, a poison message stops after the delivery limit, and the consumer keeps going."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence

import pika
import pytest

from dispatcher.broker import ACK, Consumer, Delivery, Disposition, Publisher, Verdict, topology
from dispatcher.broker import connection_parameters as params
from schemas.messages import MAX_BODY_BYTES, DecodeError, TaskStarted, decode, encode
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for
from tests.integration.broker.test_roundtrip import task_for


def good_report() -> TaskStarted:
    return TaskStarted(task_id=uuid.uuid4(), attempt=1, execution_id=1, worker_id="w1")


def _with(**changes: object) -> bytes:
    raw = json.loads(encode(good_report()))
    raw.update(changes)
    return json.dumps(raw).encode()


BAD_BODIES = {
    "malformed_json": b'{"type": "task.started", ',
    "unknown_type": _with(type="task.exploded"),
    "schema_version": _with(schema_version=2),
    "invalid": _with(is_admin=True),
    "oversized": _with(machine_name="x" * MAX_BODY_BYTES),
}


def decoding_handler(good: list[object]) -> Callable[[Sequence[Delivery]], Sequence[Verdict]]:
    """The pattern every consumer follows: decode, dead-letter what fails, with the reason."""

    def handle(deliveries: Sequence[Delivery]) -> Sequence[Verdict]:
        verdicts = []
        for delivery in deliveries:
            try:
                good.append(decode(delivery.body))
            except DecodeError as exc:
                verdicts.append(Verdict(Disposition.DEAD_LETTER, exc.reason.value))
            else:
                verdicts.append(ACK)
        return verdicts

    return handle


def drain(tls_broker: TlsBroker, vhost: str, queue: str) -> list[tuple[bytes, dict[str, object]]]:
    """Every message in ``queue`` (taken with basic_get as the master): (body, headers)."""
    settings = tls_broker.settings_for("scaleout-master", vhost)
    connection = pika.BlockingConnection(params(settings, name="t-drain"))
    taken = []
    try:
        channel = connection.channel()
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return taken
            taken.append((body, dict(properties.headers or {})))
    finally:
        connection.close()


def test_bad_bodies_are_dead_lettered_and_the_consumer_goes_on(
    tls_broker: TlsBroker, vhost: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Five bad bodies from w1 land in scaleout.dead with their reasons logged; the good
    report sent after them is processed by the same consumer."""
    caplog.set_level(logging.WARNING, logger="dispatcher.broker")
    worker = tls_broker.settings_for("w1", vhost)
    connection = pika.BlockingConnection(params(worker, name="t-bad-sender"))
    try:
        channel = connection.channel()
        # Confirmed, so they are in the queue before the good report, which another
        # connection sends: RabbitMQ orders messages per channel, never across connections.
        channel.confirm_delivery()
        for body in BAD_BODIES.values():
            channel.basic_publish(
                topology.STATUS_EXCHANGE,
                topology.STATUS_ROUTING_KEY,
                body,
                pika.BasicProperties(user_id="w1", delivery_mode=2),
            )
    finally:
        connection.close()
    report = good_report()
    with Publisher(worker, name="t-good-sender", user_id="w1") as publisher:
        publisher.publish(topology.STATUS_EXCHANGE, topology.STATUS_ROUTING_KEY, report)

    good: list[object] = []
    stop = threading.Event()
    consumer = Consumer(
        tls_broker.settings_for("scaleout-master", vhost),
        topology.STATUS_QUEUE,
        decoding_handler(good),
        name="t-status",
        batch_max=4,
    )
    runner = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for(lambda: good == [report], 30)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()

    # Dead-lettering is the broker's own asynchronous move from one queue to another: a
    # rejected body may reach scaleout.dead after the consumer has handled later messages.
    wait_for(lambda: tls_broker.queue_depth(vhost, topology.DEAD_QUEUE) == len(BAD_BODIES), 30)
    dead = drain(tls_broker, vhost, topology.DEAD_QUEUE)
    assert sorted(body for body, _ in dead) == sorted(BAD_BODIES.values())
    for _, headers in dead:
        death = headers["x-death"][0]  # type: ignore[index]
        assert death["reason"] == "rejected"
        assert death["queue"] == topology.STATUS_QUEUE
    logged = [r for r in caplog.records if r.getMessage().startswith("broker.dead_letter")]
    assert sorted(getattr(r, "reason", "") for r in logged) == sorted(BAD_BODIES)
    assert all(getattr(r, "queue", "") == topology.STATUS_QUEUE for r in logged)
    assert tls_broker.queue_depth(vhost, topology.STATUS_QUEUE) == 0


def test_a_poison_message_is_dead_lettered_after_the_delivery_limit(
    tls_broker: TlsBroker, vhost: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A task whose handler always raises is requeued until the quorum queue's delivery
    limit dead-letters it; a good task after it is still handled."""
    caplog.set_level(logging.ERROR, logger="dispatcher.broker")
    poison, fine = task_for("w1"), task_for("w1")
    with Publisher(tls_broker.settings_for("scaleout-master", vhost), name="t-m") as publisher:
        publisher.publish(topology.TASKS_EXCHANGE, "w1", poison)
        publisher.publish(topology.TASKS_EXCHANGE, "w1", fine)
    attempts: list[bool] = []
    handled: list[object] = []

    def handler(deliveries: Sequence[Delivery]) -> Sequence[Verdict]:
        for delivery in deliveries:
            if delivery.message_id == str(poison.message_id):
                attempts.append(delivery.redelivered)
                msg = "this package always crashes the handler"
                raise RuntimeError(msg)
            handled.append(decode(delivery.body))
        return [ACK] * len(deliveries)

    stop = threading.Event()
    consumer = Consumer(
        tls_broker.settings_for("w1", vhost), topology.worker_queue("w1"), handler, name="t-w1"
    )
    runner = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for(lambda: tls_broker.queue_depth(vhost, topology.DEAD_QUEUE) == 1, 60)
        wait_for(lambda: handled == [fine], 30)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert len(attempts) >= topology.TASK_DELIVERY_LIMIT
    assert attempts[0] is False
    assert all(attempts[1:])
    errors = [r for r in caplog.records if r.getMessage().startswith("consumer.handler_error")]
    assert len(errors) == len(attempts)
    (body, _), *_ = drain(tls_broker, vhost, topology.DEAD_QUEUE)
    assert decode(body) == poison


def test_batched_acks_settle_each_delivery_once_among_requeues_and_dead_letters(
    tls_broker: TlsBroker, vhost: str
) -> None:
    """Batches of all-ack verdicts are settled with one multiple ack; batches holding a
    requeue or a dead letter one delivery at a time. Either way every delivery is settled
    exactly once: nothing acked twice (the broker would close the channel and redeliver),
    nothing left unacked, a requeued one seen again, a rejected one dead-lettered."""
    worker = tls_broker.settings_for("w1", vhost)
    reports = [good_report() for _ in range(60)]
    requeue_once = {str(r.message_id) for r in reports[5::13]}
    reject = {str(r.message_id) for r in reports[9::17]} - requeue_once
    with Publisher(worker, name="t-many", user_id="w1") as publisher:
        publisher.publish_batch(
            [(topology.STATUS_EXCHANGE, topology.STATUS_ROUTING_KEY, r) for r in reports]
        )
    seen: dict[str, int] = {}

    def handler(deliveries: Sequence[Delivery]) -> Sequence[Verdict]:
        verdicts = []
        for delivery in deliveries:
            key = delivery.message_id
            seen[key] = seen.get(key, 0) + 1
            if key in requeue_once and seen[key] == 1:
                verdicts.append(Verdict(Disposition.REQUEUE, "again"))
            elif key in reject:
                verdicts.append(Verdict(Disposition.DEAD_LETTER, "invalid"))
            else:
                verdicts.append(ACK)
        return verdicts

    stop = threading.Event()
    consumer = Consumer(
        tls_broker.settings_for("scaleout-master", vhost),
        topology.STATUS_QUEUE,
        handler,
        name="t-status",
        batch_max=8,
    )
    runner = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    runner.start()
    expected = {str(r.message_id): 2 if str(r.message_id) in requeue_once else 1 for r in reports}
    try:
        wait_for(lambda: seen == expected, 30)
        wait_for(lambda: tls_broker.queue_depth(vhost, topology.DEAD_QUEUE) == len(reject), 30)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert seen == expected  # nothing redelivered after a channel error
    assert tls_broker.queue_depth(vhost, topology.STATUS_QUEUE) == 0  # nothing left unacked
