"""A real Prometheus (Debian's binary) scrapes a real master and worker, started through the
CLI on a SQLite catalog and the TLS RabbitMQ node, while they run a few executions; its HTTP
API shows the counters moving (per package too), RabbitMQ's exporter, and the alert rules
evaluating cleanly. Each process exports its own role's metrics only, and together they
export every metric the dashboard reads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pika.exceptions import AMQPError
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.broker.provisioning import NotFoundInBroker, master_permissions, worker_permissions
from dispatcher.errors import BrokerError
from dispatcher.settings import BrokerSettings
from tests.fixtures.broker import TlsBroker, declare_test_topology
from tests.integration.ops.support import (
    PROMETHEUS_DIR,
    RABBITMQ_METRICS,
    REPO,
    dashboard_exprs,
    declared_metric_names,
    exposed_series_names,
    load_yaml,
    promql_metric_names,
    tool,
)

WORKER = "w1"
EXECUTIONS = 3
RABBITMQ_EXPORTER = "127.0.0.1:15692"  # deploy/local/tls-node.sh's rabbitmq_prometheus


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def broker_env(settings: BrokerSettings) -> dict[str, str]:
    """SCALEOUT_BROKER__* variables for these broker settings."""
    return {
        f"SCALEOUT_BROKER__{name.upper()}": value if isinstance(value, str) else json.dumps(value)
        for name, value in settings.model_dump(mode="json", exclude_none=True).items()
    }


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SCALEOUT_")}


@dataclass
class Service:
    """A process started for the test, its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Service:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} log ---\n" + "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.process.returncode}\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_until(
    what: str, check: Callable[[], bool], services: list[Service], timeout_s: float
) -> None:
    """Poll ``check`` until true; on timeout fail with the services' logs."""
    deadline = time.monotonic() + timeout_s
    while not check():
        for service in services:
            service.check_alive()
        if time.monotonic() > deadline:
            logs = "\n".join(service.log_tail() for service in services)
            pytest.fail(f"{what}: not within {timeout_s} s\n{logs}")
        time.sleep(0.5)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Cluster:
    prometheus_url: str
    services: list[Service]
    cli_env: dict[str, str]
    endpoints: dict[str, str]
    """Each role's /metrics URL: "master", "worker"."""

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus_url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        data = self.api("query", query=expr)
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} has {len(result)} series"
        return result[0][1] if result else None

    def expect_all(self, *exprs: str, timeout_s: float = 60) -> None:
        """Wait until every expression returns a series; fail naming each one that never did."""
        deadline = time.monotonic() + timeout_s
        waiting = list(exprs)
        while waiting and time.monotonic() < deadline:
            for service in self.services:
                service.check_alive()
            waiting = [expr for expr in waiting if not self.query(expr)]
            time.sleep(0.5)
        assert not waiting, "never true in Prometheus:\n" + "\n".join(waiting)

    def eventually(self, expr: str, timeout_s: float = 60) -> float:
        """The value of ``expr`` once it returns a series (a filter such as ``> 0`` applies)."""

        def found() -> bool:
            return bool(self.query(expr))

        wait_until(f"{expr} in Prometheus", found, self.services, timeout_s)
        value = self.value(expr)
        assert value is not None
        return value


