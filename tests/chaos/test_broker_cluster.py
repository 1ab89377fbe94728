"""A three-node RabbitMQ cluster under the master and its workers (issue 15): kill -9 of
the node holding the quorum queues' leaders and its restart, then SIGSTOP of a node;
clients fail over between the nodes (broker.failover_urls), declarations and consumers
come back on another node, and the checker finds nothing lost or done twice."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.broker import topology
from dispatcher.catalog import Catalog
from tests.chaos.checker import Checker, Fault, Undone, read_records
from tests.chaos.cluster import Cluster, reconnected, small_cluster
from tests.chaos.conftest import CHECKER_LINES
from tests.chaos.nemesis import make_plans, start_execution
from tests.fixtures.broker_cluster import TlsCluster, cluster_vhost, tls_cluster
from tests.fixtures.polling import wait_for

__all__ = ["cluster_vhost", "tls_cluster"]

EXECUTIONS = 80


@pytest.fixture
def on_three_nodes(
    tmp_path: Path, tls_cluster: TlsCluster, cluster_vhost: str
) -> Iterator[tuple[Cluster, Catalog]]:
    cluster, catalog = small_cluster(tmp_path, tls_cluster, cluster_vhost, ("w1", "w2"))
    try:
        yield cluster, catalog
    finally:
        cluster.stop()
        catalog.close()


@pytest.mark.chaos
@pytest.mark.timeout(600)
def test_the_cluster_survives_the_loss_of_the_leaders_node_and_a_frozen_node(
    on_three_nodes: tuple[Cluster, Catalog], tls_cluster: TlsCluster, cluster_vhost: str
) -> None:
    cluster, catalog = on_three_nodes
    rng = random.Random(11)
    plans = make_plans(rng, EXECUTIONS, ("w1", "w2"))
    ids: list[int] = []
    faults: list[Fault] = []
    undone: list[Undone] = []
    recovery: dict[str, float] = {}
    killed = 0
    began = time.monotonic()
    for n, plan in enumerate(plans):
        ids.append(start_execution(catalog, plan))
        time.sleep(0.15)
        if n == 20:
            node = killed = tls_cluster.node_of_leader(cluster_vhost, topology.STATUS_QUEUE)
            at = time.time()
            tls_cluster.kill(node)
            back = reconnected(cluster, at, timeout_s=60)
            recovery["leader_node_killed"] = back - at
            faults.append(Fault("broker_node_killed", at, back + 1))
            tls_cluster.restart(node)
            undone.append(Undone("broker_node_killed", time.time()))
        if n == 50:
            node = 3 if tls_cluster.node_of_leader(cluster_vhost, topology.STATUS_QUEUE) != 3 else 2
            at = time.time()
            tls_cluster.pause(node)
            time.sleep(8)
            tls_cluster.resume(node)
            faults.append(Fault("broker_node_stopped", at, time.time() + 5))
            undone.append(Undone("broker_node_stopped", time.time()))
    wait_for(
        lambda: all(catalog.get_execution(i).status.is_terminal for i in ids),
        240,
        "every execution to end",
    )
    rows = [r for r in catalog.list_executions(limit=EXECUTIONS + 10) if r.execution_id in ids]
    timing = cluster.timing
    grace = timing.lease_interval_s + timing.sweep_interval_s + 7
    verdict = Checker(faults, (), grace_s=grace, undone=undone).check(
        rows, read_records(cluster.records_dir / "records.jsonl")
    )
    line = (
        f"rabbitmq cluster (node {killed} killed): {verdict.line()} "
        f"reconnect_s={recovery['leader_node_killed']:.1f}"
    )
    CHECKER_LINES.append(line)
    print(f"\n{line} ({time.monotonic() - began:.0f} s)")
    assert len(rows) == EXECUTIONS
    assert (verdict.lost, verdict.duplicated_effect, verdict.wrong_status) == (0, 0, 0), (
        "\n".join(verdict.problems[:20]) + "\n" + cluster.logs_tail()
    )
