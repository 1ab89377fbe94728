"""Helpers for the ops tests: the deploy/ files, the ops tools, YAML, metric names.

The tools come from Debian's packages (``bash deploy/local/tools.sh``): promtool and the
Prometheus server from ``prometheus``, ``docker-compose`` from ``docker-compose``. YAML is
read with the PyYAML that Debian's docker-compose runs on (the project's own environment
does not depend on a YAML library).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "scaleout-overview.json"
COLLECTOR_MODULE = REPO / "dispatcher" / "catalog" / "collector.py"
"""The catalog's gauges, read at scrape time: exported by the master."""
METRICS_MODULES = (REPO / "dispatcher" / "metrics.py", COLLECTOR_MODULE)
SYSTEM_PYTHON = "/usr/bin/python3"

# Metrics the dashboard reads from RabbitMQ's own exporter (rabbitmq_prometheus), not ours.
RABBITMQ_METRICS = frozenset(
    {"rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked", "rabbitmq_connections"}
)


def tool(name: str) -> str:
    """The tool's path; fails (never skips) with the install command when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `bash deploy/local/tools.sh`")
    return path


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, **kwargs)


def load_yaml(path: Path) -> Any:
    """Parse a YAML file with the system's PyYAML (python3-yaml, a docker-compose dependency)."""
    return yaml_to_data(path.read_text())


def yaml_to_data(text: str) -> Any:
    tool("docker-compose")  # brings python3-yaml; say so if it is missing
    script = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    done = run([SYSTEM_PYTHON, "-c", script], input=text)
    assert done.returncode == 0, f"YAML does not parse:\n{done.stderr}"
    return json.loads(done.stdout)


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_panels(panels: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel of the dashboard, those inside rows too."""
    for panel in dashboard()["panels"] if panels is None else panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_exprs() -> list[str]:
    """The PromQL of every panel's queries."""
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


# --- metric names ---------------------------------------------------------------------------

_FAMILY_CALLS = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
    "GaugeMetricFamily": ("",),
    "CounterMetricFamily": ("_total", "_created"),
    "HistogramMetricFamily": ("_bucket", "_sum", "_count"),
}


ROLES = ("master", "worker")
"""The processes that export metrics; each serves its own registry (dispatcher.metrics
MASTER or WORKER, the catalog collector's gauges on the master)."""


def _family(call: ast.Call) -> tuple[str, str] | None:
    """``(kind, family name without _total)`` of a metric declaration, None if not one."""
    kind = call.func.id if isinstance(call.func, ast.Name) else None
    first = call.args[0] if call.args else None
    if kind not in _FAMILY_CALLS or not isinstance(first, ast.Constant):
        return None
    return kind, str(first.value).removesuffix("_total")


def _series(call: ast.Call) -> set[str] | None:
    """The series names a metric declaration exports (None if ``call`` is not one)."""
    found = _family(call)
    if found is None:
        return None
    kind, family = found
    return {family + suffix for suffix in _FAMILY_CALLS[kind]}


def _registry_role(call: ast.Call) -> str | None:
    """``registry=MASTER`` -> "master"; None without a role's registry."""
    for keyword in call.keywords:
        if keyword.arg == "registry" and isinstance(keyword.value, ast.Name):
            role = keyword.value.id.lower()
            return role if role in ROLES else None
    return None


def _module_roles(module: Path) -> dict[str | None, set[str]]:
    """Series by role in one module: ``registry=`` at the declaration, plus any
    ``WORKER.register(NAME)`` of a declared ``NAME``; the collector's gauges are master's."""
    tree = ast.parse(module.read_text())
    default = "master" if module == COLLECTOR_MODULE else None
    by_role: dict[str | None, set[str]] = {}
    by_variable: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (series := _series(node)) is not None:
            by_role.setdefault(_registry_role(node) or default, set()).update(series)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            series = _series(node.value)
            for target in node.targets:
                if series is not None and isinstance(target, ast.Name):
                    by_variable[target.id] = series
    for node in ast.walk(tree):
        if (registration := _registration(node)) is not None:
            role, variable = registration
            by_role.setdefault(role, set()).update(by_variable.get(variable, set()))
    return by_role


def _registration(node: ast.AST) -> tuple[str, str] | None:
    """``WORKER.register(NAME)`` -> ("worker", "NAME"); None for anything else."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return None
    owner, args = node.func.value, node.args
    if node.func.attr != "register" or not isinstance(owner, ast.Name) or len(args) != 1:
        return None
    role, (variable,) = owner.id.lower(), args
    if role not in ROLES or not isinstance(variable, ast.Name):
        return None
    return role, variable.id


@cache
def declared_metric_names(role: str | None = None) -> frozenset[str]:
    """Every series name scaleout exports (or only ``role``'s: "master", "worker"): each
    family declared in dispatcher/metrics.py and dispatcher/catalog/collector.py (the
    CatalogCollector's gauges), with the suffixes prometheus-client adds (``_total`` on
    counters; ``_bucket``/``_sum``/``_count`` on histograms)."""
    names: set[str] = set()
    for module in METRICS_MODULES:
        for each, series in _module_roles(module).items():
            if role is None or each == role:
                names |= series
    return frozenset(names)


@cache
def declared_families() -> frozenset[str]:
    """Each declared metric as the docs name it: a counter with ``_total``, a histogram or
    gauge by its family name."""
    families: set[str] = set()
    for module in METRICS_MODULES:
        for node in ast.walk(ast.parse(module.read_text())):
            found = _family(node) if isinstance(node, ast.Call) else None
            if found is not None:
                kind, family = found
                counter = kind in {"Counter", "CounterMetricFamily"}
                families.add(family + "_total" if counter else family)
    return frozenset(families)


def exposed_series_names(families: Iterable[tuple[str, str]]) -> set[str]:
    """The series names of ``(family name, type)`` pairs as prometheus-client's text parser
    reads a /metrics page (a counter's family without ``_total``; ``_created`` left out)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        name + suffix
        for name, kind in families
        if not name.endswith("_created")
        for suffix in suffixes.get(kind, ("",))
    }


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "offset", "bool", "inf", "nan", "atan2"}
)  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names,
    strings, durations and Grafana's $variables left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names