def run_cli(env: dict[str, str], *args: str, timeout_s: float = 180) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, f"scaleout {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def patiently(action: Callable[[], None], what: str, timeout_s: float = 60) -> None:
    """Retry ``action`` while the shared TLS node is briefly away (another session may be
    restarting it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            action()
            return
        except (BrokerError, AMQPError, OSError) as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"{what} failed for {timeout_s} s: {type(exc).__name__}: {exc}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def test_vhost(tls_broker: TlsBroker) -> Iterator[str]:
    """A vhost for this module: the master's and w1's permissions, the topology declared."""
    name = f"ops-{uuid.uuid4().hex[:12]}"
    admin = tls_broker.admin

    def provision() -> None:
        admin.create_vhost(name)
        admin.set_permissions(name, "scaleout-master", master_permissions())
        admin.set_permissions(name, WORKER, worker_permissions(WORKER))
        declare_test_topology(tls_broker.settings_for("scaleout-master", name), (WORKER,))

    def delete() -> None:
        with contextlib.suppress(NotFoundInBroker):
            admin.delete_vhost(name)

    try:
        patiently(provision, f"setting up vhost {name}")
        yield name
    finally:
        patiently(delete, f"deleting vhost {name}")


@pytest.fixture(scope="module")
def cluster(
    tls_broker: TlsBroker, test_vhost: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Master, worker w1 and Prometheus running; EXECUTIONS executions of LoadSales done."""
    tmp = tmp_path_factory.mktemp("scrape")
    master_port, worker_port, prometheus_port = free_port(), free_port(), free_port()
    catalog = {"SCALEOUT_CATALOG__URL": f"sqlite:///{tmp / 'ssisdb.sqlite3'}"}
    master_broker = broker_env(tls_broker.settings_for("scaleout-master", test_vhost))
    cli_env = {**base_env(), **catalog, **master_broker}

    run_cli(cli_env, "catalog", "init")
    run_cli(cli_env, "workers", "add", WORKER, "--enable")
    run_cli(cli_env, "deploy", str(REPO / "examples" / "sales_etl"), "--folder", "Ops")

    master = Service(
        "master",
        [sys.executable, "-m", "dispatcher.cli", "master"],
        {
            **cli_env,
            "SCALEOUT_METRICS_PORT": str(master_port),
            "SCALEOUT_MASTER_HEARTBEAT_INTERVAL_MS": "1000",
            "SCALEOUT_DISPATCH_POLL_INTERVAL_MS": "250",
            "SCALEOUT_WORKER_OFFLINE_AFTER_S": "30",
        },
        tmp / "master.log",
    )
    worker = Service(
        "worker",
        [sys.executable, "-m", "dispatcher.cli", "worker"],
        {
            **base_env(),
            **broker_env(tls_broker.settings_for(WORKER, test_vhost)),
            "SCALEOUT_WORKER_ID": WORKER,
            "SCALEOUT_METRICS_PORT": str(worker_port),
            "SCALEOUT_METRICS_HOST": "127.0.0.1",
            "SCALEOUT_AGENT_HEARTBEAT_INTERVAL_S": "1",
            "SCALEOUT_TASK_HEARTBEAT_INTERVAL_S": "0.5",
            "SCALEOUT_TASK_REQUEST_MAX_CPU": "100",
            "SCALEOUT_TASK_REQUEST_MIN_MEMORY_MB": "0",
            "SCALEOUT_TASKS_ROOT_FOLDER": str(tmp / "worker" / "tasks"),
            "SCALEOUT_EXECUTION_LOG_CACHE_FOLDER": str(tmp / "worker" / "elogcache"),
            "SCALEOUT_PROJECT_CACHE_FOLDER": str(tmp / "worker" / "projects"),
        },
        tmp / "worker.log",
    )
    prometheus = Service(
        "prometheus",
        [
            tool("prometheus"),
            f"--config.file={write_prometheus_config(tmp, master_port, worker_port)}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--log.level=warn",
        ],
        base_env(),
        tmp / "prometheus.log",
    )
    services = [master, worker, prometheus]
    try:
        master.start()
        wait_until(
            "master /metrics",
            lambda: http_ok(f"http://127.0.0.1:{master_port}/metrics"),
            [master],
            60,
        )
        worker.start()
        prometheus.start()
        url = f"http://127.0.0.1:{prometheus_port}"
        wait_until("prometheus ready", lambda: http_ok(f"{url}/-/ready"), services, 60)
        for _ in range(EXECUTIONS):
            run_cli(
                cli_env,
                "executions", "create", "--folder", "Ops", "--project", "SalesETL",
                "--package", "LoadSales", "--wait", "--timeout", "120",
            )  # fmt: skip
        endpoints = {
            "master": f"http://127.0.0.1:{master_port}/metrics",
            "worker": f"http://127.0.0.1:{worker_port}/metrics",
        }
        yield Cluster(url, services, cli_env, endpoints)
    finally:
        for service in reversed(services):
            service.stop()


