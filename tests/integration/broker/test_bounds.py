"""Issue 14 on the real TLS broker: every queue has a bound and a policy, a queue an
older version declared differently is kept (not fatal), and an idle publisher that is
serviced keeps its connection past the AMQP heartbeat timeout."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

import pika
import pytest

from dispatcher import metrics
from dispatcher.broker import ACK, Consumer, Delivery, Publisher, Verdict, topology
from dispatcher.broker import connection_parameters as params
from dispatcher.broker import consumer as consumer_module
from dispatcher.errors import CatalogUnavailable
from schemas.messages import AgentHeartbeat, TaskStarted
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for


@contextlib.contextmanager
def patch_hold(*, first_s: float, max_s: float) -> Iterator[None]:
    """A faster backoff than production's, so 25 retries take a fraction of a second."""
    saved = consumer_module._HOLD_FIRST_S, consumer_module._HOLD_MAX_S
    consumer_module._HOLD_FIRST_S, consumer_module._HOLD_MAX_S = first_s, max_s  # type: ignore[misc]
    try:
        yield
    finally:
        consumer_module._HOLD_FIRST_S, consumer_module._HOLD_MAX_S = saved  # type: ignore[misc]


def master_channel(tls_broker: TlsBroker, vhost: str) -> pika.BlockingConnection:
    settings = tls_broker.settings_for("scaleout-master", vhost)
    return pika.BlockingConnection(params(settings, name="t-bounds"))


def test_the_dead_letter_queue_keeps_at_most_its_bound_dropping_the_oldest(
    tls_broker: TlsBroker, vhost: str
) -> None:
    """A flood into the DLX leaves DEAD_QUEUE_MAX_LENGTH messages, the newest ones."""
    connection = master_channel(tls_broker, vhost)
    try:
        channel = connection.channel()
        topology.declare_master_topology(channel)
        channel.confirm_delivery()
        flood = topology.DEAD_QUEUE_MAX_LENGTH + 500
        for n in range(flood):
            channel.basic_publish(topology.DEAD_LETTER_EXCHANGE, "", str(n).encode())
        depth = channel.queue_declare(topology.DEAD_QUEUE, passive=True).method.message_count
        method, _, oldest = channel.basic_get(topology.DEAD_QUEUE, auto_ack=True)
    finally:
        connection.close()

    assert depth == topology.DEAD_QUEUE_MAX_LENGTH
    assert method is not None
    assert int(oldest) == flood - topology.DEAD_QUEUE_MAX_LENGTH


def test_heartbeats_dropped_from_a_full_heartbeat_queue_do_not_reach_the_dead_letters(
    tls_broker: TlsBroker, vhost: str
) -> None:
    """The fault run's 20,000-heartbeat flood left 7,849 messages in scaleout.dead."""
    connection = master_channel(tls_broker, vhost)
    try:
        channel = connection.channel()
        topology.declare_master_topology(channel)
        channel.confirm_delivery()
        body = AgentHeartbeat(worker_id="w1").model_dump_json().encode()
        for _ in range(topology.HEARTBEAT_QUEUE_MAX_LENGTH + 300):
            channel.basic_publish(topology.HEARTBEAT_EXCHANGE, topology.HEARTBEAT_ROUTING_KEY, body)
        beats = channel.queue_declare(topology.HEARTBEAT_QUEUE, passive=True).method
        dead = channel.queue_declare(topology.DEAD_QUEUE, passive=True).method
    finally:
        connection.close()

    assert beats.message_count == topology.HEARTBEAT_QUEUE_MAX_LENGTH
    assert dead.message_count == 0


def test_a_full_work_queue_refuses_the_publish_so_the_publisher_retries(
    tls_broker: TlsBroker, vhost: str
) -> None:
    """reject-publish: the confirm is a nack, which every publisher of ours retries."""
    connection = master_channel(tls_broker, vhost)
    try:
        channel = connection.channel()
        name = f"bounded-{uuid.uuid4().hex[:8]}"
        arguments = topology.bounded(topology.quorum_arguments(5), max_length=2, max_bytes=10**6)
        channel.queue_declare(name, durable=True, arguments=arguments)
        channel.confirm_delivery()
        nacked = 0
        for n in range(6):
            try:
                channel.basic_publish("", name, str(n).encode())
            except pika.exceptions.NackError:
                nacked += 1
        depth = channel.queue_declare(name, passive=True).method.message_count
        channel.queue_delete(name)
    finally:
        connection.close()

    # A quorum queue checks its bound after the publish that crosses it: one over.
    assert depth <= 3
    assert nacked == 6 - depth


