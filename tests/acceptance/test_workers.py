"""`scaleout workers ...`: registering and managing worker agents in the catalog."""

from __future__ import annotations

import re

from tests.acceptance.conftest import Cli

OPTION = re.compile(r"│\s+(\*\s+)?--[a-z]")


def test_add_enable_disable_set_delete(ready: Cli) -> None:
    """A worker goes through its whole life from the CLI, each step visible in --json."""
    added = ready.ok("workers", "add", "w1", "--display-name", "first", "--json").json()
    enabled = ready.ok("workers", "enable", "w1", "--json").json()
    tagged = ready.ok("workers", "set", "w1", "Tags", "etl,big", "--json").json()
    disabled = ready.ok("workers", "disable", "w1", "--json").json()
    ready.ok("workers", "delete", "w1")
    remaining = ready.ok("workers", "list", "--json").json()

    assert added["is_enabled"] is False
    assert added["display_name"] == "first"
    assert enabled["is_enabled"] is True
    assert tagged["tags"] == "etl,big"
    assert disabled["is_enabled"] is False
    assert remaining == []


def test_list_shows_state_enabled_running_and_last_seen(ready: Cli) -> None:
    """The table has the columns an operator checks; JSON carries is_online and times."""
    ready.ok("workers", "add", "w1", "--enable", "--max-task-count", "3")

    table = ready.ok("workers", "list").stdout
    rows = ready.ok("workers", "list", "--json").json()

    for column in ("state", "enabled", "running", "last seen"):
        assert column in table
    assert "offline" in table
    assert "0/3" in table
    assert rows[0]["is_online"] is False
    assert rows[0]["last_online_time"] is None


def test_worker_errors(ready: Cli) -> None:
    """Unknown ids, a duplicate add and an unknown property are refused with exit 1."""
    ready.ok("workers", "add", "w1")

    results = [
        ready.run("workers", "enable", "ghost"),
        ready.run("workers", "show", "ghost"),
        ready.run("workers", "delete", "ghost"),
        ready.run("workers", "add", "w1"),
        ready.run("workers", "set", "w1", "Colour", "blue"),
    ]

    for result in results:
        assert result.returncode == 1, str(result)
        assert result.stderr.startswith("error:"), str(result)
        assert "Traceback" not in result.stderr


META_OPTIONS = ("--help", "--version", "--install-completion", "--show-completion")
"""Options about the command itself, not settings: they have no environment variable."""


def test_every_option_shows_its_environment_variable(ready: Cli) -> None:
    """--help of each command lists an env var for every option it has."""
    for command in (
        [],
        ["deploy"],
        ["executions", "create"],
        ["executions", "list"],
        ["executions", "logs"],
        ["workers", "add"],
        ["master"],
        ["worker"],
        ["demo"],
    ):
        text = ready.ok(*command, "--help").stdout
        lines = [line for line in text.splitlines() if OPTION.search(line)]

        assert lines, text
        for line in lines:
            meta = any(flag in line for flag in META_OPTIONS)
            assert meta or "env var:" in line, line
