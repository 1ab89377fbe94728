"""No package outlives its worker (issue 14, item 2), on a real master and worker.

1. ``kill -9`` of a worker running a package: the package dies with it at once (the
   parent-death signal), long before its lease lapses, so the retry that follows never
   runs next to it, and the checker counts no orphaned run.
2. What the parent-death signal cannot reach, the restarted worker stops: a package that
   started a child in its group and a daemon that double-forked into a session of its own;
   after the kill both live on (the signal goes to the package's own process only), and
   the restarted worker stops both before it takes a task (``worker.orphan_stopped``).

The package processes are found by their working folder, under the worker's
TasksRootFolder, read from ``/proc``: not by the mark the worker itself relies on. The
checker's ``orphaned_runs`` rule is also tried on a hand-made history (no cluster, so it
is not marked chaos).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dispatcher.catalog import Catalog
from dispatcher.projects import build_archive
from schemas.states import ExecutionStatus
from tests.chaos.checker import (
    ORPHAN_MARGIN_S,
    Checker,
    Fault,
    Kill,
    Record,
    orphaned_runs,
    read_records,
)
from tests.chaos.cluster import CHAOS_PROJECT, FOLDER, PROJECT, Cluster, Timing
from tests.chaos.nemesis import Plan, start_execution
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for

FAMILY = '''"""Family: records its start, starts a child in its own process group and a daemon that
double-forks into a session of its own, prints their pids, sleeps Seconds, records its
effect. Its children sleep for ten minutes with no pipe of the worker's."""

import os
import subprocess
import sys
import time

import record

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]
QUIET = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}

record.write("begin")
child = subprocess.Popen(SLEEP, **QUIET)
read_end, write_end = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(write_end, f"{os.getpid()}\\n".encode())
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.execv(sys.executable, SLEEP)
    os._exit(0)
