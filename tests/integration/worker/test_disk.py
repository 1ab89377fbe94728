"""A real worker keeps its disk bounded: finished attempts' folders go after their
retention while a running attempt's folder stays, and a disk with too little free space
stops it taking tasks, and it says why. A report cache on a disk that is full loses no
report (a real tmpfs, filled)."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO

from consumers.worker.outbox import OUTBOX_FILE
from dispatcher.broker.provisioning import worker_permissions
from schemas.messages import AgentHeartbeat, TaskFinished, TaskOutcome
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for
from tests.fixtures.worker import ScriptedMaster, WorkerProcess, write_testkit
from tests.integration.worker.test_broker_restart import (
    _assert_complete_once,
    _refuse_status_writes,
)

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


@contextmanager
def tiny_filesystem(path: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` at ``path``: a disk that really fills (ENOSPC)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mounted.returncode == 0, (
        f"this test mounts a small tmpfs, which needs root (CAP_SYS_ADMIN): {mounted.stderr}"
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until its filesystem has no space left."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        while _wrote_some(out):
            pass
    return filler


def _wrote_some(out: BinaryIO) -> bool:
    try:
        return bool(out.write(b"\0" * 4096))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return False


def test_a_full_report_cache_holds_the_reports_refuses_tasks_and_loses_nothing(
    master: ScriptedMaster,
    start_worker: StartWorker,
    tls_broker: TlsBroker,
    vhost: str,
    tmp_path: Path,
) -> None:
    """ExecutionLogCacheFolder on a tmpfs filled to the last byte while the broker refuses
    the worker's reports: the worker logs outbox.write_failed, writes no torn line, and its
    heartbeats say it takes no task and why. Space again: the reports are cached
    (outbox.write_recovered); the broker again: they arrive, each line once and in order,
    and the package's end."""
    project = master.deploy(write_testkit(tmp_path / "kit"))
    stop_file = tmp_path / "stop"
    with (
        tiny_filesystem(tmp_path / "cache", 512) as cache,
        start_worker(ExecutionLogCacheFolder=str(cache)) as worker,
    ):
        task = master.assign(project, "Ticker", {"StopFile": str(stop_file)})
        wait_for(lambda: len(master.log_entries(task)) >= 5, 30, "the first lines")
        filler = fill(cache)
        _refuse_status_writes(tls_broker, vhost)
        wait_for(lambda: events(worker, "outbox.write_failed"), 30, "outbox.write_failed")

        def refusing() -> list[AgentHeartbeat]:
            beats = [
                b
                for _, b in master.heartbeats()
                if not b.accepting and "report cache not writable" in b.not_accepting
            ]
            return beats if len(beats) >= 2 else []

        beats = wait_for(refusing, 30, "heartbeats saying the report cache is not writable")
        assert "No space left on device" in beats[-1].not_accepting
        assert [b.running for b in beats][-1], "the package still runs (its output waits)"
        outbox = cache / OUTBOX_FILE
        assert not outbox.exists() or outbox.read_text() == "", "a torn line was left"

        filler.unlink()
        wait_for(lambda: events(worker, "outbox.write_recovered"), 30, "the cache to recover")
        wait_for(lambda: outbox.exists() and outbox.read_text().strip(), 30, "cached reports")
        tls_broker.admin.set_permissions(vhost, "w1", worker_permissions("w1"))
        stop_file.touch()
        finished = master.finished(task, timeout_s=60)
        wait_for(lambda: not outbox.read_text().strip(), 30, "the cache to empty")
        assert worker.stop() == 0
    assert finished.outcome is TaskOutcome.SUCCEEDED, finished.error
    _assert_complete_once(master, task)
    assert events(worker, "outbox.lost") == []
    assert len(events(worker, "outbox.write_failed")) == 1
