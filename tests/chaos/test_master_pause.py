"""A paused master ends no live work (issue 14, finding 1).

The fault run: SIGSTOP of the master for 12 s (lease 6 s), then SIGCONT; 0.1 s later every
attempt in flight was ended ``expired``, though the workers were alive and their
heartbeats and ``task.finished`` reports waited unread in the master's queues. The rule:
a lease is judged only on what the master has read (dispatcher/horizon.py).
"""

from __future__ import annotations

import time

import pytest

from dispatcher.catalog import Catalog
from schemas.states import ExecutionStatus
from tests.chaos.checker import read_records
from tests.chaos.cluster import Cluster
from tests.chaos.nemesis import Plan, start_execution
from tests.fixtures.polling import wait_for


def counter(cluster: Cluster, name: str, **labels: str) -> float:
    wanted = [f"{k}={v}" for k, v in labels.items()]
    return sum(
        value
        for key, value in cluster.scrape().items()
        if key.partition("{")[0] == name and all(w in key for w in wanted)
    )


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_a_master_paused_past_the_lease_ends_no_live_work(
    two_workers: tuple[Cluster, Catalog],
) -> None:
    """Six packages of 3 s with no retries run on two workers; the master is stopped for
    three leases (6 s) while they run and finish. Every execution succeeds, once, with
    no attempt expired: on resume the reports that waited are read before any lease is
    judged."""
    cluster, catalog = two_workers
    master = cluster.master
    assert master is not None
    lease = cluster.timing.lease_interval_s
    wait_for(
        lambda: counter(cluster, "scaleout_expiry_sweeps_total", outcome="swept") > 0,
        60,
        "the master to judge leases (past its start-up grace)",
    )
    ids = [start_execution(catalog, Plan("Work", 3.0, 0)) for _ in range(6)]
    wait_for(
        lambda: all(catalog.get_execution(i).status is ExecutionStatus.RUNNING for i in ids),
        60,
        "all six executions to run",
    )

    paused_at = time.monotonic()
    master.pause()
    try:
        time.sleep(3 * lease)
    finally:
        master.resume()
    wait_for(
        lambda: all(catalog.get_execution(i).status.is_terminal for i in ids),
        60,
        "every execution to end after the master resumed",
    )
    recovered_s = time.monotonic() - paused_at

    statuses = {i: catalog.get_execution(i).status for i in ids}
    outcomes = {i: [a.outcome for a in catalog.execution_attempts(i)] for i in ids}
    effects = [r for r in read_records(cluster.records_dir / "records.jsonl") if r.kind == "effect"]
    print(f"\nmaster paused {3 * lease:.0f} s: all ended {recovered_s:.1f} s after the pause began")
    assert statuses == dict.fromkeys(ids, ExecutionStatus.SUCCEEDED), (
        outcomes,
        cluster.logs_tail(),
    )
    assert all(o == ["succeeded"] for o in outcomes.values()), outcomes
    assert sorted(r.execution for r in effects) == sorted(ids)
