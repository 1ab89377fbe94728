"""Sign-in, roles, CSRF and the headers every answer carries, on both catalogs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.testclient import TestClient

from dispatcher.api import ScaleOut
from dispatcher.web.users import remove
from tests.fixtures.catalog import project_archive
from tests.web.conftest import PASSWORDS, csrf_of, post, sign_in

PAGES = ["/workers", "/executions", "/projects", "/charts", "/masters"]
CHANGES = [
    ("/workers", {"worker_id": "w9"}),
    ("/workers/w1/enable", {}),
    ("/workers/w1/disable", {}),
    ("/workers/w1/edit", {"display_name": "x"}),
    ("/workers/w1/delete", {}),
    ("/executions/{eid}/stop", {}),
    ("/run", {"folder": "Finance", "project": "Sales", "package": "Load"}),
]


def test_anonymous_requests_are_sent_to_sign_in(app_client: Callable[..., TestClient]) -> None:
    client = app_client()
    for path in [*PAGES, "/workers/w1", "/executions/1", "/executions/1/log", "/run"]:
        answer = client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == f"/login?next={path}"
    token = csrf_of(client)
    for path, data in CHANGES:
        answer = client.post(path.format(eid=1), data={**data, "csrf": token})
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login")


def test_an_htmx_poll_without_a_session_redirects_the_page(
    app_client: Callable[..., TestClient],
) -> None:
    answer = app_client().get("/workers", headers={"HX-Request": "true"})
    assert answer.status_code == 204
    assert answer.headers["HX-Redirect"] == "/login"


def test_a_wrong_password_is_refused_and_says_so(app_client: Callable[..., TestClient]) -> None:
    client = app_client()
    token = csrf_of(client)
    answer = client.post("/login", data={"username": "ann", "password": "nope", "csrf": token})
    assert answer.status_code == 401
    assert "wrong name or password" in answer.text
    assert client.get("/workers").status_code == 303


def test_an_unknown_name_reads_like_a_wrong_password(
    app_client: Callable[..., TestClient],
) -> None:
    client = app_client()
    token = csrf_of(client)
    answer = client.post("/login", data={"username": "zed", "password": "x" * 9, "csrf": token})
    assert answer.status_code == 401
    assert "wrong name or password" in answer.text


def test_sign_in_without_the_csrf_token_is_refused(app_client: Callable[..., TestClient]) -> None:
    client = app_client()
    client.get("/login")
    answer = client.post("/login", data={"username": "ann", "password": PASSWORDS["ann"]})
    assert answer.status_code == 403
    assert client.get("/workers").status_code == 303


def test_sign_in_goes_back_to_the_page_asked_for_never_off_site(
    app_client: Callable[..., TestClient],
) -> None:
    client = app_client()
    token = csrf_of(client)
    data = {"username": "ann", "password": PASSWORDS["ann"], "csrf": token}
    assert client.post("/login?next=/charts", data=data).headers["location"] == "/charts"
    client = app_client()
    data["csrf"] = csrf_of(client)
    assert client.post("/login?next=//evil.example", data=data).headers["location"] == "/workers"


def test_a_viewer_reads_every_page(viewer: TestClient, so: ScaleOut) -> None:
    so.add_worker("w1")
    so.catalog.deploy_project("Finance", "Sales", _archive())
    execution_id = so.create_execution("Finance", "Sales", "Load")
    run = "/run?folder=Finance&project=Sales&package=Load"
    for path in [*PAGES, "/workers/w1", f"/executions/{execution_id}", run]:
        answer = viewer.get(path)
        assert answer.status_code == 200, answer.text
        assert "vic · viewer" in answer.text
    assert viewer.get(f"/executions/{execution_id}/log").status_code == 200


def test_a_viewer_changes_nothing(viewer: TestClient, so: ScaleOut) -> None:
    so.add_worker("w1", enabled=True)
    so.catalog.deploy_project("Finance", "Sales", _archive())
    execution_id = so.create_execution("Finance", "Sales", "Load")
    so.start(execution_id, wake=False)
    before = (so.workers(), so.executions())
    for path, data in CHANGES:
        answer = post(viewer, path.format(eid=execution_id), data)
        assert answer.status_code == 403, path
        assert "changes need the admin (ssis_admin) role" in answer.text
    assert (so.workers(), so.executions()) == before


def test_a_change_without_the_csrf_token_is_refused(admin: TestClient, so: ScaleOut) -> None:
    so.add_worker("w1", enabled=True)
    so.catalog.deploy_project("Finance", "Sales", _archive())
    execution_id = so.create_execution("Finance", "Sales", "Load")
    so.start(execution_id, wake=False)
    before = (so.workers(), so.executions())
    for path, data in CHANGES:
        answer = admin.post(path.format(eid=execution_id), data=data)
        assert answer.status_code == 403, path
        assert "the form expired" in answer.text
        forged = admin.post(path.format(eid=execution_id), data={**data, "csrf": "forged"})
        assert forged.status_code == 403, path
    assert (so.workers(), so.executions()) == before


def test_viewer_pages_offer_no_change_buttons(viewer: TestClient, so: ScaleOut) -> None:
    so.add_worker("w1")
    assert 'id="add-worker"' not in viewer.get("/workers").text
    assert 'id="toggle"' not in viewer.get("/workers/w1").text


def test_sign_out_ends_the_session(admin: TestClient) -> None:
    assert post(admin, "/logout").status_code == 303
    assert admin.get("/workers").status_code == 303


def test_a_user_removed_from_the_file_is_signed_out(admin: TestClient, users_file: Path) -> None:
    remove(users_file, "ann")
    assert admin.get("/workers").status_code == 303


def test_every_answer_has_the_secure_headers(admin: TestClient) -> None:
    for path in [*PAGES, "/static/console.css", "/nope"]:
        headers = admin.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"


def test_the_session_cookie_is_http_only_and_same_site(
    app_client: Callable[..., TestClient],
) -> None:
    client = app_client()
    cookie = client.get("/login").headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie


def test_pages_have_no_inline_script_or_style(admin: TestClient, so: ScaleOut) -> None:
    so.add_worker("w1")
    for path in [*PAGES, "/workers/w1"]:
        text = admin.get(path).text
        assert "<script>" not in text
        assert " style=" not in text
        assert "<style" not in text


def test_sign_in_off_on_loopback_makes_the_local_operator_an_admin(
    app_client: Callable[..., TestClient], so: ScaleOut
) -> None:
    client = app_client(sign_in="off")
    page = client.get("/workers")
    assert page.status_code == 200
    assert "admin (ssis_admin)" in page.text
    assert post(client, "/workers", {"worker_id": "w5"}).status_code == 303
    assert so.worker("w5").worker_agent_id == "w5"


def test_a_loopback_console_refuses_a_foreign_host_header(
    app_client: Callable[..., TestClient],
) -> None:
    """DNS rebinding: a page of evil.example resolving to 127.0.0.1 gets nothing."""
    client = app_client(sign_in="off")
    assert client.get("/workers", headers={"host": "evil.example:8080"}).status_code == 400


def test_sign_in_sign_in_helper_works_for_both_roles(app_client: Callable[..., TestClient]) -> None:
    for name in PASSWORDS:
        assert sign_in(app_client(), name).get("/workers").status_code == 200


def _archive() -> bytes:
    return project_archive("Sales")


def test_a_broken_users_file_is_named_on_the_page(admin: TestClient, users_file: Path) -> None:
    users_file.write_text("[users.ann\n")
    answer = admin.get("/workers")
    assert answer.status_code == 500
    assert f"{users_file} is not valid TOML" in answer.text


def test_the_root_opens_the_workers_page_and_static_files_are_served(admin: TestClient) -> None:
    assert admin.get("/").headers["location"] == "/workers"
    htmx = admin.get("/static/htmx-2.0.11.min.js")
    assert htmx.status_code == 200
    assert "javascript" in htmx.headers["content-type"]
    assert "no-store" not in htmx.headers.get("cache-control", "")
    assert admin.get("/workers").headers["cache-control"] == "no-store"
