"""`scaleout master`, `scaleout worker` and `scaleout schemas export` as processes: a live
one-worker cluster run from the CLI, and the services' refusals."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cli, Cluster, stop
from tests.fixtures.polling import wait_for


def test_master_refuses_an_uninitialised_catalog(cli: Cli) -> None:
    """The master exits 1 with the init hint when the catalog has no schema."""
    result = cli.run("master", timeout=60)

    assert result.returncode == 1, str(result)
    assert "scaleout catalog init" in result.stderr


def test_worker_without_an_id_is_a_settings_error(cli: Cli) -> None:
    """A worker with no SCALEOUT_WORKER_ID / --id says which setting is missing, exit 1."""
    result = cli.run("worker")

    assert result.returncode == 1, str(result)
    assert "worker_id" in result.stderr
    assert "Traceback" not in result.stderr


def test_schemas_export_writes_json_schemas(cli: Cli, tmp_path: Path) -> None:
    """schemas export writes a JSON Schema file per wire message into the folder."""
    folder = tmp_path / "schemas"

    cli.ok("schemas", "export", str(folder))

    files = sorted(folder.glob("*.json"))
    assert files
    assert all(isinstance(json.loads(f.read_text()), dict) for f in files)


def test_create_wait_runs_a_package_and_logs_follow_ends(cluster: Cluster) -> None:
    """On a live master and worker, create --wait exits 0 once the package succeeded, and
    logs --follow prints its output and returns because the execution has ended."""
    cli = cluster.cli
    result = cli.ok(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "Sleep", "--param", "Seconds=0.5", "--param", "Interval=0.2",
        "--wait", "--timeout", "60", "--json", timeout=90,
    )  # fmt: skip
    row = result.json()
    logs = cli.ok("executions", "logs", str(row["execution_id"]), "--follow", timeout=60)

    assert row["status_label"] == "succeeded"
    assert row["worker_agent_id"] == cluster.worker_id
    assert "slept" in logs.stdout


def test_wait_on_a_failing_package_exits_1_after_the_retry(cluster: Cluster) -> None:
    """A package that fails with one retry runs twice, ends failed, and --wait exits 1."""
    result = cluster.cli.run(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "LoadSales", "--param", "FailOnPurpose=true",
        "--retry-count", "1", "--wait", "--timeout", "60", "--json", timeout=90,
    )  # fmt: skip

    assert result.returncode == 1, str(result)
    row = result.json()
    assert row["status_label"] == "failed"
    assert row["executed_count"] == 2


def test_stop_a_running_execution_cancels_it(cluster: Cluster) -> None:
    """stop on a running package moves it to stopping, and the worker's confirmation to
    canceled (3), long before the package would have ended."""
    cli = cluster.cli
    created = cli.ok(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "Sleep", "--param", "Seconds=120", "--start", "--json",
    )  # fmt: skip
    execution_id = str(created.json()["execution_id"])

    def status() -> str:
        return str(cli.ok("executions", "show", execution_id, "--json").json()["status_label"])

    wait_for(lambda: status() == "running", 60, f"execution {execution_id} to run")
    stopped = cli.ok("executions", "stop", execution_id, "--json").json()
    wait_for(lambda: status() == "canceled", 60, f"execution {execution_id} to be canceled")

    assert stopped["status_label"] in {"stopping", "canceled"}


def test_disabled_worker_gets_nothing_until_enabled(cluster: Cluster) -> None:
    """An execution stays pending while its only worker is disabled (several dispatch
    polls pass), and runs once the worker is enabled again."""
    cli = cluster.cli
    cli.ok("workers", "disable", cluster.worker_id)
    created = cli.ok(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "Summarise", "--start", "--json",
    )  # fmt: skip
    execution_id = str(created.json()["execution_id"])
    time.sleep(2)  # ten dispatch polls of 200 ms

    still = cli.ok("executions", "show", execution_id, "--json").json()
    cli.ok("workers", "enable", cluster.worker_id)

    def ended() -> bool:
        return bool(cli.ok("executions", "show", execution_id, "--json").json()["end_time"])

    wait_for(ended, 60, f"execution {execution_id} to end")
    done = cli.ok("executions", "show", execution_id, "--json").json()
    assert still["status_label"] == "pending"
    assert done["status_label"] == "succeeded"


def test_master_stops_cleanly_on_sigterm(ready: Cli, tmp_path: Path, plain_broker: str) -> None:
    """A master with a reachable broker runs until SIGTERM, then exits 0."""
    master = ready.spawn(
        "master",
        log=tmp_path / "master.log",
        env={
            "SCALEOUT_BROKER__URL": plain_broker,
            "SCALEOUT_METRICS_PORT": "0",
            "SCALEOUT_SENDER_IDENTITY": "shared_user",
        },
    )
    with pytest.raises(subprocess.TimeoutExpired):
        master.wait(3)  # it serves until told to stop

    code = stop(master)

    assert code == 0, (tmp_path / "master.log").read_text()
