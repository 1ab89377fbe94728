"""deploy/docker-compose.yml: docker-compose accepts it, every `scaleout` command it runs
exists in the real CLI, start order and health checks hold together, and the services
agree with each other (ports, URLs, mounted files). No Docker engine is needed."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.integration.ops.cli_tree import check_invocation, command_path, script_invocations
from tests.integration.ops.support import DEPLOY, PROMETHEUS_DIR, load_yaml, run, tool, yaml_to_data

COMPOSE = DEPLOY / "docker-compose.yml"
SECRETS = {
    "MSSQL_SA_PASSWORD": "Compose-Test-1",
    "RABBITMQ_ADMIN_PASSWORD": "compose-test",
    "GRAFANA_ADMIN_PASSWORD": "compose-test",
    "RABBITMQ_ERLANG_COOKIE": "compose-test-cookie",
}
LONG_RUNNING = {
    "rabbitmq",
    "rabbitmq2",
    "rabbitmq3",
    "mssql",
    "master",
    "master2",
    "worker",
    "prometheus",
    "grafana",
}
ONE_SHOT = {"provision", "mssql-createdb", "catalog-init", "enroll"}


def _compose(*args: str, secrets: dict[str, str] = SECRETS) -> Any:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and k != "COMPOSE_FILE"}
    return run([tool("docker-compose"), "-f", str(COMPOSE), *args], env={**env, **secrets})


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    done = _compose("config")
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = yaml_to_data(done.stdout)["services"]
    return resolved


def _argv(service: dict[str, Any]) -> list[str]:
    def words(value: Any) -> list[str]:
        return value.split() if isinstance(value, str) else list(value or [])

    return words(service.get("entrypoint")) + words(service.get("command"))


def _scaleout_calls(services: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(where, argv after `scaleout`) for each service command and each script it runs."""
    calls: list[tuple[str, list[str]]] = []
    for name, service in services.items():
        argv = _argv(service)
        if "scaleout" in argv:
            calls.append((f"service {name}", argv[argv.index("scaleout") + 1 :]))
        for word in argv:
            if word.startswith("/app/deploy/compose/") and word.endswith(".sh"):
                script = DEPLOY / word.removeprefix("/app/deploy/")
                assert script.is_file(), f"service {name} runs missing {script}"
                calls.extend((str(script), args) for args in script_invocations(script))
    return calls


def _env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {k: str(v) for k, v in environment.items()}


def test_docker_compose_accepts_the_file() -> None:
    """`docker-compose config -q` validates the file (schema, interpolation, references)."""
    done = _compose("config", "-q")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_passwords_are_required_not_defaulted(missing: str) -> None:
    """Without one of the passwords from deploy/.env, docker-compose refuses the file and
    names the variable."""
    secrets = {k: v for k, v in SECRETS.items() if k != missing}
    done = _compose("config", "-q", secrets=secrets)
    assert done.returncode != 0
    assert f"set {missing} in deploy/.env" in done.stderr


def test_env_example_names_every_required_variable() -> None:
    """deploy/.env.example lists every variable the compose file requires."""
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    example = set(re.findall(r"^(\w+)=", (DEPLOY / ".env.example").read_text(), re.MULTILINE))
    assert required == set(SECRETS)
    assert required <= example


def test_every_scaleout_command_exists_in_the_cli(services: dict[str, Any]) -> None:
    """Each `scaleout ...` a service or its script runs names a real command and real options."""
    calls = _scaleout_calls(services)
    problems = [f"{where}: {why}" for where, argv in calls if (why := check_invocation(argv))]
    assert not problems, "\n".join(problems)
    used = {command_path(argv) for _, argv in calls}
    assert {("catalog", "init"), ("master",), ("worker",), ("workers", "add")} <= used


def test_the_services_are_all_there(services: dict[str, Any]) -> None:
    """RabbitMQ, SQL Server, the catalog job, master, worker, Prometheus and Grafana exist."""
    assert set(services) >= LONG_RUNNING | ONE_SHOT


def test_start_order_follows_health_and_completion(services: dict[str, Any]) -> None:
    """Long-running services have health checks; a `service_healthy` dependency has one,
    a `service_completed_successfully` one is a job that does not restart."""
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {target}"
                assert target in ONE_SHOT, f"{name} waits for {target} to finish"
                assert services[target].get("restart", "no") == "no", target


def test_master_starts_after_broker_and_catalog(services: dict[str, Any]) -> None:
    """The master waits for a healthy RabbitMQ and for the catalog and worker pool jobs,
    which wait for SQL Server; the workers wait for a healthy master."""

    def upstream(name: str) -> set[str]:
        direct = set(services[name].get("depends_on") or {})
        return direct.union(*(upstream(d) for d in direct)) if direct else set()

    assert {"rabbitmq", "provision", "enroll", "catalog-init", "mssql-createdb", "mssql"} <= (
        upstream("master")
    )
    assert services["worker"]["depends_on"]["master"]["condition"] == "service_healthy"


