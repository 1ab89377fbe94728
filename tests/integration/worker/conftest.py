"""Fixtures for the worker's integration tests: the TLS node, a fresh vhost, a scripted
master on it, and a factory for real worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.broker import TlsBroker, tls_broker, vhost
from tests.fixtures.worker import ScriptedMaster, WorkerProcess, scripted_master, worker_process

__all__ = ["tls_broker", "vhost"]

WORKER_ID = "w1"


@pytest.fixture
def master(tls_broker: TlsBroker, vhost: str) -> Iterator[ScriptedMaster]:
    with scripted_master(tls_broker.settings_for("scaleout-master", vhost), WORKER_ID) as m:
        yield m


@pytest.fixture
def start_worker(
    tls_broker: TlsBroker, vhost: str, tmp_path: Path
) -> Callable[..., AbstractContextManager[WorkerProcess]]:
    """``with start_worker(MaxTaskCount=2) as worker:`` runs worker w1 with those settings."""

    def start(**settings: Any) -> AbstractContextManager[WorkerProcess]:
        broker = tls_broker.settings_for(WORKER_ID, vhost)
        return worker_process(tmp_path / "worker", broker, WORKER_ID, **settings)

    return start
