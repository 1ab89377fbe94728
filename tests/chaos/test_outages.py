"""Findings of the chaos runs, each pinned by a test on a small real cluster.

A broker restart longer than LeaseInterval: nobody's heartbeat can reach the master, yet
the master's expired-task timer keeps running on the catalog and expires every running
attempt. Healthy packages are then cancelled or run twice, and an execution without
retries ends "ended unexpectedly" although its package and its worker were fine. The
master knows its heartbeat consumer is disconnected (``Consumer.connected``); the fix
belongs in the master (no expiry while it cannot hear heartbeats, and one lease of grace
after it hears them again: peers.md (c) 6), not here. Until then this test fails, and
is marked ``xfail(strict=True)`` so that the fix turns it into a pass, loudly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.catalog import Catalog
from schemas.states import ExecutionStatus
from tests.chaos.checker import read_records
from tests.chaos.cluster import Cluster, small_cluster, wait_until
from tests.chaos.nemesis import Plan, start_execution
from tests.fixtures.broker import TlsBroker


@pytest.fixture
def one_worker(
    tmp_path: Path, tls_broker: TlsBroker, vhost: str
) -> Iterator[tuple[Cluster, Catalog]]:
    cluster, catalog = small_cluster(tmp_path, tls_broker, vhost, ("w1",))
    try:
        yield cluster, catalog
    finally:
        cluster.stop()
        catalog.close()


@pytest.mark.chaos
@pytest.mark.timeout(240)
@pytest.mark.xfail(
    strict=True,
    reason=(
        "BUG (dispatcher/service.py, timers.deal_with_expired_tasks): leases expire while "
        "the master cannot hear heartbeats (broker restart), so a healthy attempt is lost"
    ),
)
def test_a_broker_restart_does_not_end_a_healthy_execution(
    one_worker: tuple[Cluster, Catalog], tls_broker: TlsBroker
) -> None:
    """A package running through a broker restart (longer than the lease) on a worker that
    stays up ends succeeded, in its first attempt, with one effect."""
    cluster, catalog = one_worker
    execution_id = start_execution(catalog, Plan("Work", 10.0, 0))
    wait_until(
        lambda: catalog.get_execution(execution_id).status is ExecutionStatus.RUNNING,
        60,
        "the execution to run",
    )
    tls_broker.restart_app()
    row = wait_until(
        lambda: (r := catalog.get_execution(execution_id)).status.is_terminal and r,
        90,
        "the execution to end",
    )
    effects = [r for r in read_records(cluster.records_dir / "records.jsonl") if r.kind == "effect"]
    assert (row.status, row.attempt, len(effects)) == (ExecutionStatus.SUCCEEDED, 1, 1), (
        f"{row.status.label}, attempt {row.attempt}, {len(effects)} effects"
    )


@pytest.fixture
def two_workers(
    tmp_path: Path, tls_broker: TlsBroker, vhost: str
) -> Iterator[tuple[Cluster, Catalog]]:
    cluster, catalog = small_cluster(tmp_path, tls_broker, vhost, ("w1", "w2"))
    try:
        yield cluster, catalog
    finally:
        cluster.stop()
        catalog.close()


@pytest.mark.chaos
@pytest.mark.timeout(240)
@pytest.mark.xfail(
    strict=True,
    reason=(
        "BUG (dispatcher/catalog/dispatching.py claim_tasks): an attempt requeued by lease "
        "expiry is given back to the dead worker, still 'online' for worker_offline_after_s"
    ),
)
def test_a_dead_workers_task_runs_elsewhere_within_lease_and_sweep(
    two_workers: tuple[Cluster, Catalog],
) -> None:
    """kill -9 the worker running a task (and leave it dead): the task's next attempt
    begins on the other worker within LeaseInterval + one sweep (+ 3 s to dispatch and
    start a package)."""
    cluster, catalog = two_workers
    timing = cluster.timing
    busy_w2 = start_execution(catalog, Plan("Sleep", 60.0, 0, ("w2",)))
    wait_until(
        lambda: catalog.get_execution(busy_w2).status is ExecutionStatus.RUNNING, 60, "w2 busy"
    )
    # w2 runs one package, so the next task goes to w1, the worker with more free slots.
    execution_id = start_execution(catalog, Plan("Work", 30.0, 2))
    row = wait_until(
        lambda: (r := catalog.get_execution(execution_id)).status is ExecutionStatus.RUNNING and r,
        60,
        "the task to run",
    )
    victim = row.worker_agent_id
    assert victim is not None
    wait_until(
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

    began = wait_until(next_begin, 60, "the task's next attempt to begin")
    assert began - killed_at <= bound, (
        f"the next attempt began {began - killed_at:.1f} s after {victim} died (bound {bound} s)"
    )
