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
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
METRICS_MODULES = (
    REPO / "dispatcher" / "metrics.py",
    REPO / "dispatcher" / "catalog" / "collector.py",  # the catalog's gauges, read at scrape
)
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


@cache
def declared_metric_names() -> frozenset[str]:
    """Every series name scaleout exports: each family declared in dispatcher/metrics.py
    and dispatcher/catalog/collector.py (the CatalogCollector's gauges), with the suffixes
    prometheus-client adds (``_total`` on counters; ``_bucket``/``_sum``/``_count`` on
    histograms)."""
    names: set[str] = set()
    nodes = (n for m in METRICS_MODULES for n in ast.walk(ast.parse(m.read_text())))
    for node in nodes:
        if not isinstance(node, ast.Call) or not node.args:
            continue
        kind = node.func.id if isinstance(node.func, ast.Name) else None
        first = node.args[0]
        if kind not in _FAMILY_CALLS or not isinstance(first, ast.Constant):
            continue
        family = str(first.value).removesuffix("_total")
        names.update(family + suffix for suffix in _FAMILY_CALLS[kind])
    return frozenset(names)


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
