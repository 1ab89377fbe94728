"""The fault-injection run: a real master and four workers, a few hundred executions,
a nemesis that kills, freezes and cuts off workers, kills the master and restarts the
broker; then the checker compares the catalog with what the packages recorded."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.catalog import Catalog
from dispatcher.projects import build_archive
from tests.chaos.checker import Checker, read_records
from tests.chaos.cluster import CHAOS_PROJECT, FOLDER, PROJECT, WORKERS, Cluster, Timing
from tests.chaos.conftest import CHECKER_LINES
from tests.chaos.nemesis import Run, make_plans
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for

EXECUTIONS = int(os.environ.get("SCALEOUT_TEST_CHAOS_EXECUTIONS", "240"))
FEED_SECONDS = 60.0
SETTLE_TIMEOUT_S = 150.0
RECOVERY_MARGIN_S = 7.0
"""On top of lease + one sweep: the requeue's dispatch, the worker's accept and the
package's start on a loaded two-core machine."""


def open_catalog(url: str, timing: Timing) -> Catalog:
    return Catalog.open(
        url,
        worker_offline_after_s=timing.worker_offline_after_s,
        initial_lease_s=timing.initial_lease_s,
    )


@pytest.fixture
def cluster(
    tmp_path: Path, tls_broker: TlsBroker, vhost: str, catalog_url: str
) -> Iterator[tuple[Cluster, Catalog]]:
    """The chaos project deployed, w1..w4 registered and enabled, the cluster running."""
    timing = Timing()
    catalog = open_catalog(catalog_url, timing)
    catalog.deploy_project(FOLDER, PROJECT, build_archive(CHAOS_PROJECT))
    for worker in WORKERS:
        catalog.add_worker_agent(worker, is_enabled=True, max_task_count=timing.max_task_count)
    cluster = Cluster(tmp_path, tls_broker, vhost, catalog_url, timing).build()
    cluster.start()
    try:
        wait_for(
            lambda: all(w.is_online for w in catalog.list_worker_agents()),
            60,
            "w1..w4 to come online",
        )
        yield cluster, catalog
    finally:
        cluster.stop()
        catalog.close()


def settle(catalog: Catalog, ids: set[int], timeout_s: float) -> None:
    """Wait until every execution is terminal (or the timeout: the checker counts lost)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = catalog.list_executions(limit=len(ids) + 100)
        if all(r.status.is_terminal for r in rows if r.execution_id in ids):
            return
        time.sleep(1.0)


@pytest.mark.chaos
@pytest.mark.timeout(600)
def test_nothing_lost_nothing_done_twice(
    cluster: tuple[Cluster, Catalog], tls_broker: TlsBroker, catalog_url: str
) -> None:
    """Under worker kills, a frozen worker, a master kill, a cut connection and a broker
    restart, every execution ends, no effect is done twice, the catalog agrees with the
    packages' records, and a killed worker's tasks run elsewhere within lease + sweep."""
    running, catalog = cluster
    seed = int(
        os.environ.get("SCALEOUT_TEST_CHAOS_SEED", str(random.SystemRandom().randrange(10**6)))
    )
    rng = random.Random(seed)
    timing = running.timing
    run = Run(running, catalog, tls_broker.restart_app, rng)
    began = time.monotonic()
    try:
        run.play(make_plans(rng, EXECUTIONS, WORKERS), FEED_SECONDS)
        settle(catalog, set(run.execution_ids), SETTLE_TIMEOUT_S)
        run.scrape()
    finally:
        run.stop()
    rows = [
        r
        for r in catalog.list_executions(limit=EXECUTIONS + 100)
        if r.execution_id in set(run.execution_ids)
    ]
    grace = timing.lease_interval_s + timing.sweep_interval_s + RECOVERY_MARGIN_S
    checker = Checker(run.faults, run.kills, grace_s=grace)
    verdict = checker.check(
        rows,
        read_records(running.records_dir / "records.jsonl"),
        stale_fenced=run.counters.total("scaleout_status_reports_total", outcome="stale"),
        requeued=run.counters.total("scaleout_attempts_requeued_total"),
    )
    dialect = "sqlite" if catalog_url.startswith("sqlite") else "postgresql"
    line = f"{dialect}: {verdict.line()}"
    CHECKER_LINES.append(line)
    print(f"\nchaos run on {dialect}, seed {seed}, {time.monotonic() - began:.0f} s")
    print(verdict.details())
    for fault in run.faults:
        print(f"fault {fault.kind} {fault.worker or 'all'} {fault.start:.1f}..{fault.end:.1f}")
    for problem in verdict.problems[:30]:
        print(problem)
    print(line)
    bound = timing.lease_interval_s + timing.sweep_interval_s + RECOVERY_MARGIN_S
    assert len(rows) == EXECUTIONS
    assert (verdict.lost, verdict.duplicated_effect, verdict.wrong_status) == (0, 0, 0), (
        "\n".join(verdict.problems[:30]) + "\n" + running.logs_tail()
    )
    assert verdict.recoveries, "no killed worker's task was seen running elsewhere"
    assert verdict.max_recovery_s <= bound, verdict.details()
