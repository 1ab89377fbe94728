"""A worker started before its queues exist waits for them instead of exiting."""

from __future__ import annotations

from pathlib import Path

from dispatcher.broker import Publisher, topology
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for
from tests.fixtures.worker import worker_process

WORKER = "w5"


def test_worker_waits_for_its_queues(tls_broker: TlsBroker, vhost: str, tmp_path: Path) -> None:
    """With its queues missing the worker logs worker.queue_missing and keeps running;
    once they are declared it consumes them."""
    master = tls_broker.settings_for("scaleout-master", vhost)
    with Publisher(master, name="test-admin") as admin:
        admin.declare(
            lambda ch: (
                ch.queue_delete(topology.worker_queue(WORKER)),
                ch.queue_delete(topology.control_queue(WORKER)),
            )
        )
    broker = tls_broker.settings_for(WORKER, vhost)
    with worker_process(tmp_path / "worker", broker, WORKER) as worker:
        wait_for(lambda: "worker.queue_missing" in worker.log_path.read_text(), 30)
        assert worker.process is not None
        assert worker.process.poll() is None, worker.log_path.read_text()

        with Publisher(master, name="test-admin") as admin:
            admin.declare(lambda ch: topology.declare_worker_queues(ch, WORKER))
        started = f"consumer.started: {topology.worker_queue(WORKER)}"
        wait_for(lambda: started in worker.log_path.read_text(), 30)
        assert worker.process.poll() is None
