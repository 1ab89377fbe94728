"""The worker knows its leases (issue 19): on a real master and real workers.

1. A worker cut off alone (its TCP proxy goes silent, the other worker stays connected):
   the master requeues its task to the other worker after the lease, and the cut-off
   worker stops its package soon after its own estimate of that lease has passed, instead
   of running it on for HeartbeatErrorTolerance (here 120 s) next to the new attempt.
2. A broker restart shorter than the lease stops nothing: the renewals resume before the
   deadline on both sides, and the execution succeeds on its first attempt.

Bounds come from the settings the cluster runs with, plus generous slack for a loaded
two-core machine; nothing depends on exact timings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from dispatcher.catalog import Catalog
from dispatcher.catalog.records import AttemptRow
from schemas.states import ExecutionStatus
from tests.chaos.checker import Record, read_records
from tests.chaos.cluster import Cluster, Timing, small_cluster_running
from tests.chaos.nemesis import Plan, start_execution
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for

SLACK_S = 6.0
"""On top of what the settings allow: scheduling, a process start, a SIGTERM's effect."""
KILL_GRACE_S = 1.0  # the cluster's kill_grace_s

CUT_TIMING = Timing(lease_interval_s=3.0, heartbeat_error_tolerance_s=120.0)
"""A short lease, and a tolerance so long that only the lease can stop the package."""
RESTART_TIMING = Timing(lease_interval_s=60.0, heartbeat_error_tolerance_s=120.0)
"""The default lease: well beyond a broker restart (about 9 s here, more when loaded)."""
RECONNECT_S = 15.0
"""The workers' reconnect backoff (at most 5 s) and a heartbeat, with room to spare."""


@pytest.fixture
def cut_cluster(
    tmp_path: Path, tls_broker: TlsBroker, vhost: str
) -> Iterator[tuple[Cluster, Catalog]]:
    yield from small_cluster_running(tmp_path, tls_broker, vhost, ("w1", "w2"), CUT_TIMING)


