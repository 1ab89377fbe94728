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
from tests.chaos.checker import Fault, Undone
from tests.chaos.cluster import Cluster, reconnected, small_cluster
from tests.chaos.nemesis import make_plans, settle_and_check, start_execution
from tests.fixtures.broker_cluster import TlsCluster, cluster_vhost, tls_cluster

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
    for n, plan in enumerate(plans):
        ids.append(start_execution(catalog, plan))
        time.sleep(0.15)
        if n == 20:
            node = killed = tls_cluster.node_of_leader(cluster_vhost, topology.STATUS_QUEUE)
            at = time.time()
            tls_cluster.kill(node)
            back = reconnected(cluster, at, timeout_s=60)
            recovery["killed"] = back - at
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
    settle_and_check(
        cluster,
        catalog,
        ids,
        faults=faults,
        undone=undone,
        label=f"rabbitmq cluster (node {killed} killed)|reconnect_s={recovery['killed']:.1f}",
        timeout_s=240,
    )
