"""Request-level fixtures for the console: the real app on a real catalog (SQLite file and
PostgreSQL, through ``catalog_url``), driven over Starlette's TestClient (httpx)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from starlette.testclient import TestClient

from dispatcher.api import ScaleOut
from dispatcher.web import WebSettings, create_app
from dispatcher.web.users import User, save
from tests.fixtures.catalog import catalog_url, pg_catalog_url, pg_template

__all__ = ["catalog_url", "pg_catalog_url", "pg_template"]

PASSWORDS = {"ann": "ann-secret-1", "vic": "vic-secret-1"}
BASE = "http://127.0.0.1"
CSRF = re.compile(r'name="csrf" value="([^"]+)"|"X-CSRF-Token": "([^"]+)"')


@pytest.fixture(scope="session")
def users_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ann is an admin, vic a viewer."""
    path = tmp_path_factory.mktemp("users") / "web-users.toml"
    # Cheap argon2 parameters (the hash carries them): sign-in is in nearly every test.
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    users = {
        "ann": User("ann", "admin", cheap.hash(PASSWORDS["ann"])),
        "vic": User("vic", "viewer", cheap.hash(PASSWORDS["vic"])),
    }
    save(path, users)
    return path


@pytest.fixture
def users_file(users_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "web-users.toml"
    path.write_bytes(users_template.read_bytes())
    return path


@pytest.fixture
def so(catalog_url: str) -> Iterator[ScaleOut]:
    """An API session without a broker: the console must work with none."""
    with ScaleOut.connect(catalog_url) as session:
        yield session


def settings(users_file: Path, **overrides: Any) -> WebSettings:
    values: dict[str, Any] = {"users_file": users_file, "sign_in": "required", "poll_ms": 500}
    values.update(overrides)
    return WebSettings(**values)


@pytest.fixture
def app_client(so: ScaleOut, users_file: Path) -> Callable[..., TestClient]:
    def make(**overrides: Any) -> TestClient:
        app = create_app(so, settings(users_file, **overrides))
        return TestClient(app, base_url=BASE, follow_redirects=False)

    return make


def csrf_of(client: TestClient, path: str = "/login") -> str:
    found = CSRF.search(client.get(path).text)
    assert found, f"no csrf token on {path}"
    return found.group(1) or found.group(2)


def sign_in(client: TestClient, name: str) -> TestClient:
    token = csrf_of(client)
    answer = client.post(
        "/login", data={"username": name, "password": PASSWORDS[name], "csrf": token}
    )
    assert answer.status_code == 303, answer.text
    return client


@pytest.fixture
def admin(app_client: Callable[..., TestClient]) -> TestClient:
    return sign_in(app_client(), "ann")


@pytest.fixture
def viewer(app_client: Callable[..., TestClient]) -> TestClient:
    return sign_in(app_client(), "vic")


def post(client: TestClient, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """A form POST with the page's CSRF token, as the browser sends it."""
    token = csrf_of(client, "/workers")
    return client.post(path, data={"csrf": token, **(data or {})}, **kwargs)
