"""A worker on a loopback broker with a shared login (the plain-AMQP demo) still works."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from dispatcher.broker import connection_parameters, topology
from dispatcher.settings import BrokerSettings
from schemas.messages import TaskOutcome
from tests.fixtures.worker import SALES_ETL, scripted_master, worker_process


def _ctl(*args: str) -> None:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)}: {result.stdout}{result.stderr}")


@pytest.fixture
def guest_vhost() -> Iterator[BrokerSettings]:
    """A fresh vhost on the plain loopback node (make services) where guest may do all."""
    name = f"worker-shared-{uuid.uuid4().hex[:8]}"
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield BrokerSettings(url=f"amqp://guest:guest@127.0.0.1:5672/{name}")
    finally:
        _ctl("delete_vhost", name)


def test_a_worker_sharing_the_masters_login_stamps_that_login(
    guest_vhost: BrokerSettings, tmp_path: Path
) -> None:
    """Logged in as guest like the master, the worker publishes with user_id guest (which
    RabbitMQ demands) and takes tasks from guest when told that is the master's user."""
    connection = pika.BlockingConnection(connection_parameters(guest_vhost, name="setup"))
    try:
        channel = connection.channel()
        topology.declare_master_topology(channel)
        topology.declare_worker_queues(channel, "demo-1")
    finally:
        connection.close()
    with scripted_master(guest_vhost, "demo-1", user="guest") as master:
        project = master.deploy(SALES_ETL)
        with worker_process(tmp_path, guest_vhost, "demo-1", master_user_id="guest") as worker:
            task = master.assign(project, "Sleep", {"Seconds": 0.5})
            finished = master.finished(task)
            assert worker.stop() == 0
    assert finished.outcome is TaskOutcome.SUCCEEDED, finished.error
    assert master.received.user_ids == {"guest"}
    assert "worker.shared_login" in worker.log()
