"""The provisioned Grafana dashboard: valid JSON, wired to the provisioned datasource, and
reading only metrics that exist (ours from dispatcher/metrics.py, RabbitMQ's listed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.integration.ops.support import (
    GRAFANA_DIR,
    RABBITMQ_METRICS,
    declared_metric_names,
    load_yaml,
    promql_metric_names,
)

DASHBOARD = GRAFANA_DIR / "dashboards" / "scaleout-overview.json"


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _exprs() -> list[str]:
    return [
        target["expr"]
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def test_dashboard_is_valid_json_with_unique_panel_ids() -> None:
    """The dashboard parses, has a stable uid, and no two panels share an id."""
    dashboard = _dashboard()
    assert dashboard["uid"] == "scaleout-overview"
    ids = [panel["id"] for panel in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))


def test_dashboard_uses_the_provisioned_datasource() -> None:
    """Every panel and query points at the datasource uid that provisioning creates."""
    provisioned = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus"
    for panel in _panels(_dashboard()["panels"]):
        for holder in [panel, *panel.get("targets", [])]:
            if "datasource" in holder:
                assert holder["datasource"] == {"type": "prometheus", "uid": source["uid"]}


def test_dashboard_provider_loads_the_dashboards_folder() -> None:
    """The dashboard provider reads the folder the compose file mounts the JSON into."""
    provider = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "scaleout.yml")
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_covers_the_cluster_overview() -> None:
    """Workers, executions by status, dispatch latency, expirations and dead letters are shown."""
    used = set().union(*(promql_metric_names(expr) for expr in _exprs()))
    assert {
        "scaleout_workers_online",
        "scaleout_worker_last_heartbeat_age_seconds",
        "scaleout_executions",
        "scaleout_dispatch_latency_seconds_bucket",
        "scaleout_leases_expired_total",
        "scaleout_dead_letters_total",
    } <= used


def test_dashboard_reads_only_existing_metrics() -> None:
    """Every metric in the dashboard's PromQL is declared in dispatcher/metrics.py, or is one
    of the RabbitMQ exporter's metrics that the scrape test checks on a live node."""
    known = declared_metric_names() | RABBITMQ_METRICS
    for expr in _exprs():
        used = promql_metric_names(expr)
        assert used, f"no metric found in {expr!r}"
        assert used <= known, f"{expr!r} reads unknown {sorted(used - known)}"