def test_a_queue_declared_with_older_arguments_is_kept_with_a_warning(
    tls_broker: TlsBroker, vhost: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Upgrading a broker whose status queue has no bound: 406 from RabbitMQ, which cannot
    change a queue's arguments. The master keeps the queue and says how to take the new
    ones; the caller's channel is still usable for the rest of the topology."""
    caplog.set_level(logging.WARNING, logger="dispatcher.broker")
    connection = master_channel(tls_broker, vhost)
    try:
        channel = connection.channel()
        channel.queue_delete(topology.STATUS_QUEUE)  # as an older version declared it:
        channel.queue_declare(
            topology.STATUS_QUEUE,
            durable=True,
            arguments=topology.quorum_arguments(topology.STATUS_DELIVERY_LIMIT),
        )
        topology.declare_master_topology(channel)
        channel.confirm_delivery()
        report = TaskStarted(task_id=uuid.uuid4(), attempt=1, execution_id=1, worker_id="w1")
        channel.basic_publish(
            topology.STATUS_EXCHANGE,
            topology.STATUS_ROUTING_KEY,
            report.model_dump_json().encode(),
            mandatory=True,
        )
        kept = channel.queue_declare(topology.STATUS_QUEUE, passive=True).method.message_count
        heartbeats = channel.queue_declare(topology.HEARTBEAT_QUEUE, passive=True)
    finally:
        connection.close()

    assert kept == 1
    assert heartbeats.method.message_count == 0  # declared after the clash
    [warning] = [r for r in caplog.records if r.msg.startswith("topology.queue_arguments_differ")]
    assert warning.args == (topology.STATUS_QUEUE,)
    assert "delete_queue" in warning.__dict__["hint"]


def _reconnects() -> float:
    return (
        metrics.WORKER.get_sample_value(
            "scaleout_broker_reconnects_total", {"connection": "publisher"}
        )
        or metrics.MASTER.get_sample_value(
            "scaleout_broker_reconnects_total", {"connection": "publisher"}
        )
        or 0.0
    )


@pytest.mark.parametrize("serviced", [True, False], ids=["keepalive", "idle"])
def test_an_idle_publisher_keeps_its_connection_only_when_serviced(
    tls_broker: TlsBroker, vhost: str, serviced: bool
) -> None:
    """With a 1 s AMQP heartbeat the broker closes a connection after ~2 s of silence.
    Serviced every 0.5 s (as the master's loops do), the publisher needs no reconnect after
    6 s idle; left alone (the control case, the fault run's finding) it does."""
    settings = tls_broker.settings_for("scaleout-master", vhost, heartbeat_s=1)
    with Publisher(settings, name="t-idle", declare=topology.declare_master_topology) as pub:
        before = _reconnects()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if serviced:
                pub.keepalive()
        pub.publish(
            topology.HEARTBEAT_EXCHANGE,
            topology.HEARTBEAT_ROUTING_KEY,
            AgentHeartbeat(worker_id="w1"),
        )
        reconnects = _reconnects() - before

    assert reconnects == (0 if serviced else 1)


def test_a_batch_whose_catalog_is_down_is_held_not_spun_through_the_delivery_limit(
    tls_broker: TlsBroker, vhost: str
) -> None:
    """A report arriving while the catalog is down (a PostgreSQL restart): the handler
    raises CatalogUnavailable far more often than the status queue's delivery limit (20);
    the consumer holds the batch and retries with backoff, so the report is applied once
    the catalog is back, never requeued, never dead-lettered."""
    report = TaskStarted(task_id=uuid.uuid4(), attempt=1, execution_id=1, worker_id="w1")
    worker = tls_broker.settings_for("w1", vhost)
    with Publisher(worker, name="t-early-sender", user_id="w1") as publisher:
        publisher.publish(topology.STATUS_EXCHANGE, topology.STATUS_ROUTING_KEY, report)
    calls: list[bool] = []
    applied: list[Delivery] = []
    outage_calls = topology.STATUS_DELIVERY_LIMIT + 5

    def handler(deliveries: Sequence[Delivery]) -> Sequence[Verdict]:
        calls.append(True)
        if len(calls) <= outage_calls:
            raise CatalogUnavailable("the catalog is restarting")
        applied.extend(deliveries)
        return [ACK] * len(deliveries)

    stop = threading.Event()
    consumer = Consumer(
        tls_broker.settings_for("scaleout-master", vhost),
        topology.STATUS_QUEUE,
        handler,
        name="t-held",
        hold_on=(CatalogUnavailable,),
    )
    with patch_hold(first_s=0.01, max_s=0.02):
        runner = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
        runner.start()
        try:
            wait_for(lambda: len(applied) == 1, 60, "the held report to be applied")
        finally:
            stop.set()
            runner.join(timeout=30)

    assert [d.redelivered for d in applied] == [False]
    assert len(calls) == outage_calls + 1
    assert tls_broker.queue_depth(vhost, topology.DEAD_QUEUE) == 0
    assert tls_broker.queue_depth(vhost, topology.STATUS_QUEUE) == 0