os.wait()
escaped = int(os.read(read_end, 32))
print(f"family {os.getpid()} child {child.pid} escaped {escaped}", flush=True)
time.sleep(float(sys.argv[1]))
record.write("effect")
'''
FAMILY_PACKAGE = {
    "name": "Family",
    "description": "starts a child and a double-forked daemon, sleeps Seconds, records",
    "entry": {"argv": ["{python}", "family.py", "{Seconds}"]},
    "parameters": [{"name": "Seconds", "type": "float", "default": 1.0}],
}
TIMING = Timing(lease_interval_s=10.0, heartbeat_error_tolerance_s=60.0)
"""Leases long enough that a package running 20 s or more keeps its lease on a loaded
two-core machine (with the suite's 2 s lease a slow beat can cost it, which is another
test's subject), so only the kill ends an attempt here."""
DEATH_S = 10.0
"""The kernel kills the package when the worker dies; this bounds a loaded machine's
scheduling, not the mechanism (the packages run 20 s or more, so a survivor is seen)."""


def project_with_family(folder: Path) -> Path:
    shutil.copytree(CHAOS_PROJECT, folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "family.py").write_text(FAMILY)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["packages"].append(FAMILY_PACKAGE)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.fixture
def one_worker_cluster(
    tmp_path: Path, tls_broker: TlsBroker, vhost: str
) -> Iterator[tuple[Cluster, Catalog]]:
    """A master and w1 on SQLite, the chaos project (plus Family) deployed."""
    timing = TIMING
    url = f"sqlite:///{tmp_path / 'ssisdb.sqlite3'}"
    catalog = Catalog.open(
        url,
        worker_offline_after_s=timing.worker_offline_after_s,
        initial_lease_s=timing.initial_lease_s,
    )
    catalog.init()
    catalog.deploy_project(FOLDER, PROJECT, build_archive(project_with_family(tmp_path / "p")))
    catalog.add_worker_agent("w1", is_enabled=True, max_task_count=4)
    cluster = Cluster(tmp_path, tls_broker, vhost, url, timing).build(("w1",))
    cluster.start()
    try:
        wait_for(lambda: all(w.is_online for w in catalog.list_worker_agents()), 60, "w1 online")
        yield cluster, catalog
    finally:
        cluster.stop()
        catalog.close()
        for process in package_processes(cluster, "w1"):  # a failed test leaks none
            process.kill()


def package_processes(cluster: Cluster, worker: str) -> list[psutil.Process]:
    """Live processes whose working folder is under ``worker``'s TasksRootFolder."""
    tasks = (cluster.root / worker / "tasks").resolve()
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if Path(process.cwd()).is_relative_to(tasks):
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def records(cluster: Cluster) -> list[Record]:
    return read_records(cluster.records_dir / "records.jsonl")


def began(cluster: Cluster, attempt: int = 1) -> bool:
    return any(r.kind == "begin" and r.attempt == attempt for r in records(cluster))


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_a_killed_workers_package_dies_with_it_and_its_retry_runs_alone(
    one_worker_cluster: tuple[Cluster, Catalog],
) -> None:
    """``kill -9`` of w1 while its package has 20 s to go: no package process is left,
    within seconds and before the worker restarts; the retry succeeds, the first attempt
    wrote no effect, and the checker counts no orphaned run."""
    cluster, catalog = one_worker_cluster
    worker = cluster.workers["w1"]
    execution_id = start_execution(catalog, Plan("Work", 20.0, 1))
    wait_for(lambda: began(cluster), 60, "the package to begin")
    assert package_processes(cluster, "w1")

    at = worker.kill9()
    wait_for(lambda: not package_processes(cluster, "w1"), DEATH_S, "the package to die")
    died_within = time.time() - at
    worker.start()
    row = wait_for(
        lambda: (r := catalog.get_execution(execution_id)).status.is_terminal and r,
        120,
        "the execution to end",
    )
    print(f"\nthe package was gone {died_within:.2f} s after its worker's kill -9")
    assert (row.status, row.attempt) == (ExecutionStatus.SUCCEEDED, 2)
    effects = [(r.attempt, r.kind) for r in records(cluster) if r.kind == "effect"]
    assert effects == [(2, "effect")]
    kill = Kill("w1", at)
    assert orphaned_runs(records(cluster), [kill]) == set()
    verdict = Checker([Fault("worker_killed", at, time.time(), "w1")], [kill], 10.0).check(
        [row], records(cluster)
    )
    assert (verdict.orphaned_runs, verdict.lost, verdict.wrong_status) == (0, 0, 0)
    assert "orphaned_runs=0" in verdict.line()


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_a_restarted_worker_stops_what_its_packages_left_running(
    one_worker_cluster: tuple[Cluster, Catalog],
) -> None:
    """Family's child (in its group) and daemon (in a session of its own) outlive the
    ``kill -9`` of w1, as the parent-death signal reaches the package's own process only.
    The restarted worker stops both before it takes a task, and says so."""
    cluster, catalog = one_worker_cluster
    worker = cluster.workers["w1"]
    execution_id = start_execution(catalog, Plan("Family", 120.0, 0))
    wait_for(lambda: began(cluster), 60, "the package to begin")
    # Its line comes once the daemon exists and the fork between them has been reaped.
    line = wait_for(lambda: _family_line(catalog, execution_id), 30, "Family's children")
    before = {p.pid for p in package_processes(cluster, "w1")}
    assert before == {int(word) for word in line.split()[1::2]}, line

    worker.kill9()
    wait_for(lambda: len(package_processes(cluster, "w1")) == 2, DEATH_S, "the package to die")
    left = {p.pid for p in package_processes(cluster, "w1")}
    assert left < before
    worker.start()
    wait_for(lambda: not package_processes(cluster, "w1"), 60, "the leftovers to be stopped")
    stopped = wait_for(lambda: _orphan_events(worker.log()), 30, "worker.orphan_stopped")
    assert {int(e["pid"]) for e in stopped} == left
    assert [r.kind for r in records(cluster)] == ["begin"]


def _family_line(catalog: Catalog, execution_id: int) -> str | None:
    """``family <pid> child <pid> escaped <pid>``, as the master stored the line."""
    for message in catalog.execution_messages(execution_id):
        if message.message.startswith("family "):
            return message.message
    return None


def _orphan_events(log: str) -> list[dict[str, object]]:
    found = []
    for raw in log.splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "worker.orphan_stopped":
            found.append(entry)
    return found


def test_the_checker_counts_a_package_that_wrote_after_its_worker_was_killed() -> None:
    """The orphaned_runs rule on a hand-made history: an attempt running on w1 at its
    kill that records its effect (or failure) later than the margin is an orphaned run;
    one that recorded within the margin, one that had ended before the kill, one begun
    after it (the retry) and one on another worker are not."""
    at = 1_000.0

    def rec(kind: str, t: float, task: str, attempt: int = 1, worker: str = "w1") -> Record:
        return Record(kind, t, task, attempt, worker, 1)

    history = [
        rec("begin", at - 5, "late-effect"),
        rec("effect", at + ORPHAN_MARGIN_S + 0.5, "late-effect"),
        rec("begin", at - 5, "late-fail"),
        rec("fail", at + 3, "late-fail"),
        rec("begin", at - 5, "in-margin"),
        rec("effect", at + ORPHAN_MARGIN_S / 2, "in-margin"),
        rec("begin", at - 5, "ended-before"),
        rec("effect", at - 1, "ended-before"),
        rec("begin", at + 4, "late-effect", attempt=2),
        rec("effect", at + 6, "late-effect", attempt=2),
        rec("begin", at - 5, "elsewhere", worker="w2"),
        rec("effect", at + 5, "elsewhere", worker="w2"),
    ]
    assert orphaned_runs(history, [Kill("w1", at)]) == {("late-effect", 1), ("late-fail", 1)}
    assert orphaned_runs(history, []) == set()