def test_catalog_job_runs_catalog_init_over_odbc_driver_18(services: dict[str, Any]) -> None:
    """catalog-init runs `scaleout catalog init` on an mssql+pyodbc URL with ODBC Driver 18."""
    job = services["catalog-init"]
    assert _argv(job) == ["scaleout", "catalog", "init"]
    url = make_url(_env(job)["SCALEOUT_CATALOG__URL"])
    assert url.drivername == "mssql+pyodbc"
    assert url.host == "mssql"
    assert url.database == "SSISDB"
    assert url.query["driver"] == "ODBC Driver 18 for SQL Server"
    assert url.query["TrustServerCertificate"] == "yes"
    assert services["mssql"]["image"].startswith("mcr.microsoft.com/mssql/server:2022")


def test_broker_is_tls_only_with_certificate_logins(services: dict[str, Any]) -> None:
    """RabbitMQ listens on 5671 with TLS only and mutual TLS; master and workers use amqps."""
    conf = dict(
        line.split(" = ", 1)
        for line in (DEPLOY / "compose" / "rabbitmq.conf").read_text().splitlines()
        if " = " in line and not line.startswith("#")
    )
    assert conf["listeners.tcp"] == "none"
    assert conf["listeners.ssl.default"] == "5671"
    assert conf["ssl_options.verify"] == "verify_peer"
    assert conf["ssl_options.fail_if_no_peer_cert"] == "true"
    assert conf["auth_mechanisms.1"] == "EXTERNAL"
    plugins = (DEPLOY / "compose" / "enabled_plugins").read_text()
    assert "rabbitmq_management" in plugins
    assert "rabbitmq_prometheus" in plugins
    for name in ("master", "master2", "worker"):
        env = _env(services[name])
        nodes = [env["SCALEOUT_BROKER__URL"], *json.loads(env["SCALEOUT_BROKER__FAILOVER_URLS"])]
        assert set(nodes) == {
            f"amqps://{n}:5671/%2F" for n in ("rabbitmq", "rabbitmq2", "rabbitmq3")
        }


def test_three_rabbitmq_nodes_form_one_cluster_and_two_masters_share_the_catalog(
    services: dict[str, Any],
) -> None:
    conf = (DEPLOY / "compose" / "rabbitmq.conf").read_text()
    for node in ("rabbitmq", "rabbitmq2", "rabbitmq3"):
        assert f"= rabbit@{node}" in conf
        assert services[node]["hostname"] == node
        assert _env(services[node])["RABBITMQ_ERLANG_COOKIE"] == SECRETS["RABBITMQ_ERLANG_COOKIE"]
    data = {
        str(volume)
        for n in ("rabbitmq", "rabbitmq2", "rabbitmq3")
        for volume in services[n]["volumes"]
        if "/var/lib/rabbitmq" in str(volume)
    }
    assert len(data) == 3  # a data volume each
    masters = [_env(services[m]) for m in ("master", "master2")]
    assert [m["SCALEOUT_MASTER_ID"] for m in masters] == ["master", "master2"]
    assert masters[0]["SCALEOUT_CATALOG__URL"] == masters[1]["SCALEOUT_CATALOG__URL"]


def test_workers_scale_with_their_own_identity(services: dict[str, Any]) -> None:
    """The worker service has no fixed name or host port (so --scale works) and claims its
    identity through worker-identity.sh from the pool the provision job made."""
    worker = services["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports")
    assert _argv(worker)[:2] == ["bash", "/app/deploy/compose/worker-identity.sh"]
    assert "SCALEOUT_WORKER_ID" not in _env(worker)
    assert (
        _env(worker)["SCALEOUT_WORKER_POOL"] == _env(services["provision"])["SCALEOUT_WORKER_POOL"]
    )


def test_prometheus_scrapes_compose_services_on_their_metrics_ports(
    services: dict[str, Any],
) -> None:
    """Every scrape target is a compose service, on the port that service exports on."""
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    ports = {
        "master": _env(services["master"])["SCALEOUT_METRICS_PORT"],
        "master2": _env(services["master2"])["SCALEOUT_METRICS_PORT"],
        "worker": _env(services["worker"])["SCALEOUT_METRICS_PORT"],
        "rabbitmq": "15692",
        "localhost": "9090",
    }
    seen = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert host == "localhost" or host in services, target
                assert ports[host] == port, target
                seen.add(host)
        for sd in job.get("dns_sd_configs", []):
            for host in sd["names"]:
                assert host in services
                assert ports[host] == str(sd["port"])
                seen.add(host)
    assert {"master", "worker", "rabbitmq"} <= seen


def test_bind_mounts_exist(services: dict[str, Any]) -> None:
    """Every file or folder the compose file mounts from the repository exists."""
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith(("/", ".")):  # a named volume's source is a bare name
                assert Path(source).exists(), f"{name} mounts missing {source}"


def test_dockerfile_builds_the_master_and_worker_image() -> None:
    """The image is python:3.11-slim with unixODBC and msodbcsql18, installs the project with
    pip, and copies only paths that exist and that its ignore file lets through."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    assert "msodbcsql18" in text
    assert "unixodbc" in text
    assert "pip install ." in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for sources in re.findall(r"^COPY (.+) \S+$", text, re.MULTILINE):
        for source in sources.split():
            assert (DEPLOY.parent / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/" in ignore, source
