"""A worker killed (``kill -9``) while it fetches a project archive recovers when it
restarts: the assignment it had not accepted comes back, the archive is fetched again,
nothing a crash left in the project cache is used, and the task runs once."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from dispatcher.broker import ACK, Delivery, Verdict
from dispatcher.settings import BrokerSettings
from schemas.messages import ProjectFetch, TaskOutcome, decode
from schemas.project import content_hash
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for
from tests.fixtures.worker import ScriptedMaster, WorkerProcess, write_testkit
from tests.integration.worker.conftest import WORKER_ID
from tests.integration.worker.test_disk import events


class SilentMaster(ScriptedMaster):
    """Takes ``project.fetch`` requests but answers none while ``silent`` is set: the
    worker is left waiting for its archive, where the test kills it."""

    def __init__(self, broker: BrokerSettings, worker_id: str) -> None:
        super().__init__(broker, worker_id)
        self.silent = threading.Event()
        self.ignored: list[ProjectFetch] = []

    def _on_fetch(self, deliveries: Sequence[Delivery]) -> Sequence[Verdict]:
        if not self.silent.is_set():
            return super()._on_fetch(deliveries)
        for delivery in deliveries:
            fetch = decode(delivery.body)
            assert isinstance(fetch, ProjectFetch)
            self.ignored.append(fetch)
        return [ACK] * len(deliveries)


@pytest.fixture
def silent_master(tls_broker: TlsBroker, vhost: str) -> Iterator[SilentMaster]:
    master = SilentMaster(tls_broker.settings_for("scaleout-master", vhost), WORKER_ID)
    master.start()
    try:
        yield master
    finally:
        master.close()


def test_a_worker_killed_while_it_fetches_an_archive_recovers_and_runs_the_task_once(
    silent_master: SilentMaster, tls_broker: TlsBroker, vhost: str, tmp_path: Path
) -> None:
    """The worker asks for the archive and is killed while it waits. Its cache holds what
    a crash can leave: the temporary copy of a write cut short, a half-extracted staging
    folder, and (after a power cut, not a kill, since the write is a rename) a torn
    archive under its final name. Restarted, it fetches again, refuses the torn archive
    by its hash (project.cache_corrupt), and runs the task: started once, succeeded."""
    master = silent_master
    project = master.deploy(write_testkit(tmp_path / "kit"))
    archive = master.archives[project]
    worker = WorkerProcess(
        tmp_path / "worker",
        tls_broker.settings_for(WORKER_ID, vhost),
        WORKER_ID,
        project_fetch_timeout_s=120,
    )
    master.silent.set()
    worker.start()
    try:
        task = master.assign(project, "Echo", {"Word": "fetched"})
        wait_for(lambda: master.ignored, 60, "the worker to ask for the archive")
        assert worker.process is not None
        worker.process.kill()
        worker.process.wait(timeout=30)

        cache = worker.folder / "projects"
        half = archive[: len(archive) // 2]
        (cache / f".{project}.zip.140000000000.tmp").write_bytes(half)
        staging = cache / f".{project[:12]}-k1ll3d"
        staging.mkdir()
        (staging / "echo.py").write_text("raise SystemExit('half extracted')\n")
        (cache / f"{project}.zip").write_bytes(half)
        assert content_hash(half) != project

        master.silent.clear()
        worker.start()
        finished = master.finished(task, timeout_s=90)
        assert worker.stop() == 0
    finally:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(timeout=30)
    assert finished.outcome is TaskOutcome.SUCCEEDED, finished.error
    assert len(master.started(task)) == 1
    assert "line 2 fetched" in master.log_text(task)
    assert [f.project_hash for f in master.ignored] == [project]
    assert [f.project_hash for f in master.received.fetches] == [project]
    assert events(worker, "project.cache_corrupt")
    assert content_hash((cache / f"{project}.zip").read_bytes()) == project
    assert (cache / project / "echo.py").read_text() != "raise SystemExit('half extracted')\n"
