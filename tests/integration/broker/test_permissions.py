"""Per-worker permissions and the validated user_id: a worker reads only its own queues,
writes only status and heartbeat, and cannot pass itself off as another worker."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Sequence

import pika
import pytest

from dispatcher.broker import (
    ACK,
    Consumer,
    Delivery,
    Publisher,
    Verdict,
    connection_parameters,
    topology,
)
from dispatcher.broker.provisioning import provision_worker, worker_definitions, worker_permissions
from dispatcher.errors import AccessRefused, PublishFailed
from schemas.messages import TaskStarted, decode
from tests.fixtures.broker import FULL, REPO, TlsBroker
from tests.integration.broker.test_roundtrip import task_for


def started(worker: str) -> TaskStarted:
    return TaskStarted(task_id=uuid.uuid4(), attempt=1, execution_id=1, worker_id=worker)


def consume_one(settings: object, queue: str, timeout_s: float = 30) -> list[Delivery]:
    """Run a Consumer until one delivery arrived (acked) or the time is up."""
    got: list[Delivery] = []
    stop = threading.Event()

    def handler(deliveries: Sequence[Delivery]) -> Sequence[Verdict]:
        got.extend(deliveries)
        stop.set()
        return [ACK] * len(deliveries)

    consumer = Consumer(settings, queue, handler, name="t-consume-one")  # type: ignore[arg-type]
    runner = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    runner.start()
    runner.join(timeout=timeout_s)
    stop.set()
    runner.join(timeout=10)
    return got


def test_worker_cannot_consume_another_workers_queue(tls_broker: TlsBroker, vhost: str) -> None:
    """w1's Consumer on w2's task queue stops with AccessRefused (403), at once, and
    leaves the caller's stop event unset."""
    consumer = Consumer(
        tls_broker.settings_for("w1", vhost),
        topology.worker_queue("w2"),
        lambda ds: [ACK] * len(ds),
        name="t-thief",
    )
    stop = threading.Event()
    with pytest.raises(AccessRefused, match="ACCESS_REFUSED") as caught:
        consumer.run(stop)
    assert caught.value.code == 403
    assert not stop.is_set()  # the caller's event may stop other parts; left alone


@pytest.mark.parametrize(
    "queue", [topology.control_queue("w2"), topology.STATUS_QUEUE, topology.DEAD_QUEUE]
)
def test_worker_cannot_read_other_queues(tls_broker: TlsBroker, vhost: str, queue: str) -> None:
    """w1 may not consume w2's control queue nor the master's or the dead-letter queue."""
    consumer = Consumer(
        tls_broker.settings_for("w1", vhost), queue, lambda ds: [ACK] * len(ds), name="t-r"
    )
    with pytest.raises(AccessRefused):
        consumer.run(threading.Event())


def test_worker_cannot_publish_tasks(tls_broker: TlsBroker, vhost: str) -> None:
    """w1 publishing a task assignment to scaleout.tasks gets AccessRefused; nothing lands."""
    with Publisher(tls_broker.settings_for("w1", vhost), name="t-w1", user_id="w1") as pub:
        with pytest.raises(AccessRefused, match="ACCESS_REFUSED"):
            pub.publish(topology.TASKS_EXCHANGE, "w2", task_for("w2"))
        # The refusal closed the channel only; the next allowed publish still works.
        pub.publish(topology.STATUS_EXCHANGE, topology.STATUS_ROUTING_KEY, started("w1"))
    assert tls_broker.queue_depth(vhost, topology.worker_queue("w2")) == 0
    assert tls_broker.queue_depth(vhost, topology.STATUS_QUEUE) == 1


def test_worker_cannot_declare(tls_broker: TlsBroker, vhost: str) -> None:
    """A worker has no configure permission: declaring even its own queue is refused."""
    with pytest.raises(AccessRefused):
        Publisher(
            tls_broker.settings_for("w1", vhost),
            name="t-declare",
            declare=lambda ch: topology.declare_worker_queues(ch, "w1"),
        )


def test_forged_user_id_is_rejected(tls_broker: TlsBroker, vhost: str) -> None:
    """w1 publishing with user_id w2 is refused by the broker (406); nothing lands."""
    settings = tls_broker.settings_for("w1", vhost)
    with (
        Publisher(settings, name="t-forger", user_id="w2") as pub,
        pytest.raises(PublishFailed, match="user_id property set to 'w2'") as caught,
    ):
        pub.publish(topology.STATUS_EXCHANGE, topology.STATUS_ROUTING_KEY, started("w2"))
    assert caught.value.code == 406
    assert tls_broker.queue_depth(vhost, topology.STATUS_QUEUE) == 0


