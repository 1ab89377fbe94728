"""A broker restart while a Publisher and a Consumer run: both reconnect by themselves and
no confirmed message is lost."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence

import pytest

from dispatcher import metrics
from dispatcher.broker import ACK, Consumer, Delivery, Publisher, Verdict, topology
from dispatcher.errors import BrokerError
from schemas.messages import TaskProgress
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for


def progress(n: int) -> TaskProgress:
    return TaskProgress(
        task_id=uuid.uuid4(), attempt=1, execution_id=1, worker_id="w1", message=f"#{n}"
    )


def test_publisher_and_consumer_survive_a_broker_restart(
    tls_broker: TlsBroker, vhost: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every message the Publisher saw confirmed, before, during and after a restart of
    the RabbitMQ app, reaches the Consumer, which is consuming again afterwards."""
    caplog.set_level(logging.INFO, logger="dispatcher.broker")
    received: set[str] = set()
    lock = threading.Lock()

    def handler(deliveries: Sequence[Delivery]) -> Sequence[Verdict]:
        with lock:
            received.update(d.message_id or "" for d in deliveries)
        return [ACK] * len(deliveries)

    reconnects = {
        kind: metrics.BROKER_RECONNECTS.labels(connection=kind)._value.get()
        for kind in ("consumer", "publisher")
    }
    stop_consumer, stop_publisher = threading.Event(), threading.Event()
    consumer = Consumer(
        tls_broker.settings_for("scaleout-master", vhost),
        topology.STATUS_QUEUE,
        handler,
        name="t-restart-consumer",
        batch_max=20,
    )
    consumer_thread = threading.Thread(target=consumer.run, args=(stop_consumer,), daemon=True)

    confirmed: list[str] = []
    failed: list[BrokerError] = []

    def publish_until_stopped() -> None:
        settings = tls_broker.settings_for("w1", vhost)
        with Publisher(settings, name="t-restart-publisher", user_id="w1") as publisher:
            n = 0
            while not stop_publisher.is_set():
                message = progress(n)
                try:
                    publisher.publish(
                        topology.STATUS_EXCHANGE, topology.STATUS_ROUTING_KEY, message
                    )
                except BrokerError as exc:
                    failed.append(exc)
                else:
                    confirmed.append(str(message.message_id))
                n += 1
                stop_publisher.wait(0.01)

    publisher_thread = threading.Thread(target=publish_until_stopped, daemon=True)
    consumer_thread.start()
    publisher_thread.start()
    try:
        wait_for(lambda: len(confirmed) >= 30 and consumer.connected, 30)
        began = time.monotonic()
        tls_broker.restart_app()
        restarted = time.monotonic()
        after_restart = len(confirmed)
        wait_for(lambda: len(confirmed) >= after_restart + 30, 60)
        stop_publisher.set()
        publisher_thread.join(timeout=60)

        def all_received() -> bool:
            with lock:
                return set(confirmed) <= received

        wait_for(all_received, 30)
        assert consumer.connected
        print(
            f"\nrestart_app {restarted - began:.1f} s; publishing again "
            f"{time.monotonic() - restarted:.1f} s later; {len(confirmed)} confirmed, "
            f"{len(received)} received, {len(failed)} failed"
        )
    finally:
        stop_publisher.set()
        stop_consumer.set()
        publisher_thread.join(timeout=60)
        consumer_thread.join(timeout=30)
    assert not publisher_thread.is_alive()
    assert not consumer_thread.is_alive()
    # A publish may fail while the broker is away (BrokerUnavailable after the retry
    # budget); that is reported, never silent. What must hold: nothing confirmed is lost.
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("consumer.connection_lost") for m in messages)
    assert sum("as t-restart-publisher" in m for m in messages) >= 2
    assert sum("as t-restart-consumer" in m for m in messages) >= 2
    for kind, before in reconnects.items():  # scaleout_broker_reconnects_total counted both
        assert metrics.BROKER_RECONNECTS.labels(connection=kind)._value.get() >= before + 1
