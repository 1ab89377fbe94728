"""A real worker keeps its disk bounded: finished attempts' folders go after their
retention while a running attempt's folder stays, and a disk with too little free space
stops it taking tasks, and it says why."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from schemas.messages import AgentHeartbeat, TaskFinished, TaskOutcome
from tests.fixtures.polling import wait_for
from tests.fixtures.worker import ScriptedMaster, WorkerProcess, write_testkit

StartWorker = Callable[..., AbstractContextManager[WorkerProcess]]

RETENTION_S = 2.0
SHORT_RETENTION = {
    "TasksRootFolderRetention": "00:00:02",
    "RetentionSweepInterval": "00:00:00.5",
}


def events(worker: WorkerProcess, name: str) -> list[dict[str, object]]:
    """The worker's JSON log lines whose event is ``name``."""
    found = []
    for line in worker.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == name:
            found.append(entry)
    return found


def test_finished_attempts_folders_go_and_a_running_ones_stays(
    master: ScriptedMaster, start_worker: StartWorker, tmp_path: Path
) -> None:
    """With a 2 s retention, the folders and logs of finished Echo runs are swept; a Hold
    that writes nothing for 20 s, ten retentions, keeps its folder until it ends (and
    succeeds, since its folder was never touched), then loses it too."""
    project = master.deploy(write_testkit(tmp_path / "kit"))
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    with start_worker(**SHORT_RETENTION, MaxTaskCount=4) as worker:
        tasks_root = worker.folder / "tasks"
        hold = master.assign(project, "Hold", {"Seconds": 20, "StampDir": str(stamps)})
        wait_for(lambda: master.started(hold), 60, "the Hold package to start")
        held_since = time.monotonic()
        echoes = [master.assign(project, "Echo", {"Word": f"w{i}"}) for i in range(3)]
        for echo in echoes:
            assert master.finished(echo, timeout_s=60).outcome is TaskOutcome.SUCCEEDED
        for echo in echoes:  # its folder, its log, and the emptied task folder
            wait_for(
                lambda echo=echo: not (tasks_root / str(echo.task_id)).exists(),
                30,
                f"the folder of finished attempt {echo.task_id} to be swept",
            )
        hold_folder = tasks_root / str(hold.task_id) / "1"
        # Past the retention, several sweeps later, the running attempt's folder stays.
        wait_for(lambda: time.monotonic() - held_since > 3 * RETENTION_S, 30)
        ended = [m for _, m in master.about(hold) if isinstance(m, TaskFinished)]
        assert ended == [], "the Hold package ended before the check; the box is very slow"
        assert hold_folder.is_dir()
        assert (hold_folder / "hold.py").is_file()
        assert (hold_folder.parent / "1.log").is_file()

        finished = master.finished(hold, timeout_s=60)
        assert finished.outcome is TaskOutcome.SUCCEEDED, finished.error
        wait_for(
            lambda: not (tasks_root / str(hold.task_id)).exists(),
            30,
            "the Hold attempt's folder to be swept once it ended",
        )
        assert worker.stop() == 0
    assert events(worker, "retention.remove_failed") == []


def test_a_nearly_full_disk_stops_the_worker_taking_tasks_and_it_says_why(
    master: ScriptedMaster, start_worker: StartWorker, tmp_path: Path
) -> None:
    """TaskRequestMinDiskSpace above the real free space: the assignment waits unstarted
    (unacked, as under the CPU gate), the heartbeats say accepting false and why, and
    worker.not_accepting is logged once. Stopped, the worker hands the assignment back,
    and a worker without the gate runs it."""
    project = master.deploy(write_testkit(tmp_path / "kit"))
    free_mb = shutil.disk_usage(tmp_path).free / (1024 * 1024)
    with start_worker(TaskRequestMinDiskSpace=int(free_mb) + 100_000) as worker:
        task = master.assign(project, "Echo", {"Word": "full"})

        def refusing() -> list[AgentHeartbeat]:
            beats = [b for _, b in master.heartbeats() if not b.accepting]
            return beats if len(beats) >= 3 else []

        beats = wait_for(refusing, 60, "three heartbeats saying the worker is not accepting")
        assert all("free disk" in b.not_accepting for b in beats), beats[-1].not_accepting
        assert all(b.free_disk_mb > 0 for b in beats)
        assert beats[-1].free_disk_mb < free_mb + 100_000
        time.sleep(2.0)  # several more gate checks: still nothing starts
        assert master.started(task) == []
        logged = events(worker, "worker.not_accepting")
        assert len(logged) == 1
        assert "free disk" in str(logged[0]["message"])
        assert worker.stop() == 0
    assert master.started(task) == []

    with start_worker(TaskRequestMinDiskSpace=0):
        finished = master.finished(task, timeout_s=60)
    assert finished.outcome is TaskOutcome.SUCCEEDED, finished.error
    assert len(master.started(task)) == 1
