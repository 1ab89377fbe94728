"""The ceiling for our design: raw pika doing exactly scaleout's message pattern, no catalog.

One "master" process and W "worker" processes, each a single pika ``SelectConnection``
(one I/O thread, callbacks only). The pattern is ours, message for message:

- the master holds ``W x slots`` slots (slots = MaxTaskCount); for each free slot it
  publishes a persistent ``task.assign``-sized body to that worker's quorum queue, with
  publisher confirms in a sliding window (at most ``WINDOW`` unconfirmed, never a wait for
  a whole batch);
- a worker consumes its queue (prefetch = slots); for each delivery it publishes a
  ``task.started``-sized body to the quorum status queue (confirmed), acks the delivery on
  that confirm, runs nothing, and publishes a ``task.finished``-sized body (confirmed);
- the master consumes the status queue, acks deliveries many at once (``multiple``), and
  on each ``finished`` gives the freed slot its next assignment.

Bodies have the byte sizes of real messages (built from ``schemas.messages`` for the
no-op package); their content is opaque padding after a short header, so the JSON
encode/decode of our models is not in this figure. Throughput is measured as for every
other system: (completed - 1) / (first completion -> last completion).

``python -m bench.protocol_loop master|worker ...`` are the children (argv built below).
"""

from __future__ import annotations

import json
import resource
import socket
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pika
from pika.channel import Channel
from pika.exceptions import AMQPError
from pika.spec import Basic

from bench.infra import Children, cpu_seconds
from schemas.messages import LogEntry, TaskAssign, TaskFinished, TaskOutcome, TaskStarted

WINDOW = 100
"""Unconfirmed publishes a process keeps in flight (sliding, not batch by batch)."""
STATUS_PREFETCH = 200
QUORUM = {"x-queue-type": "quorum"}
PERSISTENT = pika.BasicProperties(delivery_mode=2, content_type="application/json")
IDLE_EXIT_S = 60.0


@dataclass(frozen=True)
class Sizes:
    assign: int
    started: int
    finished: int


def message_sizes() -> Sizes:
    """Bytes of a real task.assign, task.started and task.finished of the no-op package
    (the finished report carries the two agent lines the worker adds for it)."""
    task_id = uuid.uuid4()
    now = datetime.now(UTC)
    about = {"task_id": task_id, "attempt": 1, "execution_id": 123456}
    assign = TaskAssign(
        **about,
        worker_id="bench-1",
        folder="Bench",
        project="Bench",
        package="Noop",
        project_lsn=1,
        project_hash="0" * 64,
        parameters=(),
        use32bitruntime=False,
        max_attempts=1,
        lease_expires_at=now,
    )
    started = TaskStarted(
        **about, worker_id="bench-1", machine_name=socket.gethostname(), pid=12345
    )
    lines = ("package Noop started, pid None", "package ended: succeeded, exit code 0")
    finished = TaskFinished(
        **about,
        worker_id="bench-1",
        outcome=TaskOutcome.SUCCEEDED,
        exit_code=0,
        duration_s=0.0,
        entries=tuple(
            LogEntry(seq=i, time=now, source="agent", message=text) for i, text in enumerate(lines)
        ),
    )
    return Sizes(*(len(m.model_dump_json()) for m in (assign, started, finished)))


def _body(kind: bytes, worker: int, size: int) -> bytes:
    return b"%s%04d:" % (kind, worker) + b"x" * max(0, size - 6)


@dataclass
class LoopResult:
    workers: int
    slots: int
    tasks: int
    completed: int
    steady_s: float
    """First completion -> last completion."""
    master_cpu_s: float
    workers_cpu_s: float
    rabbitmq_cpu_s: float
    sizes: Sizes

    @property
    def per_s(self) -> float:
        if self.completed < 2 or self.steady_s <= 0:
            return 0.0
        return (self.completed - 1) / self.steady_s


