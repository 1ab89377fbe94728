"""`scaleout catalog init|upgrade` and `scaleout deploy`, as an operator runs them."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.acceptance.conftest import EXAMPLE, Cli, closed_port


def test_catalog_init_is_idempotent_and_upgrade_agrees(cli: Cli) -> None:
    """Init creates the schema, a second init and an upgrade report the same revision."""
    first = cli.ok("catalog", "init").stdout
    second = cli.ok("catalog", "init").stdout
    upgrade = cli.ok("catalog", "upgrade").stdout

    assert "is at revision" in first
    assert first == second == upgrade


def test_commands_on_an_uninitialised_catalog_say_to_run_init(cli: Cli) -> None:
    """A catalog without the schema gives one error line, the init hint, and exit 1."""
    result = cli.run("executions", "list")

    assert result.returncode == 1, str(result)
    assert "not initialised" in result.stderr
    assert "scaleout catalog init" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_catalog_is_one_clear_error(cli: Cli) -> None:
    """A catalog that cannot be opened (PostgreSQL on a closed port, SQLite in a folder
    that does not exist) is one error line with a hint, exit 1."""
    for url in (
        f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/ssisdb",
        "sqlite:////nonexistent-folder/ssisdb.sqlite3",
    ):
        result = cli.run("--catalog-url", url, "executions", "list")

        assert result.returncode == 1, str(result)
        assert result.stderr.startswith("error: cannot use the catalog"), str(result)
        assert "hint:" in result.stderr
        assert "Traceback" not in result.stderr


def test_an_unsupported_catalog_url_is_one_clear_error(cli: Cli) -> None:
    """An unknown database dialect is refused with a hint, not a traceback."""
    result = cli.run("--catalog-url", "oracle://scott@db/orcl", "workers", "list")

    assert result.returncode == 1, str(result)
    assert result.stderr.startswith("error:")
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_config_file_is_one_clear_error(cli: Cli, tmp_path: Path) -> None:
    """--config naming a file that does not exist fails with exit 1 and says which file."""
    missing = tmp_path / "nope.toml"

    result = cli.run("--config", str(missing), "workers", "list")

    assert result.returncode == 1, str(result)
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_settings_are_one_line(cli: Cli) -> None:
    """A broker URL with a wrong scheme is reported as invalid settings, exit 1."""
    result = cli.run("--broker-url", "http://127.0.0.1/", "workers", "list")

    assert result.returncode == 1, str(result)
    assert "broker.url" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_sets_the_catalog(cli: Cli, tmp_path: Path) -> None:
    """The --config file's [master] section is read when no variable overrides it."""
    other = tmp_path / "other.sqlite3"
    config = tmp_path / "scaleout.toml"
    config.write_text(f'[master]\ncatalog = {{url = "sqlite:///{other}"}}\n')

    cli.ok("--config", str(config), "catalog", "init", env={"SCALEOUT_CATALOG__URL": None})

    assert other.exists()


def test_deploy_a_folder_then_the_same_bytes_again(cli: Cli) -> None:
    """Deploying a folder creates version 1; the same content again is unchanged."""
    cli.ok("catalog", "init")

    first = cli.ok("deploy", str(EXAMPLE), "--folder", "F", "--json").json()
    again = cli.ok("deploy", str(EXAMPLE), "--folder", "F", "--json").json()

    assert first["project_name"] == "SalesETL"
    assert first["created"] is True
    assert again["created"] is False
    assert again["project_lsn"] == first["project_lsn"]


def test_deploy_a_zip_under_another_project_name(cli: Cli, tmp_path: Path) -> None:
    """A .zip archive deploys too, and --project overrides the manifest's name."""
    cli.ok("catalog", "init")
    archive = tmp_path / "sales.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(EXAMPLE.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(EXAMPLE).as_posix())

    result = cli.ok("deploy", str(archive), "--folder", "G", "--project", "Sales2", "--json")

    assert result.json()["project_name"] == "Sales2"
    assert result.json()["folder_name"] == "G"


def test_deploy_errors_missing_path_and_no_manifest(cli: Cli, tmp_path: Path) -> None:
    """A path that does not exist, or a folder without manifest.json, is refused (exit 1)."""
    cli.ok("catalog", "init")
    empty = tmp_path / "empty"
    empty.mkdir()

    missing = cli.run("deploy", str(tmp_path / "nope"), "--folder", "F")
    no_manifest = cli.run("deploy", str(empty), "--folder", "F")

    assert missing.returncode == 1, str(missing)
    assert "does not exist" in missing.stderr
    assert no_manifest.returncode == 1, str(no_manifest)
    assert "manifest.json" in no_manifest.stderr


def test_deploy_without_folder_is_a_usage_error(cli: Cli) -> None:
    """Leaving out the required --folder is a usage error: exit 2."""
    result = cli.run("deploy", str(EXAMPLE))

    assert result.returncode == 2, str(result)
    assert "--folder" in result.stderr
