"""TaskBacklog: a worker takes assignments beyond MaxTaskCount and holds them until a slot
frees; MaxTaskCount still bounds what runs, a cancel reaches a held one, and one held past
its dispatch lease is never started."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from dispatcher.broker.topology import worker_queue
from schemas.messages import TaskOutcome
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for
from tests.fixtures.worker import ScriptedMaster, WorkerProcess, write_testkit

StartWorker = Callable[..., AbstractContextManager[WorkerProcess]]


def _spans(stamps: Path) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in (p.read_text().split() for p in stamps.iterdir())]


def test_a_backlog_holds_assignments_beyond_max_task_count_and_runs_one_at_a_time(
    master: ScriptedMaster,
    start_worker: StartWorker,
    tls_broker: TlsBroker,
    vhost: str,
    tmp_path: Path,
) -> None:
    """MaxTaskCount 1, TaskBacklog 2, three assignments: the worker takes all three at
    once (none is left in its queue), says its backlog in its heartbeat, runs them one at a
    time, and a cancel of the third while it is held keeps it from ever starting."""
    project = master.deploy(write_testkit(tmp_path / "kit"))
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    with start_worker(MaxTaskCount=1, TaskBacklog=2) as worker:
        # The first holds its slot long enough that the cancel below surely finds the
        # third still held (not yet waiting for a slot); either way it must not start.
        first = master.assign(project, "Hold", {"Seconds": 5, "StampDir": str(stamps)})
        second = master.assign(project, "Hold", {"Seconds": 0.5, "StampDir": str(stamps)})
        third = master.assign(project, "Hold", {"Seconds": 0.5, "StampDir": str(stamps)})
        wait_for(lambda: master.started(first), 30, "the first assignment to start")
        wait_for(
            lambda: tls_broker.queue_depth(vhost, worker_queue("w1")) == 0,
            30,
            "the worker to take all three assignments",
        )
        master.cancel(third)
        reports = [master.finished(task, timeout_s=60) for task in (first, second, third)]
        beats = [beat for _, beat in master.heartbeats()]
    assert [r.outcome for r in reports] == [
        TaskOutcome.SUCCEEDED,
        TaskOutcome.SUCCEEDED,
        TaskOutcome.CANCELED,
    ]
    assert "before it started" in reports[2].error
    assert not master.started(third)
    assert "task.cancel_early" in worker.log()
    assert beats
    assert {(b.max_task_count, b.task_backlog) for b in beats} == {(1, 2)}
    spans = sorted(_spans(stamps))
    assert len(spans) == 2
    assert spans[0][1] <= spans[1][0]  # never two at once


def test_an_assignment_held_past_its_dispatch_lease_is_never_started(
    master: ScriptedMaster, start_worker: StartWorker, tmp_path: Path
) -> None:
    """MaxTaskCount 1, TaskBacklog 1: an assignment whose dispatch lease (6 s) ends while
    it waits behind a 7 s package is acked unstarted, with no report (the
    master's expiry timer gives its task a new attempt). The same lease would have been
    enough had it not waited (TaskHeartbeatInterval 1 s is the margin)."""
    project = master.deploy(write_testkit(tmp_path / "kit"))
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    with start_worker(MaxTaskCount=1, TaskBacklog=1, TaskHeartbeatInterval=1) as worker:
        first = master.assign(project, "Hold", {"Seconds": 7, "StampDir": str(stamps)})
        held = master.assign(project, "Hold", {"Seconds": 0.1, "StampDir": str(stamps)}, lease_s=6)
        assert master.finished(first, timeout_s=60).outcome is TaskOutcome.SUCCEEDED
        wait_for(lambda: "task.lease_lapsed" in worker.log(), 30, "the held one to be dropped")
        time.sleep(1)  # had it started, its started report would arrive within this
    assert sum("task.lease_lapsed" in line for line in worker.log().splitlines()) == 1
    assert master.about(held) == []  # neither started nor finished: the master decides
    assert len(_spans(stamps)) == 1
