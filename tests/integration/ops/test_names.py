"""The name extraction the ops checks rely on: declared series from dispatcher/metrics.py
and selected metrics from PromQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.ops.support import (
    DEPLOY,
    REPO,
    declared_families,
    declared_metric_names,
    promql_metric_names,
)


def test_declared_names_include_suffixes_and_collector_gauges() -> None:
    """Counters keep _total, histograms gain _bucket/_sum/_count, collector gauges count."""
    declared = declared_metric_names()
    assert "scaleout_tasks_dispatched_total" in declared
    assert "scaleout_dispatch_latency_seconds_bucket" in declared
    assert "scaleout_dispatch_latency_seconds_count" in declared
    assert "scaleout_executions" in declared
    assert "scaleout_agent_heartbeat_age_seconds" in declared
    assert "scaleout_dispatch_latency_seconds" not in declared


def test_declared_names_by_role_follow_each_metrics_registry() -> None:
    """``registry=MASTER``/``WORKER`` at the declaration, ``WORKER.register(...)`` for the
    shared broker counter, and the catalog collector's gauges on the master."""
    master, worker = declared_metric_names("master"), declared_metric_names("worker")
    assert master | worker == declared_metric_names()
    assert master & worker == {
        "scaleout_broker_reconnects_total",
        "scaleout_broker_reconnects_created",
    }
    assert {"scaleout_executions", "scaleout_package_attempt_duration_seconds_bucket"} <= master
    assert "scaleout_worker_tasks_running" in worker
    assert not {name for name in master if name.startswith("scaleout_worker_")}


def test_promql_names_leave_out_functions_labels_and_keywords() -> None:
    """Only selected metric names come out of an expression with every PromQL construct."""
    expr = (
        "histogram_quantile(0.95, sum by (le) "
        '(rate(a_bucket{job="x", le!="+Inf"}[$__rate_interval])))'
        " / on (instance) group_left (worker) b offset 5m"
        ' and label_replace(c_total, "dst", "$1", "src", "(.*)") > bool 1e3'
        ' unless absent(d{enabled="true"}) or vector(0)'
    )
    assert promql_metric_names(expr) == {"a_bucket", "b", "c_total", "d"}


@pytest.mark.parametrize("doc", [REPO / "docs" / "design.md", DEPLOY / "README.md"], ids=str)
def test_every_declared_metric_is_documented(doc: Path) -> None:
    """docs/design.md's metrics table and deploy/README.md's name every metric declared."""
    text = doc.read_text()
    missing = sorted(name for name in declared_families() if f"`{name}`" not in text)
    assert not missing, f"{doc} does not document {missing}"