def write_prometheus_config(folder: Path, master_port: int, worker_port: int) -> Path:
    """Scrape every second; the repository's alert rules loaded as they are."""

    def job(name: str, target: str) -> dict[str, Any]:
        return {"job_name": name, "static_configs": [{"targets": [target]}]}

    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
        "scrape_configs": [
            job("scaleout-master", f"127.0.0.1:{master_port}"),
            job("scaleout-worker", f"127.0.0.1:{worker_port}"),
            job("rabbitmq", RABBITMQ_EXPORTER),
        ],
    }
    path = folder / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def test_master_counters_moved(cluster: Cluster) -> None:
    """Dispatches, applied status reports, dispatch latencies and succeeded executions are
    counted, a worker is online and the master's heartbeat is fresh."""
    cluster.expect_all(
        f"scaleout_tasks_dispatched_total >= {EXECUTIONS}",
        'sum(scaleout_status_reports_total{outcome="applied"}) > 0',
        f'scaleout_executions{{status="succeeded"}} >= {EXECUTIONS}',
        "scaleout_workers_online >= 1",
        f'scaleout_agent_heartbeat_age_seconds{{worker="{WORKER}", enabled="true"}} < 30',
        "scaleout_master_heartbeat_age_seconds < 30",
        "sum(scaleout_reconcile_batch_size_count) > 0",
        "sum(scaleout_publish_confirm_seconds_count) > 0",
        f"scaleout_dispatch_latency_seconds_count >= {EXECUTIONS}",
    )


def test_package_metrics_moved(cluster: Cluster) -> None:
    """The master counts each ended execution and attempt by the catalog's project and
    package names, with the attempts' run times; statuses are snake_case names."""
    names = 'project="SalesETL", package=~"LoadSales.*"'
    cluster.expect_all(
        f'scaleout_package_executions_ended_total{{{names}, status="succeeded"}} >= {EXECUTIONS}',
        f'scaleout_package_executions_ended_total{{{names}, status="ended_unexpectedly"}} == 0',
        f'scaleout_package_attempts_ended_total{{{names}, outcome="succeeded"}} >= {EXECUTIONS}',
        f"scaleout_package_attempt_duration_seconds_count{{{names}}} >= {EXECUTIONS}",
        'scaleout_executions{status="ended_unexpectedly"} == 0',
    )
    assert not cluster.query('scaleout_executions{status="ended unexpectedly"}')


def test_worker_counters_moved(cluster: Cluster) -> None:
    """The worker's own endpoint is scraped, labels its series with its id and counts its
    finished packages."""
    cluster.expect_all(
        'up{job="scaleout-worker"} == 1',
        f'scaleout_worker_tasks_running{{job="scaleout-worker", worker="{WORKER}"}}',
        f'sum(scaleout_worker_tasks_finished_total{{outcome="succeeded"}}) >= {EXECUTIONS}',
        f"sum(scaleout_worker_package_duration_seconds_count) >= {EXECUTIONS}",
        "sum(scaleout_worker_heartbeat_gap_seconds_count) > 0",
    )


def test_rabbitmq_exporter_serves_the_dashboard_metrics(cluster: Cluster) -> None:
    """RabbitMQ's Prometheus plugin is scraped and exports every rabbitmq_* metric the
    dashboard reads."""
    assert cluster.eventually('up{job="rabbitmq"} == 1') == 1
    for name in sorted(RABBITMQ_METRICS):
        assert cluster.query(f'{name}{{job="rabbitmq"}}'), f"RabbitMQ does not export {name}"


