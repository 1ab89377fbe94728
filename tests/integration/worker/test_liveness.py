"""Heartbeats keep their pace under an output flood; a cancel kills a whole process tree."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import psutil

from dispatcher.broker import topology
from dispatcher.broker.provisioning import DENY, Permissions, worker_permissions
from schemas.messages import TaskOutcome
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for
from tests.fixtures.worker import ScriptedMaster, WorkerProcess, write_testkit

StartWorker = Callable[..., AbstractContextManager[WorkerProcess]]
TASK_INTERVAL_S = 0.5
MARGIN_S = 2.0


def test_heartbeats_keep_their_interval_during_an_output_flood(
    master: ScriptedMaster, start_worker: StartWorker, tmp_path: Path
) -> None:
    """A package flooding stdout for 6 s never stretches a heartbeat gap past the interval
    plus a generous margin."""
    project = master.deploy(write_testkit(tmp_path / "kit"))
    with start_worker(TaskHeartbeatInterval="00:00:00.5"):
        task = master.assign(project, "Flood", {"Seconds": 6.0})
        wait_for(lambda: master.started(task), 30)
        started_at = time.monotonic()
        finished = master.finished(task, timeout_s=120)
    assert finished.outcome is TaskOutcome.SUCCEEDED, finished.error
    beats = [
        at
        for at, beat in master.heartbeats()
        if at >= started_at and any(r.task_id == task.task_id for r in beat.running)
    ]
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    lines = len(master.log_entries(task))
    print(
        f"\nflood: {lines} log lines, {len(beats)} task heartbeats, "
        f"largest gap {max(gaps):.3f} s (interval {TASK_INTERVAL_S} s)"
    )
    assert len(beats) >= 6
    assert max(gaps) < TASK_INTERVAL_S + MARGIN_S
    assert lines > 10_000
    assert master.log_entries(task)[-2].message.startswith("flooded ")


def test_cancel_kills_the_package_and_its_children(
    master: ScriptedMaster, start_worker: StartWorker, tmp_path: Path
) -> None:
    """A cancel kills the package, its children and a grandchild; the master gets canceled."""
    project = master.deploy(write_testkit(tmp_path / "kit"))
    with start_worker(kill_grace_s=2):
        task = master.assign(project, "Spawner")
        text = wait_for(
            lambda: (t := master.log_text(task)).count("child pid") >= 4 and t, timeout_s=30
        )
        pids = [int(p) for p in re.findall(r"(?:child|grandchild) pid (\d+)", text)]
        started = master.started(task)
        assert started
        assert all(_alive(pid) for pid in pids)
        canceled_at = time.monotonic()
        master.cancel(task)
        wait_for(lambda: not any(_alive(pid) for pid in pids), timeout_s=15)
        died_after = time.monotonic() - canceled_at
        finished = master.finished(task, timeout_s=30)
    print(f"\ncancel: {len(pids)} processes gone {died_after:.3f} s after the cancel was sent")
    assert finished.outcome is TaskOutcome.CANCELED
    assert "stop_requested" in finished.error
    assert len(pids) == 4


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_failing_heartbeats_past_the_tolerance_kill_running_packages(
    master: ScriptedMaster,
    start_worker: StartWorker,
    tls_broker: TlsBroker,
    vhost: str,
    tmp_path: Path,
) -> None:
    """A worker whose heartbeats are refused (no write permission on the heartbeat
    exchange) for HeartbeatErrorTolerance kills its package tree and reports it failed."""
    tls_broker.admin.set_permissions(
        vhost,
        "w1",
        Permissions(
            configure=DENY,
            write=f"^{re.escape(topology.STATUS_EXCHANGE)}$",
            read=worker_permissions("w1").read,
        ),
    )
    project = master.deploy(write_testkit(tmp_path / "kit"))
    with start_worker(HeartbeatErrorTolerance="00:00:02", kill_grace_s=1):
        task = master.assign(project, "Spawner")
        text = wait_for(
            lambda: (t := master.log_text(task)).count("child pid") >= 4 and t, timeout_s=30
        )
        pids = [int(p) for p in re.findall(r"(?:child|grandchild) pid (\d+)", text)]
        finished = master.finished(task, timeout_s=30)
        wait_for(lambda: not any(_alive(pid) for pid in pids), timeout_s=15)
    assert finished.outcome is TaskOutcome.FAILED
    assert finished.error == "heartbeat error tolerance exceeded"
    assert not master.heartbeats()
