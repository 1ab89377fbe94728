"""A message round-trips over mutual TLS: the master publishes a task assignment with a
confirm, the worker consumes it from its own queue with its own certificate."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from dispatcher import topology
from dispatcher.broker import ACK, Consumer, Delivery, Publisher, Verdict
from schemas.messages import TaskAssign, decode
from tests.fixtures.broker import TlsBroker


def task_for(worker: str) -> TaskAssign:
    return TaskAssign(
        task_id=uuid.uuid4(),
        attempt=1,
        execution_id=1,
        worker_id=worker,
        folder="f",
        project="p",
        package="pkg.dtsx",
        project_lsn=1,
        project_hash="0" * 64,
        lease_expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )


def test_task_round_trips_over_tls(tls_broker: TlsBroker, vhost: str) -> None:
    """A confirmed task published by the master reaches worker w1's consumer intact."""
    sent = task_for("w1")
    with Publisher(tls_broker.settings_for("scaleout-master", vhost), name="t-master") as pub:
        pub.publish(topology.TASKS_EXCHANGE, "w1", sent)

    got: list[Delivery] = []
    stop = threading.Event()

    def handler(deliveries: Sequence[Delivery]) -> Sequence[Verdict]:
        got.extend(deliveries)
        stop.set()
        return [ACK] * len(deliveries)

    consumer = Consumer(
        tls_broker.settings_for("w1", vhost), topology.worker_queue("w1"), handler, name="t-w1"
    )
    runner = threading.Thread(target=consumer.run, args=(stop,))
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert len(got) == 1
    assert decode(got[0].body) == sent
    assert got[0].message_id == str(sent.message_id)
    assert got[0].exchange == topology.TASKS_EXCHANGE
    assert tls_broker.queue_depth(vhost, topology.worker_queue("w1")) == 0
