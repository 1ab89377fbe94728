"""Prometheus config and alert rules: promtool accepts them, every alert's unit tests pass,
and the rules read only metrics that dispatcher/metrics.py declares."""

from __future__ import annotations

from typing import Any

from tests.integration.ops.support import (
    PROMETHEUS_DIR,
    declared_metric_names,
    load_yaml,
    promql_metric_names,
    run,
    tool,
)

ALERTS = PROMETHEUS_DIR / "alerts.yml"
EXPECTED_ALERTS = {
    "ScaleoutNoWorkerOnline",
    "ScaleoutWorkerOffline",
    "ScaleoutMasterHeartbeatStale",
    "ScaleoutMasterAbsent",
    "ScaleoutNoLeader",
    "ScaleoutLeasesExpiringFast",
    "ScaleoutDeadLetters",
    "ScaleoutExecutionPendingTooLong",
    "ScaleoutPackageFailing",
    "ScaleoutCatalogErrors",
    "ScaleoutBrokerReconnecting",
}


def _rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_config() -> None:
    """`promtool check config` accepts prometheus.yml and the rule file it loads."""
    done = run([tool("promtool"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` accepts alerts.yml."""
    done = run([tool("promtool"), "check", "rules", str(ALERTS)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(EXPECTED_ALERTS)} rules found" in done.stdout


def test_alert_unit_tests_pass() -> None:
    """`promtool test rules alerts_test.yml` passes: each alert fires and stays quiet as meant."""
    done = run([tool("promtool"), "test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """alerts_test.yml expects each alert to fire at some time and to be silent at another."""
    tests = load_yaml(PROMETHEUS_DIR / "alerts_test.yml")["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS


def test_the_rules_are_the_documented_alerts() -> None:
    """alerts.yml holds exactly the alerts the README lists, each with a severity and summary."""
    rules = _rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_alerts_read_only_declared_metrics() -> None:
    """Every metric an alert expression selects is declared in dispatcher/metrics.py."""
    declared = declared_metric_names()
    for rule in _rules():
        used = promql_metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert used <= declared, f"{rule['alert']} reads undeclared {sorted(used - declared)}"
