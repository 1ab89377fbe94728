"""The worker's disk stays bounded: what the retention sweep removes (by age, by size,
oldest first), what it never removes (a held attempt's folder, a project in use, a report
not yet sent), and the settings and load gate that go with it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from consumers.worker.outbox import OUTBOX_FILE, Outbox, Outgoing
from consumers.worker.resources import LoadMonitor
from consumers.worker.retention import (
    MIB,
    Bound,
    Entry,
    Policy,
    Removals,
    Retention,
    Sizes,
    select,
    task_entries,
)
from consumers.worker.settings import WorkerSettings
from dispatcher import metrics
from schemas.messages import LogEntry, TaskLog
from schemas.states import AttemptKey

NOW = 1_900_000_000.0
DAY = 86400.0
HASH_A, HASH_B, HASH_C = ("a" * 64, "b" * 64, "c" * 64)
ROOMY = Bound(retention_s=DAY, max_bytes=10**9)


def entry(key: str, age_s: float, size: int = 1) -> Entry:
    return Entry(key, (Path(key),), NOW - age_s, size)


def keys(entries: Collection[Entry]) -> list[str]:
    return [e.key for e in entries]


# -- selection ------------------------------------------------------------------------------


def test_entries_past_retention_go_oldest_first() -> None:
    chosen = select(
        [entry("new", 10), entry("older", 3 * DAY), entry("old", 2 * DAY)],
        Bound(retention_s=DAY, max_bytes=10**9),
        now=NOW,
        keep=lambda _e: False,
    )
    assert keys(chosen) == ["older", "old"]


def test_over_the_size_bound_the_oldest_go_until_it_fits() -> None:
    entries = [entry(f"e{i}", age_s=100 - i, size=10) for i in range(5)]  # e0 oldest
    chosen = select(entries, Bound(retention_s=DAY, max_bytes=25), now=NOW, keep=lambda _e: False)
    assert keys(chosen) == ["e0", "e1", "e2"]


def test_a_kept_entry_is_never_chosen_but_counts_in_the_total() -> None:
    """The oldest entry, past retention and over the bound, is kept (a running attempt);
    the next ones go instead, because the kept one still takes its space."""
    entries = [entry("running", 5 * DAY, size=20), entry("a", 50, size=10), entry("b", 10, 10)]
    chosen = select(
        entries, Bound(retention_s=DAY, max_bytes=25), now=NOW, keep=lambda e: e.key == "running"
    )
    assert keys(chosen) == ["a", "b"]


# -- the task folders -----------------------------------------------------------------------


def make_attempt(
    root: Path, task_id: uuid.UUID, attempt: int, *, age_s: float, size: int = 100
) -> Path:
    """An attempt as the worker leaves it: ``<task>/<n>/`` with a file, ``<task>/<n>.log``."""
    folder = root / str(task_id) / str(attempt)
    folder.mkdir(parents=True)
    (folder / "out.bin").write_bytes(b"x" * size)
    log = folder.parent / f"{attempt}.log"
    log.write_text("line\n")
    stamp = NOW - age_s
    for path in (folder / "out.bin", folder, log):
        os.utime(path, (stamp, stamp))
    return folder


class FakeProjects:
    """Our ProjectCache seam over a real folder."""

    def __init__(self, folder: Path, recent: Collection[str] = ()) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.recent = set(recent)
        self.forgotten: list[str] = []
        self.lock = threading.Lock()

    def recently_used(self, within_s: float) -> set[str]:
        return set(self.recent)

    @contextmanager
    def removing(self) -> Iterator[None]:
        with self.lock:
            yield

    def forget(self, project_hash: str) -> None:
        self.forgotten.append(project_hash)


class FakeOutbox:
    def __init__(self) -> None:
        self.pruned = 0

    def prune(self) -> int:
        self.pruned += 1
        return 0


def retention(
    tmp_path: Path,
    *,
    held: Collection[AttemptKey] = (),
    tasks: Bound = ROOMY,
    projects: Bound = ROOMY,
    store: FakeProjects | None = None,
    running_hashes: Collection[str] = (),
    removals: Removals | None = None,
) -> Retention:
    return Retention(
        Policy(tasks=tasks, projects=projects, interval_s=0.01),
        tasks_root=tmp_path / "tasks",
        held_attempts=lambda: held,
        held_projects=lambda: running_hashes,
        projects=store or FakeProjects(tmp_path / "projects"),
        outbox=FakeOutbox(),
        removals=removals,
        clock=lambda: NOW,
    )


def test_old_attempts_go_and_a_held_one_stays_however_old(tmp_path: Path) -> None:
    """Past TasksRootFolderRetention an attempt's folder and log go, and its task folder
    when it is left empty; the attempt the registry holds stays, older still."""
    root = tmp_path / "tasks"
    old, running, young = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    make_attempt(root, old, 1, age_s=3 * DAY)
    make_attempt(root, old, 2, age_s=2 * DAY)
    make_attempt(root, running, 1, age_s=9 * DAY)
    make_attempt(root, young, 1, age_s=60)

    removed = retention(tmp_path, held={(running, 1)}).sweep_tasks()

    assert removed == 2
    assert not (root / str(old)).exists()
    assert (root / str(running) / "1" / "out.bin").exists()
    assert (root / str(running) / "1.log").exists()
    assert (root / str(young) / "1").is_dir()


def test_over_the_size_bound_the_oldest_attempts_go_first(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    tasks = [uuid.uuid4() for _ in range(4)]
    for age, task_id in zip((400, 300, 200, 100), tasks, strict=True):
        make_attempt(root, task_id, 1, age_s=age, size=1000)  # ~1005 bytes each

    retention(tmp_path, tasks=Bound(DAY, max_bytes=2500)).sweep_tasks()

    assert [(root / str(t)).exists() for t in tasks] == [False, False, True, True]


def test_names_the_worker_did_not_write_are_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    stray = root / "not-a-task"
    stray.mkdir(parents=True)
    notes = root / str(uuid.uuid4()) / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("mine")
    for path in (stray, notes, notes.parent):
        os.utime(path, (NOW - 30 * DAY, NOW - 30 * DAY))

    assert retention(tmp_path).sweep_tasks() == 0
    assert stray.exists()
    assert notes.exists()


def test_a_missing_tasks_root_is_nothing_to_do(tmp_path: Path) -> None:
    assert retention(tmp_path).sweep_tasks() == 0


def test_sizes_of_finished_attempts_are_remembered_until_they_change(tmp_path: Path) -> None:
    """A finished attempt is walked once; one that changes (rerun, new inode) is walked again."""
    root = tmp_path / "tasks"
    task_id = uuid.uuid4()
    folder = make_attempt(root, task_id, 1, age_s=100, size=10)
    sizes = Sizes()
    first = task_entries(root, (), sizes)[0].size
    (folder / "late.bin").write_bytes(b"y" * 50)  # below the top level: not seen ...
    os.utime(folder, (NOW - 100, NOW - 100))
    assert task_entries(root, (), sizes)[0].size == first
    held = {f"{task_id}/1"}  # ... unless the attempt is held, and so walked each time
    assert task_entries(root, held, sizes)[0].size == first + 50


@contextmanager
def unremovable(path: Path) -> Iterator[None]:
    """Make the entries of ``path`` impossible to remove: immutable for root (who ignores
    permissions), read-only otherwise."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("needs chattr to make a folder unremovable for root")
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"chattr +i not supported here: {done.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)