def run(
    children: Children,
    url: str,
    workers: int,
    slots: int,
    tasks: int,
    timeout_s: float,
    broker_pid: int | None = None,
) -> LoopResult:
    """One protocol-matched run on the vhost of ``url``; the queues are made here."""
    sizes = message_sizes()
    tag = f"protocol-{workers}x{slots}-{uuid.uuid4().hex[:6]}"
    queues = [f"{tag}.w{i}" for i in range(workers)]
    status_queue = f"{tag}.status"
    _declare(url, [*queues, status_queue])
    names = [f"{q}-worker" for q in queues]
    master_name = f"{tag}-master"
    try:
        for index, (name, queue) in enumerate(zip(names, queues, strict=True)):
            argv = ["-m", "bench.protocol_loop", "worker", url, queue, status_queue]
            argv += [str(index), str(slots), str(sizes.started), str(sizes.finished)]
            children.python(name, argv, {})
        _wait_consumers(url, queues, timeout_s=60)
        worker_pids = [children.procs[n].pid for n in names]
        workers_before = sum(cpu_seconds(p) for p in worker_pids)
        broker_before = cpu_seconds(broker_pid) if broker_pid else 0.0
        argv = ["-m", "bench.protocol_loop", "master", url, status_queue, ",".join(queues)]
        argv += [str(slots), str(tasks), str(sizes.assign), str(timeout_s)]
        master = children.python(master_name, argv, {})
        master.wait(timeout_s + 30)
        workers_cpu = sum(cpu_seconds(p) for p in worker_pids) - workers_before
        broker_cpu = (cpu_seconds(broker_pid) - broker_before) if broker_pid else 0.0
        report = _last_json(children.folder / f"{master_name}.log")
    finally:
        children.stop([n for n in (*names, master_name) if n in children.procs])
        _delete(url, [*queues, status_queue])
    return LoopResult(
        workers=workers,
        slots=slots,
        tasks=tasks,
        completed=int(report.get("completed", 0)),
        steady_s=float(report.get("steady_s", 0.0)),
        master_cpu_s=float(report.get("cpu_s", 0.0)),
        workers_cpu_s=workers_cpu,
        rabbitmq_cpu_s=broker_cpu,
        sizes=sizes,
    )


