"""The operator's first hour, from the CLI: what --wait streams while it waits and why an
execution stays pending, a refused worker shown where the operator looks, logs in time
order with their level, tables that keep ids whole on a narrow terminal, and success lines
that say what happened."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dispatcher.catalog import Catalog
from schemas.messages import LogEntry, TaskFinished, TaskLog, TaskOutcome
from tests.acceptance.conftest import Cli, Cluster, Result, running_cluster
from tests.fixtures.catalog import online_worker, started, started_execution

WAITING = "waiting (Ctrl-C stops waiting, not the execution)"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?P<level>\w+) +#(?P<attempt>\d+) ")


def create(cli: Cli, *extra: str, timeout: str = "60") -> Result:
    return cli.run(
        "executions", "create", "--folder", "F", "--project", "SalesETL", *extra,
        "--wait", "--timeout", timeout, timeout=120,
    )  # fmt: skip


def sleep(seconds: str = "1") -> tuple[str, ...]:
    return ("--package", "Sleep", "--param", f"Seconds={seconds}", "--param", "Interval=0.25")


def test_wait_streams_the_id_each_status_change_and_the_log_lines(cluster: Cluster) -> None:
    """stderr: the id at once, then status changes and the package's lines (each once);
    stdout: only the final row."""
    result = create(cluster.cli, *sleep(), "--json")
    row = result.json()
    lines = result.stderr.splitlines()
    worker = cluster.worker_id
    logged = [line for line in lines if LOG_LINE.match(line)]

    assert result.returncode == 0, str(result)
    assert lines[0] == f"execution {row['execution_id']} created and started; {WAITING}"
    assert lines[1].startswith("created -> "), result.stderr  # pending, or dispatched already
    assert any(re.fullmatch(rf"\w+ -> running on {worker} \(attempt 1\)", x) for x in lines)
    assert f"running -> succeeded on {worker} (attempt 1)" in lines
    assert [line for line in logged if line.endswith(" slept")], result.stderr
    assert len(logged) == len(set(logged))
    assert row["status_label"] == "succeeded"


def test_quiet_keeps_only_the_id(cluster: Cluster) -> None:
    result = create(cluster.cli, *sleep(), "--quiet", "--json")
    row = result.json()

    assert result.returncode == 0, str(result)
    assert result.stderr.splitlines() == [
        f"execution {row['execution_id']} created and started; {WAITING}"
    ]


def test_a_timeout_still_prints_the_row(ready: Cli) -> None:
    """With no master, --wait times out: exit 1, the error on stderr, and --json still
    prints the row on stdout, so a script keeps the id."""
    result = create(ready, *sleep(), "--json", timeout="1")

    assert result.returncode == 1, str(result)
    assert result.json()["status_label"] == "pending"
    assert f"error: execution {result.json()['execution_id']} is still pending after 1 s" in (
        result.stderr
    )


def reasons(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("waiting: ")]


def test_wait_says_why_the_execution_stays_pending(cluster: Cluster) -> None:
    """A restricted execution whose worker is offline, then one no enabled worker can take:
    each reason is printed once, with what to do."""
    cli, worker = cluster.cli, cluster.worker_id
    cli.ok("workers", "add", "w-off", "--enable")

    offline = create(cli, *sleep(), "--worker", "w-off", timeout="3")
    cli.ok("workers", "disable", worker)
    cli.ok("workers", "disable", "w-off")
    disabled = create(cli, *sleep(), "--quiet", timeout="3")

    assert offline.returncode == 1, str(offline)
    assert reasons(offline) == [
        "waiting: its worker is not online (w-off never seen): start `scaleout worker --id w-off`"
    ]
    assert disabled.returncode == 1, str(disabled)
    assert reasons(disabled) == [
        f"waiting: no worker is enabled ({worker}, w-off are disabled): "
        f"`scaleout workers enable {worker}`"
    ]


def test_a_worker_whose_login_is_not_its_id_is_shown_refused(
    ready: Cli, tmp_path: Path, plain_broker: str
) -> None:
    """A master that trusts only the AMQP user_id refuses the heartbeats of a worker logged
    in as guest: workers list shows the refusal, workers show its detail, and --wait of an
    execution for that worker says so."""
    with running_cluster(ready, tmp_path, plain_broker, identity="user_id") as cluster:
        cli, worker = cluster.cli, cluster.worker_id
        table = cli.ok("workers", "list").stdout
        [row] = cli.ok("workers", "list", "--json").json()
        shown = cli.ok("workers", "show", worker).stdout
        waited = create(cli, *sleep(), "--worker", worker, timeout="3")

    detail = f"agent.heartbeat: body says {worker}, broker says guest"
    assert re.search(rf"{worker} .* offline .* forged_sender \d+ s ago", table), table
    assert (row["last_refusal_reason"], row["last_refusal_detail"]) == ("forged_sender", detail)
    assert row["last_refusal_time"]
    assert detail in shown
    [reason] = reasons(waited)
    assert reason.startswith(f"waiting: the master refuses {worker}'s messages (forged_sender: ")
    assert reason.endswith(
        f"s ago): it must log in to RabbitMQ as {worker}; see `scaleout workers show {worker}`"
    )


def run_logged(url: str, worker: str = "w1") -> int:
    """An execution that ran on ``worker``: its lines were stored in one order (seq) and
    stamped in another, with three levels; then it succeeded."""
    catalog = Catalog.open(url)
    online_worker(catalog, worker)
    execution_id = started_execution(catalog)
    [a] = catalog.claim_tasks(1)
    base = datetime.now(UTC) - timedelta(minutes=1)
    entries = (
        LogEntry(seq=0, time=base + timedelta(seconds=3), message="third", message_type=120),
        LogEntry(seq=1, time=base + timedelta(seconds=1), message="first", message_type=70),
        LogEntry(seq=2, time=base + timedelta(seconds=2), message="second", message_type=110),
    )
    about = {
        "task_id": a.task_id,
        "attempt": a.attempt,
        "execution_id": execution_id,
        "worker_id": worker,
    }
    catalog.apply_status_reports(
        [
            (started(a), worker),
            (TaskLog(**about, entries=entries), worker),
            (TaskFinished(**about, outcome=TaskOutcome.SUCCEEDED), worker),
        ]
    )
    catalog.close()
    return execution_id


def test_logs_are_in_time_order_with_their_level(ready: Cli, catalog_url: str) -> None:
    execution_id = str(run_logged(catalog_url))

    plain = ready.ok("executions", "logs", execution_id).stdout.splitlines()
    followed = ready.ok("executions", "logs", execution_id, "--follow").stdout.splitlines()

    assert [(line.split()[2], line.split()[-1]) for line in plain] == [
        ("info", "first"),
        ("warning", "second"),
        ("error", "third"),
    ]
    assert all(LOG_LINE.match(line) for line in plain)
    assert followed == plain


def test_a_narrow_terminal_keeps_ids_whole(ready: Cli, catalog_url: str) -> None:
    worker = "etl-worker-0123456789"
    execution_id = run_logged(catalog_url, worker)
    ready.ok("workers", "set", worker, "DisplayName", "the long display name of a worker")
    narrow = {"COLUMNS": "72"}

    executions = ready.ok("executions", "list", env=narrow).stdout
    workers = ready.ok("workers", "list", env=narrow).stdout

    for table in (executions, workers):
        assert "…" not in table, table
        assert max(len(line) for line in table.splitlines()) <= 72, table
        assert worker in table, table
    assert re.search(rf"^\s*{execution_id} .*{worker}", executions, re.M), executions
    assert "succeeded" in executions


def test_success_lines_say_what_happened(ready: Cli) -> None:
    created = ready.ok(
        "executions", "create", "--folder", "F", "--project", "SalesETL", *sleep()
    ).stdout.strip()
    execution_id = created.split()[1]
    started_ = ready.ok("executions", "start", execution_id).stdout.strip()
    both = ready.ok(
        "executions", "create", "--folder", "F", "--project", "SalesETL", *sleep(), "--start"
    ).stdout.strip()
    as_json = ready.ok(
        "executions", "create", "--folder", "F", "--project", "SalesETL", *sleep(), "--start",
        "--json",
    ).json()  # fmt: skip

    assert created == (
        f"execution {execution_id} created: start it with `scaleout executions start "
        f"{execution_id}`"
    )
    assert started_ == f"execution {execution_id} started"
    assert re.fullmatch(r"execution \d+ created and started", both), both
    assert as_json["status_label"] == "pending"
