"""The name extraction the ops checks rely on: declared series from dispatcher/metrics.py
and selected metrics from PromQL."""

from __future__ import annotations

from tests.integration.ops.support import declared_metric_names, promql_metric_names


def test_declared_names_include_suffixes_and_collector_gauges() -> None:
    """Counters keep _total, histograms gain _bucket/_sum/_count, collector gauges count."""
    declared = declared_metric_names()
    assert "scaleout_tasks_dispatched_total" in declared
    assert "scaleout_dispatch_latency_seconds_bucket" in declared
    assert "scaleout_dispatch_latency_seconds_count" in declared
    assert "scaleout_executions" in declared
    assert "scaleout_worker_last_heartbeat_age_seconds" in declared
    assert "scaleout_dispatch_latency_seconds" not in declared


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
