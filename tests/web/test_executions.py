"""The All Executions report, an execution's page, its log tail and stop, on both catalogs."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from dispatcher.api import ScaleOut
from tests.fixtures.catalog import (
    finished,
    heartbeat,
    log,
    project_archive,
    started,
    started_execution,
)
from tests.web.conftest import post

SECRET = "s3cr3t-api-key-value"


def ids(page: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr data-execution="(\d+)"', page)]


def _run_one(so: ScaleOut, outcome: str = "succeeded") -> int:
    """An execution that ran on w1 and ended with ``outcome``."""
    execution_id = started_execution(so.catalog)
    [assignment] = so.catalog.claim_tasks(10)
    so.catalog.apply_status_reports([(started(assignment), "w1"), (log(assignment, 0, 1), "w1")])
    so.catalog.apply_status_reports([(finished(assignment, outcome), "w1")])
    return execution_id


@pytest.fixture
def w1(so: ScaleOut) -> str:
    so.catalog.record_heartbeat(heartbeat("w1"), "w1")
    so.enable_worker("w1")
    return "w1"


def test_paging_is_newest_first_and_keyset(admin: TestClient, so: ScaleOut) -> None:
    so.catalog.deploy_project("Finance", "Sales", project_archive("Sales"))
    made = [so.create_execution("Finance", "Sales", "Load") for _ in range(55)]
    first = admin.get("/executions").text
    assert ids(first) == sorted(made, reverse=True)[:50]
    older = html.unescape(re.search(r'id="older" href="([^"]+)"', first).group(1))  # type: ignore[union-attr]
    assert older.endswith(f"before={made[5]}")
    second = admin.get(older).text
    assert ids(second) == sorted(made[:5], reverse=True)
    assert 'id="older"' not in second


def test_filters_by_status_package_worker_and_time(
    admin: TestClient, so: ScaleOut, w1: str
) -> None:
    ok = _run_one(so)
    bad = _run_one(so, "failed")
    waiting = started_execution(so.catalog)
    assert ids(admin.get("/executions?status=failed").text) == [bad]
    assert ids(admin.get("/executions?status=failed&status=succeeded").text) == [bad, ok]
    assert ids(admin.get("/executions?status=pending").text) == [waiting]
    assert ids(admin.get("/executions?worker=w1").text) == [bad, ok]
    assert ids(admin.get("/executions?package=Load&folder=Finance&project=Sales").text) == [
        waiting,
        bad,
        ok,
    ]
    assert ids(admin.get("/executions?package=Other").text) == []
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert ids(admin.get(f"/executions?since={later}").text) == []
    assert ids(admin.get(f"/executions?until={later}").text) == [waiting, bad, ok]


def test_filters_keep_their_values_in_the_form_and_the_pager(
    admin: TestClient, so: ScaleOut
) -> None:
    so.catalog.deploy_project("Finance", "Sales", project_archive("Sales"))
    for _ in range(51):
        so.create_execution("Finance", "Sales", "Load")
    page = admin.get("/executions?status=created&folder=Finance").text
    assert 'value="created" checked' in page
    assert 'name="folder" value="Finance"' in page
    older = html.unescape(re.search(r'id="older" href="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    assert "status=created" in older
    assert "folder=Finance" in older


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=bogus", "unknown status 'bogus'; use one of created, running"),
        ("since=yesterday", "'since' is not a time: 'yesterday'"),
        ("since=2026-01-02T00:00&until=2026-01-01T00:00", "'since' must be before 'until'"),
        ("before=abc", "before must be a whole number"),
    ],
)
def test_a_bad_filter_says_what_is_wrong(admin: TestClient, query: str, message: str) -> None:
    answer = admin.get(f"/executions?{query}")
    assert answer.status_code == 400
    assert message in html.unescape(answer.text)


def test_the_execution_page_shows_attempts_log_and_masked_parameters(
    admin: TestClient, so: ScaleOut, w1: str
) -> None:
    so.catalog.deploy_project("Finance", "Sales", project_archive("Sales"))
    execution_id = so.create_execution(
        "Finance", "Sales", "Load", parameters={"Rows": 7, "ApiKey": SECRET}, caller_name="ann"
    )
    so.start(execution_id, retry_count=1, wake=False)
    [first] = so.catalog.claim_tasks(10)
    so.catalog.apply_status_reports([(started(first), "w1"), (log(first, 0), "w1")])
    so.catalog.apply_status_reports([(finished(first, "failed", error="boom"), "w1")])
    [retry] = so.catalog.claim_tasks(10)
    so.catalog.apply_status_reports([(started(retry), "w1"), (finished(retry), "w1")])
    page = admin.get(f"/executions/{execution_id}").text
    assert 'data-status="succeeded"' in page
    assert 'data-attempt="1"' in page
    assert 'data-attempt="2"' in page
    assert "boom" in page
    assert 'data-parameter="Rows"' in page
    assert "<code>7</code>" in page
    assert "<code>********</code>" in page
    assert SECRET not in page
    tail = admin.get(f"/executions/{execution_id}/log?after=0").text
    assert "line 0" in tail
    assert SECRET not in tail
    cursor = re.search(r"log\?after=(\d+)", tail).group(1)  # type: ignore[union-attr]
    last = admin.get(f"/executions/{execution_id}/log?after={cursor}").text
    assert 'id="log-end"' in last  # ended, every line shown: the tail stops polling
    assert "hx-get" not in last


def test_the_log_tail_returns_only_new_lines_and_keeps_polling_while_running(
    admin: TestClient, so: ScaleOut, w1: str
) -> None:
    execution_id = started_execution(so.catalog)
    [assignment] = so.catalog.claim_tasks(10)
    so.catalog.apply_status_reports([(started(assignment), "w1"), (log(assignment, 0, 1), "w1")])
    first = admin.get(f"/executions/{execution_id}/log?after=0").text
    assert "line 0" in first
    assert "line 1" in first
    cursor = int(re.search(r"log\?after=(\d+)", first).group(1))  # type: ignore[union-attr]
    so.catalog.apply_status_reports([(log(assignment, 2), "w1")])
    second = admin.get(f"/executions/{execution_id}/log?after={cursor}").text
    assert "line 2" in second
    assert "line 1" not in second
    assert 'hx-trigger="load delay:' in second


def test_why_pending_names_each_worker(admin: TestClient, so: ScaleOut) -> None:
    so.add_worker("w1")
    so.catalog.record_heartbeat(heartbeat("w2", max_task_count=1), "w2")
    so.enable_worker("w2")
    so.catalog.record_heartbeat(
        heartbeat("w2", accepting=False, not_accepting="cpu 93% > 70%"), "w2"
    )
    execution_id = started_execution(so.catalog)
    page = html.unescape(admin.get(f"/executions/{execution_id}").text)
    assert 'id="why-pending"' in page
    assert "no master has run on this catalog" in page
    assert "<td>w1</td><td>disabled</td>" in page
    assert "<td>w2</td><td>not accepting tasks: cpu 93% > 70%</td>" in page


def test_stop_records_who_stopped_it(admin: TestClient, so: ScaleOut, w1: str) -> None:
    execution_id = started_execution(so.catalog)
    answer = post(admin, f"/executions/{execution_id}/stop")
    assert answer.status_code == 303
    row = so.execution(execution_id)
    assert row.stopped_by_name == "ann"
    assert row.status.is_terminal or row.status.key == "stopping"
    assert f"execution {execution_id}: stop requested" in admin.get(answer.headers["location"]).text


def test_stopping_an_ended_execution_is_refused_with_the_reason(
    admin: TestClient, so: ScaleOut, w1: str
) -> None:
    execution_id = _run_one(so)
    answer = post(admin, f"/executions/{execution_id}/stop")
    assert answer.status_code == 409
    assert so.execution(execution_id).stopped_by_name is None


@pytest.mark.parametrize("path", ["/executions/999", "/executions/999/log"])
def test_an_unknown_execution_is_a_404_page(admin: TestClient, path: str) -> None:
    answer = admin.get(path)
    assert answer.status_code == 404
    assert "execution 999 does not exist" in answer.text


def test_a_non_numeric_execution_id_is_a_404_page(admin: TestClient) -> None:
    answer = admin.get("/executions/abc")
    assert answer.status_code == 404
    assert "Not found" in answer.text


def test_run_again_starts_the_same_package_with_the_same_values(
    admin: TestClient, so: ScaleOut, w1: str
) -> None:
    first = _run_one(so, "failed")
    assert 'id="rerun"' in admin.get(f"/executions/{first}").text

    answer = post(admin, f"/executions/{first}/rerun")

    assert answer.status_code == 303
    again = int(answer.headers["location"].rsplit("/", 1)[1])
    assert again != first
    old, new = so.execution(first), so.execution(again)
    assert (new.folder_name, new.project_name, new.package_name) == (
        old.folder_name,
        old.project_name,
        old.package_name,
    )
    assert new.caller_name == "ann"
    assert new.status.key == "pending"
    page = admin.get(answer.headers["location"]).text
    assert f"execution {again}: started again from execution {first}" in page


def test_a_viewer_cannot_run_again_and_an_unknown_one_is_a_404(
    viewer: TestClient, admin: TestClient, so: ScaleOut, w1: str
) -> None:
    first = _run_one(so)
    assert post(viewer, f"/executions/{first}/rerun").status_code == 403
    assert post(admin, "/executions/999/rerun").status_code == 404
