"""A broker restart, or a broker that refuses reports for a while, in the middle of a run
loses no report and duplicates none that the master would store twice."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from consumers.worker.outbox import OUTBOX_FILE
from dispatcher.broker import topology
from dispatcher.broker.provisioning import DENY, Permissions, worker_permissions
from schemas.messages import TaskAssign, TaskFinished, TaskOutcome
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for
from tests.fixtures.worker import ScriptedMaster, WorkerProcess, write_testkit

StartWorker = Callable[..., AbstractContextManager[WorkerProcess]]


def test_logs_and_final_status_survive_a_broker_restart(
    master: ScriptedMaster, start_worker: StartWorker, tls_broker: TlsBroker, tmp_path: Path
) -> None:
    """The broker stops and starts while a package prints; afterwards the master has every
    line exactly once (by seq), in order, and exactly one finished report."""
    project = master.deploy(write_testkit(tmp_path / "kit"))
    stop_file = tmp_path / "stop"
    with start_worker() as worker:
        task = master.assign(project, "Ticker", {"StopFile": str(stop_file)})
        wait_for(lambda: len(master.log_entries(task)) >= 5, 30)
        down_at = time.monotonic()
        tls_broker.restart_app()
        print(f"\nbroker restart took {time.monotonic() - down_at:.1f} s")
        before = len(master.log_entries(task))
        wait_for(lambda: len(master.log_entries(task)) >= before + 20, 60)
        stop_file.touch()
        finished = master.finished(task, timeout_s=60)
        time.sleep(1.0)  # any late duplicate would arrive now
        assert worker.stop() == 0
    assert finished.outcome is TaskOutcome.SUCCEEDED, finished.error
    _assert_complete_once(master, task)


def test_reports_refused_by_the_broker_wait_on_disk_and_arrive_in_order(
    master: ScriptedMaster,
    start_worker: StartWorker,
    tls_broker: TlsBroker,
    vhost: str,
    tmp_path: Path,
) -> None:
    """While the broker refuses the worker's reports, they go to ExecutionLogCacheFolder;
    once it accepts them again they arrive in order, each line once, then finished."""
    project = master.deploy(write_testkit(tmp_path / "kit"))
    stop_file = tmp_path / "stop"
    with start_worker() as worker:
        task = master.assign(project, "Ticker", {"StopFile": str(stop_file)})
        wait_for(lambda: len(master.log_entries(task)) >= 5, 30)
        _refuse_status_writes(tls_broker, vhost)
        outbox = worker.folder / "elogcache" / OUTBOX_FILE
        wait_for(lambda: outbox.exists() and len(outbox.read_text().splitlines()) >= 3, 30)
        tls_broker.admin.set_permissions(vhost, "w1", worker_permissions("w1"))
        stop_file.touch()
        finished = master.finished(task, timeout_s=60)
        wait_for(lambda: not outbox.read_text().strip(), 30)
        assert worker.stop() == 0
    assert "outbox.resent" in worker.log()
    assert finished.outcome is TaskOutcome.SUCCEEDED, finished.error
    _assert_complete_once(master, task)


def _assert_complete_once(master: ScriptedMaster, task: TaskAssign) -> None:
    """Every seq once and in order, every tick once and in order, one finished report."""
    entries = master.log_entries(task)
    assert [e.seq for e in entries] == list(range(len(entries)))
    ticks = [int(e.message.split()[1]) for e in entries if e.message.startswith("tick ")]
    assert ticks == list(range(len(ticks)))
    assert any(e.message == "stopped" for e in entries)
    finals = {m.message_id for _, m in master.about(task) if isinstance(m, TaskFinished)}
    assert len(finals) == 1


def _refuse_status_writes(tls_broker: TlsBroker, vhost: str) -> None:
    """Take w1's write permission on the status exchange away and close its report
    connection, so the next publish meets the new permissions (channels cache them)."""
    tls_broker.admin.set_permissions(
        vhost,
        "w1",
        Permissions(
            configure=DENY,
            write=f"^{re.escape(topology.HEARTBEAT_EXCHANGE)}$",
            read=worker_permissions("w1").read,
        ),
    )
    listing = tls_broker.ctl("list_connections", "pid", "vhost", "client_properties")
    for line in listing.splitlines():
        if vhost in line and "scaleout-worker-w1-reports" in line:
            tls_broker.ctl("close_connection", line.split()[0], "test: permissions changed")