def test_consumer_sees_the_true_sender(tls_broker: TlsBroker, vhost: str) -> None:
    """A body claiming worker w2, sent by w1, arrives with user_id w1: the master can tell."""
    lie = started("w2")
    with Publisher(tls_broker.settings_for("w1", vhost), name="t-liar", user_id="w1") as pub:
        pub.publish(topology.STATUS_EXCHANGE, topology.STATUS_ROUTING_KEY, lie)
    got = consume_one(tls_broker.settings_for("scaleout-master", vhost), topology.STATUS_QUEUE)
    assert len(got) == 1
    assert got[0].user_id == "w1"
    assert decode(got[0].body) == lie


def test_worker_passive_declare_needs_no_permission(tls_broker: TlsBroker, vhost: str) -> None:
    """A passive declare needs no permission (RabbitMQ 3.10): w1 can see that w2's queue
    exists and its depth, never its messages; documented in dispatcher/broker/provisioning.py."""
    settings = tls_broker.settings_for("w1", vhost)
    connection = pika.BlockingConnection(connection_parameters(settings, name="t-passive"))
    try:
        ok = connection.channel().queue_declare(topology.worker_queue("w2"), passive=True)
        assert ok.method.message_count == 0
    finally:
        connection.close()


def test_provision_worker_in_a_new_vhost(tls_broker: TlsBroker) -> None:
    """provision_worker gives w3 its queues and permissions in a fresh vhost: it receives
    its task and is refused w4's queue."""
    admin = tls_broker.admin
    name = f"test-prov-{uuid.uuid4().hex[:8]}"
    admin.create_vhost(name)
    try:
        provision_worker(admin, name, "w3", create_user=False)
        provision_worker(admin, name, "w4", create_user=False)
        admin.set_permissions(name, "scaleout-admin", FULL)
        task = task_for("w3")
        with Publisher(
            tls_broker.settings_for("scaleout-admin", name), name="t-prov", user_id=None
        ) as pub:
            pub.publish(topology.TASKS_EXCHANGE, "w3", task)
        got = consume_one(tls_broker.settings_for("w3", name), topology.worker_queue("w3"))
        assert [decode(d.body) for d in got] == [task]
        with pytest.raises(AccessRefused):
            Consumer(
                tls_broker.settings_for("w3", name),
                topology.worker_queue("w4"),
                lambda ds: [ACK] * len(ds),
                name="t-prov-thief",
            ).run(threading.Event())
    finally:
        admin.delete_vhost(name)


def test_worker_definitions_import_and_work(tls_broker: TlsBroker) -> None:
    """The definitions document imports into RabbitMQ; the master then publishes a task
    w5 consumes, and w5 is refused w6's queue."""
    admin = tls_broker.admin
    name = f"test-defs-{uuid.uuid4().hex[:8]}"
    try:
        admin.request("POST", "/api/definitions", worker_definitions(["w5", "w6"], vhost=name))
        queues = {q["name"]: q for q in admin.request("GET", f"/api/queues/{name}")}
        assert queues[topology.worker_queue("w5")]["arguments"]["x-delivery-limit"] == 10
        assert queues[topology.HEARTBEAT_QUEUE]["arguments"]["x-overflow"] == "drop-head"
        task = task_for("w5")
        master = tls_broker.settings_for("scaleout-master", name)
        with Publisher(master, name="t-defs", declare=topology.declare_master_topology) as pub:
            pub.publish(topology.TASKS_EXCHANGE, "w5", task)
        got = consume_one(tls_broker.settings_for("w5", name), topology.worker_queue("w5"))
        assert [decode(d.body) for d in got] == [task]
        with pytest.raises(AccessRefused):
            Consumer(
                tls_broker.settings_for("w5", name),
                topology.worker_queue("w6"),
                lambda ds: [ACK] * len(ds),
                name="t-defs-thief",
            ).run(threading.Event())
    finally:
        admin.delete_vhost(name)


def test_example_definitions_are_current() -> None:
    """deploy/rabbitmq/definitions.example.json is what worker_definitions emits today."""
    example = REPO / "deploy/rabbitmq/definitions.example.json"
    assert json.loads(example.read_text()) == worker_definitions(["w1", "w2"])


def test_worker_ids_cannot_widen_a_permission() -> None:
    """Ids are checked and escaped: a dot matches only a dot, and a regex is refused."""
    perms = worker_permissions("a.b")
    assert perms.read == r"^(scaleout\.worker\.a\.b|scaleout\.control\.a\.b)$"
    assert perms.configure == "^$"
    with pytest.raises(ValueError, match="not a valid worker id"):
        worker_permissions(".*")
    with pytest.raises(ValueError, match="not a valid worker id"):
        worker_definitions(["w1", "w1|.*"])
