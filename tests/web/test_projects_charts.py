"""Projects and the start form, the masters page and the charts, on both catalogs."""

from __future__ import annotations

import html
import re

import pytest
from starlette.testclient import TestClient

from dispatcher.api import ScaleOut
from dispatcher.catalog.records import MasterInstance, MasterRole
from dispatcher.keys import Keyring
from tests.fixtures.catalog import finished, heartbeat, project_archive, started, started_execution
from tests.web.conftest import post

SECRET = "default-secret-token"
PACKAGES = [
    {
        "name": "Load",
        "entry": {"argv": ["{python}", "load.py", "{Rows}"]},
        "parameters": [
            {"name": "Rows", "type": "int", "default": 10},
            {"name": "Ratio", "type": "float", "required": True},
            {"name": "ApiKey", "type": "string", "sensitive": True},
        ],
    }
]
RUN = {"folder": "Finance", "project": "Sales", "package": "Load"}


@pytest.fixture
def deployed(so: ScaleOut) -> None:
    archive = project_archive(
        "Sales",
        packages=PACKAGES,
        parameters=[{"name": "Currency", "type": "string", "default": "EUR"}],
    )
    so.catalog.deploy_project("Finance", "Sales", archive)
    # A sensitive value is never a manifest default: it is a server value, encrypted.
    so.catalog.keyring = Keyring.generate()
    so.set_object_parameter_value(30, "Finance", "Sales", "ApiKey", SECRET, "Load")


def test_projects_show_versions_packages_and_parameters(
    admin: TestClient, so: ScaleOut, deployed: None
) -> None:
    page = admin.get("/projects").text
    assert 'data-project="Finance/Sales"' in page
    assert "version 1 of 1" in page
    assert 'data-package="Load"' in page
    assert "<code>Ratio</code>" in page
    assert "Currency" in page
    assert SECRET not in page


def test_the_run_form_never_sends_a_sensitive_default(admin: TestClient, deployed: None) -> None:
    page = admin.get("/run", params=RUN).text
    assert 'name="$Package::ApiKey" type="password"' in page
    assert 'name="$Package::Ratio"' in page
    assert 'name="$Project::Currency"' in page
    assert SECRET not in page


def test_start_from_the_form_records_the_caller(
    admin: TestClient, so: ScaleOut, deployed: None
) -> None:
    so.add_worker("w1", enabled=True)
    data = {**RUN, "$Package::Ratio": "0.5", "$Package::Rows": "3", "retry_count": "2"}
    answer = post(admin, "/run", {**data, "workers": "w1"})
    assert answer.status_code == 303
    execution_id = int(answer.headers["location"].rsplit("/", 1)[1])
    row = so.execution(execution_id)
    assert row.caller_name == "ann"
    assert row.status.key == "pending"
    assert row.max_executed_count == 3
    assert row.allowed_workers == ("w1",)
    values = {p.name: p.value for p in so.catalog.console().execution_parameters(execution_id)}
    assert values["Ratio"] == "0.5"
    assert values["Rows"] == "3"
    page = admin.get(answer.headers["location"]).text
    assert f"execution {execution_id} created and started" in page
    assert "could not wake the master" in page  # this console has no broker: said, not hidden


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"$Package::Ratio": "half"}, "parameter Ratio takes a float, not 'half'"),
        ({"$Package::Ratio": "1", "$Package::Rows": "2.5"}, "parameter Rows takes a int"),
        ({}, "parameter Ratio is required"),
        ({"$Package::Ratio": "1", "retry_count": "-1"}, "retry count must be 0 or more"),
        ({"$Package::Ratio": "1", "workers": "nobody"}, "worker agent 'nobody' does not exist"),
    ],
)
def test_a_bad_start_form_says_why(
    admin: TestClient, so: ScaleOut, deployed: None, fields: dict[str, str], message: str
) -> None:
    answer = post(admin, "/run", {**RUN, **fields})
    assert answer.status_code in (400, 404)
    assert message in html.unescape(answer.text)
    if "workers" not in fields:  # the type checks run before anything is written
        assert so.executions() == []


@pytest.mark.parametrize(
    "query",
    [
        {"folder": "Nope", "project": "Sales", "package": "Load"},
        {"folder": "Finance", "project": "Sales", "package": "Nope"},
    ],
)
def test_the_run_form_of_an_unknown_package_is_a_404(
    admin: TestClient, deployed: None, query: dict[str, str]
) -> None:
    assert admin.get("/run", params=query).status_code == 404


def test_the_run_form_without_a_package_says_so(admin: TestClient) -> None:
    answer = admin.get("/run")
    assert answer.status_code == 400
    assert "choose a package" in answer.text


def test_masters_show_the_last_heartbeat(admin: TestClient, so: ScaleOut) -> None:
    assert "No master has run on this catalog" in admin.get("/masters").text
    so.catalog.master_heartbeat({"MACHINE_NAME": "m1", "MASTER_HEARTBEAT_INTERVALINMS": "500"})
    page = admin.get("/masters").text
    assert "Last online" in page
    assert "<td>MACHINE_NAME</td><td>m1</td>" in page


def test_charts_draw_the_catalog_rows(admin: TestClient, so: ScaleOut) -> None:
    so.catalog.record_heartbeat(heartbeat("w1"), "w1")
    so.enable_worker("w1")
    for outcome in ("succeeded", "failed", "succeeded"):
        started_execution(so.catalog)
        [assignment] = so.catalog.claim_tasks(10)
        so.catalog.apply_status_reports([(started(assignment), "w1")])
        so.catalog.apply_status_reports([(finished(assignment, outcome), "w1")])
    running = started_execution(so.catalog)
    [live] = so.catalog.claim_tasks(10)
    so.catalog.apply_status_reports([(started(live), "w1")])
    page = admin.get("/charts?hours=1").text
    bars = re.findall(r'data-status="(\w+)" data-count="(\d+)"', page)
    assert sum(int(n) for s, n in bars if s == "succeeded") == 2
    assert sum(int(n) for s, n in bars if s == "failed") == 1
    assert page.count('<circle class="dot"') == 4
    assert page.count('class="span') == 4
    assert f'data-execution="{running}" data-attempt="1"' in page
    assert '<text class="lane"' in page
    fragment = admin.get("/charts?hours=1", headers={"HX-Request": "true"}).text
    assert fragment.lstrip().startswith('<section class="panel chart-panel"')


def test_empty_charts_say_so(admin: TestClient) -> None:
    page = admin.get("/charts").text
    assert "no execution ended in this window" in page
    assert "no attempt in this window" in page


@pytest.mark.parametrize(
    ("hours", "message"), [("0", "1 or more"), ("99", "at most 48"), ("x", "whole")]
)
def test_a_bad_chart_window_says_why(admin: TestClient, hours: str, message: str) -> None:
    answer = admin.get(f"/charts?hours={hours}")
    assert answer.status_code == 400
    assert message in answer.text


def test_masters_list_every_instance_and_say_when_none_leads(
    admin: TestClient, so: ScaleOut
) -> None:
    assert 'id="no-leader"' in admin.get("/masters").text
    epoch = so.catalog.acquire_leadership("m-a", lease_s=60)
    so.catalog.announce_master(MasterInstance("m-a", "host-a", "", 9540, MasterRole.LEADER, epoch))
    so.catalog.announce_master(MasterInstance("m-b", "host-b", "", 9541, MasterRole.STANDBY, None))

    page = admin.get("/masters").text

    assert 'id="no-leader"' not in page
    assert "<td>m-a</td>\n<td><strong>leader</strong></td>" in page
    assert "<td>m-b</td>\n<td>standby</td>" in page