def failures(what: str) -> float:
    value = metrics.WORKER.get_sample_value(
        "scaleout_worker_disk_remove_failures_total", {"what": what}
    )
    return value or 0.0


def removed(what: str) -> float:
    value = metrics.WORKER.get_sample_value("scaleout_worker_disk_removed_total", {"what": what})
    return value or 0.0


def test_a_folder_that_cannot_be_removed_is_logged_counted_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The sweep goes on past it (the next old attempt still goes), logs it once, counts
    every failure."""
    root = tmp_path / "tasks"
    stuck, other = uuid.uuid4(), uuid.uuid4()
    stuck_folder = make_attempt(root, stuck, 1, age_s=5 * DAY)
    make_attempt(root, other, 1, age_s=4 * DAY)
    sweeper = retention(tmp_path)
    before = failures("task_folder")

    with unremovable(stuck_folder), caplog.at_level(logging.DEBUG):
        sweeper.sweep()
        sweeper.sweep()

    assert stuck_folder.exists()
    assert not (root / str(other)).exists()
    assert failures("task_folder") - before == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in warnings] == ["retention.remove_failed"]


def test_the_loop_sweeps_until_stopped(tmp_path: Path) -> None:
    make_attempt(tmp_path / "tasks", uuid.uuid4(), 1, age_s=3 * DAY)
    outbox = FakeOutbox()
    sweeper = Retention(
        Policy(tasks=Bound(DAY, 10**9), projects=Bound(DAY, 10**9), interval_s=0.01),
        tasks_root=tmp_path / "tasks",
        held_attempts=frozenset,
        held_projects=frozenset,
        projects=FakeProjects(tmp_path / "projects"),
        outbox=outbox,
        clock=lambda: NOW,
    )
    stop = threading.Event()
    thread = threading.Thread(target=sweeper.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 30
    while outbox.pruned < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert outbox.pruned >= 3
    assert list((tmp_path / "tasks").iterdir()) == []


# -- the project cache ----------------------------------------------------------------------


def make_project(folder: Path, project_hash: str, *, age_s: float, size: int = 100) -> None:
    root = folder / project_hash
    root.mkdir(parents=True)
    (root / "manifest.json").write_bytes(b"{" + b" " * size + b"}")
    (folder / f"{project_hash}.zip").write_bytes(b"z" * size)
    for path in (root / "manifest.json", root, folder / f"{project_hash}.zip"):
        os.utime(path, (NOW - age_s, NOW - age_s))


def test_unused_project_versions_go_and_those_in_use_stay(tmp_path: Path) -> None:
    """A version unused past ProjectCacheRetention goes (folder and zip); one a running
    attempt uses, or one just handed out, stays however old its files are."""
    store = FakeProjects(tmp_path / "projects", recent={HASH_C})
    for project_hash in (HASH_A, HASH_B, HASH_C):
        make_project(store.folder, project_hash, age_s=3 * DAY)
    sweeper = retention(tmp_path, store=store, running_hashes={HASH_B})

    assert sweeper.sweep_projects() == 1

    assert not (store.folder / HASH_A).exists()
    assert not (store.folder / f"{HASH_A}.zip").exists()
    assert (store.folder / HASH_B).is_dir()
    assert (store.folder / HASH_C).is_dir()
    assert store.forgotten == [HASH_A]


def test_over_the_size_bound_the_least_recently_used_version_goes(tmp_path: Path) -> None:
    store = FakeProjects(tmp_path / "projects")
    make_project(store.folder, HASH_A, age_s=300, size=1000)
    make_project(store.folder, HASH_B, age_s=200, size=1000)
    make_project(store.folder, HASH_C, age_s=100, size=1000)

    retention(tmp_path, store=store, projects=Bound(DAY, max_bytes=4500)).sweep_projects()

    assert sorted(p.name for p in store.folder.iterdir()) == sorted(
        [HASH_B, f"{HASH_B}.zip", HASH_C, f"{HASH_C}.zip"]
    )


def test_a_staging_folder_goes_only_when_old(tmp_path: Path) -> None:
    """A crash's leftover staging folder goes by age; a fresh one may be an extraction in
    progress and is never removed for size."""
    store = FakeProjects(tmp_path / "projects")
    old, fresh = store.folder / f".{HASH_A[:12]}-old", store.folder / f".{HASH_B[:12]}-new"
    for path, age in ((old, 3 * DAY), (fresh, 10)):
        path.mkdir()
        (path / "big.bin").write_bytes(b"x" * 1000)
        os.utime(path, (NOW - age, NOW - age))

    retention(tmp_path, store=store, projects=Bound(60, max_bytes=10)).sweep_projects()

    assert not old.exists()
    assert fresh.exists()


def test_the_real_store_marks_a_version_used_when_handed_out(tmp_path: Path) -> None:
    """ProjectStore.get marks the version used (and touches its folder), so a sweep keeps it."""
    from consumers.worker.projects import ProjectStore  # noqa: PLC0415
    from dispatcher.projects import build_archive  # noqa: PLC0415
    from schemas.project import content_hash  # noqa: PLC0415
    from tests.fixtures.worker import TESTKIT, write_testkit  # noqa: PLC0415

    assert TESTKIT.is_dir()
    archive = build_archive(write_testkit(tmp_path / "kit"))
    project_hash = content_hash(archive)
    cache = tmp_path / "projects"
    cache.mkdir()
    (cache / f"{project_hash}.zip").write_bytes(archive)
    store = ProjectStore(cache, lambda _h: None, timeout_s=1)

    project = store.get(project_hash)

    assert project_hash in store.recently_used(60)
    assert time.time() - (cache / project_hash).stat().st_mtime < 60
    sweeper = Retention(
        Policy(tasks=Bound(DAY, 10**9), projects=Bound(1, max_bytes=1), interval_s=1),
        tasks_root=tmp_path / "tasks",
        held_attempts=frozenset,
        held_projects=frozenset,
        projects=store,
        outbox=FakeOutbox(),
        clock=lambda: time.time() + DAY,
    )
    assert sweeper.sweep_projects() == 0
    assert project.root.is_dir()


# -- the log cache (the outbox bounds itself) -----------------------------------------------


def report(seq: int, text: str = "") -> Outgoing:
    message = TaskLog(
        task_id=uuid.uuid4(),
        attempt=1,
        execution_id=1,
        worker_id="w1",
        entries=(LogEntry(seq=seq, time=datetime.now(UTC), message=text or f"line {seq}"),),
    )
    return Outgoing("scaleout.status", "status", message)


def sent_seqs(outbox: Outbox) -> list[int]:
    got: list[int] = []

    def send(chunk: list[Outgoing]) -> int:
        for item in chunk:
            assert isinstance(item.message, TaskLog)
            got.append(item.message.entries[0].seq)
        return len(chunk)

    outbox.resend(send)
    return got


def test_reports_cached_past_the_retention_are_dropped_and_counted(tmp_path: Path) -> None:
    clock = [NOW]
    outbox = Outbox(tmp_path, 1000, retention_s=DAY, clock=lambda: clock[0])
    outbox.append([report(0), report(1)])
    clock[0] += 2 * DAY
    outbox.append([report(2)])
    before = removed("log_cache")

    dropped = outbox.prune()

    assert (dropped, outbox.dropped, len(outbox)) == (2, 2, 1)
    assert removed("log_cache") - before == 2
    assert sent_seqs(outbox) == [2]


def test_past_the_size_bound_the_oldest_reports_are_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(tmp_path, 1000, max_bytes=3000)
    outbox.append([report(i, "x" * 500) for i in range(10)])  # ~900 bytes a line
    kept = len(outbox)
    assert (tmp_path / OUTBOX_FILE).stat().st_size <= 3000
    assert 0 < kept < 10
    assert outbox.dropped == 10 - kept
    assert sent_seqs(outbox) == list(range(10 - kept, 10))
    assert "outbox.dropped" in caplog.text
    assert "size" in caplog.text


def test_a_report_is_never_dropped_while_it_is_being_sent(tmp_path: Path) -> None:
    """prune() waits for a resend in progress, then drops only what is still unsent."""
    clock = [NOW]
    outbox = Outbox(tmp_path, 1000, retention_s=DAY, clock=lambda: clock[0])
    outbox.append([report(i) for i in range(3)])
    clock[0] += 2 * DAY
    pruned: list[int] = []
    pruner = threading.Thread(target=lambda: pruned.append(outbox.prune()))

    def send(chunk: list[Outgoing]) -> int:
        pruner.start()
        pruner.join(timeout=0.5)
        assert pruner.is_alive()  # blocked behind the resend
        return 2  # two confirmed, the third not

    assert outbox.resend(send) == 2
    pruner.join(timeout=30)
    assert pruned == [1]
    assert len(outbox) == 0
    assert outbox.dropped == 1


def test_lines_from_before_the_age_stamp_are_kept(tmp_path: Path) -> None:
    """A line without ``cached_at`` (an older worker's) is not aged; it is still sent."""
    (tmp_path / OUTBOX_FILE).write_text(
        '{"exchange": "scaleout.status", "routing_key": "status", "body": '
        + json.dumps(report(7).message.model_dump_json())
        + "}\n"
    )
    outbox = Outbox(tmp_path, 1000, retention_s=1, clock=lambda: NOW)
    assert outbox.prune() == 0
    assert sent_seqs(outbox) == [7]


# -- the disk gate --------------------------------------------------------------------------


def test_a_nearly_full_disk_refuses_tasks_and_says_why_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    free_mb = shutil.disk_usage(tmp_path).free / MIB
    monitor = LoadMonitor(
        max_cpu=100, min_memory_mb=0, min_disk_mb=free_mb + 10_000, disk_path=tmp_path / "x"
    )

    with caplog.at_level(logging.INFO):
        reasons = [monitor.refusal() for _ in range(3)]

    assert not monitor.accepting()
    assert reasons[0].startswith("free disk ")
    assert " MB < " in reasons[0]
    assert monitor.sample().free_disk_mb == pytest.approx(free_mb, rel=0.05)
    events = [r.getMessage().split(":")[0] for r in caplog.records]
    assert events.count("worker.not_accepting") == 1


def test_the_gate_logs_when_the_worker_accepts_again(caplog: pytest.LogCaptureFixture) -> None:
    from consumers.worker.resources import Load  # noqa: PLC0415

    monitor = LoadMonitor(max_cpu=50, min_memory_mb=0)
    with caplog.at_level(logging.INFO):
        assert monitor.refusal(Load(cpu_percent=93, free_memory_mb=1000)) == "cpu 93% > 50%"
        assert monitor.refusal(Load(cpu_percent=95, free_memory_mb=1000)) == "cpu 95% > 50%"
        assert monitor.refusal(Load(cpu_percent=10, free_memory_mb=1000)) == ""
    events = [r.getMessage().split(":")[0] for r in caplog.records]
    assert events == ["worker.not_accepting", "worker.accepting"]


# -- the settings ---------------------------------------------------------------------------


def test_disk_settings_have_their_defaults_and_file_keys(tmp_path: Path) -> None:
    defaults = WorkerSettings(worker_id="w1")
    assert defaults.tasks_root_folder_retention_s == 7 * DAY
    assert defaults.execution_log_cache_retention_s == 7 * DAY
    assert defaults.project_cache_retention_s == 7 * DAY
    assert defaults.retention_sweep_interval_s == 300
    assert defaults.task_request_min_disk_mb == 500
    path = tmp_path / "w.toml"
    path.write_text(
        '[worker]\nAgentId = "w1"\nTasksRootFolderRetention = "1.00:00:00"\n'
        'TasksRootFolderMaxSize = 2048\nExecutionLogCacheRetention = "02:00:00"\n'
        'ExecutionLogCacheMaxSize = 64\nProjectCacheRetention = "00:30:00"\n'
        'ProjectCacheMaxSize = 128\nRetentionSweepInterval = "00:00:00.5"\n'
        "TaskRequestMinDiskSpace = 250\n"
    )
    s = WorkerSettings.load(path)
    assert s.tasks_root_folder_retention_s == DAY
    assert s.tasks_root_folder_max_size_mb == 2048
    assert s.execution_log_cache_retention_s == 7200
    assert s.execution_log_cache_max_size_mb == 64
    assert s.project_cache_retention_s == 1800
    assert s.project_cache_max_size_mb == 128
    assert s.retention_sweep_interval_s == 0.5
    assert s.task_request_min_disk_mb == 250


BOUNDS = [
    "tasks_root_folder_retention_s",
    "tasks_root_folder_max_size_mb",
    "execution_log_cache_retention_s",
    "execution_log_cache_max_size_mb",
    "project_cache_retention_s",
    "project_cache_max_size_mb",
    "retention_sweep_interval_s",
]


@pytest.mark.parametrize(
    ("field", "value"),
    [(f, v) for f in BOUNDS for v in (0, -1)]
    + [(f, "00:00:00") for f in BOUNDS if f.endswith("_s")],
)
def test_a_zero_or_negative_bound_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        WorkerSettings(worker_id="w1", **{field: value})
    assert field in str(caught.value)
    assert "greater than 0" in str(caught.value)


def test_a_negative_min_disk_space_is_refused() -> None:
    with pytest.raises(ValidationError, match="task_request_min_disk_mb"):
        WorkerSettings(worker_id="w1", task_request_min_disk_mb=-5)
