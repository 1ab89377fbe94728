"""The fault-injection run: a real master and four workers, a few hundred executions,
a nemesis that kills, freezes and cuts off workers, kills and pauses the master, restarts
the broker and (on PostgreSQL) stops the catalog's server; then the checker compares the
catalog with what the packages recorded.

On PostgreSQL the catalog lives on a private cluster (tests/fixtures/postgres_cluster.py)
so that stopping it touches no other test."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from tests.fixtures.postgres_cluster import PgCluster

EXECUTIONS = int(os.environ.get("SCALEOUT_TEST_CHAOS_EXECUTIONS", "280"))
FEED_SECONDS = 82.0
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


@dataclass(frozen=True)
class ChaosCatalog:
    url: str
    outage: Callable[[float], None] | None
    """Stops the catalog's server for that long, then starts it (PostgreSQL only)."""


@pytest.fixture(params=["sqlite", "postgresql"])
def chaos_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChaosCatalog]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ssisdb.sqlite3'}"
        catalog = Catalog.open(url)
        catalog.init()
        catalog.close()
        yield ChaosCatalog(url, None)
        return
    with PgCluster.started() as pg:

        def outage(seconds: float) -> None:
            pg.stop()
            time.sleep(seconds)
            pg.start()

        yield ChaosCatalog(pg.create_database(), outage)


@pytest.fixture
def catalog_url(chaos_catalog: ChaosCatalog) -> str:
    return chaos_catalog.url


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
    cluster: tuple[Cluster, Catalog],
    tls_broker: TlsBroker,
    catalog_url: str,
    chaos_catalog: ChaosCatalog,
) -> None:
    """Under worker kills, a frozen worker, a master kill and a master pause, a cut
    connection, a broker restart and a catalog server stopped, every execution ends, no
    effect is done twice, the catalog agrees with the packages' records, and a killed
    worker's tasks run elsewhere within lease + sweep."""
    running, catalog = cluster
    seed = int(
        os.environ.get("SCALEOUT_TEST_CHAOS_SEED", str(random.SystemRandom().randrange(10**6)))
    )
    rng = random.Random(seed)
    timing = running.timing
    run = Run(running, catalog, tls_broker.restart_app, rng, chaos_catalog.outage)
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
    checker = Checker(run.faults, run.kills, grace_s=grace, undone=run.undone)
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
    counts = (verdict.lost, verdict.duplicated_effect, verdict.wrong_status, verdict.orphaned_runs)
    assert counts == (0, 0, 0, 0), "\n".join(verdict.problems[:30]) + "\n" + running.logs_tail()
    assert verdict.recoveries, "no killed worker's task was seen running elsewhere"
    assert verdict.max_recovery_s <= bound, verdict.details()
