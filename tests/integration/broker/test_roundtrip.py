"""A message round-trips over mutual TLS: the master publishes a task assignment with a
confirm, the worker consumes it from its own queue with its own certificate."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence

import pytest
from pydantic import BaseModel

from dispatcher.broker import ACK, Consumer, Delivery, Publisher, Verdict, topology
from dispatcher.broker.connection import coalesce_frames
from dispatcher.errors import AccessRefused, PublishFailed
from dispatcher.testing import make_assign
from schemas.messages import DispatchWake, TaskAssign, TaskStarted, decode
from tests.fixtures.broker import TlsBroker


def task_for(worker: str) -> TaskAssign:
    return make_assign(worker_id=worker, package="pkg.dtsx", project_hash="0" * 64, lease_s=300)


def consume_w1(
    tls_broker: TlsBroker, vhost: str, *, count: int, timeout_s: float
) -> list[Delivery]:
    """Consume from w1's queue, as w1, until ``count`` deliveries came (acking each)."""
    got: list[Delivery] = []
    stop = threading.Event()

    def handler(deliveries: Sequence[Delivery]) -> Sequence[Verdict]:
        got.extend(deliveries)
        if len(got) >= count:
            stop.set()
        return [ACK] * len(deliveries)

    consumer = Consumer(
        tls_broker.settings_for("w1", vhost), topology.worker_queue("w1"), handler, name="t-w1"
    )
    runner = threading.Thread(target=consumer.run, args=(stop,))
    runner.start()
    runner.join(timeout=timeout_s)
    stop.set()
    runner.join(timeout=30)
    assert not runner.is_alive()
    return got


def test_task_round_trips_over_tls(tls_broker: TlsBroker, vhost: str) -> None:
    """A confirmed task published by the master reaches worker w1's consumer intact."""
    sent = task_for("w1")
    with Publisher(tls_broker.settings_for("scaleout-master", vhost), name="t-master") as pub:
        pub.publish(topology.TASKS_EXCHANGE, "w1", sent)

    got = consume_w1(tls_broker, vhost, count=1, timeout_s=30)
    assert len(got) == 1
    assert decode(got[0].body) == sent
    assert got[0].message_id == str(sent.message_id)
    assert got[0].exchange == topology.TASKS_EXCHANGE
    assert tls_broker.queue_depth(vhost, topology.worker_queue("w1")) == 0


def test_unroutable_publish_fails(tls_broker: TlsBroker, vhost: str) -> None:
    """A task for a worker without a queue is returned by the broker: PublishFailed."""
    with Publisher(tls_broker.settings_for("scaleout-master", vhost), name="t-m") as pub:
        with pytest.raises(PublishFailed, match="unroutable: 312 NO_ROUTE"):
            pub.publish(topology.TASKS_EXCHANGE, "w9", task_for("w9"))
        pub.publish(topology.TASKS_EXCHANGE, "w1", task_for("w1"))
    assert tls_broker.queue_depth(vhost, topology.worker_queue("w1")) == 1


def test_publish_to_a_missing_exchange_fails(tls_broker: TlsBroker, vhost: str) -> None:
    """A publish to an undeclared exchange fails with the broker's 404, not a hang."""
    with Publisher(tls_broker.settings_for("scaleout-master", vhost), name="t-m") as pub:
        with pytest.raises(PublishFailed, match="NOT_FOUND") as caught:
            pub.publish("scaleout.nowhere", "w1", task_for("w1"))
        assert caught.value.code == 404


def test_batch_reports_each_item(tls_broker: TlsBroker, vhost: str) -> None:
    """publish_batch confirms a window of tasks and names the one that could not be routed."""
    tasks = [task_for(w) for w in ("w1", "w2", "w9", "w3")]
    items = [(topology.TASKS_EXCHANGE, t.worker_id, t) for t in tasks]
    with Publisher(tls_broker.settings_for("scaleout-master", vhost), name="t-m") as pub:
        results = pub.publish_batch(items)
    assert [type(r).__name__ for r in results] == [
        "NoneType",
        "NoneType",
        "PublishFailed",
        "NoneType",
    ]
    for worker in ("w1", "w2", "w3"):
        assert tls_broker.queue_depth(vhost, topology.worker_queue(worker)) == 1


