"""A catalog that fails over (issue 15): PostgreSQL primary plus a synchronous streaming
standby; mid-run the primary dies (immediate stop) and the standby is promoted. The
master and the test's client reach it through a multi-host URL with
target_session_attrs=read-write, hold what they cannot write meanwhile, and no committed
transition is lost: the checker finds nothing lost, nothing done twice, no wrong status."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.catalog import Catalog
from dispatcher.projects import build_archive
from tests.chaos.checker import Undone
from tests.chaos.cluster import CHAOS_PROJECT, FOLDER, PROJECT, Cluster, Timing
from tests.chaos.nemesis import make_plans, patiently, settle_and_check, start_execution
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for
from tests.fixtures.postgres_cluster import PgPair

EXECUTIONS = 80
WORKERS = ("w1", "w2")


@pytest.fixture
def on_a_pair(
    tmp_path: Path, tls_broker: TlsBroker, vhost: str
) -> Iterator[tuple[Cluster, Catalog, PgPair]]:
    timing = Timing()
    with PgPair.started() as pair:
        url = pair.create_database()
        catalog = Catalog.open(url, worker_offline_after_s=timing.worker_offline_after_s)
        catalog.deploy_project(FOLDER, PROJECT, build_archive(CHAOS_PROJECT))
        for worker in WORKERS:
            catalog.add_worker_agent(worker, is_enabled=True, max_task_count=4)
        cluster = Cluster(tmp_path, tls_broker, vhost, url, timing).build(WORKERS)
        cluster.start()
        try:
            wait_for(
                lambda: all(w.is_online for w in catalog.list_worker_agents()), 60, "workers online"
            )
            yield cluster, catalog, pair
        finally:
            cluster.stop()
            catalog.close()


@pytest.mark.chaos
@pytest.mark.timeout(600)
def test_the_catalog_fails_over_to_its_standby_and_loses_no_transition(
    on_a_pair: tuple[Cluster, Catalog, PgPair],
) -> None:
    cluster, catalog, pair = on_a_pair
    plans = make_plans(random.Random(5), EXECUTIONS, WORKERS)
    ids: list[int] = []
    undone: list[Undone] = []
    for n, plan in enumerate(plans):
        ids.append(patiently(lambda plan=plan: start_execution(catalog, plan)))
        time.sleep(0.15)
        if n == 30:
            pair.fail_over()
            undone.append(Undone("catalog_failed_over", time.time()))
    # No Fault: a committed transition must survive the failover, so nothing is excused.
    settle_and_check(cluster, catalog, ids, faults=[], undone=undone, label="postgresql failover")