def test_every_scraped_scaleout_metric_is_declared_for_its_role(cluster: Cluster) -> None:
    """The scaleout_* series Prometheus holds from each job are names that metrics.py
    declares for that role (so the static dashboard and alert checks read the same names as
    reality): no scaleout_worker_* from the master, nothing of the master's from a worker."""
    cluster.eventually(f"scaleout_tasks_dispatched_total >= {EXECUTIONS}")
    scraped = {role: _scraped_names(cluster, f"scaleout-{role}") for role in ("master", "worker")}
    shared = declared_metric_names("master") & declared_metric_names("worker")
    assert "scaleout_executions" in scraped["master"]
    assert "scaleout_worker_tasks_running" in scraped["worker"]
    for role, names in scraped.items():
        mine = declared_metric_names(role)
        assert names <= mine, f"{role} exports {sorted(names - mine)}"
    assert not {n for n in scraped["master"] if n.startswith("scaleout_worker_")}
    assert {n for n in scraped["worker"] if not n.startswith("scaleout_worker_")} <= shared


def _scraped_names(cluster: Cluster, job: str) -> set[str]:
    names = cluster.api("label/__name__/values", **{"match[]": f'{{job="{job}"}}'})
    return {name for name in names if name.startswith("scaleout_")}


def _exposed(cluster: Cluster, role: str) -> set[str]:
    """The scaleout_* series names a live process's /metrics page declares (HELP and TYPE
    appear before a labelled metric has its first sample, so this is every family)."""
    with urllib.request.urlopen(cluster.endpoints[role], timeout=10) as response:
        text = response.read().decode()
    families = [(f.name, f.type) for f in text_string_to_metric_families(text)]
    return {name for name in exposed_series_names(families) if name.startswith("scaleout_")}


def test_each_process_exports_exactly_its_roles_metrics(cluster: Cluster) -> None:
    """The master's page holds the master's families and the catalog's gauges, none of a
    worker's; the worker's page holds its own and the broker client's, none of the master's."""
    for role in ("master", "worker"):
        exposed = _exposed(cluster, role)
        mine = {n for n in declared_metric_names(role) if not n.endswith("_created")}
        assert exposed == mine, (role, sorted(exposed ^ mine))


def test_the_dashboards_metrics_are_exported_by_the_live_processes(cluster: Cluster) -> None:
    """Every scaleout_* metric a dashboard query reads is on the master's or the worker's
    page (RabbitMQ's are checked against its exporter above)."""
    read = set().union(*(promql_metric_names(expr) for expr in dashboard_exprs()))
    exposed = _exposed(cluster, "master") | _exposed(cluster, "worker")
    ours = read - RABBITMQ_METRICS
    assert ours <= exposed, sorted(ours - exposed)


def test_alert_rules_evaluate_cleanly_on_real_data(cluster: Cluster) -> None:
    """Every rule of alerts.yml evaluates without error on the live series, and the master
    alerts stay quiet while the master runs."""
    cluster.eventually("scaleout_master_heartbeat_age_seconds")
    wait_until(
        "every rule evaluated",
        lambda: all(r.get("lastEvaluation", "").startswith("20") for r in _rules(cluster)),
        cluster.services,
        30,
    )
    rules = _rules(cluster)
    alerts = load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]
    assert {r["name"] for r in rules} == {rule["alert"] for g in alerts for rule in g["rules"]}
    assert all(rule["health"] == "ok" for rule in rules), rules
    firing = {r["name"] for r in rules if r["state"] != "inactive"}
    assert not firing & {"ScaleoutMasterAbsent", "ScaleoutMasterHeartbeatStale"}


def _rules(cluster: Cluster) -> list[dict[str, Any]]:
    groups = cluster.api("rules")["groups"]
    return [rule for group in groups for rule in group["rules"]]
