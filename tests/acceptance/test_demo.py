"""`scaleout demo` end to end: a master and two workers as processes, 20 executions."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.conftest import Cli, closed_port
from tests.fixtures.broker import TlsBroker


def test_demo_runs_20_executions_as_planned(tmp_path: Path, plain_broker: str) -> None:
    """The demo exits 0, its catalog holds 20 ended executions, 19 succeeded, and the one
    that fails on purpose ran twice (retry_count 1) and ended failed."""
    cli = Cli(tmp_path, {"SCALEOUT_BROKER__URL": plain_broker})

    result = cli.run("demo", "--root", str(tmp_path / "runs"), timeout=120)

    assert result.returncode == 0, str(result)
    assert "19 succeeded, 1 failed" in result.stdout
    (run,) = (tmp_path / "runs").iterdir()
    url = f"sqlite:///{run / 'ssisdb.sqlite3'}"
    rows = cli.ok("--catalog-url", url, "executions", "list", "--limit", "100", "--json").json()
    assert len(rows) == 20
    failed = [row for row in rows if row["status_label"] == "failed"]
    assert [(row["package_name"], row["executed_count"]) for row in failed] == [("LoadSales", 2)]
    assert sum(row["status_label"] == "succeeded" for row in rows) == 19
    pinned = [row for row in rows if not row["useanyworker"]]
    assert len(pinned) == 4
    assert all(row["worker_agent_id"] in row["allowed_workers"] for row in pinned)


def test_demo_over_tls_runs_as_planned(tmp_path: Path, tls_broker: TlsBroker, vhost: str) -> None:
    """Given an amqps:// URL, the demo runs its master and workers over mutual TLS, each
    with its own certificate and RabbitMQ user, and ends as planned."""
    url = f"amqps://{tls_broker.host}:{tls_broker.port}/{vhost}"
    cli = Cli(tmp_path)

    result = cli.run(
        "--broker-url", url, "demo", "--root", str(tmp_path / "runs"),
        "--certs", str(tls_broker.certs), timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, str(result)
    assert "TLS, one certificate per process" in result.stdout
    assert "19 succeeded, 1 failed" in result.stdout


def test_demo_without_a_broker_says_how_to_start_one(tmp_path: Path) -> None:
    """With nothing listening on the broker's port the demo exits 1 and names the command
    that starts RabbitMQ here and the compose file that starts it anywhere."""
    url = f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F"

    result = Cli(tmp_path).run("--broker-url", url, "demo", "--root", str(tmp_path / "runs"))

    assert result.returncode == 1, str(result)
    assert "rabbitmq-server -detached" in result.stderr
    assert "deploy/" in result.stderr
    assert "Traceback" not in result.stderr
