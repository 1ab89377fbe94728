"""A catalog that is down or not initialised, a dead broker, the users file and the
``scaleout web`` command's refusals."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from dispatcher.api import ScaleOut
from dispatcher.settings import BrokerSettings
from dispatcher.web import WebSettings, create_app
from dispatcher.web.users import UsersFileError, add, load, remove, verify
from tests.fixtures.catalog import project_archive
from tests.web.conftest import BASE, post


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def console(url: str, broker: BrokerSettings | None = None) -> Iterator[TestClient]:
    with ScaleOut.connect(url, broker) as so:
        app = create_app(so, WebSettings(sign_in="off", users_file=Path("/nonexistent")))
        yield TestClient(app, base_url=BASE, follow_redirects=False)


@pytest.fixture
def down() -> Iterator[TestClient]:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/ssisdb"
    yield from console(url)


@pytest.mark.parametrize("path", ["/workers", "/executions", "/executions/1", "/charts"])
def test_a_catalog_outage_is_a_banner_not_a_trace(down: TestClient, path: str) -> None:
    answer = down.get(path)
    assert answer.status_code == 503
    assert 'class="banner"' in answer.text
    assert "The catalog cannot be read" in answer.text
    assert "Traceback" not in answer.text


def test_a_poll_during_an_outage_puts_the_banner_on_the_page(down: TestClient) -> None:
    answer = down.get("/workers", headers={"HX-Request": "true"})
    assert answer.status_code == 200  # htmx swaps only 2xx answers
    assert answer.headers["HX-Retarget"] == "#banner"
    assert "The catalog cannot be read" in answer.text


def test_a_change_during_an_outage_is_a_banner(down: TestClient) -> None:
    answer = post(down, "/workers/w1/enable")
    assert answer.status_code == 503


def test_an_uninitialised_catalog_says_to_run_catalog_init(tmp_path: Path) -> None:
    for client in console(f"sqlite:///{tmp_path / 'empty.sqlite3'}"):
        answer = client.get("/workers")
        assert answer.status_code == 503
        assert "scaleout catalog init" in answer.text


def test_the_console_works_and_starts_executions_with_the_broker_down(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ssisdb.sqlite3'}"
    with ScaleOut.connect(url) as so:
        so.init_catalog()
        so.catalog.deploy_project("Finance", "Sales", project_archive("Sales"))
    broker = BrokerSettings(url=f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F")
    for client in console(url, broker):
        assert client.get("/workers").status_code == 200
        answer = post(client, "/run", {"folder": "Finance", "project": "Sales", "package": "Load"})
        assert answer.status_code == 303
        page = client.get(answer.headers["location"]).text
        assert "created and started" in page
        assert "could not wake the master" in page


def test_users_file_holds_hashes_only_with_owner_only_mode(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    add(path, "ann", "admin", "correct horse")
    text = path.read_text()
    assert "correct horse" not in text
    assert "$argon2id$" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = load(path)
    assert verify(users, "ann", "correct horse") == users["ann"]
    assert verify(users, "ann", "wrong horse") is None
    remove(path, "ann")
    assert load(path) == {}


@pytest.mark.parametrize(
    ("name", "role", "password", "message"),
    [
        ("bad name", "admin", "long enough", "is not a user name"),
        ("ann", "root", "long enough", "unknown role 'root'"),
        ("ann", "viewer", "short", "shorter than 8 characters"),
    ],
)
def test_bad_users_are_refused_and_nothing_is_written(
    tmp_path: Path, name: str, role: str, password: str, message: str
) -> None:
    path = tmp_path / "users.toml"
    with pytest.raises(UsersFileError, match=message):
        add(path, name, role, password)
    assert not path.exists()


def test_a_broken_users_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text("[users.ann\n")
    with pytest.raises(UsersFileError, match="is not valid TOML"):
        load(path)
    path.write_text('[users.ann]\nrole = "admin"\n')
    with pytest.raises(UsersFileError, match="has no password_hash"):
        load(path)


def flat(text: str) -> str:
    """Rich's error panel without its borders and line breaks."""
    return " ".join(text.replace("│", " ").split())


def scaleout(
    *argv: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCALEOUT_")}
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, "COLUMNS": "200", **(env or {})},
    )


def test_web_users_add_reads_the_password_from_stdin_never_argv(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    done = scaleout(
        "web",
        "users",
        "add",
        "ann",
        "--role",
        "admin",
        "--users-file",
        str(path),
        stdin="a long password\n",
    )
    assert done.returncode == 0, done.stderr
    assert f"user ann (admin) saved in {path}" in done.stdout
    assert verify(load(path), "ann", "a long password")
    again = scaleout("web", "users", "add", "ann", "--users-file", str(path), stdin="another one\n")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert "--replace" in again.stderr
    listed = scaleout("web", "users", "list", "--users-file", str(path))
    assert "ann" in listed.stdout
    assert "ssis_admin" in listed.stdout
    assert "argon2" not in listed.stdout


def test_web_refuses_to_listen_beyond_loopback_without_users(tmp_path: Path) -> None:
    done = scaleout(
        "web",
        "--host",
        "0.0.0.0",
        "--users-file",
        str(tmp_path / "none.toml"),
    )
    assert done.returncode == 2
    assert "sign-in is required" in flat(done.stderr)
    assert "scaleout web users add NAME --role admin" in flat(done.stderr)


def test_web_refuses_sign_in_off_beyond_loopback(tmp_path: Path) -> None:
    done = scaleout("web", "--host", "10.1.2.3", "--sign-in", "off")
    assert done.returncode == 2
    assert "--sign-in off is for loopback only" in flat(done.stderr)


def test_sign_in_rules() -> None:
    missing = Path("/nonexistent/users.toml")
    assert not WebSettings(users_file=missing).sign_in_required()
    assert WebSettings(users_file=missing, sign_in="required").sign_in_required()
    assert WebSettings(users_file=missing, host="0.0.0.0").sign_in_required()
    assert WebSettings(users_file=Path(__file__)).sign_in_required()
    assert WebSettings(host="::1").loopback
    assert not WebSettings(host="192.0.2.1").loopback
