"""Progress that reaches the operator: on a live master and worker, the Sleep package's
``##scaleout[progress]`` lines become the execution's percent in ``executions show``, and
``--wait`` prints each change once."""

from __future__ import annotations

import itertools

from tests.acceptance.conftest import Cluster
from tests.fixtures.polling import wait_for


def test_show_has_the_running_percent_and_wait_prints_each_change(cluster: Cluster) -> None:
    """While Sleep runs, show --json has a percent between 0 and 100 and a message; after
    create --wait, the stored progress is its last line (100 %, "slept"), the table shows it,
    and --wait printed one stderr line per change, without repeats."""
    cli = cluster.cli
    created = cli.ok(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "Sleep", "--param", "Seconds=30", "--param", "Interval=0.5",
        "--start", "--json",
    )  # fmt: skip
    running_id = str(created.json()["execution_id"])

    def midway() -> dict[str, object] | None:
        shown = cli.ok("executions", "show", running_id, "--json").json()
        percent = shown["progress_percent"]
        return shown if percent is not None and 0 < percent < 100 else None

    live = wait_for(midway, 60, f"execution {running_id} to show progress")
    cli.ok("executions", "stop", running_id)

    waited = cli.ok(
        "executions", "create", "--folder", "F", "--project", "SalesETL",
        "--package", "Sleep", "--param", "Seconds=3", "--param", "Interval=0.25",
        "--wait", "--timeout", "60", "--json", timeout=90,
    )  # fmt: skip
    row = waited.json()
    table = cli.ok("executions", "show", str(row["execution_id"])).stdout
    printed = [line for line in waited.stderr.splitlines() if line.startswith("progress: ")]

    assert "s left" in str(live["progress_message"])
    assert live["progress_time"]
    assert row["status_label"] == "succeeded"
    assert (row["progress_percent"], row["progress_message"]) == (100.0, "slept")
    assert "100 % slept (attempt 1" in table
    assert printed[-1] == "progress: 100 % slept (attempt 1)"
    assert 2 <= len(printed) <= 6  # about one report a second, not one per line
    assert all(a != b for a, b in itertools.pairwise(printed))