@pytest.fixture
def restart_cluster(
    tmp_path: Path, tls_broker: TlsBroker, vhost: str
) -> Iterator[tuple[Cluster, Catalog]]:
    yield from small_cluster_running(tmp_path, tls_broker, vhost, ("w1",), RESTART_TIMING)


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_a_worker_cut_off_alone_stops_its_package_once_its_lease_has_passed(
    cut_cluster: tuple[Cluster, Catalog],
) -> None:
    """Cut the connection of the worker running a task (silently, at its proxy): the
    master gives the task to the other worker, and the cut-off worker's package dies
    within lease + margin (+ slack) of the cut, so the two attempts overlap by at most the
    margin and a kill grace, not by HeartbeatErrorTolerance."""
    cluster, catalog = cut_cluster
    timing = cluster.timing
    time.sleep(timing.expiry_grace_s)  # a master that just started judges no lease yet
    execution_id = start_execution(catalog, Plan("Work", 20.0, 1))
    row = wait_for(
        lambda: (r := catalog.get_execution(execution_id)).status is ExecutionStatus.RUNNING and r,
        60,
        "the task to run",
    )
    victim = row.worker_agent_id
    assert victim is not None
    (other,) = set(cluster.workers) - {victim}
    pid = wait_for(lambda: _begin_pid(cluster, 1), 30, "the package to begin")

    cut_at = time.time()
    cluster.proxies[victim].cut()
    died_at = wait_for(lambda: None if _alive(pid) else time.time(), 60, "the package to stop")
    second = wait_for(lambda: _attempt(catalog, execution_id, 2), 60, "a second attempt")
    first = _attempt(catalog, execution_id, 1)
    assert first is not None
    begin_2 = wait_for(lambda: _begin_time(cluster, 2), 60, "the second attempt to begin")
    cluster.proxies[victim].restore()

    margin = timing.task_heartbeat_s  # the worker's margin is one TaskHeartbeatInterval
    requeued_at = _epoch(first.ended_at)
    print(
        f"\ncut {victim} at 0.0 s; master requeued at {requeued_at - cut_at:.1f} s; "
        f"package stopped at {died_at - cut_at:.1f} s; attempt 2 began on {other} at "
        f"{begin_2 - cut_at:.1f} s (lease {timing.lease_interval_s:g} s, margin {margin:g} s)"
    )
    assert (first.worker_agent_id, first.outcome) == (victim, "expired")
    assert second.worker_agent_id == other
    # The worker's deadline is at most one lease after the cut (no renewal was confirmed
    # after it); it stops the package one margin later, then SIGTERM does the rest.
    bound = timing.lease_interval_s + margin + KILL_GRACE_S + SLACK_S
    assert died_at - cut_at <= bound, f"stopped {died_at - cut_at:.1f} s after the cut"
    assert died_at - begin_2 <= margin + KILL_GRACE_S + SLACK_S
    assert "task.lease_lost" in cluster.workers[victim].log()

    final = wait_for(
        lambda: (r := catalog.get_execution(execution_id)).status.is_terminal and r,
        90,
        "the execution to end",
    )
    effects = [r for r in _records(cluster) if r.kind == "effect"]
    assert (final.status, final.attempt) == (ExecutionStatus.SUCCEEDED, 2)
    assert [(e.attempt, e.worker) for e in effects] == [(2, other)]
    # The cut-off worker's late "failed" for attempt 1 arrived and changed nothing.
    first_after = _attempt(catalog, execution_id, 1)
    assert first_after is not None
    assert first_after.outcome == "expired"


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_a_broker_restart_shorter_than_the_lease_stops_nothing(
    restart_cluster: tuple[Cluster, Catalog], tls_broker: TlsBroker
) -> None:
    """The broker restarts while a package runs; it is back well before the lease ends,
    so neither the worker nor the master ends the attempt: it succeeds, first attempt."""
    cluster, catalog = restart_cluster
    lease = cluster.timing.lease_interval_s
    execution_id = start_execution(catalog, Plan("Work", lease - RECONNECT_S, 1))
    wait_for(
        lambda: catalog.get_execution(execution_id).status is ExecutionStatus.RUNNING,
        60,
        "the execution to run",
    )
    wait_for(lambda: _begin_pid(cluster, 1), 30, "the package to begin")
    down_at = time.time()
    tls_broker.restart_app()
    back_at = time.time()
    print(f"\nbroker restart took {back_at - down_at:.1f} s (lease {lease:g} s)")
    assert back_at - down_at < lease - RECONNECT_S, "too slow a restart for this test"

    row = wait_for(
        lambda: (r := catalog.get_execution(execution_id)).status.is_terminal and r,
        120,
        "the execution to end",
    )
    effects = [r for r in _records(cluster) if r.kind == "effect"]
    assert (row.status, row.attempt, len(effects)) == (ExecutionStatus.SUCCEEDED, 1, 1), (
        f"{row.status.label}, attempt {row.attempt}, {len(effects)} effects"
    )
    assert effects[0].t > back_at  # the package ran through the whole restart
    log = cluster.workers["w1"].log()
    assert "task.lease_lost" not in log
    assert "task.stopping" not in log


def _records_path(cluster: Cluster) -> Path:
    return cluster.records_dir / "records.jsonl"


def _records(cluster: Cluster) -> list[Record]:
    return read_records(_records_path(cluster))


def _begin_pid(cluster: Cluster, attempt: int) -> int | None:
    """The pid of the package of ``attempt``, from its begin record."""
    path = _records_path(cluster)
    if not path.exists():
        return None
    for raw in path.read_text().splitlines():
        record = json.loads(raw)
        if record["kind"] == "begin" and record["attempt"] == attempt:
            return int(record["pid"])
    return None


def _begin_time(cluster: Cluster, attempt: int) -> float | None:
    times = [r.t for r in _records(cluster) if r.kind == "begin" and r.attempt == attempt]
    return min(times, default=None)


def _attempt(catalog: Catalog, execution_id: int, attempt: int) -> AttemptRow | None:
    rows = [a for a in catalog.execution_attempts(execution_id) if a.attempt == attempt]
    return rows[0] if rows else None


def _epoch(value: datetime | None) -> float:
    assert value is not None
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return aware.timestamp()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
