"""Bad assignments fail clearly and the worker keeps serving; capacity, shutdown and the
on-disk outbox behave as SSIS's worker does."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

from consumers.worker.outbox import Outbox, Outgoing
from dispatcher.broker import topology
from schemas.messages import LogEntry, TaskFinished, TaskLog, TaskOutcome, TaskStarted
from schemas.project import content_hash
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for
from tests.fixtures.worker import (
    SALES_ETL,
    ScriptedMaster,
    WorkerProcess,
    write_testkit,
)

StartWorker = Callable[..., AbstractContextManager[WorkerProcess]]


def test_bad_assignments_fail_clearly_and_the_worker_keeps_serving(
    master: ScriptedMaster,
    start_worker: StartWorker,
    tls_broker: TlsBroker,
    vhost: str,
    tmp_path: Path,
) -> None:
    """Garbage and forged task messages are dead-lettered; an unknown package, a missing or
    mistyped parameter, a missing archive, one whose hash does not match and a command that
    cannot start each end as failed with a reason; a good task still succeeds afterwards."""
    project = master.deploy(write_testkit(tmp_path / "kit"))
    mismatched = content_hash(b"what the master claims")
    master.archives[mismatched] = master.archives[project]
    missing = "0" * 64
    with start_worker() as worker:
        master.send_raw_task(b"{not json", as_user="scaleout-master", broker=master.broker)
        # A valid assignment, published by a RabbitMQ user that is not the master.
        good_body = master.make_assign(project, "Echo", {"Word": "x"})
        admin = tls_broker.settings_for("scaleout-admin", vhost)
        master.send_raw_task(
            good_body.model_dump_json().encode(), as_user="scaleout-admin", broker=admin
        )
        cases = {
            "has no package Nope": master.assign(project, "Nope"),
            "required parameter Word has no value": master.assign(project, "Echo"),
            "parameter Count takes a int": master.assign(
                project, "Echo", {"Word": "w", "Count": "many"}
            ),
            "hash mismatch": master.assign(mismatched, "Echo", {"Word": "w"}),
            "cannot start package Missing": master.assign(project, "Missing"),
            "no project archive": master.assign(missing, "Echo", {"Word": "w"}),
        }
        reports = {reason: master.finished(task) for reason, task in cases.items()}
        after = master.assign(
            project, "Echo", {"Word": "after", "Secret": "pssst"}, sensitive=["Secret"]
        )
        finished_after = master.finished(after)
        wait_for(lambda: tls_broker.queue_depth(vhost, topology.DEAD_QUEUE) == 2, 15)
        assert worker.stop() == 0
    for reason, report in reports.items():
        assert report.outcome is TaskOutcome.FAILED
        assert reason in report.error, report.error
    for reason, task in cases.items():  # refused before it was accepted, except Missing
        assert bool(master.started(task)) == (reason == "cannot start package Missing")
    assert not master.about(good_body)
    assert finished_after.outcome is TaskOutcome.SUCCEEDED, finished_after.error
    text = master.log_text(after)
    assert "line 2 after" in text
    assert "secret given" in text
    assert "stage test" in text
    assert "pssst" not in text
    assert "pssst" not in worker.log()


def test_max_task_count_bounds_concurrency_and_a_waiting_task_can_be_canceled(
    master: ScriptedMaster, start_worker: StartWorker, tmp_path: Path
) -> None:
    """With MaxTaskCount 2, five queued tasks never run more than two at once; a cancel
    for the one waiting for a slot drops it before it starts."""
    project = master.deploy(write_testkit(tmp_path / "kit"))
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    with start_worker(MaxTaskCount=2):
        tasks = [
            master.assign(project, "Hold", {"Seconds": 1.5, "StampDir": str(stamps)})
            for _ in range(5)
        ]
        wait_for(lambda: master.started(tasks[0]) and master.started(tasks[1]), 30)
        time.sleep(1.0)  # the third assignment is now delivered and waiting for a slot
        master.cancel(tasks[2])
        reports = [master.finished(task, timeout_s=60) for task in tasks]
    assert reports[2].outcome is TaskOutcome.CANCELED
    assert "before it started" in reports[2].error
    assert not master.started(tasks[2])
    assert all(r.outcome is TaskOutcome.SUCCEEDED for i, r in enumerate(reports) if i != 2)
    spans = [tuple(map(float, p.read_text().split())) for p in stamps.iterdir()]
    assert len(spans) == 4
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2
    running: set[tuple[uuid.UUID, int]] = set()
    peak = 0
    for _, message in master.received.status:  # arrival order: a slot frees before reuse
        if isinstance(message, TaskStarted):
            running.add((message.task_id, message.attempt))
        elif isinstance(message, TaskFinished):
            running.discard((message.task_id, message.attempt))
        peak = max(peak, len(running))
    assert peak == 2


def test_sigterm_lets_short_packages_finish_and_reports_the_killed_ones(
    master: ScriptedMaster, start_worker: StartWorker
) -> None:
    """On SIGTERM the worker takes no new task, lets a package that ends within
    shutdown_grace_s succeed, kills and reports the one that does not, and exits 0."""
    project = master.deploy(SALES_ETL)
    with start_worker(shutdown_grace_s=3, kill_grace_s=1) as worker:
        short = master.assign(project, "Sleep", {"Seconds": 1.5, "Interval": 0.5})
        long = master.assign(project, "Sleep", {"Seconds": 120})
        wait_for(lambda: master.started(short) and master.started(long), 30)
        assert worker.stop(timeout_s=60) == 0
        late = master.assign(project, "Sleep", {"Seconds": 1})
    assert master.finished(short).outcome is TaskOutcome.SUCCEEDED
    killed = master.finished(long)
    assert killed.outcome is TaskOutcome.FAILED
    assert "worker shut down" in killed.error
    assert not master.about(late)


def test_a_second_sigterm_skips_the_shutdown_grace(
    master: ScriptedMaster, start_worker: StartWorker
) -> None:
    """A second SIGTERM kills running packages at once instead of waiting shutdown_grace_s."""
    project = master.deploy(SALES_ETL)
    with start_worker(shutdown_grace_s=300, kill_grace_s=1) as worker:
        task = master.assign(project, "Sleep", {"Seconds": 300})
        wait_for(lambda: master.started(task), 30)
        assert worker.process is not None
        worker.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert worker.stop(timeout_s=60) == 0
    killed = master.finished(task)
    assert killed.outcome is TaskOutcome.FAILED
    assert "worker shut down" in killed.error


def test_a_restarted_worker_resends_its_cached_reports(
    master: ScriptedMaster, start_worker: StartWorker, tmp_path: Path
) -> None:
    """Reports left in ExecutionLogCacheFolder by an earlier run are sent at startup, with
    their original message ids, and leave the cache."""
    cache = tmp_path / "worker" / "elogcache"
    task_id = uuid.uuid4()
    left = [
        TaskLog(
            task_id=task_id,
            attempt=1,
            execution_id=7,
            worker_id="w1",
            entries=(LogEntry(seq=i, time=datetime.now(UTC), message=f"cached {i}"),),
        )
        for i in range(3)
    ]
    outbox = Outbox(cache, 100)
    outbox.append(
        [Outgoing(topology.STATUS_EXCHANGE, topology.STATUS_ROUTING_KEY, m) for m in left]
    )
    with start_worker():
        got = wait_for(
            lambda: (
                (ids := [m.message_id for _, m in master.received.status if m.task_id == task_id])
                and len(ids) >= 3
                and ids
            ),
            30,
        )
    assert got[:3] == [m.message_id for m in left]
    assert len(Outbox(cache, 100)) == 0
