"""Findings of the chaos runs, each pinned by a test on a small real cluster.

1. A broker restart longer than LeaseInterval: nobody's heartbeat could reach the master,
   yet its expired-task timer kept expiring every running attempt, so healthy packages
   ran twice or ended "ended unexpectedly". Fixed: the sweep waits until the heartbeat
   consumer has been connected for ``expiry_grace_s`` (timers.HeartbeatWatch). Since
   issue 19 the worker also stops a package whose lease passed with no renewal confirmed
   (it cannot tell a broker down for everyone from being cut off alone), so such a
   restart costs the running attempt: reported failed, and, because the master kept the
   lease, applied and retried like any failure. A restart shorter than the lease stops
   nothing (``test_lease_loss.py``).
2. A dead worker still looked online (the offline threshold is longer than a lease), so
   its requeued task went straight back to it and waited out another lease. Fixed: a
   worker whose lease lapsed takes no new task until its next heartbeat
   (catalog ``expire_leases``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.catalog import Catalog
from schemas.states import ExecutionStatus
from tests.chaos.checker import read_records
from tests.chaos.cluster import Cluster, Timing, small_cluster_running
from tests.chaos.nemesis import Plan, start_execution
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for

DEAF_TIMING = Timing(heartbeat_error_tolerance_s=120.0, expiry_grace_s=20.0)
"""Only the lease (2 s) can stop the package; the master's grace outlasts the worker's
reconnect and resend by far, so its report arrives while the master still holds the lease."""


@pytest.fixture
def deaf_worker(
    tmp_path: Path, tls_broker: TlsBroker, vhost: str
) -> Iterator[tuple[Cluster, Catalog]]:
    yield from small_cluster_running(tmp_path, tls_broker, vhost, ("w1",), DEAF_TIMING)


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_a_broker_restart_longer_than_the_lease_costs_the_attempt_not_the_execution(
    deaf_worker: tuple[Cluster, Catalog], tls_broker: TlsBroker
) -> None:
    """A package running through a broker restart longer than the lease: its worker stops
    it once the lease has passed and reports it failed. The master, deaf during the
    restart, expired nothing, so it applies that report and retries: attempt 1 failed
    ("lease lost"), attempt 2 succeeded, one effect, nothing ended unexpectedly."""
    cluster, catalog = deaf_worker
    execution_id = start_execution(catalog, Plan("Work", 10.0, 1))
    wait_for(
        lambda: catalog.get_execution(execution_id).status is ExecutionStatus.RUNNING,
        60,
        "the execution to run",
    )
    tls_broker.restart_app()
    row = wait_for(
        lambda: (r := catalog.get_execution(execution_id)).status.is_terminal and r,
        90,
        "the execution to end",
    )
    effects = [r for r in read_records(cluster.records_dir / "records.jsonl") if r.kind == "effect"]
    first = next(a for a in catalog.execution_attempts(execution_id) if a.attempt == 1)
    assert (row.status, row.attempt, len(effects)) == (ExecutionStatus.SUCCEEDED, 2, 1), (
        f"{row.status.label}, attempt {row.attempt}, {len(effects)} effects"
    )
    assert first.outcome == "failed"
    assert (first.error or "").startswith("lease lost")


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_a_dead_workers_task_runs_elsewhere_within_lease_and_sweep(
    two_workers: tuple[Cluster, Catalog],
) -> None:
    """kill -9 the worker running a task (and leave it dead): the task's next attempt
    begins on the other worker within LeaseInterval + one sweep (+ 3 s to dispatch and
    start a package)."""
    cluster, catalog = two_workers
    timing = cluster.timing
    # A master that just started judges no lease for expiry_grace_s (it has not heard
    # everyone yet); this test is about a steady cluster, so let that window pass.
    time.sleep(timing.expiry_grace_s)
    busy_w2 = start_execution(catalog, Plan("Sleep", 60.0, 0, ("w2",)))
    wait_for(
        lambda: catalog.get_execution(busy_w2).status is ExecutionStatus.RUNNING, 60, "w2 busy"
    )
    # w2 runs one package, so the next task goes to w1, the worker with more free slots.
    execution_id = start_execution(catalog, Plan("Work", 30.0, 2))
    row = wait_for(
        lambda: (r := catalog.get_execution(execution_id)).status is ExecutionStatus.RUNNING and r,
        60,
        "the task to run",
    )
    victim = row.worker_agent_id
    assert victim is not None
    wait_for(
        lambda: any(r.kind == "begin" for r in read_records(cluster.records_dir / "records.jsonl")),
        30,
        "the package to begin",
    )
    killed_at = cluster.workers[victim].kill9()
    bound = timing.lease_interval_s + timing.sweep_interval_s + 3.0

    def next_begin() -> float | None:
        records = read_records(cluster.records_dir / "records.jsonl")
        later = [r.t for r in records if r.kind == "begin" and r.attempt > row.attempt]
        return min(later, default=None)

    began = wait_for(next_begin, 60, "the task's next attempt to begin")
    assert began - killed_at <= bound, (
        f"the next attempt began {began - killed_at:.1f} s after {victim} died (bound {bound} s)"
    )
