"""`scaleout executions ...` on a catalog, without a master: what an operator types and
what a script parses."""

from __future__ import annotations

from tests.acceptance.conftest import Cli


def create(cli: Cli, *extra: str) -> int:
    result = cli.ok(
        "executions", "create", "--folder", "F", "--project", "SalesETL", *extra, "--json"
    )
    return int(result.json()["execution_id"])


def test_create_sets_parameters_and_workers(ready: Cli) -> None:
    """create stores the execution as created (1), restricted to the --worker given."""
    ready.ok("workers", "add", "w9")

    execution_id = create(ready, "--package", "Sleep", "--param", "Seconds=2", "--worker", "w9")
    shown = ready.ok("executions", "show", str(execution_id), "--json").json()

    assert shown["status"] == 1
    assert shown["status_label"] == "created"
    assert shown["package_name"] == "Sleep"
    assert shown["useanyworker"] is False
    assert shown["allowed_workers"] == ["w9"]


def test_start_without_a_broker_succeeds_with_a_warning(ready: Cli) -> None:
    """With the broker's port closed, start still starts (status 5) and warns once."""
    execution_id = create(ready, "--package", "Sleep", "--param", "Seconds=1")

    result = ready.ok("executions", "start", str(execution_id), "--retry-count", "2")
    shown = ready.ok("executions", "show", str(execution_id), "--json").json()

    assert "warning: could not wake the master" in result.stderr
    assert shown["status"] == 5
    assert shown["max_executed_count"] == 3


def test_create_with_start_starts_it(ready: Cli) -> None:
    """create --start leaves the execution pending for the master."""
    execution_id = create(ready, "--package", "LoadSales", "--start")

    shown = ready.ok("executions", "show", str(execution_id), "--json").json()

    assert shown["status_label"] == "pending"


def test_list_filters_by_status_and_is_newest_first(ready: Cli) -> None:
    """list --json returns the executions newest first; --status keeps only that status."""
    first = create(ready, "--package", "LoadSales")
    second = create(ready, "--package", "LoadSales", "--start")

    everything = ready.ok("executions", "list", "--json").json()
    pending = ready.ok("executions", "list", "--status", "pending", "--json").json()
    table = ready.ok("executions", "list").stdout

    assert [row["execution_id"] for row in everything] == [second, first]
    assert [row["execution_id"] for row in pending] == [second]
    assert "LoadSales" in table


def test_stop_a_pending_execution_cancels_it(ready: Cli) -> None:
    """stop on a pending execution cancels it at once (status 3)."""
    execution_id = create(ready, "--package", "LoadSales", "--start")

    stopped = ready.ok("executions", "stop", str(execution_id), "--json").json()

    assert stopped["status"] == 3


def test_unknown_execution_id_is_an_error(ready: Cli) -> None:
    """show, start, stop and logs of an unknown id: one error line each, exit 1."""
    for command in ("show", "start", "stop", "logs"):
        result = ready.run("executions", command, "424242")

        assert result.returncode == 1, str(result)
        assert "424242" in result.stderr
        assert "Traceback" not in result.stderr


def test_bad_parameters_are_refused(ready: Cli) -> None:
    """A value of the wrong type or an undeclared parameter is refused with exit 1."""
    wrong_type = ready.run(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "Sleep", "--param", "Seconds=soon",
    )  # fmt: skip
    undeclared = ready.run(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "Sleep", "--param", "Colour=blue",
    )  # fmt: skip

    assert wrong_type.returncode == 1, str(wrong_type)
    assert "Seconds" in wrong_type.stderr
    assert undeclared.returncode == 1, str(undeclared)
    assert "Colour" in undeclared.stderr


def test_usage_errors_exit_2(ready: Cli) -> None:
    """A --param without '=', an unknown --status, or --retry-count without --start: exit 2."""
    no_equals = ready.run(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "Sleep", "--param", "Seconds",
    )  # fmt: skip
    bad_status = ready.run("executions", "list", "--status", "sleeping")
    retry_alone = ready.run(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "Sleep", "--retry-count", "1",
    )  # fmt: skip

    for result in (no_equals, bad_status, retry_alone):
        assert result.returncode == 2, str(result)


def test_unknown_package_and_second_start_are_refused(ready: Cli) -> None:
    """An unknown package cannot be created; a started execution cannot start again."""
    unknown = ready.run(
        "executions", "create", "--folder", "F", "--project", "SalesETL", "--package", "Nope"
    )
    execution_id = create(ready, "--package", "LoadSales", "--start")
    again = ready.run("executions", "start", str(execution_id))

    assert unknown.returncode == 1, str(unknown)
    assert "Nope" in unknown.stderr
    assert again.returncode == 1, str(again)
    assert "Traceback" not in again.stderr


def test_required_parameter_missing_refuses_start(ready: Cli) -> None:
    """Sleep's required Seconds must be set before the execution can start."""
    execution_id = create(ready, "--package", "Sleep")

    result = ready.run("executions", "start", str(execution_id))

    assert result.returncode == 1, str(result)
    assert "Seconds" in result.stderr


def test_logs_of_a_new_execution_are_empty_json_lines(ready: Cli) -> None:
    """logs --json prints one JSON object per line: none for an execution that never ran."""
    execution_id = create(ready, "--package", "LoadSales")

    result = ready.ok("executions", "logs", str(execution_id), "--json")

    assert result.stdout.strip() == ""


def test_create_count_starts_many_in_one_go(ready: Cli) -> None:
    """create --start --count N: N pending executions, their ids printed in order; a
    refused batch (a required value missing) leaves none."""
    before = ready.ok("executions", "list", "--json").json()
    listed = ready.ok(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "LoadSales", "--start", "--count", "25", "--json",
    ).json()  # fmt: skip
    human = ready.ok(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "LoadSales", "--start", "--count", "2",
    )  # fmt: skip
    refused = ready.run(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "Sleep", "--start", "--count", "3",
    )  # fmt: skip
    after = ready.ok("executions", "list", "--status", "pending", "--json").json()

    assert len(listed) == 25
    assert listed == sorted(listed)
    assert f"executions {listed[-1] + 1} to {listed[-1] + 2} created and started" in human.stdout
    assert refused.returncode == 1, str(refused)
    assert "Seconds" in refused.stderr
    assert len(after) == len(before) + 27
    assert set(listed) <= {row["execution_id"] for row in after}


def test_create_count_usage_errors_exit_2(ready: Cli) -> None:
    """--count without --start, with --wait, of 0 or above the bound: exit 2."""
    base = (
        "executions",
        "create",
        "--folder",
        "F",
        "--project",
        "SalesETL",
        "--package",
        "LoadSales",
    )
    for extra in (
        ("--count", "3"),
        ("--start", "--wait", "--count", "3"),
        ("--start", "--count", "0"),
        ("--start", "--count", "1001"),
    ):
        result = ready.run(*base, *extra)
        assert result.returncode == 2, str(result)
        assert "--count" in result.stderr
