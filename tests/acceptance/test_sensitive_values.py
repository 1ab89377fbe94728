"""Sensitive values end to end, from the CLI, on a live master and worker: the value
reaches the package, and its plain text is in no byte of the catalog nor in any output or
log; a rerun and a key rotation (under the running master) keep it working. And every
refused `executions create` leaves the catalog as it was."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from dispatcher.keys import new_key_text
from tests.acceptance.conftest import Cli, Cluster

SECRET = "tok-8c41f2e9d7"
DIGEST = hashlib.sha256(SECRET.encode()).hexdigest()
MANIFEST = {
    "format": 1,
    "name": "Vault",
    "packages": [
        {
            "name": "Check",
            "entry": {"argv": ["{python}", "check.py"]},
            "parameters": [{"name": "Secret", "type": "string", "sensitive": True}],
        }
    ],
}
CHECK = """\
import hashlib, os
secret = os.environ["SSIS_PARAM_SECRET"]
print("secret sha256", hashlib.sha256(secret.encode()).hexdigest(), flush=True)
"""


def vault_project(folder: Path) -> Path:
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(MANIFEST))
    (folder / "check.py").write_text(CHECK)
    return folder


def run_and_check(cli: Cli, *argv: str) -> int:
    """Run an execution to its end; it succeeded and its package saw the secret."""
    result = cli.ok(*argv, "--wait", "--timeout", "60", "--json", timeout=90)
    row = result.json()
    assert row["status_label"] == "succeeded", str(result)
    logs = cli.ok("executions", "logs", str(row["execution_id"]))
    assert f"secret sha256 {DIGEST}" in logs.stdout
    for text in (result.stdout, result.stderr, logs.stdout, logs.stderr):
        assert SECRET not in text
    return int(row["execution_id"])


def test_a_sensitive_value_reaches_the_package_and_nothing_holds_it_in_plain_text(
    cluster: Cluster, tmp_path: Path, catalog_url: str
) -> None:
    """Given with --param, then through an environment reference (the variable read from
    stdin), rerun, and run again after a key rotation under the running master."""
    cli = cluster.cli
    cli.ok("deploy", str(vault_project(tmp_path / "vault")), "--folder", "F")
    create = ("executions", "create", "--folder", "F", "--project", "Vault", "--package", "Check")
    first = run_and_check(cli, *create, "--param", f"Secret={SECRET}")
    cli.ok("environments", "create", "PROD", "--folder", "F")
    stdin = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "environments", "variables", "create", "PROD",
         "Token", "-", "--sensitive", "--folder", "F"],
        input=f"{SECRET}\n", capture_output=True, text=True, env=cli.environment(), cwd=cli.cwd,
        timeout=60, check=False,
    )  # fmt: skip
    assert stdin.returncode == 0, stdin.stderr
    made = cli.ok("environments", "references", "create", "PROD", "--folder", "F",
                  "--project", "Vault", "--json")  # fmt: skip
    reference = str(made.json()["reference_id"])
    cli.ok("projects", "set-parameter", "Secret", "Token", "--reference", "--folder", "F",
           "--project", "Vault", "--package", "Check")  # fmt: skip

    referenced = run_and_check(cli, *create, "--reference", reference)
    again = run_and_check(cli, "executions", "rerun", str(referenced))
    rotated = cli.ok("catalog", "rotate-key")
    after_rotation = run_and_check(cli, "executions", "rerun", str(again))

    assert "4 sensitive values re-encrypted" in rotated.stdout  # 3 executions, 1 variable
    assert len({first, referenced, again, after_rotation}) == 4
    for argv in (
        ("executions", "show", str(referenced), "--json"),
        ("executions", "show", str(referenced)),
        ("environments", "show", "PROD", "--folder", "F", "--json"),
        ("environments", "show", "PROD", "--folder", "F"),
        ("packages", "show", "Check", "--folder", "F", "--project", "Vault"),
    ):
        shown = cli.ok(*argv)
        assert SECRET not in shown.stdout + shown.stderr
    values = cli.ok("executions", "show", str(referenced), "--json").json()["parameters"]
    assert values == [{"object_type": 30, "name": "Secret", "value": None, "sensitive": True}]
    catalog = Path(catalog_url.removeprefix("sqlite:///"))
    files = sorted(catalog.parent.glob(f"{catalog.name}*"))
    assert files
    assert not [f for f in files if SECRET.encode() in f.read_bytes()]
    for log in ("master.log", "worker.log"):
        assert SECRET not in (tmp_path / log).read_text()


def test_refused_creates_leave_no_execution(ready: Cli) -> None:
    """Seven refused creates (the issue's count) and the catalog still holds none."""
    ready.ok("workers", "add", "w1")
    base = ("executions", "create", "--folder", "F", "--project", "SalesETL")
    refused = [
        (*base, "--package", "LoadSales", "--param", "Nope=1"),
        (*base, "--package", "LoadSales", "--param", "FailOnPurpose=perhaps"),
        (*base, "--package", "LoadSales", "--param", "$Package::Currency=USD"),
        (*base, "--package", "LoadSales", "--param", "Currency=USD", "--worker", "ghost"),
        (*base, "--package", "LoadSales", "--worker", "w1", "--worker", "ghost"),
        (*base, "--package", "Sleep", "--param", "Interval=2", "--start"),
        (*base, "--package", "Missing"),
    ]
    for argv in refused:
        result = ready.run(*argv)
        assert result.returncode == 1, str(result)
        assert result.stderr.startswith("error: "), str(result)
        assert "Traceback" not in result.stderr

    assert ready.ok("executions", "list", "--json").json() == []
    assert "it is a project parameter" in ready.run(*refused[2]).stderr
    assert "Sleep lacks required parameters: Seconds" in ready.run(*refused[5]).stderr


def test_reading_a_missing_catalog_file_creates_nothing(cli: Cli, tmp_path: Path) -> None:
    result = cli.run("--catalog-url", "sqlite:///missing.sqlite3", "executions", "list")

    assert result.returncode == 1, str(result)
    assert "the catalog file missing.sqlite3 does not exist" in result.stderr
    assert "scaleout catalog init" in result.stderr
    assert not (tmp_path / "missing.sqlite3").exists()


def test_catalog_init_writes_a_key_file_once(cli: Cli, tmp_path: Path) -> None:
    key_file = tmp_path / "config" / "scaleout" / "catalog.key"

    first = cli.ok("catalog", "init")
    content = key_file.read_text()
    second = cli.ok("catalog", "init")

    assert f"wrote a new catalog key to {key_file}" in first.stderr
    assert "wrote" not in second.stderr
    assert key_file.read_text() == content
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_rotating_a_key_given_in_the_environment(ready: Cli, tmp_path: Path) -> None:
    """The old key comes from SCALEOUT_CATALOG__KEY: rotate-key needs --key-file, writes
    the new key there, and says to switch to it; the old key then opens nothing."""
    old = new_key_text()
    env: dict[str, str | None] = {"SCALEOUT_CATALOG__KEY": old}
    create = ("executions", "create", "--folder", "F", "--project", "SalesETL", "--package")
    ready.ok(*create, "LoadSales", "--param", f"ApiToken={SECRET}", env=env)
    new_file = tmp_path / "new.key"

    usage = ready.run("catalog", "rotate-key", env=env)
    rotated = ready.ok("catalog", "rotate-key", "--key-file", str(new_file), env=env)

    assert usage.returncode == 2
    assert "--key-file" in usage.stderr
    assert "1 sensitive values re-encrypted" in rotated.stdout
    assert f"SCALEOUT_CATALOG__KEY_FILE={new_file}" in rotated.stderr
    again = ready.run("catalog", "rotate-key", "--key-file", str(tmp_path / "x.key"), env=env)
    assert again.returncode == 1
    assert "cannot decrypt a sealed execution parameter value" in again.stderr
    assert not (tmp_path / "x.key").exists()
    with_file = {"SCALEOUT_CATALOG__KEY": None, "SCALEOUT_CATALOG__KEY_FILE": str(new_file)}
    ready.ok("catalog", "rotate-key", env=with_file)
