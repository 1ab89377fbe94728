"""The raw round trip (issue 9's "ceiling", named now for what it is): one persistent
message to a worker and one status back, with the sizes of scaleout's assign and started.
It is not our protocol (one status, not two; batch-by-batch confirms on the master side);
``bench.protocol_loop`` is the protocol-matched ceiling.

A "master" (two threads of the bench, one connection each) publishes N task bodies as
persistent messages to per-worker quorum queues with publisher confirms (a window of 100
async confirms, as the dispatcher's ``publish_batch``), and consumes status messages from
a quorum status queue. Each worker process consumes its queue (prefetch 10), publishes one
status with a blocking confirm, then acks the task (as scaleout's worker does for
``task.started``). Throughput, as for every system: (N - 1) / (first status consumed ->
N-th).

``python -m bench.rawpika worker URL QUEUE STATUS_QUEUE STATUS_BYTES`` is a worker.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.channel import Channel
from pika.spec import Basic

from bench.infra import Children
from schemas.messages import TaskAssign, TaskStarted

WINDOW = 100
QUORUM = {"x-queue-type": "quorum"}
PERSISTENT = pika.BasicProperties(delivery_mode=2, content_type="application/json")
IDLE_EXIT_S = 20.0


def message_sizes() -> tuple[int, int]:
    """Bytes of a real task.assign for the no-op package and of a real task.started."""
    task_id = uuid.uuid4()
    assign = TaskAssign(
        task_id=task_id,
        attempt=1,
        execution_id=123456,
        worker_id="bench-1",
        folder="Bench",
        project="Bench",
        package="Noop",
        project_lsn=1,
        project_hash="0" * 64,
        parameters=(),
        use32bitruntime=False,
        max_attempts=1,
        lease_expires_at=datetime.now(UTC),
    )
    started = TaskStarted(
        task_id=task_id,
        attempt=1,
        execution_id=123456,
        worker_id="bench-1",
        machine_name=socket.gethostname(),
    )
    return len(assign.model_dump_json()), len(started.model_dump_json())


@dataclass
class RoundTripResult:
    workers: int
    tasks: int
    completed: int
    elapsed_s: float
    """First status consumed -> last."""
    task_bytes: int
    status_bytes: int

    @property
    def per_s(self) -> float:
        if self.completed < 2 or self.elapsed_s <= 0:
            return 0.0
        return (self.completed - 1) / self.elapsed_s


def run_roundtrip(
    children: Children, url: str, workers: int, tasks: int, timeout_s: float = 120.0
) -> RoundTripResult:
    task_bytes, status_bytes = message_sizes()
    tag = f"rawpika-{workers}-{int(time.time())}"
    queues = [f"{tag}.w{i}" for i in range(workers)]
    status_queue = f"{tag}.status"
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for queue in (*queues, status_queue):
        channel.queue_declare(queue, durable=True, arguments=QUORUM)
    names = [f"{q}-worker" for q in queues]
    try:
        for name, queue in zip(names, queues, strict=True):
            argv = ["-m", "bench.rawpika", "worker", url, queue, status_queue, str(status_bytes)]
            children.python(name, argv, {})
        _wait_consumers(channel, queues, timeout_s=30)
        connection.close()
        consumed: list[float] = []
        consumer = threading.Thread(
            target=_consume_statuses, args=(url, status_queue, tasks, timeout_s, consumed)
        )
        consumer.start()
        _publish_tasks(url, queues, tasks, b"x" * task_bytes)
        consumer.join(timeout_s + 5)
    finally:
        children.stop(names)
    elapsed = (consumed[-1] - consumed[0]) if consumed else 0.0
    return RoundTripResult(workers, tasks, len(consumed), elapsed, task_bytes, status_bytes)


def _wait_consumers(channel: BlockingChannel, queues: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = [channel.queue_declare(q, passive=True).method.consumer_count for q in queues]
        if all(counts):
            return
        time.sleep(0.1)
    msg = "raw pika workers did not start consuming in time"
    raise RuntimeError(msg)


def _publish_tasks(url: str, queues: list[str], tasks: int, body: bytes) -> None:
    """Publish in windows of WINDOW, each window's confirms awaited before the next."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    blocking = connection.channel()
    # pika 1.x: only the wrapped async channel takes a confirm callback (a window).
    core: Channel = blocking._impl  # type: ignore[attr-defined]
    outstanding: set[int] = set()
    seq = 0

    def on_confirm(frame: Any) -> None:
        method = frame.method
        tag = int(method.delivery_tag)
        if isinstance(method, Basic.Nack):
            msg = "the broker nacked a task"
            raise RuntimeError(msg)
        if method.multiple:
            outstanding.difference_update({t for t in outstanding if t <= tag})
        else:
            outstanding.discard(tag)

    selected: list[bool] = []
    core.confirm_delivery(on_confirm, callback=lambda _f: selected.append(True))
    while not selected:
        connection.process_data_events(time_limit=0.05)
    sent = 0
    while sent < tasks:
        for _ in range(min(WINDOW, tasks - sent)):
            seq += 1
            outstanding.add(seq)
            core.basic_publish("", queues[sent % len(queues)], body, PERSISTENT)
            sent += 1
        while outstanding:
            connection.process_data_events(time_limit=0.01)
    connection.close()


def _consume_statuses(
    url: str, queue: str, tasks: int, timeout_s: float, consumed: list[float]
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=200)
    deadline = time.monotonic() + timeout_s
    for method, _props, _body in channel.consume(queue, inactivity_timeout=0.5):
        if method is not None:
            consumed.append(time.perf_counter())
            channel.basic_ack(int(method.delivery_tag or 0))
        if len(consumed) >= tasks or time.monotonic() > deadline:
            break
    channel.cancel()
    connection.close()


def _worker(url: str, queue: str, status_queue: str, status_bytes: int) -> None:
    """Consume tasks; per task publish one status with a blocking confirm, then ack."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    tasks = connection.channel()
    tasks.basic_qos(prefetch_count=10)
    statuses = connection.channel()
    statuses.confirm_delivery()
    body = b"s" * status_bytes
    for method, _props, _body in tasks.consume(queue, inactivity_timeout=IDLE_EXIT_S):
        if method is None:
            break  # idle: the bench is done (or gone)
        statuses.basic_publish("", status_queue, body, PERSISTENT)
        tasks.basic_ack(int(method.delivery_tag or 0))
    connection.close()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        sys.exit("usage: python -m bench.rawpika worker URL QUEUE STATUS_QUEUE STATUS_BYTES")
