"""Scale Out Manager's worker operations in the console, through the API, on both catalogs."""

from __future__ import annotations

import html

import pytest
from starlette.testclient import TestClient

from dispatcher.api import ScaleOut
from tests.fixtures.catalog import heartbeat, started, started_execution
from tests.web.conftest import post


def test_the_workers_page_lists_state_load_and_tags(admin: TestClient, so: ScaleOut) -> None:
    so.catalog.record_heartbeat(
        heartbeat("w1", machine_name="box1", cpu_percent=12.0, free_memory_mb=2048.0), "w1"
    )
    so.enable_worker("w1")
    so.set_worker("w1", "Tags", "etl,eu")
    so.add_worker("w2", max_task_count=3)
    page = admin.get("/workers").text
    row_w1 = page.split('data-worker="w1"')[1].split("</tr>")[0]
    assert "online" in row_w1
    assert "0 / 10" in row_w1
    assert "12 %" in row_w1
    assert "2048 MB" in row_w1
    assert "etl,eu" in row_w1
    assert "box1" in row_w1
    row_w2 = page.split('data-worker="w2"')[1].split("</tr>")[0]
    assert "offline" in row_w2
    assert "0 / 3" in row_w2
    assert "never" in row_w2


def test_the_htmx_poll_gets_the_table_only(admin: TestClient, so: ScaleOut) -> None:
    so.add_worker("w1")
    answer = admin.get("/workers", headers={"HX-Request": "true"})
    assert answer.text.lstrip().startswith('<table class="list" id="workers-table">')
    assert "<html" not in answer.text


def test_add_a_worker_from_the_form(admin: TestClient, so: ScaleOut) -> None:
    answer = post(
        admin,
        "/workers",
        {"worker_id": "w7", "display_name": "Seven", "max_task_count": "4", "enabled": "on"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/workers/w7"
    row = so.worker("w7")
    assert (row.display_name, row.max_task_count, row.is_enabled) == ("Seven", 4, True)
    page = admin.get("/workers/w7").text
    assert "worker w7 added, enabled" in page


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"worker_id": ""}, "a worker needs an id"),
        ({"worker_id": "w 1"}, "worker"),
        ({"worker_id": "w8", "max_task_count": "many"}, "MaxTaskCount must be a whole number"),
        ({"worker_id": "w8", "max_task_count": "0"}, "MaxTaskCount must be 1 or more"),
    ],
)
def test_a_bad_worker_form_says_why_and_adds_nothing(
    admin: TestClient, so: ScaleOut, data: dict[str, str], message: str
) -> None:
    answer = post(admin, "/workers", data)
    assert answer.status_code in (400, 409)
    assert message in html.unescape(answer.text)
    assert so.workers() == []


def test_adding_an_existing_worker_is_refused(admin: TestClient, so: ScaleOut) -> None:
    so.add_worker("w1")
    answer = post(admin, "/workers", {"worker_id": "w1"})
    assert answer.status_code == 409
    assert "already exists" in answer.text


def test_enable_then_disable_shows_the_drain(admin: TestClient, so: ScaleOut) -> None:
    so.catalog.record_heartbeat(heartbeat("w1"), "w1")
    assert post(admin, "/workers/w1/enable").status_code == 303
    assert so.worker("w1").is_enabled
    execution_id = started_execution(so.catalog)
    [assignment] = so.catalog.claim_tasks(10)
    so.catalog.apply_status_reports([(started(assignment), "w1")])
    assert post(admin, "/workers/w1/disable").status_code == 303
    assert not so.worker("w1").is_enabled
    page = admin.get("/workers/w1").text
    assert "disabled: it takes no new tasks; 1 running will finish" in page
    assert "draining, 1 running will finish" in page
    state = admin.get("/workers/w1", headers={"HX-Request": "true"}).text
    assert 'data-running="1"' in state
    assert so.execution(execution_id).status.key == "running"


def test_edit_sets_display_name_description_and_tags(admin: TestClient, so: ScaleOut) -> None:
    so.add_worker("w1", display_name="old")
    answer = post(
        admin,
        "/workers/w1/edit",
        {"display_name": "One", "description": "the first", "tags": "etl"},
    )
    assert answer.status_code == 303
    row = so.worker("w1")
    assert (row.display_name, row.description, row.tags) == ("One", "the first", "etl")
    assert "DisplayName, Description, Tags set" in admin.get("/workers/w1").text


def test_a_too_long_display_name_is_refused(admin: TestClient, so: ScaleOut) -> None:
    so.add_worker("w1", display_name="old")
    answer = post(admin, "/workers/w1/edit", {"display_name": "x" * 300})
    assert answer.status_code == 409
    assert "DisplayName is at most 256 characters" in answer.text
    assert so.worker("w1").display_name == "old"


def test_delete_a_worker(admin: TestClient, so: ScaleOut) -> None:
    so.add_worker("w1")
    answer = post(admin, "/workers/w1/delete")
    assert answer.headers["location"] == "/workers"
    assert so.workers() == []
    assert "worker w1 deleted" in admin.get("/workers").text


def test_deleting_a_worker_that_holds_tasks_is_refused(admin: TestClient, so: ScaleOut) -> None:
    so.catalog.record_heartbeat(heartbeat("w1"), "w1")
    so.enable_worker("w1")
    started_execution(so.catalog)
    so.catalog.claim_tasks(10)
    answer = post(admin, "/workers/w1/delete")
    assert answer.status_code == 409
    assert "disable it first" in answer.text
    assert so.worker("w1")


@pytest.mark.parametrize("path", ["/workers/nope", "/workers/nope/enable"])
def test_an_unknown_worker_is_a_404_page(admin: TestClient, path: str) -> None:
    answer = admin.get(path) if path.count("/") == 2 else post(admin, path)
    assert answer.status_code == 404
    assert "worker agent 'nope' does not exist" in html.unescape(answer.text)


def test_an_unknown_action_is_a_404_page(admin: TestClient, so: ScaleOut) -> None:
    so.add_worker("w1")
    answer = post(admin, "/workers/w1/explode")
    assert answer.status_code == 404
    assert so.worker("w1")


def test_every_change_is_logged_with_who_made_it(
    admin: TestClient, so: ScaleOut, caplog: pytest.LogCaptureFixture
) -> None:
    so.add_worker("w1")
    with caplog.at_level("INFO", logger="dispatcher.web"):
        post(admin, "/workers/w1/enable")
    [record] = [r for r in caplog.records if r.getMessage() == "web.change"]
    assert (record.user, record.action, record.target) == ("ann", "worker.enable", "w1")  # type: ignore[attr-defined]
