"""Floods without a bound (issue 14, finding 3), on a real cluster.

The fault run: a 20,000-heartbeat flood left 7,849 messages in the unbounded
``scaleout.dead``, and one 0.9 MB heartbeat listing 10,000 invented running attempts made
the master publish 10,000 ``task.cancel`` messages. Here w2, a real worker identity with
its own certificate, floods the master while w1 runs executions: heartbeats, one
heartbeat inventing 1,000 attempts, and reports about tasks that do not exist.
"""

from __future__ import annotations

import time
import uuid

import pytest

from consumers.master.heartbeat import MAX_CANCELS_PER_HEARTBEAT
from consumers.master.replies import MAX_PER_BATCH
from dispatcher.broker import Publisher, topology
from dispatcher.catalog import Catalog
from schemas.messages import AgentHeartbeat, RunningAttempt, TaskFinished, TaskOutcome
from schemas.states import ExecutionStatus
from tests.chaos.cluster import Cluster
from tests.chaos.nemesis import Plan, start_execution
from tests.chaos.test_master_pause import counter
from tests.fixtures.broker import TlsBroker
from tests.fixtures.polling import wait_for

HEARTBEATS = 20_000
INVENTED = 1_000
GHOST_REPORTS = 2_000
EXECUTIONS = 20


def _flood(publisher: Publisher) -> None:
    beat = AgentHeartbeat(worker_id="w2", lease_interval_s=2.0)
    for start in range(0, HEARTBEATS, 2_000):
        items = [(topology.HEARTBEAT_EXCHANGE, topology.HEARTBEAT_ROUTING_KEY, beat)] * min(
            2_000, HEARTBEATS - start
        )
        publisher.publish_batch(items)
    invented = tuple(
        RunningAttempt(task_id=uuid.uuid4(), attempt=1, execution_id=1) for _ in range(INVENTED)
    )
    publisher.publish(
        topology.HEARTBEAT_EXCHANGE,
        topology.HEARTBEAT_ROUTING_KEY,
        AgentHeartbeat(worker_id="w2", running=invented),
    )
    ghosts = [
        (
            topology.STATUS_EXCHANGE,
            topology.STATUS_ROUTING_KEY,
            TaskFinished(
                task_id=uuid.uuid4(),
                attempt=1,
                execution_id=1,
                worker_id="w2",
                outcome=TaskOutcome.SUCCEEDED,
            ),
        )
        for _ in range(GHOST_REPORTS)
    ]
    publisher.publish_batch(ghosts)


@pytest.mark.chaos
@pytest.mark.timeout(300)
def test_a_flood_is_bounded_and_the_master_keeps_dispatching(
    one_worker: tuple[Cluster, Catalog], tls_broker: TlsBroker, vhost: str
) -> None:
    cluster, catalog = one_worker
    catalog.add_worker_agent("w2", is_enabled=True, max_task_count=1)
    ids: list[int] = []
    with Publisher(tls_broker.settings_for("w2", vhost), name="t-flood", user_id="w2") as flood:
        began = time.monotonic()
        for _ in range(EXECUTIONS // 2):
            ids.append(start_execution(catalog, Plan("Work", 0.3, 0, ("w1",))))
        _flood(flood)
        flooded_s = time.monotonic() - began
        for _ in range(EXECUTIONS - len(ids)):
            ids.append(start_execution(catalog, Plan("Work", 0.3, 0, ("w1",))))
        wait_for(
            lambda: all(catalog.get_execution(i).status.is_terminal for i in ids),
            180,
            "every execution to end while the master digests the flood",
        )
        dispatched_s = time.monotonic() - began
        for queue in (topology.STATUS_QUEUE, topology.HEARTBEAT_QUEUE):
            wait_for(lambda q=queue: tls_broker.queue_depth(vhost, q) == 0, 120, f"{queue} read")

    cancels = tls_broker.queue_depth(vhost, topology.control_queue("w2"))
    print(
        f"\nflood sent in {flooded_s:.1f} s; {EXECUTIONS} executions ended after "
        f"{dispatched_s:.1f} s; w2's control queue holds {cancels}"
    )
    assert {catalog.get_execution(i).status for i in ids} == {ExecutionStatus.SUCCEEDED}
    assert tls_broker.queue_depth(vhost, topology.DEAD_QUEUE) == 0
    assert counter(cluster, "scaleout_cancels_capped_total") == INVENTED - MAX_CANCELS_PER_HEARTBEAT
    # w1's own heartbeats wait behind the flood, so some list attempts that had finished
    # meanwhile and are answered with stale-attempt cancels, which w1 ignores: only the
    # rest answer w2's invented attempts.
    to_w1 = cluster.workers["w1"].log().count("task.cancel_ignored:")
    assert counter(cluster, "scaleout_cancels_sent_total") - to_w1 <= MAX_CANCELS_PER_HEARTBEAT
    # A quorum queue checks its bound after the publishes in flight: the replies of one
    # status batch and the cancels of one heartbeat may overshoot it, no more.
    in_flight = MAX_PER_BATCH + MAX_CANCELS_PER_HEARTBEAT
    assert cancels <= topology.CONTROL_QUEUE_MAX_LENGTH + in_flight
