"""Metrics per process: the master's and a worker's registries hold only their own
metrics, nothing reaches prometheus_client's global registry, a worker's endpoint labels
every sample with its id, and status labels are snake_case names."""

from __future__ import annotations

import socket
import urllib.request
from datetime import UTC, datetime

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from dispatcher import metrics
from dispatcher.catalog.collector import CatalogCollector
from dispatcher.catalog.records import CatalogCounts, WorkerAgentRow
from schemas.states import ExecutionStatus

SHARED = {"scaleout_broker_reconnects"}
"""The broker client's counter: both roles reconnect."""


def families(registry: CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect() if family.name.startswith("scaleout_")}


def declared() -> dict[str, Counter | Gauge | Histogram]:
    return {
        name: value
        for name, value in vars(metrics).items()
        if isinstance(value, Counter | Gauge | Histogram)
    }


def test_every_metric_is_in_its_roles_registry_and_none_in_the_global_one() -> None:
    """A metric declared without ``registry=MASTER``/``WORKER`` would land in the global
    registry, which no process serves."""
    master, worker = families(metrics.MASTER), families(metrics.WORKER)
    names = {metric._name for metric in declared().values()}  # no public name

    assert names == master | worker
    assert not {f.name for f in REGISTRY.collect() if f.name.startswith("scaleout_")}


def test_the_master_exports_no_worker_metric_and_a_worker_no_master_metric() -> None:
    """``scaleout_worker_*`` is a worker's own prefix; the broker's counter is the one
    family both export."""
    master, worker = families(metrics.MASTER), families(metrics.WORKER)

    assert master & worker == SHARED
    assert not {name for name in master if name.startswith("scaleout_worker_")}
    assert {name for name in worker if not name.startswith("scaleout_worker_")} == SHARED
    assert "scaleout_package_executions_ended" in master


def test_each_process_also_exports_its_own_process_metrics() -> None:
    for registry in (metrics.MASTER, metrics.WORKER):
        assert "process_cpu_seconds" in {family.name for family in registry.collect()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_worker_serves_its_metrics_only_each_labelled_with_its_id() -> None:
    """What ``run_worker`` serves: the worker registry, ``worker`` on every sample."""
    port = free_port()
    metrics.serve(port, "127.0.0.1", metrics.with_labels(metrics.WORKER, worker="w7"))

    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    served = list(text_string_to_metric_families(text))

    ours = {f.name for f in served if f.name.startswith("scaleout_")}
    # The text parser reads each metric's _created sample as a family of its own.
    assert {name for name in ours if not name.endswith("_created")} == families(metrics.WORKER)
    samples = [s for family in served for s in family.samples]
    assert samples
    assert all(sample.labels.get("worker") == "w7" for sample in samples)
    assert metrics.WORKER.get_sample_value("scaleout_worker_tasks_running") is not None


def test_the_executions_gauge_labels_statuses_by_their_snake_case_names() -> None:
    """`ended_unexpectedly`, as the CLI's --status spells it: never `ended unexpectedly`."""
    counts = CatalogCounts(
        executions_by_status={ExecutionStatus.ENDED_UNEXPECTEDLY: 2},
        oldest_pending_age_s=0.0,
        workers_online=1,
        workers_enabled=1,
    )
    worker = WorkerAgentRow(
        worker_agent_id="w1",
        is_enabled=True,
        display_name="",
        description="",
        machine_name="",
        tags="",
        user_account="",
        last_online_time=datetime.now(UTC),
        is_online=True,
        running_tasks=0,
        max_task_count=10,
    )
    collected = list(CatalogCollector(lambda: counts, lambda: [worker]).collect())
    by_name = {family.name: family for family in collected}

    statuses = {s.labels["status"]: s.value for s in by_name["scaleout_executions"].samples}
    assert statuses["ended_unexpectedly"] == 2
    assert set(statuses) == {status.key for status in ExecutionStatus}
    assert "scaleout_agent_heartbeat_age_seconds" in by_name
