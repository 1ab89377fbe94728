"""The provisioned Grafana dashboard: valid JSON, every query on the ``datasource`` variable
(no uid hard-coded), per-worker panels keyed by the ``worker`` label and package panels by
the ``project``/``package`` variables, reading only metrics that exist (ours from
dispatcher/metrics.py, RabbitMQ's listed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.integration.ops.support import (
    DASHBOARD,
    GRAFANA_DIR,
    RABBITMQ_METRICS,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    declared_metric_names,
    load_yaml,
    promql_metric_names,
    run,
    tool,
)


def _variables() -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard()["templating"]["list"]}


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")
_GROUPED_BY = re.compile(r"\bby \(([^)]*)\)")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_dashboard_is_valid_json_with_unique_panel_ids() -> None:
    """The dashboard parses, has a stable uid, and no two panels share an id."""
    assert dashboard()["uid"] == "scaleout-overview"
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids))


def test_dashboard_reads_the_datasource_variable_never_a_hard_coded_uid() -> None:
    """A ``datasource`` variable of type datasource (Prometheus ones) is what every panel,
    query and query variable uses, so the dashboard imports into any Grafana; under
    provisioning it defaults to the provisioned Prometheus, the default datasource."""
    provisioned = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = provisioned["datasources"]
    assert (source["type"], source["isDefault"]) == ("prometheus", True)
    assert source["uid"] not in DASHBOARD.read_text()
    variable = _variables()["datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        for holder in [panel, *panel["targets"]]:
            assert holder["datasource"] == DATASOURCE, panel["title"]
    for name in ("worker", "project", "package"):
        assert _variables()[name]["datasource"] == DATASOURCE


def test_the_variables_list_workers_projects_and_packages_from_our_metrics() -> None:
    """``worker``, ``project`` and ``package`` are label_values queries on declared
    metrics, multi-valued with an All of ``.*``; ``package`` follows ``project``."""
    variables = _variables()
    for name in ("worker", "project", "package"):
        variable = variables[name]
        match = _LABEL_VALUES.match(variable["query"])
        assert match, variable["query"]
        assert match["label"] == name
        assert promql_metric_names(match["selector"]) <= declared_metric_names()
        assert (variable["type"], variable["multi"], variable["allValue"]) == ("query", True, ".*")
    assert 'project=~"$project"' in variables["package"]["query"]


def test_per_worker_panels_are_keyed_by_the_worker_label() -> None:
    """A worker's own metrics and the catalog's heartbeat ages are selected by ``$worker``
    and shown by ``worker``, never by ``instance`` (an address, one per container)."""
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr, legend = target["expr"], target["legendFormat"]
            assert "instance" not in expr + legend, panel["title"]
            names = promql_metric_names(expr)
            if any(
                n.startswith(("scaleout_worker_", "scaleout_agent_heartbeat_age")) for n in names
            ):
                assert 'worker=~"$worker"' in expr, expr
            if any("worker" in group for group in _GROUPED_BY.findall(expr)):
                assert "{{worker}}" in legend, panel["title"]


def test_package_panels_follow_the_project_and_package_variables() -> None:
    """Failures and run time by package are shown, each query filtered by both variables."""
    package_exprs = [e for e in dashboard_exprs() if "scaleout_package_" in e]
    used = set().union(*(promql_metric_names(expr) for expr in package_exprs))
    assert {
        "scaleout_package_executions_ended_total",
        "scaleout_package_attempts_ended_total",
        "scaleout_package_attempt_duration_seconds_bucket",
        "scaleout_package_attempt_duration_seconds_sum",
    } <= used
    for expr in package_exprs:
        assert expr.count("scaleout_package_") == expr.count('package=~"$package"'), expr
        assert expr.count("scaleout_package_") == expr.count('project=~"$project"'), expr


def test_dashboard_provider_loads_the_dashboards_folder() -> None:
    """The dashboard provider reads the folder the compose file mounts the JSON into."""
    provider = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "scaleout.yml")
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_covers_the_cluster_overview() -> None:
    """Workers, executions by status, dispatch latency, expirations and dead letters are shown."""
    used = set().union(*(promql_metric_names(expr) for expr in dashboard_exprs()))
    assert {
        "scaleout_workers_online",
        "scaleout_agent_heartbeat_age_seconds",
        "scaleout_executions",
        "scaleout_dispatch_latency_seconds_bucket",
        "scaleout_leases_expired_total",
        "scaleout_dead_letters_total",
    } <= used


def test_dashboard_reads_only_existing_metrics() -> None:
    """Every metric in the dashboard's PromQL is declared in dispatcher/metrics.py, or is one
    of the RabbitMQ exporter's metrics that the scrape test checks on a live node."""
    known = declared_metric_names() | RABBITMQ_METRICS
    for expr in dashboard_exprs():
        used = promql_metric_names(expr)
        assert used, f"no metric found in {expr!r}"
        assert used <= known, f"{expr!r} reads unknown {sorted(used - known)}"


_GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$worker": ".*",
    "$project": ".*",
    "$package": ".*",
}


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, Grafana's variables replaced by values they take."""
    rules = []
    for index, query in enumerate(dashboard_exprs()):
        expr = query
        for variable, value in _GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML

    done = run([tool("promtool"), "check", "rules", str(path)])

    assert done.returncode == 0, done.stdout + done.stderr