def test_idle_publisher_reconnects(
    tls_broker: TlsBroker, vhost: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A publisher left idle past two heartbeats (the broker drops it) publishes again
    without error: it reconnects on its own."""
    caplog.set_level(logging.INFO, logger="dispatcher.broker")
    settings = tls_broker.settings_for("scaleout-master", vhost, heartbeat_s=1)
    with Publisher(settings, name="t-idle") as pub:
        pub.publish(topology.TASKS_EXCHANGE, "w1", task_for("w1"))
        time.sleep(4)  # the behaviour under test is what happens after this much silence
        pub.publish(topology.TASKS_EXCHANGE, "w1", task_for("w1"))
    assert tls_broker.queue_depth(vhost, topology.worker_queue("w1")) == 2
    connects = [r for r in caplog.records if r.getMessage().startswith("broker.connected")]
    assert len(connects) == 2  # the broker did drop the idle connection


def test_wake_queue_holds_one(tls_broker: TlsBroker, vhost: str) -> None:
    """A transient wake published by the master lands in the one-slot wake queue; a second
    replaces the first (drop-head), so it never piles up."""
    wake_a, wake_b = DispatchWake(execution_id=1), DispatchWake(execution_id=2)
    with Publisher(tls_broker.settings_for("scaleout-master", vhost), name="t-wake") as pub:
        pub.publish(topology.STATUS_EXCHANGE, topology.WAKE_ROUTING_KEY, wake_a, persistent=False)
        pub.publish(topology.STATUS_EXCHANGE, topology.WAKE_ROUTING_KEY, wake_b, persistent=False)
    assert tls_broker.queue_depth(vhost, topology.WAKE_QUEUE) == 1
    assert tls_broker.queue_depth(vhost, topology.DEAD_QUEUE) == 0


def test_declare_now_and_after_reconnect(tls_broker: TlsBroker, vhost: str) -> None:
    """Publisher.declare makes a new worker's queue routable at once; a refused
    declaration raises AccessRefused and is not replayed on the next connection."""
    worker = tls_broker.settings_for("w1", vhost)
    with Publisher(worker, name="t-w1-declare", user_id="w1") as refused:
        with pytest.raises(AccessRefused):
            refused.declare(lambda ch: topology.declare_worker_queues(ch, "w9"))
        refused.close()  # the next publish reconnects, replaying only kept declarations
        refused.publish(topology.STATUS_EXCHANGE, topology.STATUS_ROUTING_KEY, started_by_w1())
    with Publisher(tls_broker.settings_for("scaleout-master", vhost), name="t-declare") as pub:
        pub.declare(lambda ch: topology.declare_worker_queues(ch, "w9"))
        pub.publish(topology.TASKS_EXCHANGE, "w9", task_for("w9"))
    assert tls_broker.queue_depth(vhost, topology.worker_queue("w9")) == 1


def started_by_w1() -> TaskStarted:
    return TaskStarted(task_id=uuid.uuid4(), attempt=1, execution_id=1, worker_id="w1")


class _Blob(BaseModel):
    message_id: uuid.UUID
    data: str


def test_a_batch_of_small_and_large_messages_round_trips_intact_and_in_order(
    tls_broker: TlsBroker, vhost: str
) -> None:
    """With the frames of a batch merged into few writes (one TLS record stream, not one
    record per frame), every message still arrives whole and in publish order, whether it
    is a few bytes or larger than a frame (300 kB: several body frames, past the merge
    limit)."""
    sizes = [10, 200, 300_000, 5, 131_000, 50] * 20
    sent = [_Blob(message_id=uuid.uuid4(), data="x" * n + str(i)) for i, n in enumerate(sizes)]
    with Publisher(tls_broker.settings_for("scaleout-master", vhost), name="t-frames") as pub:
        assert pub._connection is not None
        assert coalesce_frames(pub._connection)  # this pika has the internals it needs
        results = pub.publish_batch([(topology.TASKS_EXCHANGE, "w1", b) for b in sent])
    assert results == [None] * len(sent)

    got = consume_w1(tls_broker, vhost, count=len(sent), timeout_s=60)
    assert [_Blob.model_validate_json(d.body) for d in got] == sent
