"""What a new operator reads in their first hour: the version, a missing ODBC driver, a
misspelt setting, a broker that is not there. Each is one clear line and a hint."""

from __future__ import annotations

from pathlib import Path

from schemas.messages import SCHEMA_VERSION
from tests.acceptance.conftest import Cli


def test_version_prints_the_package_and_wire_versions(cli: Cli) -> None:
    result = cli.ok("--version")

    assert result.stdout.startswith("scaleout ")
    assert f"(wire schema_version {SCHEMA_VERSION})" in result.stdout


def test_a_missing_odbc_driver_says_what_to_install(cli: Cli) -> None:
    """unixODBC's "Can't open lib" becomes one line naming the driver, and the hint."""
    url = "mssql+pyodbc://sa:hunter2@127.0.0.1:1/SSISDB?driver=ODBC+Driver+18+for+SQL+Server"

    result = cli.run("--catalog-url", url, "workers", "list")

    assert result.returncode == 1, str(result)
    assert "the ODBC driver 'ODBC Driver 18 for SQL Server'" in result.stderr
    assert "is not installed" in result.stderr
    assert "msodbcsql18" in result.stderr
    assert "unixODBC" not in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_misspelt_setting_in_the_config_file_is_named(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "scaleout.toml"
    config.write_text('[master]\nSqlServerNme = "sqlite:///x.sqlite3"\n')

    result = cli.run("--config", str(config), "workers", "list")

    assert result.returncode == 1, str(result)
    assert f"unknown setting 'SqlServerNme' in [master] of {config}" in result.stderr
    assert "did you mean SqlServerName?" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_example_config_file_works_for_the_cli(tmp_path: Path) -> None:
    """examples/scaleout.toml names its catalog in SSIS's words; the CLI uses it."""
    example = Path(__file__).resolve().parents[2] / "examples" / "scaleout.toml"
    cli = Cli(tmp_path)  # no SCALEOUT_* at all: the file alone decides

    result = cli.ok("--config", str(example), "catalog", "init")

    assert (tmp_path / "ssisdb.sqlite3").is_file(), str(result)


def test_worker_commands_say_what_the_change_means(cli: Cli) -> None:
    cli.ok("catalog", "init")

    added = cli.ok("workers", "add", "w1").stdout
    enabled = cli.ok("workers", "enable", "w1").stdout
    disabled = cli.ok("workers", "disable", "w1").stdout
    named = cli.ok("workers", "set", "w1", "DisplayName", "etl-1").stdout

    assert (
        added.strip() == "worker w1 added, disabled: `scaleout workers enable w1` to give it tasks"
    )
    assert enabled.strip() == "worker w1 enabled: it gets tasks"
    assert disabled.strip() == "worker w1 disabled: it takes no new tasks, and none is running"
    assert named.strip() == "worker w1 DisplayName set to 'etl-1'"


def test_a_worker_id_that_cannot_be_a_broker_user_is_refused_before_anything_is_written(
    cli: Cli,
) -> None:
    cli.ok("catalog", "init")

    result = cli.run("workers", "add", "bad id")

    assert result.returncode == 1, str(result)
    assert "not a valid worker id: 'bad id'" in result.stderr
    assert "RabbitMQ user" in result.stderr
    assert "Traceback" not in result.stderr
    assert cli.ok("workers", "list", "--json").json() == []