def _declare(url: str, queues: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_declare(queue, durable=True, arguments=QUORUM)
    finally:
        connection.close()


def _delete(url: str, queues: list[str]) -> None:
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
    except AMQPError:
        return  # the vhost goes at the end of the phase anyway
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
    finally:
        connection.close()


def _wait_consumers(url: str, queues: list[str], timeout_s: float) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = [channel.queue_declare(q, passive=True).method.consumer_count for q in queues]
            if all(counts):
                return
            time.sleep(0.1)
    finally:
        connection.close()
    msg = "protocol-loop workers did not start consuming in time"
    raise RuntimeError(msg)


def _last_json(path: Any) -> dict[str, Any]:
    for line in reversed(path.read_text().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    return {}


class _Confirms:
    """A sliding window of publisher confirms on one channel: ``pending`` bodies wait for
    room, each confirmed sequence number hands its ``on_confirmed`` value back."""

    def __init__(self) -> None:
        self.channel: Channel | None = None
        self.next_seq = 0
        self.outstanding: dict[int, Any] = {}
        self.pending: deque[tuple[str, bytes, Any]] = deque()

    def publish(self, queue: str, body: bytes, token: Any) -> None:
        self.pending.append((queue, body, token))
        self.drain()

    def drain(self) -> None:
        assert self.channel is not None
        while self.pending and len(self.outstanding) < WINDOW:
            queue, body, token = self.pending.popleft()
            self.next_seq += 1
            self.outstanding[self.next_seq] = token
            self.channel.basic_publish("", queue, body, PERSISTENT)

    def confirmed(self, frame: Any) -> list[Any]:
        method = frame.method
        if isinstance(method, Basic.Nack):
            msg = "the broker nacked a publish"
            raise RuntimeError(msg)
        tag = int(method.delivery_tag)
        if method.multiple:
            done = [s for s in self.outstanding if s <= tag]
        else:
            done = [tag] if tag in self.outstanding else []
        return [self.outstanding.pop(s) for s in sorted(done)]


class _Master:
    def __init__(
        self, url: str, status_queue: str, queues: list[str], slots: int, tasks: int, size: int
    ) -> None:
        self.url, self.status_queue, self.queues = url, status_queue, queues
        self.slots, self.tasks, self.size = slots, tasks, size
        self.confirms = _Confirms()
        self.assigned = 0
        self.finished_at: list[float] = []
        self.ack_upto = 0
        self.ack_scheduled = False
        self.cpu_began = 0.0
        self.connection: pika.SelectConnection | None = None
        self.channel: Channel | None = None

    def run(self, timeout_s: float) -> dict[str, Any]:
        self.connection = pika.SelectConnection(
            pika.URLParameters(self.url), on_open_callback=self._opened
        )
        self.connection.ioloop.call_later(timeout_s, self._stop)
        self.connection.ioloop.start()
        cpu = _cpu_now() - self.cpu_began
        times = self.finished_at
        steady = times[-1] - times[0] if len(times) > 1 else 0.0
        return {"completed": len(times), "steady_s": steady, "cpu_s": cpu}

    def _opened(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._channel)

    def _channel(self, channel: Channel) -> None:
        self.channel = self.confirms.channel = channel
        channel.confirm_delivery(self._on_confirm, callback=lambda _f: self._qos())

    def _qos(self) -> None:
        assert self.channel is not None
        self.channel.basic_qos(prefetch_count=STATUS_PREFETCH, callback=lambda _f: self._go())

    def _go(self) -> None:
        assert self.channel is not None
        self.channel.basic_consume(self.status_queue, self._on_status)
        self.cpu_began = _cpu_now()
        for worker in range(len(self.queues)):
            for _ in range(self.slots):
                self._assign(worker)

    def _assign(self, worker: int) -> None:
        if self.assigned >= self.tasks:
            return
        self.assigned += 1
        self.confirms.publish(self.queues[worker], _body(b"A", worker, self.size), None)

    def _on_confirm(self, frame: Any) -> None:
        self.confirms.confirmed(frame)
        self.confirms.drain()

    def _on_status(self, _channel: Channel, method: Any, _props: Any, body: bytes) -> None:
        if body[:1] == b"F":
            self.finished_at.append(time.time())
            self._assign(int(body[1:5]))
        self.ack_upto = int(method.delivery_tag)
        if not self.ack_scheduled:
            # Acked after this read's deliveries are handled: many at once, as the master's
            # status batch does after its commit.
            self.ack_scheduled = True
            assert self.connection is not None
            self.connection.ioloop.call_later(0, self._flush_acks)
        if len(self.finished_at) >= self.tasks:
            self._flush_acks()
            self._stop()

    def _flush_acks(self) -> None:
        self.ack_scheduled = False
        if self.channel is not None and self.channel.is_open and self.ack_upto:
            self.channel.basic_ack(self.ack_upto, multiple=True)

    def _stop(self) -> None:
        assert self.connection is not None
        self.connection.ioloop.stop()


class _Worker:
    def __init__(
        self,
        url: str,
        queue: str,
        status_queue: str,
        index: int,
        slots: int,
        started: int,
        finished: int,
    ) -> None:
        self.url, self.queue, self.status_queue = url, queue, status_queue
        self.index, self.slots = index, slots
        self.started_body = _body(b"S", index, started)
        self.finished_body = _body(b"F", index, finished)
        self.confirms = _Confirms()
        self.tasks: Channel | None = None
        self.last_activity = time.monotonic()
        self.connection: pika.SelectConnection | None = None

    def run(self) -> None:
        self.connection = pika.SelectConnection(
            pika.URLParameters(self.url), on_open_callback=self._opened
        )
        self.connection.ioloop.call_later(5, self._idle_check)
        self.connection.ioloop.start()

    def _opened(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._status_channel)

    def _status_channel(self, channel: Channel) -> None:
        self.confirms.channel = channel
        channel.confirm_delivery(self._on_confirm, callback=lambda _f: self._tasks_channel())

    def _tasks_channel(self) -> None:
        assert self.connection is not None
        self.connection.channel(on_open_callback=self._consume)

    def _consume(self, channel: Channel) -> None:
        self.tasks = channel
        channel.basic_qos(
            prefetch_count=self.slots,
            callback=lambda _f: channel.basic_consume(self.queue, self._on_assign),
        )

    def _on_assign(self, _channel: Channel, method: Any, _props: Any, _body: bytes) -> None:
        self.last_activity = time.monotonic()
        self.confirms.publish(self.status_queue, self.started_body, int(method.delivery_tag))

    def _on_confirm(self, frame: Any) -> None:
        assert self.tasks is not None
        for delivery_tag in self.confirms.confirmed(frame):
            if delivery_tag is None:
                continue  # a finished report: nothing waits on it
            # started is confirmed: ack the assignment, run the (no-op) package, report.
            self.tasks.basic_ack(delivery_tag)
            self.confirms.publish(self.status_queue, self.finished_body, None)
        self.confirms.drain()

    def _idle_check(self) -> None:
        assert self.connection is not None
        if time.monotonic() - self.last_activity > IDLE_EXIT_S:
            self.connection.ioloop.stop()
            return
        self.connection.ioloop.call_later(5, self._idle_check)


def _cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    if len(argv) == 8 and argv[0] == "master":
        url, status_queue, queues, slots, tasks, size, timeout = argv[1:]
        master = _Master(url, status_queue, queues.split(","), int(slots), int(tasks), int(size))
        print(json.dumps(master.run(float(timeout))), flush=True)
        return 0
    if len(argv) == 8 and argv[0] == "worker":
        url, queue, status_queue, index, slots, started, finished = argv[1:]
        _Worker(url, queue, status_queue, int(index), int(slots), int(started), int(finished)).run()
        return 0
    sys.stderr.write("usage: python -m bench.protocol_loop master|worker ... (see run())\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
